//! The instance's directories and its root filesystem: an overlay of the image's
//! snapshots under the instance's own writable layer, which lives in memory only — a
//! reboot takes it, and the next start makes it again.

use berth_spec::types::NetworkMode;

use crate::reconcile::images::ReadyImage;
use crate::runtime::instance::RuntimeInstance;
use crate::runtime::state::InstanceDirs;

use super::error::at;
use super::{ContainerHost, StepError};

impl ContainerHost<'_> {
    /// Creates the instance's directories and mounts its root filesystem.
    pub(super) fn mount_root(
        &self,
        dirs: &InstanceDirs,
        image: &ReadyImage,
    ) -> Result<(), StepError> {
        dirs.create()
            .map_err(at(format!("create {}", dirs.root.display())))?;
        self.mounts
            .mount_rootfs(dirs, &image.lowerdirs)
            .map_err(at("mount the root filesystem"))?;
        Ok(())
    }

    /// Whether the instance lost what only lives in memory — its overlay mount, its
    /// network namespace — as after a reboot.
    pub(super) fn lost_host_state(&self, name: &str, inst: &RuntimeInstance) -> bool {
        if !self.mounts.rootfs_mounted(&inst.dirs) {
            return true;
        }
        let bridge = self
            .desired
            .containers
            .get(name)
            .is_some_and(|d| d.spec.network_mode == NetworkMode::Bridge);
        bridge
            && !matches!(self.networks.attachment(&inst.id), Ok(Some(a)) if crate::network::netns::is_netns(&a.netns_path))
    }
}
