//! Taking an instance down: the runtime's delete, then what it holds on the host —
//! network attachment, staged binds, secrets tmpfs, root filesystem — then its
//! directory. Every part tolerates being gone already, so a crash in the middle is
//! finished next time. `berth rm` uses the same [`teardown`].

use std::path::Path;

use crate::network::Networks;
use crate::runtime::instance::{InstanceRuntime, RuntimeInstance};
use crate::runtime::render;
use crate::storage::secrets;

use super::error::{HostStepError, at};
use super::fs::Mounts;
use super::{ContainerHost, failpoint};

impl ContainerHost<'_> {
    pub(super) fn teardown(&self, id: &str) -> Result<(), HostStepError> {
        let stopped = self.lock_stopped().remove(id);
        let runtime: &dyn InstanceRuntime = self.runtime;
        teardown(
            &self.state_dir,
            &self.run_dir,
            self.networks,
            self.mounts,
            (!stopped).then_some(runtime),
            id,
        )
    }

    /// Takes down what an instance holds on the host — runtime container, network
    /// attachment, staged binds, secrets tmpfs, rootfs mount — but keeps its directory
    /// and writable layer, for the create step to make it again.
    pub(super) fn teardown_keeping_upper(&self, id: &str) -> Result<(), HostStepError> {
        self.lock_stopped().remove(id);
        let inst = self.instance(id);
        release(&self.run_dir, self.networks, self.mounts, &inst)
    }
}

/// Tears down an instance: runtime delete, network, secrets, rootfs, directory. Every
/// part tolerates being gone already, so a crash in the middle is finished next time.
/// `runtime` is `None` when the caller has just stopped the instance, which deleted it
/// from the runtime: asking again would cost a `state` call for nothing.
pub fn teardown(
    state_dir: &Path,
    run_dir: &Path,
    networks: &Networks,
    mounts: &dyn Mounts,
    runtime: Option<&dyn InstanceRuntime>,
    id: &str,
) -> Result<(), HostStepError> {
    let inst = RuntimeInstance::new(state_dir, id);
    if let Some(runtime) = runtime {
        runtime.delete(&inst).map_err(at("runtime delete"))?;
    }
    // This state directory's `/berth/<hash>` parent, once its last instance is gone
    // (a stop already deleted the runtime container).
    crate::runtime::cgroup::remove_empty_parent(
        Path::new(crate::runtime::cgroup::CGROUP_ROOT),
        &render::cgroups_path(state_dir, id),
    );
    failpoint("mid-removal");
    release(run_dir, networks, mounts, &inst)?;
    match std::fs::remove_dir_all(&inst.dirs.root) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(at("remove the instance directory")(err))
        }
        _ => Ok(()),
    }
}

/// Releases what an instance holds on the host besides its runtime container: its
/// network attachment, staged binds (before anything under its directory may be
/// removed), secrets tmpfs and rootfs mount.
fn release(
    run_dir: &Path,
    networks: &Networks,
    mounts: &dyn Mounts,
    inst: &RuntimeInstance,
) -> Result<(), HostStepError> {
    let id = &inst.id;
    networks.detach(id).map_err(at("network detach"))?;
    mounts.unstage_binds(&inst.dirs.root).map_err(at("binds"))?;
    mounts
        .unmount_secrets(&secrets::secrets_dir(run_dir, id))
        .map_err(at("secrets"))?;
    mounts.unmount_rootfs(&inst.dirs).map_err(at("unmount"))
}
