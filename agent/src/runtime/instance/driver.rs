//! [`OciInstances`], the real [`InstanceRuntime`]: `berth-shim` for create, the
//! runtime's `start`/`kill`/`state`/`delete`, and the exit file, watched with inotify,
//! for exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{
    Created, ExecIo, ExecOutcome, ExecRequest, InstanceError, InstanceRuntime, InstanceStatus,
    RuntimeInstance, SIGKILL, derive_status, exec,
};
use crate::runtime::oci::{
    Runtime, RuntimeError, RuntimeState, RuntimeStatus, ShimLaunch, run_captured,
};
use crate::runtime::state::ExitStatus;

/// The real [`InstanceRuntime`]: one runtime, the shim, and the log limits.
#[derive(Debug, Clone)]
pub struct OciInstances {
    pub runtime: Runtime,
    pub shim: PathBuf,
    /// `runtime.log_max_size` / `runtime.log_max_files`.
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// How long the shim's launch (the runtime's `create`) may take.
    pub shim_timeout: Duration,
    /// How long to wait for the exit once SIGKILL is sent.
    pub kill_timeout: Duration,
    /// Shims leave the agent's cgroups for `/berth/shims` (`runtime::shim_cgroup`).
    pub leave_cgroups: bool,
}

/// The shim's answer: the container created, and what it could not do (a cgroup it
/// could not join).
#[derive(serde::Deserialize)]
struct ShimAnswer {
    #[serde(flatten)]
    created: Created,
    #[serde(default)]
    warnings: Vec<String>,
}

/// The shim drains the container's output for at most 2 s after the exit before it
/// writes the exit file; a little more covers a loaded host.
const SHIM_DRAIN: Duration = Duration::from_secs(3);

impl OciInstances {
    pub fn new(runtime: Runtime, shim: PathBuf, log_max_size: u64, log_max_files: u32) -> Self {
        OciInstances {
            runtime,
            shim,
            log_max_size,
            log_max_files,
            shim_timeout: Duration::from_secs(60),
            kill_timeout: Duration::from_secs(10),
            leave_cgroups: true,
        }
    }

    fn rt_err(inst: &RuntimeInstance) -> impl FnOnce(RuntimeError) -> InstanceError {
        let id = inst.id.clone();
        move |source| InstanceError::Runtime {
            id,
            source: Box::new(source),
        }
    }

    fn exit_status(&self, inst: &RuntimeInstance) -> Result<Option<ExitStatus>, InstanceError> {
        let path = inst.dirs.exit_file();
        inst.dirs
            .exit_status()
            .map_err(InstanceError::io(inst, "cannot read the exit file", &path))
    }

    fn state(&self, inst: &RuntimeInstance) -> Result<Option<RuntimeState>, InstanceError> {
        self.runtime.state(&inst.id).map_err(Self::rt_err(inst))
    }

    /// The runtime's state, once no shim of the instance is still making it: with no
    /// state while a shim lives (a killed pass's create in flight, or a shim draining
    /// an exit), waits — at most `kill_timeout` — for the state to appear or the shim
    /// to end, so that a stop or removal does not let a create land after it.
    fn settled_state(&self, inst: &RuntimeInstance) -> Result<Option<RuntimeState>, InstanceError> {
        let deadline = Instant::now() + self.kill_timeout;
        loop {
            let state = self.state(inst)?;
            if state.is_some()
                || Instant::now() >= deadline
                || !super::inflight::shim_alive(&inst.dirs.exit_file())
            {
                return Ok(state);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill`; a container that is already gone or stopped is not an error (the wait
    /// that follows decides).
    fn signal(&self, inst: &RuntimeInstance, signal: i32) -> Result<(), InstanceError> {
        let argv = self.runtime.kill_argv(&inst.id, signal);
        match self.runtime.run("kill", &inst.id, &argv) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e)
                if e.stderr()
                    .is_some_and(|s| s.contains("not running") || s.contains("stopped")) =>
            {
                Ok(())
            }
            Err(e) => Err(Self::rt_err(inst)(e)),
        }
    }

    /// `delete` of a container whose init has exited; unknown is fine.
    fn delete_exited(&self, inst: &RuntimeInstance) -> Result<(), InstanceError> {
        match self.runtime.run(
            "delete",
            &inst.id,
            &self.runtime.delete_argv(&inst.id, false),
        ) {
            Err(e) if !e.is_not_found() => Err(Self::rt_err(inst)(e)),
            _ => Ok(()),
        }
    }

    /// After SIGKILL: the exit file, or else the runtime's word that it stopped (the
    /// shim died); then delete.
    fn reap_killed(&self, inst: &RuntimeInstance) -> Result<Option<ExitStatus>, InstanceError> {
        if let Some(exit) = self.wait_exit(inst, self.kill_timeout)? {
            self.delete_exited(inst)?;
            return Ok(Some(exit));
        }
        match self.state(inst)? {
            None => Ok(None),
            Some(s) if s.status == RuntimeStatus::Stopped => {
                self.delete_exited(inst)?;
                Ok(None)
            }
            Some(_) => Err(InstanceError::Unkillable {
                id: inst.id.clone(),
                timeout: self.kill_timeout,
            }),
        }
    }

    fn wait_exit(
        &self,
        inst: &RuntimeInstance,
        timeout: Duration,
    ) -> Result<Option<ExitStatus>, InstanceError> {
        let path = inst.dirs.exit_file();
        wait_for_file(&path, timeout).map_err(InstanceError::io(
            inst,
            "cannot watch the exit file",
            &path,
        ))?;
        self.exit_status(inst)
    }
}

impl InstanceRuntime for OciInstances {
    fn create(&self, inst: &RuntimeInstance) -> Result<Created, InstanceError> {
        let d = &inst.dirs;
        // A previous run of this instance (a restart) left its exit file: it would be
        // read as this run's exit.
        for stale in [d.exit_file(), d.pid_file(), d.shim_pid_file()] {
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(InstanceError::io(inst, "cannot remove", &stale)(e));
                }
                _ => {}
            }
        }
        let (bundle, log, exit_file, pid_file, shim_pid_file) = (
            d.bundle(),
            d.log(),
            d.exit_file(),
            d.pid_file(),
            d.shim_pid_file(),
        );
        let argv = self.runtime.shim_argv(&ShimLaunch {
            id: &inst.id,
            bundle: &bundle,
            log: &log,
            exit_file: &exit_file,
            pid_file: &pid_file,
            shim_pid_file: &shim_pid_file,
            log_max_size: self.log_max_size,
            log_max_files: self.log_max_files,
            cgroup_procs: if self.leave_cgroups {
                crate::runtime::shim_cgroup::procs()
            } else {
                &[]
            },
        });
        let out = run_captured(Command::new(&self.shim).args(&argv), self.shim_timeout).map_err(
            |source| InstanceError::ShimSpawn {
                id: inst.id.clone(),
                shim: self.shim.clone(),
                source,
            },
        )?;
        let Some(out) = out else {
            // The shim may still be creating it: leave nothing behind.
            let _ = self.runtime.run(
                "delete",
                &inst.id,
                &self.runtime.delete_argv(&inst.id, true),
            );
            return Err(InstanceError::ShimTimeout {
                id: inst.id.clone(),
                timeout: self.shim_timeout,
            });
        };
        if !out.status.success() {
            // The runtime's own message, without its log format (`time=… msg="…"`).
            let stderr = crate::runtime::oci::error_text(
                out.stderr.trim().trim_start_matches("berth-shim: "),
            );
            let (id, runtime) = (inst.id.clone(), self.runtime.binary.clone());
            return Err(
                if stderr.contains("id exists") || stderr.contains("already exists") {
                    InstanceError::AlreadyExists {
                        id,
                        runtime,
                        stderr,
                    }
                } else {
                    InstanceError::Create {
                        id,
                        runtime,
                        stderr,
                    }
                },
            );
        }
        let answer: ShimAnswer =
            serde_json::from_str(out.stdout.trim()).map_err(|_| InstanceError::ShimAnswer {
                id: inst.id.clone(),
                answer: out.stdout.trim().to_string(),
            })?;
        // A cgroup the shim could not join: it runs, but dies with the agent's cgroup.
        for w in &answer.warnings {
            tracing::warn!(instance = %inst.id, "{w}: the shim and its container stay in the agent's cgroup there");
        }
        Ok(answer.created)
    }

    fn start(&self, inst: &RuntimeInstance) -> Result<(), InstanceError> {
        let argv = self.runtime.start_argv(&inst.id);
        self.runtime
            .run("start", &inst.id, &argv)
            .map(drop)
            .map_err(Self::rt_err(inst))
    }

    fn stop(
        &self,
        inst: &RuntimeInstance,
        signal: i32,
        timeout: Duration,
    ) -> Result<Option<ExitStatus>, InstanceError> {
        if let Some(exit) = self.exit_status(inst)? {
            self.delete_exited(inst)?;
            return Ok(Some(exit));
        }
        let Some(state) = self.settled_state(inst)? else {
            return self.exit_status(inst);
        };
        let wait = match state.status {
            // Stopped without an exit file: the shim is writing it, or died.
            RuntimeStatus::Stopped => SHIM_DRAIN,
            // Nothing runs yet in a created container: no grace period.
            RuntimeStatus::Created | RuntimeStatus::Creating => return self.kill_and_reap(inst),
            _ => {
                self.signal(inst, signal)?;
                timeout
            }
        };
        if let Some(exit) = self.wait_exit(inst, wait)? {
            self.delete_exited(inst)?;
            return Ok(Some(exit));
        }
        tracing::info!(instance = %inst.id, signal, ?timeout, "did not exit in time; sending SIGKILL");
        self.kill_and_reap(inst)
    }

    fn delete(&self, inst: &RuntimeInstance) -> Result<(), InstanceError> {
        let Some(state) = self.settled_state(inst)? else {
            return Ok(());
        };
        match state.status {
            RuntimeStatus::Stopped => self.delete_exited(inst),
            // runc's own delete of a created container polls for 100 ms; kill and
            // wait for the shim's exit file instead.
            RuntimeStatus::Created => self.kill_and_reap(inst).map(drop),
            other => Err(InstanceError::Busy {
                id: inst.id.clone(),
                state: format!("{other:?}").to_lowercase(),
            }),
        }
    }

    fn status(&self, inst: &RuntimeInstance) -> Result<InstanceStatus, InstanceError> {
        if let Some(exit) = self.exit_status(inst)? {
            return Ok(InstanceStatus::Exited(exit));
        }
        let state = self.state(inst)?;
        // The init may have exited since the file was read: read it again.
        let exit = match state {
            Some(s) if s.status == RuntimeStatus::Stopped => self.exit_status(inst)?,
            _ => None,
        };
        Ok(derive_status(exit, state))
    }

    fn exec(
        &self,
        inst: &RuntimeInstance,
        req: &ExecRequest,
        io: ExecIo,
    ) -> Result<ExecOutcome, InstanceError> {
        exec::run(self, inst, req, io)
    }
}

impl OciInstances {
    fn kill_and_reap(&self, inst: &RuntimeInstance) -> Result<Option<ExitStatus>, InstanceError> {
        self.signal(inst, SIGKILL)?;
        self.reap_killed(inst)
    }
}

/// Waits until `path` exists, at most `timeout`: inotify on its directory (the shim
/// renames the file into place), checked after the watch is set so no event is lost;
/// polling with short sleeps when inotify is unavailable.
pub fn wait_for_file(path: &Path, timeout: Duration) -> std::io::Result<bool> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use rustix::event::{PollFd, PollFlags, Timespec, poll};

    let deadline = Instant::now() + timeout;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let watch = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).and_then(|ino| {
        ino.add_watch(dir, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE)?;
        Ok(ino)
    });
    let mut nap = Duration::from_millis(1);
    loop {
        if path.exists() {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        match &watch {
            Ok(ino) => {
                let ts = Timespec::try_from(left)
                    .map_err(|_| std::io::Error::other("timeout too large"))?;
                let mut fds = [PollFd::new(ino, PollFlags::IN)];
                match poll(&mut fds, Some(&ts)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
                // Drain; the loop re-checks the path whatever the event was.
                let _ = ino.read_events();
            }
            Err(_) => {
                std::thread::sleep(nap.min(left));
                nap = (nap * 2).min(Duration::from_millis(20));
            }
        }
    }
}
