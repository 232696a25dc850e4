//! The agent's passes, each in a short-lived process of its own.
//!
//! `berth agent` idles for months between passes; a pass touches everything (libgit2,
//! the registry client, the unpacker, CNI, the runtime) and leaves its pages and its
//! heap behind in the process that ran it. So the daemon runs each pass as a child,
//! `berth … agent --pass-worker=<agent pid>`: the `berth` binary next to
//! `berth-agentd` (`daemon::AgentdArgs`; or this very binary, `/proc/self/exe`, when
//! the agent runs in `berth` itself), with the agent's configuration and environment,
//! in a process group of its own. The child runs [`follow::once`] and writes one JSON line on stdout, a
//! [`WorkerResult`]; its log goes to the agent's stderr. What the pass used is given
//! back to the system when it ends, and a pass that crashes takes only itself down.
//!
//! The API's `GET /v1/plan` runs the same way (`--pass-plan`): a plan pulls image
//! metadata from registries, and the agent stays as small after it. So do the health
//! prober's rounds (`--pass-probe`, `reconcile::prober`): a probe enters namespaces and
//! runs the OCI runtime's exec.
//!
//! The child dies with the agent (`PR_SET_PDEATHSIG`), so that a killed agent leaves no
//! pass running under the next one: the crash semantics are those of one process. On
//! SIGTERM the child finishes the step in flight, starts no other, and reports.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::agent_state::FindingNote;
use super::executor::StepResult;
use super::follow::{self, FollowError, FollowOptions, FollowReport, PassResult};
use super::model::{Action, Revision};
use super::pass::{self, Env, Input, LockWait, PassError, PlanReport, Registry};
use super::prober::ProbeOutcome;
use crate::source::applied::{Applied, AppliedError};
use crate::source::checkout::Revisions;
use crate::telemetry::metrics::{PassSamples, PullLog, StepSample};
use crate::util::error_chain;

/// The hidden flag of `berth agent` that runs one pass as the agent's child.
pub const FLAG: &str = "--pass-worker";
/// With [`FLAG`]: fetch before the pass (without it, the pass runs on the revision
/// applied before).
pub const FETCH_FLAG: &str = "--pass-fetch";
/// With [`FLAG`]: no pass, the plan of the revision applied last ([`plan_applied`]).
pub const PLAN_FLAG: &str = "--pass-plan";
/// With [`FLAG`]: no pass, a round of the health probes that are due
/// (`reconcile::host::probe_round`).
pub const PROBE_FLAG: &str = "--pass-probe";

/// With [`FLAG`]: the fingerprint of the node configuration the agent checked
/// ([`config_fingerprint`]); a pass refuses to run on another.
pub const CONFIG_FLAG: &str = "--pass-config";

/// The SHA-256 of the node configuration file, hex; none without a file.
pub fn config_fingerprint(path: Option<&std::path::Path>) -> Option<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path?).ok()?;
    Some(hex::encode(Sha256::digest(&bytes)))
}

impl PassCommand {
    /// Passes keep to the node configuration as it is now (its fingerprint).
    pub fn pinned_to(mut self, config: Option<&std::path::Path>) -> Self {
        if let Some(fp) = config_fingerprint(config) {
            self.args.push(format!("{CONFIG_FLAG}={fp}").into());
        }
        self
    }
}

/// Refuses `job` without running it: its result, an error saying `why`, on stdout.
pub fn refuse(job: Job, why: String) -> std::io::Result<()> {
    let mut line = match job {
        Job::Pass { .. } => {
            serde_json::to_vec(&WorkerResult::Err(PassFailure::Failed { message: why }))
        }
        Job::Plan => serde_json::to_vec(&PlanResult::Err(PlanFailure::Failed { message: why })),
        Job::Probe { .. } => {
            serde_json::to_vec(&ProbeOutcome::Err(PassFailure::Failed { message: why }))
        }
    }
    .map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&line)?;
    out.flush()
}

/// How long a plan for `GET /v1/plan` may take before its process is killed.
const PLAN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);
/// How long a round of probes may take before its process is killed: each probe is
/// bounded by its check's timeout, but many hanging ones, a few at a time, add up.
const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// What a child of the agent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// One pass; `observe` plans only; `fetch` fetches first.
    Pass { observe: bool, fetch: bool },
    /// The plan of the revision applied last.
    Plan,
    /// A round of the health probes that are due; none with `observe` (observe mode),
    /// where no probe may run in a container or write its health file.
    Probe { observe: bool },
}

/// What happened at the source, as the controller needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub url: String,
    pub follows: String,
    #[serde(default)]
    pub fetched: Option<String>,
    /// Why the fetch failed for a while (the server, the network).
    #[serde(default)]
    pub unavailable: Option<String>,
    /// Why the fetch failed for a reason that does not pass by itself (a credential, a
    /// host key, a repository or ref that is not there).
    #[serde(default)]
    pub failed: Option<String>,
    #[serde(default)]
    pub refused: Option<String>,
}

impl SourceSummary {
    /// Why the fetch failed, whichever way.
    pub fn fetch_error(&self) -> Option<&str> {
        self.unavailable.as_deref().or(self.failed.as_deref())
    }
}

/// One pass, as the controller needs it, with the whole report kept as JSON for the
/// API (`POST /v1/reconcile`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassRun {
    pub source: SourceSummary,
    /// The commit the pass ran on.
    #[serde(default)]
    pub revision: Option<String>,
    /// `converged`, `not-converged` or `observed`.
    pub result: String,
    #[serde(default)]
    pub message: Option<String>,
    /// A step ran (something changed on the host).
    pub changed: bool,
    /// When a crash-loop backoff ends (unix seconds), if one is waited for.
    #[serde(default)]
    pub next_pass: Option<u64>,
    /// The newest revision applied and every container converged.
    pub converged: bool,
    /// The policy's findings of the containers judged (violations, waived), by name;
    /// none when no tree was judged.
    #[serde(default)]
    pub findings: Option<BTreeMap<String, Vec<FindingNote>>>,
    pub report: serde_json::Value,
    /// The steps and image pulls of the pass, for the agent's metrics.
    #[serde(default)]
    pub samples: PassSamples,
}

/// A pass that did not come to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PassFailure {
    /// The fetch failed and no revision was ever applied: a source outage.
    #[error("{message}")]
    Fetch { message: String },
    /// Something after the fetch failed (the pass, a checkout, a record).
    #[error("{message}")]
    Failed { message: String },
    /// The pass's process could not run or ended without a result.
    #[error("{message}")]
    Crashed { message: String },
}

/// What the child writes on stdout.
pub type WorkerResult = Result<PassRun, PassFailure>;

/// The controller's view of a report: its result, a sentence, what changed. Pure.
pub fn summarize(report: &FollowReport) -> PassRun {
    let (result, message) = describe(report);
    let (changed, next_pass) = match &report.pass {
        // Something done to the host: a step that ran and succeeded (a report step
        // runs too, but does nothing).
        Some(PassResult::Applied(r)) => (
            r.steps.iter().any(|s| {
                s.result == StepResult::Done && !matches!(s.step.action, Action::Report { .. })
            }),
            r.next_pass.map(|t| t.0),
        ),
        _ => (false, None),
    };
    let judged = match &report.pass {
        Some(PassResult::Applied(r)) => Some(&r.findings),
        Some(PassResult::Observed(p)) => Some(&p.findings),
        None => None,
    };
    let findings = judged.map(|all| {
        all.iter()
            .map(|(name, fs)| {
                (
                    name.clone(),
                    fs.iter().map(FindingNote::of).collect::<Vec<_>>(),
                )
            })
            .filter(|(_, fs)| !fs.is_empty())
            .collect()
    });
    let steps = match &report.pass {
        Some(PassResult::Applied(r)) => r
            .steps
            .iter()
            .map(|s| {
                // A report step does nothing: a point, with its reason as the error.
                let report = matches!(s.step.action, Action::Report { .. });
                let started = s.started.filter(|_| !report);
                StepSample {
                    action: s.step.action.verb().to_string(),
                    result: step_result(&s.result).to_string(),
                    container: super::executor::container_of(&s.step.action).map(str::to_string),
                    error: s
                        .result
                        .error()
                        .or_else(|| report.then(|| s.step.reason.clone())),
                    started_ns: started.map(crate::telemetry::otlp::unix_nanos),
                    took_ns: started
                        .and(s.duration_ms)
                        .map(|ms| ms.saturating_mul(1_000_000)),
                }
            })
            .collect(),
        // Observe mode: the plan's steps, none run.
        Some(PassResult::Observed(p)) => p
            .plan
            .steps
            .iter()
            .map(|s| StepSample {
                action: s.action.verb().to_string(),
                result: super::executor::observed_result(s).to_string(),
                container: super::executor::container_of(&s.action).map(str::to_string),
                error: matches!(s.action, Action::Report { .. }).then(|| s.reason.clone()),
                started_ns: None,
                took_ns: None,
            })
            .collect(),
        None => Vec::new(),
    };
    let s = &report.source;
    PassRun {
        source: SourceSummary {
            url: s.url.clone(),
            follows: s.follows.clone(),
            fetched: s.fetched.clone(),
            unavailable: s.unavailable.clone(),
            failed: s.failed.clone(),
            refused: s.refused.clone(),
        },
        revision: report.revision.as_ref().map(|r| r.commit.clone()),
        result: result.to_string(),
        message,
        changed,
        next_pass,
        // One verdict: `converged` is true exactly when the result says so (a restart
        // waiting for its crash-loop backoff is applied, but not converged).
        converged: result == "converged",
        findings,
        report: serde_json::to_value(report).unwrap_or(serde_json::Value::Null),
        samples: PassSamples {
            steps,
            pulls: Vec::new(),
            trace_id: crate::telemetry::pass_trace().map(str::to_string),
        },
    }
}

/// A step's result as its report names it.
fn step_result(r: &StepResult) -> &'static str {
    match r {
        StepResult::Done => "done",
        StepResult::Failed(_) => "failed",
        StepResult::Refused(_) => "refused",
        StepResult::Skipped(_) => "skipped",
        StepResult::Reported => "reported",
        StepResult::Deferred(_) => "deferred",
    }
}

/// `converged`, `not-converged` or `observed`, and a sentence.
fn describe(report: &FollowReport) -> (&'static str, Option<String>) {
    let source_note = report
        .source
        .unavailable
        .as_ref()
        .map(|e| format!("source unavailable: {e}"))
        .or_else(|| {
            report
                .source
                .failed
                .as_ref()
                .map(|e| format!("cannot fetch: {e}"))
        })
        .or_else(|| {
            report
                .source
                .refused
                .as_ref()
                .map(|r| format!("revision refused: {r}"))
        });
    match &report.pass {
        None => (
            "not-converged",
            source_note.or_else(|| Some("no revision to apply".into())),
        ),
        // What `apply` would do and why, one clause each (`would recreate web: command
        // changed`), after what happened at the source.
        Some(PassResult::Observed(p)) => {
            let would: Vec<String> = p.would().iter().map(ToString::to_string).collect();
            let plan = if would.is_empty() {
                "would change nothing: the host matches the revision".to_string()
            } else {
                would.join("; ")
            };
            let parts: Vec<String> = source_note.into_iter().chain([plan]).collect();
            ("observed", Some(parts.join("; ")))
        }
        Some(PassResult::Applied(r)) => {
            // Each with why, so that the one line a status or an event shows says it.
            let not_applied: Vec<String> = r
                .containers
                .iter()
                .filter_map(|(n, c)| c.outcome.why_not().map(|w| format!("{n}: {w}")))
                .collect();
            let mut parts = Vec::new();
            if let Some(n) = source_note {
                parts.push(n);
            }
            if !not_applied.is_empty() {
                parts.push(not_applied.join("; "));
            }
            if !r.converged && not_applied.is_empty() {
                parts.push("waiting for a crash-loop backoff".into());
            }
            if report.converged() && r.converged {
                ("converged", None)
            } else {
                ("not-converged", Some(parts.join("; ")))
            }
        }
    }
}

/// Runs one pass in this process.
pub fn in_process(env: &Env<'_>, observe: bool, fetch: bool) -> WorkerResult {
    let mut waiting = |who: &str| tracing::info!(target: "agent", "{who}");
    let wait = LockWait {
        command: "berth agent",
        timeout: std::time::Duration::from_secs(3600),
        waiting: &mut waiting,
    };
    let opts = FollowOptions {
        node: None,
        observe,
        fetch_attempts: u32::from(fetch),
    };
    // The pulls are counted as they happen, and reported with the result; the step
    // log lines carry the pass's trace, which the agent's spans of the pass are in.
    let pulls = PullLog::default();
    crate::telemetry::start_pass_trace();
    let env = &Env {
        pulls: Some(&pulls),
        ..*env
    };
    match follow::once(env, &opts, wait, &mut |_, _| {}, &mut |_| {}) {
        Ok(report) => {
            if let Some(PassResult::Observed(p)) = &report.pass {
                for step in &p.plan.steps {
                    super::executor::log_observed(&p.plan.revision.id, step);
                }
                // Observe mode's report in words: what `apply` would do, and why.
                let revision = p.plan.revision.id.as_str();
                for w in p.would() {
                    tracing::info!(target: "agent", revision, action = %w.action, "{w}");
                }
            }
            let mut run = summarize(&report);
            run.samples.pulls = pulls.take();
            Ok(run)
        }
        Err(e) => {
            let message = error_chain(&e);
            Err(
                if matches!(e, FollowError::NoRevision { .. } | FollowError::Fetch(_)) {
                    PassFailure::Fetch { message }
                } else {
                    PassFailure::Failed { message }
                },
            )
        }
    }
}

/// Set by SIGTERM in a pass's process: finish the step in flight, start no other.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether the pass should start no further step (its process got SIGTERM).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// The child's side: dies with the agent, does its job, writes the result as one line.
pub fn serve(env: &Env<'_>, agent_pid: u32, job: Job) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(std::io::Error::from)?;
    // The agent may have died before the line above: then this process has another
    // parent already, and nothing would kill it.
    if std::os::unix::process::parent_id() != agent_pid {
        return Err(std::io::Error::other(
            "the agent that started this pass is gone",
        ));
    }
    {
        use tokio::signal::unix::{SignalKind, signal};
        let _guard = env.rt.enter();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // A hangup does not end a pass (the agent takes it as "fetch now").
        let mut hup = signal(SignalKind::hangup())?;
        env.rt.spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!(target: "agent", "stopping after the step in flight");
            STOPPING.store(true, Ordering::Relaxed);
        });
        env.rt
            .spawn(async move { while hup.recv().await.is_some() {} });
    }
    let mut line = match job {
        Job::Pass { observe, fetch } => {
            let result = in_process(env, observe, fetch);
            // The node's audit report, whatever the pass did (`trust::live`, `GET
            // /v1/audit`), made here rather than in the agent so that the agent stays
            // small between passes.
            crate::trust::live::after_pass(env.loaded);
            serde_json::to_vec(&result)
        }
        Job::Plan => serde_json::to_vec(&plan_result(env)),
        // Observe mode changes nothing on the host: a probe would run a process in the
        // container and write its health file. The round is empty, and due again only
        // after a pass or at the resync.
        Job::Probe { observe: true } => serde_json::to_vec(&ProbeOutcome::Ok(Default::default())),
        Job::Probe { observe: false } => serde_json::to_vec(&probe_round(env)),
    }
    .map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&line)?;
    out.flush()
}

/// How the agent starts a pass's process: the `berth` binary and the arguments before
/// `--pass-worker` (the global options and `agent`, `--observe` when given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassCommand {
    pub program: PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

impl PassCommand {
    /// This very process's binary and arguments: `berth agent` running the agent itself.
    pub fn this_process() -> PassCommand {
        PassCommand {
            program: PathBuf::from("/proc/self/exe"),
            args: std::env::args_os()
                .skip(1)
                .filter(|a| {
                    !a.to_str().is_some_and(|s| {
                        s.starts_with(FLAG)
                            || s.starts_with(CONFIG_FLAG)
                            || s == FETCH_FLAG
                            || s == PLAN_FLAG
                            || s == PROBE_FLAG
                    })
                })
                .collect(),
        }
    }
}

/// The command of this agent's passes, set once when it starts ([`set_command`]).
static COMMAND: std::sync::OnceLock<PassCommand> = std::sync::OnceLock::new();

/// Sets how this agent starts its passes (the first call wins).
pub fn set_command(command: PassCommand) {
    let _ = COMMAND.set(command);
}

fn command() -> PassCommand {
    COMMAND
        .get()
        .cloned()
        .unwrap_or_else(PassCommand::this_process)
}

/// The agent's side of a pass: runs it as a child and reads its result. `stop` is
/// polled while the child runs; once true, the child is asked (SIGTERM) to end after
/// its step.
pub fn pass_in_child(fetch: bool, stop: &dyn Fn() -> bool) -> WorkerResult {
    let extra: &[&str] = if fetch { &[FETCH_FLAG] } else { &[] };
    in_child(extra, stop, None).unwrap_or_else(|e| Err(PassFailure::Crashed { message: e.0 }))
}

/// The agent's side of `GET /v1/plan`.
pub fn plan_in_child() -> PlanResult {
    in_child(&[PLAN_FLAG], &|| false, Some(PLAN_DEADLINE))
        .unwrap_or_else(|e| Err(PlanFailure::Failed { message: e.0 }))
}

/// The agent's side of a round of health probes (`reconcile::prober`). `stop` is
/// polled while it runs; once true, the round starts no further probe.
pub fn probe_in_child(stop: &dyn Fn() -> bool) -> ProbeOutcome {
    in_child(&[PROBE_FLAG], stop, Some(PROBE_DEADLINE))
        .unwrap_or_else(|e| Err(PassFailure::Crashed { message: e.0 }))
}

/// The child's side of a round of health probes.
fn probe_round(env: &Env<'_>) -> ProbeOutcome {
    super::host::probe_round(env.loaded, &|| !stopping()).map_err(|e| PassFailure::Failed {
        message: error_chain(&e),
    })
}

/// A child that ended without a result: why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Crash(String);

/// Runs `/proc/self/exe` with the agent's own arguments, `--pass-worker=<pid>` and
/// `extra`, and reads the last JSON line it writes.
fn in_child<T: serde::de::DeserializeOwned>(
    extra: &[&str],
    stop: &dyn Fn() -> bool,
    deadline: Option<std::time::Duration>,
) -> Result<T, Crash> {
    run_child(&command(), extra, stop, deadline)
}

/// [`in_child`] with `pass` as the command.
fn run_child<T: serde::de::DeserializeOwned>(
    pass: &PassCommand,
    extra: &[&str],
    stop: &dyn Fn() -> bool,
    deadline: Option<std::time::Duration>,
) -> Result<T, Crash> {
    let started = std::time::Instant::now();
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(&pass.program);
    // A process group of its own: a terminal's Ctrl-C or hangup, sent to the agent's
    // group, does not cut a step short; the agent tells it to stop (SIGTERM), and its
    // death takes the pass with it (PR_SET_PDEATHSIG).
    cmd.process_group(0);
    cmd.args(&pass.args)
        .arg(format!("{FLAG}={}", std::process::id()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|e| {
        Crash(format!(
            "cannot start the pass's process {}: {e}",
            pass.program.display()
        ))
    })?;
    let Some(mut stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Crash("the pass's process has no stdout".into()));
    };
    // Read the result on a thread while this one watches for a stop: each line that
    // may be the result is sent as it comes, so that a process the pass left behind
    // holding the pipe open cannot keep the agent waiting for an end of file.
    let (lines, results) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        // A result is a few hundred KiB at most; more is not a result.
        let mut capped = std::io::BufReader::new((&mut stdout).take(64 << 20));
        let mut line = String::new();
        while capped.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.starts_with('{') && lines.send(std::mem::take(&mut line)).is_err() {
                break;
            }
            line.clear();
        }
        // Drain whatever is left so that the child never blocks on a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let mut asked = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if !asked && stop() {
            asked = true;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if deadline.is_some_and(|d| started.elapsed() > d) {
            // A plan that hangs (a registry that trickles) is not waited for forever.
            let _ = child.kill();
            let _ = child.wait();
            return Err(Crash(format!(
                "the pass's process did not finish within {}",
                humantime::format_duration(deadline.unwrap_or_default())
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    .map_err(|e| Crash(format!("cannot wait for the pass's process: {e}")))?;
    // The result is the last line; anything the pass printed before it is not. Its
    // lines are all in once the pipe closes, or shortly after the process ended.
    let mut last = None;
    while let Ok(l) = results.recv_timeout(std::time::Duration::from_secs(2)) {
        last = Some(l);
    }
    match last.map(|l| serde_json::from_str::<T>(&l)) {
        Some(Ok(result)) => Ok(result),
        Some(Err(e)) => Err(Crash(format!("the pass's result is unreadable: {e}"))),
        None => Err(Crash(match (status.code(), status.signal()) {
            (_, Some(sig)) => format!("the pass's process was killed by signal {sig}"),
            (Some(code), _) => format!("the pass's process exited with {code} and no result"),
            _ => "the pass's process ended with no result".into(),
        })),
    }
}

/// Why the plan of the applied revision could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no revision is applied yet: the agent has not converged this node from its source")]
    NoRevision,
    #[error(transparent)]
    Applied(#[from] AppliedError),
    #[error("revision {commit} is not checked out at {}", path.display())]
    NotCheckedOut { commit: String, path: PathBuf },
    #[error(transparent)]
    Pass(#[from] PassError),
}

/// `GET /v1/plan`'s answer when there is no plan, as the API sorts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PlanFailure {
    /// Nothing to plan now (no revision applied, or its checkout is gone): 409.
    #[error("{message}")]
    Conflict { message: String },
    /// The applied revision's spec tree has errors, as `berth validate` prints them: 422.
    #[error("the applied revision's spec tree has {} errors", errors.len())]
    Invalid { errors: Vec<String> },
    /// Anything else: 500.
    #[error("{message}")]
    Failed { message: String },
}

/// The plan (`PlanReport` as JSON), or why there is none.
pub type PlanResult = Result<serde_json::Value, PlanFailure>;

impl From<PlanError> for PlanFailure {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::NoRevision | PlanError::NotCheckedOut { .. } => PlanFailure::Conflict {
                message: error_chain(&e),
            },
            PlanError::Pass(PassError::Invalid { errors }) => PlanFailure::Invalid { errors },
            e => PlanFailure::Failed {
                message: error_chain(&e),
            },
        }
    }
}

fn plan_result(env: &Env<'_>) -> PlanResult {
    let report = plan_applied(env)?;
    serde_json::to_value(report).map_err(|e| PlanFailure::Failed {
        message: format!("cannot write the plan: {e}"),
    })
}

/// What a pass would do now on the revision applied last.
pub fn plan_applied(env: &Env<'_>) -> Result<PlanReport, PlanError> {
    let state_dir = &env.loaded.config.runtime.state_dir;
    let applied = Applied::load(state_dir)?.ok_or(PlanError::NoRevision)?;
    let info = &applied.revision;
    let dir = Revisions::new(&state_dir.join("source")).path_of(&info.commit);
    let spec_path = info.path.trim_matches('/');
    let root = if spec_path.is_empty() {
        dir.clone()
    } else {
        dir.join(spec_path)
    };
    if !dir.is_dir() {
        return Err(PlanError::NotCheckedOut {
            commit: info.commit.clone(),
            path: dir,
        });
    }
    let input = Input {
        path: &root,
        node: None,
        prune_volumes: false,
        revision: Some(Revision {
            id: info.commit.clone(),
            source: format!("{}#{}", info.url, info.follows),
        }),
        retry_failed: false,
    };
    Ok(pass::plan(env, &input, Registry::Online)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> PassCommand {
        PassCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        }
    }

    #[test]
    fn a_process_left_holding_the_pipe_does_not_keep_the_agent_waiting() {
        let started = std::time::Instant::now();
        let got: Result<serde_json::Value, Crash> = run_child(
            &sh("echo 'not a result'; echo '{\"a\": 1}'; sleep 30 & exit 0"),
            &[],
            &|| false,
            None,
        );
        assert_eq!(got.expect("a result")["a"], 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_process_past_its_deadline_is_killed_and_one_with_no_result_says_how_it_ended() {
        let got: Result<serde_json::Value, Crash> = run_child(
            &sh("sleep 30"),
            &[],
            &|| false,
            Some(std::time::Duration::from_millis(300)),
        );
        assert!(got.expect_err("killed").0.contains("did not finish within"));
        let got: Result<serde_json::Value, Crash> = run_child(&sh("exit 7"), &[], &|| false, None);
        assert!(got.expect_err("no result").0.contains("exited with 7"));
    }

    #[test]
    fn an_observed_plan_reports_its_steps_none_run() {
        use crate::reconcile::model::{Plan, ReportKind, Revision, Step, Timestamp};
        let step = |id, action| Step {
            id,
            action,
            reason: "the policy blocks it".into(),
            needs: Vec::new(),
            not_before: None,
            stage: 0,
        };
        let plan = Plan {
            revision: Revision {
                id: "abc".into(),
                source: "r".into(),
            },
            actual_generation: 0,
            now: Timestamp(0),
            steps: vec![
                step(
                    1,
                    Action::Pull {
                        image: "i".into(),
                        digest: "sha256:00".into(),
                    },
                ),
                step(
                    2,
                    Action::Report {
                        name: "db".into(),
                        kind: ReportKind::Blocked,
                    },
                ),
            ],
        };
        let report = FollowReport {
            source: follow::SourceReport::of("file:///r".into(), "branch main".into()),
            revision: None,
            pass: Some(PassResult::Observed(Box::new(
                super::super::pass::PlanReport {
                    plan,
                    containers: Default::default(),
                    unknown: Default::default(),
                    findings: Default::default(),
                    next_pass: None,
                },
            ))),
            gc: None,
        };
        let run = summarize(&report);
        assert_eq!(run.result, "observed");
        let got: Vec<(&str, &str, Option<&str>, Option<&str>)> = run
            .samples
            .steps
            .iter()
            .map(|s| {
                assert_eq!((s.started_ns, s.took_ns), (None, None));
                (
                    s.action.as_str(),
                    s.result.as_str(),
                    s.container.as_deref(),
                    s.error.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("pull", "planned", None, None),
                (
                    "report",
                    "reported",
                    Some("db"),
                    Some("the policy blocks it")
                ),
            ]
        );
    }

    #[test]
    fn a_result_survives_its_json_line() {
        let run: WorkerResult = Ok(PassRun {
            source: SourceSummary {
                url: "file:///r".into(),
                follows: "branch main".into(),
                fetched: Some("abc".into()),
                unavailable: None,
                failed: None,
                refused: Some("unsigned".into()),
            },
            revision: Some("abc".into()),
            result: "not-converged".into(),
            message: Some("revision refused: unsigned".into()),
            changed: true,
            next_pass: Some(17),
            converged: false,
            findings: None,
            report: serde_json::json!({"source": {"url": "file:///r"}}),
            samples: PassSamples {
                steps: vec![StepSample {
                    action: "pull".into(),
                    result: "done".into(),
                    ..Default::default()
                }],
                pulls: vec![crate::telemetry::metrics::PullSample {
                    ok: true,
                    bytes: 42,
                    seconds: 0.5,
                }],
                ..Default::default()
            },
        });
        let line = serde_json::to_string(&run).unwrap();
        assert!(!line.contains('\n'));
        let back: WorkerResult = serde_json::from_str(&line).unwrap();
        let back = back.unwrap();
        assert_eq!(back.source.refused.as_deref(), Some("unsigned"));
        assert_eq!(back.next_pass, Some(17));
        assert!(back.changed && !back.converged);
        assert_eq!(back.samples.steps[0].action, "pull");
        assert_eq!(back.samples.pulls[0].bytes, 42);
        // A result written before the samples existed still reads.
        let old: WorkerResult = serde_json::from_str(
            r#"{"Ok": {"source": {"url": "u", "follows": "f"}, "result": "converged", "changed": false, "converged": true, "report": null}}"#,
        )
        .unwrap();
        assert_eq!(old.unwrap().samples, PassSamples::default());

        for f in [
            PassFailure::Fetch {
                message: "down".into(),
            },
            PassFailure::Failed {
                message: "bad".into(),
            },
            PassFailure::Crashed {
                message: "sig 9".into(),
            },
        ] {
            let line = serde_json::to_string(&Err::<PassRun, _>(f.clone())).unwrap();
            let back: WorkerResult = serde_json::from_str(&line).unwrap();
            assert_eq!(back.unwrap_err(), f);
        }
    }
}
