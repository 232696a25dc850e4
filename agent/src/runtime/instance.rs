//! An instance's lifecycle under the OCI runtime: create (through `berth-shim`),
//! start, stop, delete, status and exec, behind the [`InstanceRuntime`] trait so the
//! executor is unit-tested with a fake; [`OciInstances`] is the real, thin
//! implementation.
//!
//! Contract with the executor: before [`InstanceRuntime::create`] the rootfs is
//! mounted (`runtime::mount`) and `bundle/config.json` written; after
//! [`InstanceRuntime::delete`] (or `stop`, which ends with a delete) the executor
//! unmounts and removes what it owns. Exits are detected from the shim's exit file
//! (`instances/<id>/exit.json`), watched with inotify, never with `kill(pid, 0)`: this
//! host's PID 1 reaps lazily, so a dead process can linger as a zombie (DESIGN.md §8).
//! The runtime's `state` is asked second, for what the file cannot tell (created,
//! running, or a shim that died without writing it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_spec::Container;
use berth_spec::types::Signal;
use serde::Deserialize;

use crate::runtime::oci::{RuntimeError, RuntimeState, RuntimeStatus};
use crate::runtime::state::{ExitStatus, InstanceDirs};
use crate::runtime::user::ResolvedUser;

pub mod driver;
mod exec;
mod inflight;
#[cfg(test)]
#[path = "instance_lab_tests.rs"]
mod lab;
#[cfg(test)]
#[path = "instance_lifecycle_tests.rs"]
mod lifecycle_tests;
mod restart;
#[cfg(test)]
#[path = "instance_tests.rs"]
mod tests;

pub use driver::OciInstances;
#[cfg(test)]
pub use exec::exec_process;
pub use restart::{Ready, RecreateError, recreate};

/// SIGKILL; SIGTERM is the spec's default stop signal.
pub const SIGKILL: i32 = 9;
#[cfg(test)]
pub const SIGTERM: i32 = 15;

/// How an instance is stopped: its stop signal, then SIGKILL once `timeout` passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopParams {
    pub signal: Signal,
    pub timeout: Duration,
}

/// The stop timeout when nothing says otherwise: the spec's own default (DESIGN.md §3).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for StopParams {
    /// SIGTERM, then SIGKILL after [`DEFAULT_STOP_TIMEOUT`].
    fn default() -> Self {
        StopParams {
            signal: Signal::default(),
            timeout: DEFAULT_STOP_TIMEOUT,
        }
    }
}

impl StopParams {
    /// Those of the spec the instance was created from (`stored`, as its record
    /// keeps it: it is what runs), else of the `desired` spec, else the defaults.
    pub fn of(stored: Option<&Container>, desired: Option<&Container>) -> StopParams {
        stored
            .or(desired)
            .map_or_else(StopParams::default, |c| StopParams {
                signal: c.stop_signal.clone(),
                timeout: c.stop_timeout,
            })
    }
}

/// One instance: its runtime id and its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInstance {
    pub id: String,
    pub dirs: InstanceDirs,
}

impl RuntimeInstance {
    pub fn new(state_dir: &Path, id: &str) -> RuntimeInstance {
        RuntimeInstance {
            id: id.to_string(),
            dirs: InstanceDirs::new(state_dir, id),
        }
    }
}

/// A created (not yet started) container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Created {
    /// The container's init, as the runtime sees it from the host.
    pub pid: i32,
    /// The shim daemon, its parent.
    pub shim_pid: i32,
}

/// Where an instance stands: the exit file first, the runtime's `state` second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceStatus {
    /// Created, not started.
    Created {
        pid: i32,
    },
    Running {
        pid: i32,
    },
    /// Its init exited; the shim recorded how (and the log is complete).
    Exited(ExitStatus),
    /// The runtime says stopped but no exit status was recorded: the shim died
    /// (OOM-killed, SIGKILL) before writing it.
    Stopped,
    /// The runtime does not know it (never created, or deleted).
    Missing,
}

/// A command to run in a running container. Unset fields keep the container's own
/// (`process` of its config): user, working directory, environment, capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// Resolved by the caller against the image (`runtime::user`).
    pub user: Option<ResolvedUser>,
    /// Added to the container's environment, replacing equal keys.
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Killed (and exit code 137) when it runs longer: health probes.
    pub timeout: Option<std::time::Duration>,
}

/// The exec'd process's stdio (no terminal): the caller's, or whatever it passes.
#[derive(Debug)]
pub struct ExecIo {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl ExecIo {
    pub fn inherit() -> ExecIo {
        ExecIo {
            stdin: Stdio::inherit(),
            stdout: Stdio::inherit(),
            stderr: Stdio::inherit(),
        }
    }
}

/// How an exec ended: what `berth exec` exits with, and the runtime's error when it
/// (not the command) failed: 127 not found, 126 cannot run, 125 other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: i32,
    pub runtime_error: Option<String>,
}

/// The lifecycle operations the executor needs.
pub trait InstanceRuntime {
    /// Launches the shim, which runs the runtime's `create`; the bundle must be written.
    fn create(&self, inst: &RuntimeInstance) -> Result<Created, InstanceError>;
    fn start(&self, inst: &RuntimeInstance) -> Result<(), InstanceError>;
    /// Sends `signal`, waits up to `timeout` for the exit, then SIGKILL and waits again,
    /// then deletes. The recorded exit status, if the shim wrote one.
    fn stop(
        &self,
        inst: &RuntimeInstance,
        signal: i32,
        timeout: Duration,
    ) -> Result<Option<ExitStatus>, InstanceError>;
    /// Deletes a created or stopped container from the runtime; an unknown one is fine.
    fn delete(&self, inst: &RuntimeInstance) -> Result<(), InstanceError>;
    fn status(&self, inst: &RuntimeInstance) -> Result<InstanceStatus, InstanceError>;
    fn exec(
        &self,
        inst: &RuntimeInstance,
        req: &ExecRequest,
        io: ExecIo,
    ) -> Result<ExecOutcome, InstanceError>;
}

/// Why a lifecycle step failed. Each names the instance; runtime failures carry the
/// runtime's stderr.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("instance `{id}`")]
    Runtime {
        id: String,
        #[source]
        source: Box<RuntimeError>,
    },
    #[error("`berth-shim` not found at `{}` (set runtime.shim_path)", path.display())]
    ShimNotFound { path: PathBuf },
    #[error("instance `{id}`: cannot run `{}`", shim.display())]
    ShimSpawn {
        id: String,
        shim: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("instance `{id}`: oci runtime `{}` create failed: {stderr}", runtime.display())]
    Create {
        id: String,
        runtime: PathBuf,
        stderr: String,
    },
    #[error("instance `{id}` already exists in oci runtime `{}`: {stderr}", runtime.display())]
    AlreadyExists {
        id: String,
        runtime: PathBuf,
        stderr: String,
    },
    #[error("instance `{id}`: the shim did not report within {timeout:?}")]
    ShimTimeout { id: String, timeout: Duration },
    #[error("instance `{id}`: cannot understand the shim's answer `{answer}`")]
    ShimAnswer { id: String, answer: String },
    #[error("instance `{id}` did not exit within {timeout:?} of SIGKILL")]
    Unkillable { id: String, timeout: Duration },
    #[error("instance `{id}` is {state}; stop it first")]
    Busy { id: String, state: String },
    #[error("instance `{id}` is not running")]
    NotRunning { id: String },
    #[error("instance `{id}`: exec needs a command")]
    EmptyCommand { id: String },
    #[error("instance `{id}`: {what} `{}`", path.display())]
    Io {
        id: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InstanceError {
    /// Whether trying again later may work: the runtime or the shim timed out, a
    /// process would not die yet, the instance is busy, or a transient I/O or runtime
    /// failure. A create the runtime refused stays refused until the bundle changes.
    pub fn is_transient(&self) -> bool {
        match self {
            InstanceError::Runtime { source, .. } => source.is_transient(),
            InstanceError::ShimTimeout { .. }
            | InstanceError::Unkillable { .. }
            | InstanceError::Busy { .. } => true,
            InstanceError::Create { stderr, .. } => crate::runtime::oci::says_transient(stderr),
            InstanceError::ShimSpawn { source, .. } | InstanceError::Io { source, .. } => {
                crate::runtime::state::io_is_transient(source)
            }
            _ => false,
        }
    }

    fn io(
        inst: &RuntimeInstance,
        what: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let (id, path) = (inst.id.clone(), path.to_path_buf());
        move |source| InstanceError::Io {
            id,
            what,
            path,
            source,
        }
    }
}

/// `berth-shim` at `runtime.shim_path`, else next to the running executable.
pub fn find_shim(configured: Option<&Path>) -> Result<PathBuf, InstanceError> {
    let path = match configured {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("berth-shim")))
            .unwrap_or_else(|| PathBuf::from("berth-shim")),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(InstanceError::ShimNotFound { path })
    }
}
/// The status from the exit file and the runtime's state. Pure.
pub fn derive_status(exit: Option<ExitStatus>, state: Option<RuntimeState>) -> InstanceStatus {
    if let Some(exit) = exit {
        return InstanceStatus::Exited(exit);
    }
    let Some(state) = state else {
        return InstanceStatus::Missing;
    };
    let pid = state.pid.unwrap_or(0);
    match state.status {
        RuntimeStatus::Creating | RuntimeStatus::Created => InstanceStatus::Created { pid },
        // berth never pauses; a paused container is still there and holds its pid.
        RuntimeStatus::Running | RuntimeStatus::Pausing | RuntimeStatus::Paused => {
            InstanceStatus::Running { pid }
        }
        RuntimeStatus::Stopped => InstanceStatus::Stopped,
    }
}
