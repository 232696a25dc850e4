//! `berth agent`: the long-running agent. One per run directory (an exclusive lock,
//! `<run_dir>/agent.lock`, names its holder); SIGTERM and SIGINT end it after the step
//! in flight (the pass's process finishes it and starts no other), and the containers
//! keep running under their shims. The controller
//! (`reconcile::controller`) does the work; the API (`api`) serves its state.

use std::fs;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use crate::node::Loaded;
use crate::reconcile::controller::{self, ControllerError, Trigger};
use crate::reconcile::pass::Env;
use crate::reconcile::worker;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another berth agent (pid {pid}) runs for {}", .run_dir.display())]
    Running { pid: String, run_dir: PathBuf },
    #[error("cannot lock {}", .path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot watch for SIGTERM, SIGINT and SIGHUP")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(loaded: &Loaded) -> Result<(), DaemonError> {
    let rt = crate::cli::async_runtime().map_err(DaemonError::Runtime)?;
    let cfg = &loaded.config;
    let run_dir = &cfg.runtime.run_dir;
    // One agent per run directory (its socket) and per state directory (its records).
    let _lock = single_instance(run_dir)?;
    let _state_lock = single_instance(&cfg.runtime.state_dir)?;
    let (handle, rx) = controller::channel(&cfg.runtime.state_dir);

    // Signals end the controller after the pass in flight. tokio's handlers leave the
    // signal mask alone, so the OCI runtime and the shims start with default signals.
    let mut term = {
        let _guard = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(DaemonError::Signals)?
    };
    let mut int = {
        let _guard = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(DaemonError::Signals)?
    };
    // SIGHUP, which many daemons take as "reload", must not end the agent: the node
    // configuration is read at start, so it is said so, and the source is fetched now.
    let mut hup = {
        let _guard = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(DaemonError::Signals)?
    };
    let poker = handle.clone();
    rt.spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(target: "agent", "SIGHUP: the node configuration is read when the agent starts (restart it to change it); fetching now");
            let (reply, _) = tokio::sync::oneshot::channel();
            poker.send(Trigger::Reconcile(reply));
        }
    });
    let stopper = handle.clone();
    let stopping = Arc::new(AtomicBool::new(false));
    let stop_flag = stopping.clone();
    rt.spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!(target: "agent", "stopping after the step in flight");
        stop_flag.store(true, Ordering::Relaxed);
        stopper.send(Trigger::Stop);
    });

    let _api = crate::api::server::start(rt.handle(), handle.clone(), &run_dir.join("api.sock"))?;
    // Members of `berth` reach the socket through the run directory: it lets others
    // traverse (0711; nothing in it is readable by them), as docs/layout.md says.
    if nix::unistd::Group::from_name(crate::api::GROUP)
        .ok()
        .flatten()
        .is_some()
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(run_dir, fs::Permissions::from_mode(0o711)).map_err(|source| {
            DaemonError::Lock {
                path: run_dir.clone(),
                source,
            }
        })?;
    }
    let env = Env {
        loaded,
        rt: rt.handle(),
    };
    // Each pass in a process of its own (`reconcile::worker`), with the agent's own
    // arguments (`--observe` too): the agent stays small between passes. The pass's
    // process gets the stop and ends after its step.
    let runner = |fetch: bool| worker::pass_in_child(fetch, &|| stopping.load(Ordering::Relaxed));
    controller::run(&env, &handle, &rx, &runner)?;
    Ok(())
}

/// Takes `<dir>/agent.lock` for the life of the process, with its pid in it.
fn single_instance(run_dir: &Path) -> Result<fs::File, DaemonError> {
    let path = run_dir.join("agent.lock");
    let lock_err = |source| DaemonError::Lock {
        path: path.clone(),
        source,
    };
    crate::runtime::state::trusted_dir(run_dir).map_err(lock_err)?;
    let mut f = crate::runtime::state::open_lock_file(&path).map_err(lock_err)?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            // The lock file is opened for writing only: read the holder's pid anew.
            let pid = fs::read_to_string(&path).unwrap_or_default();
            return Err(DaemonError::Running {
                pid: pid.trim().to_string(),
                run_dir: run_dir.to_path_buf(),
            });
        }
        Err(e) => return Err(lock_err(e.into())),
    }
    f.set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| writeln!(f, "{}", std::process::id()))
        .map_err(lock_err)?;
    Ok(f)
}
