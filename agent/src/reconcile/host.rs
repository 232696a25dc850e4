//! The real step host ([`ImageSteps`], [`ObjectSteps`], [`ContainerSteps`]): what each plan step does on this machine — overlay rootfs,
//! volumes, secrets on a tmpfs, CNI attachment, the rendered OCI bundle, the shim and
//! the OCI runtime, and the container's record in the state directory.
//!
//! Crash safety: every step is idempotent (mounting a mounted rootfs, attaching an
//! attached instance, deleting what is gone are all fine), the record is written
//! once the runtime's create worked (an instance a killed pass left without a record
//! is an orphan the next pass removes), a failed create tears down whatever it made
//! (mounts, namespace, staged binds), and named failpoints (the `failpoints` feature)
//! let the crash tests stop the process between side effects.
//!
//! The parts, in the order a create runs them:
//! - `create.rs`: the create step — the sequence below, the runtime's create, the
//!   record, and the cleanup of a create that failed half-way;
//! - `rootfs.rs`: the instance's directories and overlay root filesystem;
//! - `storage.rs`: named volumes and staged bind mounts;
//! - `secrets.rs`: the secrets tmpfs and the decrypted secrets in it;
//! - `network.rs`: the CNI attachment (or the standalone files of `none` and `host`),
//!   network steps, and the peers' hosts files rewritten once per pass;
//! - `bundle.rs`: the hostname file, the seccomp profile and devices read from the
//!   host, and the rendered `config.json`;
//! - `record.rs`: the container record a create writes;
//! - `lifecycle.rs`: start (and the restart of an exited instance), stop, remove;
//! - `teardown.rs`: what removes an instance, also used by `berth rm`;
//! - `health.rs`: health probes during a pass and at its end, and the agent's rounds;
//! - `fs.rs`: the mounts and owned files above, behind traits (fakes in tests);
//! - `error.rs`: the typed error of a host step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use berth_spec::DesiredState;

pub use self::error::HostStepError;
use self::error::at;
pub use self::fs::{LinuxFs, Mounts, OwnedFiles};
pub use self::health::{HealthProbes, probe_round};
pub use self::teardown::teardown;
use super::bindcheck::BindCheck;
use super::executor::{ContainerSteps, ImageSteps, ObjectSteps, StepError};
use super::images::ReadyImage;
use super::model::Desired;
use crate::network::Networks;
use crate::runtime::instance::{InstanceRuntime, RuntimeInstance};
use crate::runtime::record::{ContainerRecord, read_record, remove_record};
use crate::runtime::render::HostInfo;

mod bundle;
mod create;
pub mod error;
mod fs;
mod health;
mod lifecycle;
mod network;
mod record;
mod rollback;
mod rootfs;
mod secrets;
mod storage;
mod teardown;
mod verify;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;

/// Stops the process at a named point when the `failpoints` feature is on and
/// `BERTH_FAILPOINT` names it (the crash tests' SIGKILL stand-in).
pub fn failpoint(name: &str) {
    if cfg!(feature = "failpoints") && std::env::var("BERTH_FAILPOINT").as_deref() == Ok(name) {
        eprintln!("failpoint {name}: exiting");
        std::process::exit(137);
    }
}

/// Everything the host operations work with.
pub struct ContainerHost<'a> {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// The spec root (secret and seccomp files).
    pub root: PathBuf,
    pub spec: &'a DesiredState,
    pub desired: &'a Desired,
    pub images: &'a BTreeMap<String, ReadyImage>,
    pub networks: &'a Networks,
    pub runtime: &'a (dyn InstanceRuntime + Sync),
    /// The OCI runtime binary and root recorded with each container.
    pub runtime_binary: PathBuf,
    pub runtime_root: PathBuf,
    pub host: &'a HostInfo,
    pub identity: Option<&'a crate::storage::secrets::AgeIdentity>,
    /// The mounts an instance holds, and the files handed to its user.
    pub mounts: &'a dyn Mounts,
    pub files: &'a dyn OwnedFiles,
    /// The policy's judgement of bind sources once resolved on this host.
    pub binds: &'a dyn BindCheck,
    /// Networks whose members changed in this pass: their peers' hosts files are
    /// rewritten once at the end, not after every start.
    pub touched: Mutex<BTreeSet<String>>,
    /// Instances this pass created: known to be in the `created` state, so starting
    /// them needs no `state` call to the runtime.
    pub created: Mutex<BTreeSet<String>>,
    /// Instances this pass stopped, which also deleted them from the runtime.
    pub stopped: Mutex<BTreeSet<String>>,
    /// The health probes' bookkeeping.
    pub health: HealthProbes,
}

impl std::fmt::Debug for ContainerHost<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerHost")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl ContainerHost<'_> {
    fn lock_stopped(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_created(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.created.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn instance(&self, id: &str) -> RuntimeInstance {
        RuntimeInstance::new(&self.state_dir, id)
    }

    fn record(&self, name: &str) -> Result<Option<ContainerRecord>, HostStepError> {
        read_record(&self.state_dir, name).map_err(at("read the container record"))
    }
}

impl ImageSteps for ContainerHost<'_> {
    fn pull(&self, image: &str, digest: &str) -> Result<(), StepError> {
        // `berth apply` makes images ready before it plans; a pull step left in the
        // plan means that failed, and the reason is the container's report.
        Err(HostStepError::NotPulled {
            image: image.to_string(),
            digest: digest.to_string(),
        }
        .into())
    }
}

impl ObjectSteps for ContainerHost<'_> {
    fn create_network(&self, name: &str) -> Result<(), StepError> {
        self.ensure_network(name)
    }

    fn remove_network(&self, name: &str) -> Result<(), StepError> {
        self.drop_network(name)
    }

    fn create_volume(&self, name: &str) -> Result<(), StepError> {
        self.ensure_volume(name)
    }

    fn remove_volume(&self, name: &str) -> Result<(), StepError> {
        self.drop_volume(name)
    }
}

impl ContainerSteps for ContainerHost<'_> {
    fn create(&self, name: &str, id: &str) -> Result<(), StepError> {
        self.create_instance(name, id)
    }

    fn start(&self, name: &str, id: &str) -> Result<(), StepError> {
        self.start_instance(name, id)
    }

    fn stop(&self, name: &str, id: &str, signal: &str, timeout: Duration) -> Result<(), StepError> {
        self.stop_instance(name, id, signal, timeout)
    }

    fn remove(&self, name: &str, id: &str) -> Result<(), StepError> {
        self.remove_instance(name, id)
    }

    fn forget(&self, name: &str) -> Result<(), StepError> {
        remove_record(&self.state_dir, name)
            .map_err(|err| at("remove the container record")(err).into())
    }

    fn wait_healthy(&self, name: &str, id: &str, timeout: Duration) -> Result<(), StepError> {
        self.wait_until_healthy(name, id, timeout)
    }

    fn verify(&self, name: &str, id: &str, timeout: Duration) -> Result<(), StepError> {
        self.verify_update(name, id, timeout)
    }

    fn finish(&self) {
        self.refresh_peers();
        self.probe_due();
    }
}
