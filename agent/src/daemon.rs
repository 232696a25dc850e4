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
pub use crate::reconcile::worker::PassCommand;
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
    #[error(transparent)]
    Webhook(#[from] crate::source::webhook::WebhookError),
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::metrics_http::MetricsHttpError),
    #[error("cannot subscribe to revision notifications (`source.notify`)")]
    Notify(#[from] crate::source::mqtt::ConnError),
    #[error("cannot start the trace exporter")]
    Traces(#[from] crate::telemetry::otlp::OtlpError),
}

/// `berth-agentd`'s name, next to `berth`.
pub const AGENTD: &str = "berth-agentd";

/// Runs the agent until SIGTERM or SIGINT; each pass is `pass` with `--pass-worker`.
/// `observe`: `--observe` was given (the node status says so, as with
/// `agent.mode = "observe"`).
pub fn run(loaded: &Loaded, pass: PassCommand, observe: bool) -> Result<(), DaemonError> {
    crate::reconcile::worker::set_command(pass);
    // One worker thread is plenty for the API; the controller has a thread of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("agent-api")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let served = serve(loaded, &runtime, observe);
    // A request still waiting on a blocking thread (a plan) does not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    served
}

/// [`run`] on `rt`.
fn serve(loaded: &Loaded, rt: &tokio::runtime::Runtime, observe: bool) -> Result<(), DaemonError> {
    let cfg = &loaded.config;
    let run_dir = &cfg.runtime.run_dir;
    // One agent per run directory (its socket) and per state directory (its records).
    let _lock = single_instance(run_dir)?;
    let _state_lock = single_instance(&cfg.runtime.state_dir)?;
    let (handle, rx) = controller::channel(
        &cfg.runtime.state_dir,
        crate::reconcile::backoff::RestartBackoff::of(&cfg.runtime),
    );

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

    // The metrics start from what the host holds now (its containers' restarts so far
    // are not counted as new), and are served on the API socket and, when set, on
    // `telemetry.metrics_listen`; a bind failure there ends the start, naming it.
    handle
        .metrics()
        .look(&cfg.runtime.state_dir, handle.backoff());
    let _metrics = cfg
        .telemetry
        .metrics_listen
        .as_deref()
        .map(|listen| crate::telemetry::metrics_http::start(rt.handle(), handle.clone(), listen))
        .transpose()?;
    // Each pass's spans to `telemetry.otlp_endpoint`, in the background.
    if let Some(endpoint) = &cfg.telemetry.otlp_endpoint {
        let exporter = crate::telemetry::otlp::Exporter::start(
            rt.handle(),
            endpoint,
            cfg.telemetry.otlp_queue,
            crate::node::identity(loaded, None)
                .name
                .as_deref()
                .unwrap_or(""),
            handle.metrics().clone(),
        )?;
        handle.export_traces(exporter);
    }
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
    // A repository on this host is fetched as soon as its ref moves (source::watch);
    // if it cannot be watched, polling does the work.
    let base = loaded.path.as_ref().and_then(|p| p.parent());
    let target = cfg
        .source
        .as_ref()
        .and_then(|s| crate::source::watch::Target::of(s, base));
    let _watch = target.and_then(|t| {
        let poker = handle.clone();
        crate::source::watch::start(t, move |why| poker.send(Trigger::SourceChanged(why.into())))
            .map_err(|e| tracing::warn!(target: "agent", error = %crate::util::error_chain(&e), "the local repository is not watched; it is polled every source.interval"))
            .ok()
    });
    // Pushes announced by the Git server fetch at once (`source.webhook`); a receiver
    // that cannot listen ends the start, naming its address.
    let webhook = cfg
        .source
        .as_ref()
        .and_then(|s| Some((s.webhook.as_ref()?, &s.git_ref)));
    let _webhook = webhook
        .map(|(w, git_ref)| crate::source::webhook::start(rt.handle(), handle.clone(), w, git_ref))
        .transpose()?;
    // Revisions announced over MQTT fetch after a random delay below `spread`; the
    // node's status goes back after each pass (`source.notify`). A file it cannot use
    // ends the start, naming it; a broker that does not answer is tried again.
    let observing = observe || cfg.agent.mode == berth_spec::node::AgentMode::Observe;
    let notify = cfg
        .source
        .as_ref()
        .and_then(|s| Some((s.notify.as_ref()?, &s.git_ref)));
    let _notify = notify
        .map(|(n, git_ref)| {
            let name = crate::node::identity(loaded, None)
                .name
                .unwrap_or_else(|| "unnamed".into());
            let node = crate::source::mqtt::Node {
                name,
                mode: if observing { "observe" } else { "enforce" },
            };
            crate::source::mqtt::start(rt.handle(), handle.clone(), n, git_ref, node)
        })
        .transpose()?;
    let env = Env {
        loaded,
        rt: rt.handle(),
        pulls: None,
    };
    // Health probes on their own schedule, each round in a process of its own
    // (`reconcile::prober`); a change of health wakes the controller.
    // An observing agent probes nothing: a probe runs in the container and writes its
    // health file.
    let prober = (!observing)
        .then(|| {
            crate::reconcile::prober::start(
                handle.clone(),
                cfg.runtime.resync,
                stopping.clone(),
                Box::new(|stop: &dyn Fn() -> bool| worker::probe_in_child(stop)),
            )
            .map_err(|e| tracing::warn!(target: "agent", error = %e, "cannot start the health prober; probes run with the passes only"))
            .ok()
        })
        .flatten();
    // Each pass in a process of its own (`reconcile::worker`), with the agent's own
    // arguments (`--observe` too): the agent stays small between passes. The pass's
    // process gets the stop and ends after its step.
    let runner = |fetch: bool| {
        // The pass's process also writes the node's audit report (`trust::live`), so
        // that the agent's heap does not grow with it; when that process ended without
        // a result, the agent writes it, whatever the pass did.
        let run = worker::pass_in_child(fetch, &|| stopping.load(Ordering::Relaxed));
        if matches!(run, Err(worker::PassFailure::Crashed { .. })) {
            crate::trust::live::after_pass(loaded);
        }
        // The pass's starts and probes changed what is due, and maybe the health.
        if let Some(p) = &prober {
            p.passed(run.as_ref().is_ok_and(|r| r.changed));
        }
        run
    };
    controller::run(&env, &handle, &rx, &runner, observing)?;
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

/// Why a binary is not run as this user.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error("cannot inspect {}", .path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not run: {what} {} is owned by uid {uid}", .binary.display(), .path.display())]
    Owner {
        binary: PathBuf,
        what: &'static str,
        path: PathBuf,
        uid: u32,
    },
    #[error("{} is not run: others can write to {what} {} (mode {mode:o})", .binary.display(), .path.display())]
    Writable {
        binary: PathBuf,
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
}

/// Whether `binary` may be run as this user: a regular file owned by root or this
/// user, that no one else can write, in a directory no one else can write to (where
/// another user could replace it) — else why not.
pub fn untrusted_binary(binary: &Path) -> Result<(), Untrusted> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    fn inspect(path: &Path) -> impl FnOnce(std::io::Error) -> Untrusted + '_ {
        move |source| Untrusted::Inspect {
            path: path.to_path_buf(),
            source,
        }
    }
    let real = fs::canonicalize(binary).map_err(inspect(binary))?;
    let check = |path: &Path, what: &'static str| -> Result<(), Untrusted> {
        let m = fs::metadata(path).map_err(inspect(path))?;
        if m.uid() != 0 && m.uid() != me {
            return Err(Untrusted::Owner {
                binary: binary.to_path_buf(),
                what,
                path: path.to_path_buf(),
                uid: m.uid(),
            });
        }
        if m.mode() & 0o022 != 0 {
            return Err(Untrusted::Writable {
                binary: binary.to_path_buf(),
                what,
                path: path.to_path_buf(),
                mode: m.mode() & 0o7777,
            });
        }
        Ok(())
    };
    check(&real, "it, as")?;
    if let Some(dir) = real.parent() {
        check(dir, "its directory")?;
    }
    Ok(())
}

/// Arguments `berth-agentd` was not given by `berth agent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentdArgsError {
    #[error("{0} needs a value")]
    NeedsValue(String),
    #[error("--log-format is text or json")]
    LogFormat,
    #[error("unexpected argument `{0}`")]
    Unexpected(String),
    #[error("{0} is needed")]
    Missing(&'static str),
}

/// What `berth agent` gives `berth-agentd` (it has checked the configuration already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentdArgs {
    /// The `berth` binary, which runs the passes.
    pub berth: PathBuf,
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub log_format: crate::telemetry::LogFormat,
    pub observe: bool,
}

impl AgentdArgs {
    /// The arguments, as [`AgentdArgs::to_args`] writes them.
    pub fn parse(
        args: impl IntoIterator<Item = std::ffi::OsString>,
    ) -> Result<AgentdArgs, AgentdArgsError> {
        use crate::telemetry::LogFormat;
        let mut it = args.into_iter();
        let (mut berth, mut config, mut state_dir, mut run_dir) = (None, None, None, None);
        let (mut log_format, mut observe) = (LogFormat::Text, false);
        while let Some(a) = it.next() {
            use std::os::unix::ffi::OsStrExt;
            // `--flag=VALUE`, or `--flag VALUE`.
            let bytes = a.as_bytes();
            let (flag, inline) = match bytes.iter().position(|b| *b == b'=') {
                Some(i) => (
                    std::ffi::OsStr::from_bytes(&bytes[..i]),
                    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[i + 1..]))),
                ),
                None => (a.as_os_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().map(PathBuf::from))
                    .ok_or_else(|| AgentdArgsError::NeedsValue(a.to_string_lossy().into_owned()))
            };
            match flag.to_str() {
                Some("--berth") => berth = Some(value()?),
                Some("--config") => config = Some(value()?),
                Some("--state-dir") => state_dir = Some(value()?),
                Some("--run-dir") => run_dir = Some(value()?),
                Some("--log-format") => {
                    log_format = match value()?.to_str() {
                        Some("text") => LogFormat::Text,
                        Some("json") => LogFormat::Json,
                        _ => return Err(AgentdArgsError::LogFormat),
                    }
                }
                Some("--observe") => observe = true,
                _ => {
                    return Err(AgentdArgsError::Unexpected(
                        a.to_string_lossy().into_owned(),
                    ));
                }
            }
        }
        let need = |v: Option<PathBuf>, name: &'static str| v.ok_or(AgentdArgsError::Missing(name));
        Ok(AgentdArgs {
            berth: need(berth, "--berth")?,
            config,
            state_dir: need(state_dir, "--state-dir")?,
            run_dir: need(run_dir, "--run-dir")?,
            log_format,
            observe,
        })
    }

    /// The command line of `berth-agentd` (without its name).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec!["--berth".into(), self.berth.clone().into()];
        v.extend(self.global_args());
        if self.observe {
            v.push("--observe".into());
        }
        v
    }

    /// `--config`, `--state-dir`, `--run-dir` and `--log-format`, as both `berth` and
    /// `berth-agentd` take them: `--flag=VALUE`, so that a value that starts with `-`
    /// stays a value.
    fn global_args(&self) -> Vec<std::ffi::OsString> {
        let pair = |flag: &str, value: &std::ffi::OsStr| {
            let mut a = std::ffi::OsString::from(format!("{flag}="));
            a.push(value);
            a
        };
        let mut v: Vec<std::ffi::OsString> = Vec::new();
        if let Some(c) = &self.config {
            v.push(pair("--config", c.as_os_str()));
        }
        v.push(pair("--state-dir", self.state_dir.as_os_str()));
        v.push(pair("--run-dir", self.run_dir.as_os_str()));
        v.push(pair("--log-format", self.log_format_name().as_ref()));
        v
    }

    fn log_format_name(&self) -> &'static str {
        match self.log_format {
            crate::telemetry::LogFormat::Text => "text",
            crate::telemetry::LogFormat::Json => "json",
        }
    }

    /// How the passes are started: `berth` with the same configuration.
    pub fn pass_command(&self) -> PassCommand {
        let mut args = self.global_args();
        args.push("agent".into());
        if self.observe {
            args.push("--observe".into());
        }
        PassCommand {
            program: self.berth.clone(),
            args,
        }
    }
}

/// `berth-agentd`'s main: what `berth agent` execs once it has checked the node
/// configuration. Exit 2 for arguments it was not given by `berth`, 3 when it cannot
/// run, 0 after SIGTERM or SIGINT.
pub fn agentd_main() -> std::process::ExitCode {
    use std::process::ExitCode;
    crate::set_umask();
    let args = match AgentdArgs::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{AGENTD}: {e}; it is started by `berth agent`, not by hand");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(args.log_format);
    let loaded = match crate::node::load(
        args.config.as_deref(),
        Some(&args.state_dir),
        Some(&args.run_dir),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {}", crate::util::error_chain(&e));
            return ExitCode::from(3);
        }
    };
    let pass = args.pass_command().pinned_to(loaded.path.as_deref());
    match run(&loaded, pass, args.observe) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::util::error_chain(&e));
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agentd_arguments_round_trip_and_passes_get_the_same_configuration() {
        let a = AgentdArgs {
            berth: "/usr/bin/berth".into(),
            config: Some("node.toml".into()),
            state_dir: "/var/lib/berth".into(),
            run_dir: "/run/berth".into(),
            log_format: crate::telemetry::LogFormat::Json,
            observe: true,
        };
        assert_eq!(AgentdArgs::parse(a.to_args()), Ok(a.clone()));
        let no_config = AgentdArgs {
            config: None,
            observe: false,
            ..a.clone()
        };
        assert_eq!(AgentdArgs::parse(no_config.to_args()), Ok(no_config));
        let p = a.pass_command();
        assert_eq!(p.program, PathBuf::from("/usr/bin/berth"));
        let args: Vec<String> = p.args.iter().map(|s| s.to_string_lossy().into()).collect();
        assert_eq!(
            args.join(" "),
            "--config=node.toml --state-dir=/var/lib/berth --run-dir=/run/berth --log-format=json agent --observe"
        );
        // A path that starts with `-` stays a path.
        let dashed = AgentdArgs {
            config: Some("-n.toml".into()),
            ..a.clone()
        };
        assert_eq!(AgentdArgs::parse(dashed.to_args()), Ok(dashed.clone()));
        assert!(
            dashed
                .pass_command()
                .args
                .iter()
                .any(|x| x.to_str() == Some("--config=-n.toml"))
        );
        assert!(AgentdArgs::parse(["--berth".into()]).is_err());
        assert!(AgentdArgs::parse(["--nope".into()]).is_err());
    }

    #[test]
    fn a_binary_others_could_write_or_replace_is_not_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let set = |p: &Path, mode: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod")
        };
        let bin = dir.path().join("berth-agentd");
        fs::write(&bin, b"#!/bin/sh\n").expect("write");
        set(dir.path(), 0o755);
        set(&bin, 0o755);
        assert!(untrusted_binary(&bin).is_ok());
        set(&bin, 0o777);
        let e = untrusted_binary(&bin)
            .expect_err("writable file")
            .to_string();
        assert!(e.contains("others can write"), "{e}");
        set(&bin, 0o755);
        // In a directory others can write to, anyone could have put it there.
        set(dir.path(), 0o1777);
        let e = untrusted_binary(&bin)
            .expect_err("writable directory")
            .to_string();
        assert!(e.contains("its directory"), "{e}");
        set(dir.path(), 0o755);
    }
}
