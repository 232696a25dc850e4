//! The agent's controller: level-triggered, one pass at a time, for months.
//!
//! Each pass is a `follow` of the node's source (fetch, verify, check out, the library
//! pass), run by the `runner` the caller gives: the daemon runs it in a process of its
//! own (`reconcile::worker`), so that the agent stays small between passes. What wakes
//! it:
//! - the fetch timer: `source.interval` with ±10 % jitter, so that a fleet does not
//!   fetch in step;
//! - a container exit: the shims' exit files, watched with inotify;
//! - the resync timer (`runtime.resync`), and the end of a crash-loop backoff the last
//!   pass scheduled;
//! - `berth reconcile` (the API), which fetches at once and waits for the pass.
//!
//! A fetch that fails is tried again with a doubling delay (from `min(source.retry_backoff, interval)`
//! up to the interval); a pass that did not converge is run again the same way (up to
//! the resync). A permanent failure is reported once per revision. `berth suspend`
//! stops passes (it outlives a restart: `state/suspended`) until `berth resume`.
//! SIGTERM and SIGINT end the agent after the step in flight (the pass's process
//! finishes it, starts no other, and reports); the containers keep running under their
//! shims, and the next agent adopts them.
//!
//! The loop is a plain thread: a pass blocks while its process runs; the API and the
//! signal handlers run on the async runtime and talk to the loop through [`Handle`].

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

use super::agent_state::{self, AgentState, FetchState, PassState};
use super::events::{Event, EventKind, EventLog};
use super::pass::Env;
use super::worker::{PassFailure, PassRun, SourceSummary, WorkerResult};
use crate::source::applied::Applied;
use crate::telemetry::metrics::{FetchEnd, FindingKey, Metrics, PassEnd, PassSamples, PassTrigger};
use crate::util::rfc3339;
// What a repository's author controls (a probe's output, a reason) reaches the log as
// one line, its control characters escaped.
use berth_spec::diag::printable;

/// The first delay before a failed fetch or pass is tried again (or the interval, if
/// shorter) when the node has no `[source]` to say (`source.retry_backoff`); it
/// doubles up to the interval (fetch) or the resync (pass).
const RETRY_BASE: Duration = Duration::from_secs(5);
/// How long a burst of container exits is gathered into one pass.
const EXIT_DEBOUNCE: Duration = Duration::from_millis(200);

/// What wakes the controller.
#[derive(Debug)]
pub enum Trigger {
    /// A container's exit file appeared (its instance id).
    Exited(String),
    /// Fetch now and run a pass; the reply is the pass's result.
    Reconcile(oneshot::Sender<Result<PassOutcome, NotRun>>),
    Suspend(oneshot::Sender<()>),
    Resume(oneshot::Sender<()>),
    /// The source changed (a verified webhook, the local watch): fetch now and run a
    /// pass. The text says what saw it, for the log.
    SourceChanged(String),
    /// A revision was announced (MQTT), maybe naming its commit: fetch now and run a
    /// pass, unless the commit is the one fetched last (a pass fetched it while the
    /// announcement waited).
    Announced(String, Option<String>),
    /// A container's health changed (the prober): run a pass, without a fetch. The text
    /// names the container and its new health.
    HealthChanged(String),
    /// SIGTERM, SIGINT: end after the pass in flight.
    Stop,
}

/// Why a pass asked for through the API did not run, or did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRun {
    #[error("the agent is suspended; `berth resume` first")]
    Suspended,
    #[error("the agent is stopping")]
    Stopping,
    /// The pass could not run (exit 3's kind of failure), with its cause chain.
    #[error("{message}")]
    Failed { message: String },
}

/// What a pass asked for through the API came to.
#[derive(Debug, Clone, Serialize)]
pub struct PassOutcome {
    /// The newest revision applied and every container converged.
    pub converged: bool,
    /// `converged`, `not-converged`, `failed`, `observed`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The pass's report (`reconcile::follow::FollowReport`) as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

/// The controller as the API and the signal handlers see it.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: Sender<Trigger>,
    /// The node's crash-loop backoff, as the rows show it.
    backoff: super::backoff::RestartBackoff,
    events: broadcast::Sender<Event>,
    log: Arc<EventLog>,
    state_dir: PathBuf,
    /// The agent's metrics: the passes count into them, `/metrics` serves them.
    metrics: Arc<Metrics>,
    /// The trace exporter, when `telemetry.otlp_endpoint` is set: each pass's spans.
    traces: Arc<std::sync::OnceLock<crate::telemetry::otlp::Exporter>>,
    /// The MQTT channel's state, when `source.notify` is set.
    notify: Arc<std::sync::OnceLock<Arc<std::sync::Mutex<crate::source::mqtt::ChannelState>>>>,
    /// Passes ended so far: it changes after each pass's state is stored.
    passes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Handle {
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The node's crash-loop backoff (`runtime.restart_backoff`, `…_max`).
    pub fn backoff(&self) -> super::backoff::RestartBackoff {
        self.backoff
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sends each pass's spans to `exporter` from now on (once; a second is ignored).
    pub fn export_traces(&self, exporter: crate::telemetry::otlp::Exporter) {
        let _ = self.traces.set(exporter);
    }

    /// Shows `state` as the MQTT channel's (once; a second is ignored).
    pub fn set_notify(&self, state: Arc<std::sync::Mutex<crate::source::mqtt::ChannelState>>) {
        let _ = self.notify.set(state);
    }

    /// The MQTT channel's state, when there is one.
    pub fn notify_state(&self) -> Option<crate::source::mqtt::ChannelState> {
        self.notify.get()?.lock().ok().map(|s| s.clone())
    }

    /// The count of passes ended, which changes after each pass's state is stored.
    pub fn passes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.passes.subscribe()
    }

    /// Sends a trigger; false when the controller has ended.
    pub fn send(&self, t: Trigger) -> bool {
        self.tx.send(t).is_ok()
    }

    /// Live events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The events recorded, since `since` (RFC 3339) when given.
    pub fn recorded(&self, since: Option<&str>) -> Vec<Event> {
        self.log.read(since)
    }

    /// Records an event and sends it to live subscribers.
    pub fn emit(&self, event: Event) {
        if let Err(e) = self.log.append(&event) {
            tracing::warn!(target: "agent", error = %e, "cannot record an event");
        }
        log_event(&event);
        let _ = self.events.send(event);
    }
}

/// An event's log line, with its revision and container as fields when it has them.
fn log_event(event: &Event) {
    let revision = event.revision.as_deref();
    let container = event.container.as_deref();
    match event.kind {
        EventKind::Warning => {
            tracing::warn!(target: "agent", reason = %event.reason, revision, container, "{}", printable(&event.message))
        }
        EventKind::Normal => {
            tracing::info!(target: "agent", reason = %event.reason, revision, container, "{}", printable(&event.message))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot record the agent's state")]
    State(#[from] agent_state::AgentStateError),
    #[error("cannot watch {} for container exits", .path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Makes the controller's handle and its trigger queue.
pub fn channel(
    state_dir: &Path,
    backoff: super::backoff::RestartBackoff,
) -> (Handle, Receiver<Trigger>) {
    let (tx, rx) = mpsc::channel();
    let (events, _) = broadcast::channel(256);
    (
        Handle {
            tx,
            backoff,
            events,
            log: Arc::new(EventLog::new(state_dir)),
            state_dir: state_dir.to_path_buf(),
            metrics: Arc::new(Metrics::new()),
            traces: Arc::default(),
            notify: Arc::default(),
            passes: Arc::new(tokio::sync::watch::channel(0).0),
        },
        rx,
    )
}

/// Runs the controller until a [`Trigger::Stop`] (or every sender is gone). `observe`:
/// the passes only plan (`--observe`, `agent.mode = "observe"`), and the controller
/// itself changes nothing outside the agent's own files either.
pub fn run(
    env: &Env<'_>,
    handle: &Handle,
    rx: &Receiver<Trigger>,
    runner: &dyn Fn(bool) -> WorkerResult,
    observe: bool,
) -> Result<(), ControllerError> {
    let cfg = &env.loaded.config;
    let state_dir = cfg.runtime.state_dir.clone();
    let interval = cfg
        .source
        .as_ref()
        .map_or(Duration::from_secs(30), |s| s.interval)
        .max(Duration::from_secs(1));
    let resync = cfg.runtime.resync.max(Duration::from_secs(1));
    let mut state = AgentState {
        schema_version: agent_state::SCHEMA_VERSION,
        pid: std::process::id(),
        started_at: rfc3339::now(),
        ..AgentState::load(&state_dir)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    state.stopped_at = None;
    // A pass a killed agent left unfinished is over.
    state.pass_since = None;
    // No `[source]` (a fresh install): nothing is fetched; the revision applied before,
    // if any, is still converged (after a reboot too).
    let has_source = cfg.source.is_some();
    state.no_source = !has_source;
    if !has_source {
        tracing::info!(target: "agent", "{}", agent_state::NO_SOURCE);
    }
    state.store(&state_dir)?;
    // An observing agent makes no directory outside its own: on a host where nothing
    // ran yet, there is no exit to watch.
    if !observe || state_dir.join("instances").is_dir() {
        watch_exits(&state_dir, handle.tx.clone())?;
    }
    handle.emit(Event::new(
        EventKind::Normal,
        "Started",
        format!("agent started (pid {})", state.pid),
    ));

    let now = Instant::now();
    let mut sched = Schedule {
        fetch_at: now,
        // Without a source no fetch starts the first pass: the resync does, at once,
        // so that what was applied before comes back at start (after a reboot).
        resync_at: if has_source { now + resync } else { now },
        due_at: None,
        fetch_failures: 0,
        pass_failures: 0,
        retry_base: cfg.source.as_ref().map_or(RETRY_BASE, |s| s.retry_backoff),
        fetching: has_source,
    };
    let mut reported = Reported::default();
    let mut first_pass = true;
    loop {
        let deadline = sched.next();
        let first = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(t) => Some(t),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut wake = Wake::default();
        let mut stop = false;
        let mut triggers: Vec<Trigger> = first.into_iter().collect();
        if matches!(triggers.first(), Some(Trigger::Exited(_))) {
            std::thread::sleep(EXIT_DEBOUNCE);
        }
        triggers.extend(rx.try_iter());
        for t in triggers {
            match t {
                Trigger::Stop => stop = true,
                Trigger::Exited(id) => wake.exited.push(id),
                Trigger::SourceChanged(why) => {
                    // Several at once make one fetch: the first is told.
                    if !wake.source {
                        tracing::info!(target: "agent", "{}: fetching now", printable(&why));
                    }
                    wake.source = true;
                }
                Trigger::Announced(why, commit) => {
                    let fetched = state.last_fetch.as_ref().and_then(|f| f.commit.as_deref());
                    match commit {
                        Some(c) if fetched.is_some_and(|f| f.eq_ignore_ascii_case(&c)) => {
                            tracing::info!(target: "agent", "{}: {} was fetched meanwhile; no fetch", printable(&why), c.get(..12).unwrap_or(&c));
                        }
                        _ => {
                            if !wake.source {
                                tracing::info!(target: "agent", "{}: fetching now", printable(&why));
                            }
                            wake.source = true;
                        }
                    }
                }
                Trigger::HealthChanged(why) => {
                    tracing::info!(target: "agent", "{}", printable(&why));
                    wake.health = true;
                }
                Trigger::Reconcile(reply) => wake.waiters.push(reply),
                Trigger::Suspend(reply) => {
                    set_suspended(&state_dir, true, handle);
                    let _ = reply.send(());
                }
                Trigger::Resume(reply) => {
                    set_suspended(&state_dir, false, handle);
                    sched.fetch_at = Instant::now();
                    let _ = reply.send(());
                }
            }
        }
        if stop {
            for w in wake.waiters {
                let _ = w.send(Err(NotRun::Stopping));
            }
            break;
        }
        if agent_state::suspended(&state_dir) {
            for w in wake.waiters.drain(..) {
                let _ = w.send(Err(NotRun::Suspended));
            }
            // Nothing runs while suspended; look again at the resync.
            sched.fetch_at = Instant::now() + resync;
            sched.resync_at = Instant::now() + resync;
            sched.due_at = None;
            continue;
        }
        let now = Instant::now();
        let never_applied = Applied::load(&state_dir).ok().flatten().is_none();
        let fetch = has_source
            && (!wake.waiters.is_empty()
                || wake.source
                || now >= sched.fetch_at
                // A node that never applied a revision fetches at every pass until one
                // applies; an observing one applies none, and keeps to its interval.
                || (never_applied && !observe));
        let pass_due = fetch
            || !wake.waiters.is_empty()
            || wake.health
            || !wake.exited.is_empty()
            || now >= sched.resync_at
            || sched.due_at.is_some_and(|d| now >= d);
        if !pass_due {
            continue;
        }
        if observe && never_applied && !fetch {
            // An observing agent applies nothing, so without a fetch it has no revision
            // to plan: it plans again at its next fetch.
            sched.resync_at = now + resync;
            sched.due_at = None;
            continue;
        }
        if !has_source && never_applied {
            // Nothing to converge to until the configuration names a source.
            for w in wake.waiters.drain(..) {
                let _ = w.send(Err(NotRun::Failed {
                    message: agent_state::NO_SOURCE.to_string(),
                }));
            }
            sched.resync_at = now + resync;
            sched.due_at = None;
            continue;
        }
        for id in &wake.exited {
            if let Some(e) = exited_event(&state_dir, id) {
                handle.emit(e);
            }
        }
        // `berth reconcile` tries failed updates again (an observing agent tries nothing).
        if !wake.waiters.is_empty() && !observe {
            super::rollback::forget_all(&state_dir);
        }
        let trigger = trigger_of(first_pass, &wake, fetch, now, &sched);
        first_pass = false;
        let outcome = one_pass(
            runner,
            handle,
            &mut state,
            &mut sched,
            &mut reported,
            (fetch, trigger),
            interval,
            resync,
        );
        store_or_warn(&state, &state_dir);
        handle.passes.send_modify(|n| *n += 1);
        for w in wake.waiters {
            let _ = w.send(outcome.clone());
        }
    }
    state.stopped_at = Some(rfc3339::now());
    store_or_warn(&state, &state_dir);
    handle.emit(Event::new(
        EventKind::Normal,
        "Stopped",
        "agent stopped; the containers keep running",
    ));
    Ok(())
}

/// What woke a pass, for the metrics: the most specific reason. Pure.
fn trigger_of(
    first: bool,
    wake: &Wake,
    fetch: bool,
    now: Instant,
    sched: &Schedule,
) -> PassTrigger {
    if first {
        PassTrigger::Start
    } else if !wake.waiters.is_empty() {
        PassTrigger::Api
    } else if wake.source {
        PassTrigger::Source
    } else if !wake.exited.is_empty() {
        PassTrigger::Exit
    } else if wake.health {
        PassTrigger::Health
    } else if fetch && now >= sched.fetch_at {
        PassTrigger::Interval
    } else if sched.due_at.is_some_and(|d| now >= d) {
        PassTrigger::Retry
    } else {
        PassTrigger::Resync
    }
}

/// Counts a pass in the metrics: its end, its steps and pulls, its fetch (when it
/// fetched), and the findings of the tree it judged.
fn count(
    metrics: &Metrics,
    trigger: PassTrigger,
    fetch: bool,
    result: &WorkerResult,
    took: Duration,
) {
    match result {
        Ok(run) => {
            metrics.pass(trigger, PassEnd::of(&run.result), took, &run.samples);
            if fetch && let Some(end) = fetch_end(&run.source) {
                metrics.fetch(end);
            }
            if let Some(findings) = &run.findings {
                metrics.findings(findings.values().flatten().map(|f| FindingKey {
                    rule: &f.rule,
                    severity: &f.severity,
                    status: &f.status,
                }));
            }
        }
        Err(failure) => {
            metrics.pass(trigger, PassEnd::Failed, took, &PassSamples::default());
            // The fetch itself failed (no revision was ever applied); a pass that
            // failed later or crashed says nothing sure of its fetch.
            if fetch && matches!(failure, PassFailure::Fetch { .. }) {
                metrics.fetch(FetchEnd::Failed);
            }
        }
    }
}

/// How a pass's fetch ended, as its source summary says; none when it says nothing.
fn fetch_end(s: &SourceSummary) -> Option<FetchEnd> {
    if s.unavailable.is_some() {
        Some(FetchEnd::Unavailable)
    } else if s.failed.is_some() {
        Some(FetchEnd::Failed)
    } else if s.refused.is_some() {
        Some(FetchEnd::Refused)
    } else if s.fetched.is_some() {
        Some(FetchEnd::Fetched)
    } else {
        None
    }
}

/// The containers a pass's report (a `FollowReport` as JSON) says it rolled back to
/// their last known good instance, with why.
fn rolled_back(report: &serde_json::Value) -> Vec<(String, String)> {
    let Some(containers) = report
        .pointer("/pass/containers")
        .and_then(|c| c.as_object())
    else {
        return Vec::new();
    };
    // Rolled back by this pass: it started the last good instance again (a pass after
    // that only keeps it).
    let restarted = |name: &str| {
        report
            .pointer("/pass/steps")
            .and_then(|s| s.as_array())
            .is_some_and(|steps| {
                steps.iter().any(|s| {
                    s.get("action").and_then(|a| a.as_str()) == Some("start")
                        && s.get("name").and_then(|n| n.as_str()) == Some(name)
                        && s.get("reason")
                            .and_then(|r| r.as_str())
                            .is_some_and(|r| r.starts_with("rolled back:"))
                })
            })
    };
    containers
        .iter()
        .filter(|(n, c)| {
            c.get("outcome").and_then(|o| o.as_str()) == Some("rolled_back") && restarted(n)
        })
        .map(|(n, c)| {
            let why = c.get("reason").and_then(|r| r.as_str()).unwrap_or_default();
            (n.clone(), why.to_string())
        })
        .collect()
}

/// Records the agent's state; a failure (a full disk, no file descriptor left) is
/// warned about and tried again after the next pass: it never ends the agent, whose
/// containers and passes do not depend on it.
fn store_or_warn(state: &AgentState, state_dir: &Path) {
    if let Err(e) = state.store(state_dir) {
        tracing::warn!(target: "agent", error = %crate::util::error_chain(&e), "cannot record the agent's state; trying again after the next pass");
    }
}

/// What woke one iteration.
#[derive(Default)]
struct Wake {
    exited: Vec<String>,
    /// A webhook or the local watch saw the source change.
    source: bool,
    /// The prober saw a container's health change.
    health: bool,
    waiters: Vec<oneshot::Sender<Result<PassOutcome, NotRun>>>,
}

/// When each timer fires next.
#[derive(Debug)]
struct Schedule {
    fetch_at: Instant,
    resync_at: Instant,
    /// A crash-loop backoff that ends, or a retry of a pass that did not converge.
    due_at: Option<Instant>,
    fetch_failures: u32,
    pass_failures: u32,
    /// `source.retry_backoff`: the first delay before a failed fetch or pass is tried
    /// again.
    retry_base: Duration,
    /// There is a source to fetch (`fetch_at` counts).
    fetching: bool,
}

impl Schedule {
    fn next(&self) -> Instant {
        let mut at = if self.fetching {
            self.fetch_at.min(self.resync_at)
        } else {
            self.resync_at
        };
        if let Some(d) = self.due_at {
            at = at.min(d);
        }
        at
    }
}

/// What was reported already, so a permanent failure is reported once per revision.
#[derive(Debug, Default)]
struct Reported {
    fetched: Option<String>,
    unavailable: Option<String>,
    refused: Option<String>,
    failed: Option<String>,
    /// The revision and report of the last observed pass that was told.
    observed: Option<String>,
}

/// One pass: run, record, schedule, report.
#[allow(clippy::too_many_arguments)]
fn one_pass(
    runner: &dyn Fn(bool) -> WorkerResult,
    handle: &Handle,
    state: &mut AgentState,
    sched: &mut Schedule,
    reported: &mut Reported,
    (fetch, trigger): (bool, PassTrigger),
    interval: Duration,
    resync: Duration,
) -> Result<PassOutcome, NotRun> {
    let started = rfc3339::now();
    // The status says a pass runs while it does.
    state.pass_since = Some(started.clone());
    store_or_warn(state, &handle.state_dir);
    let began = Instant::now();
    let began_at = std::time::SystemTime::now();
    let result = runner(fetch);
    count(&handle.metrics, trigger, fetch, &result, began.elapsed());
    if let Some(traces) = handle.traces.get() {
        traces.pass(&crate::telemetry::otlp::PassEnded::of(
            trigger,
            &result,
            began_at,
            began.elapsed(),
        ));
    }
    state.pass_since = None;
    let now = Instant::now();
    sched.resync_at = now + resync;
    sched.due_at = None;
    match result {
        Ok(run) => {
            if fetch {
                note_fetch(handle, state, sched, reported, &run.source, interval);
            }
            let PassRun {
                revision,
                result,
                message,
                changed,
                next_pass,
                converged,
                findings,
                report,
                ..
            } = run;
            if let Some(findings) = findings {
                state.findings = findings;
            }
            if result == "converged" {
                sched.pass_failures = 0;
                reported.failed = None;
                if changed {
                    handle.emit(with_revision(
                        Event::new(
                            EventKind::Normal,
                            "Applied",
                            message.clone().unwrap_or_else(|| "converged".into()),
                        ),
                        revision.as_deref(),
                    ));
                }
            } else if result == "not-converged" {
                sched.pass_failures += 1;
                let retry = backoff(sched.pass_failures, sched.retry_base, resync);
                sched.due_at = Some(now + retry);
                let key = format!("{revision:?}{message:?}");
                if changed || reported.failed.as_deref() != Some(&key) {
                    for (name, why) in rolled_back(&report) {
                        let mut e = Event::new(EventKind::Warning, "RolledBack", why);
                        e.container = Some(name);
                        handle.emit(with_revision(e, revision.as_deref()));
                    }
                    handle.emit(with_revision(
                        Event::new(
                            EventKind::Warning,
                            "NotApplied",
                            message.clone().unwrap_or_default(),
                        ),
                        revision.as_deref(),
                    ));
                    reported.failed = Some(key);
                }
            } else if result == "observed" {
                // What apply would do, told once per revision and plan.
                let key = format!("{revision:?}{message:?}");
                if reported.observed.as_deref() != Some(&key) {
                    handle.emit(with_revision(
                        Event::new(
                            EventKind::Normal,
                            "Observed",
                            message.clone().unwrap_or_default(),
                        ),
                        revision.as_deref(),
                    ));
                    reported.observed = Some(key);
                }
            }
            if let Some(at) = next_pass {
                let secs = at.saturating_sub(unix_now());
                let due = now + Duration::from_secs(secs);
                sched.due_at = Some(sched.due_at.map_or(due, |d| d.min(due)));
            }
            state.last_pass = Some(PassState {
                started_at: started,
                finished_at: rfc3339::now(),
                result: result.clone(),
                message: message.clone(),
                revision,
                next_at: Some(rfc3339::format(
                    unix_now() + sched.next().saturating_duration_since(now).as_secs(),
                )),
                // What apply would change: the `would` lines but those of containers
                // it would not apply (blocked, held, not evaluated).
                planned: report
                    .pointer("/pass/would")
                    .and_then(|w| w.as_array())
                    .map(|w| {
                        let n = w.iter().filter(|w| w["action"] != "not apply").count();
                        u32::try_from(n).unwrap_or(u32::MAX)
                    }),
            });
            Ok(PassOutcome {
                converged,
                result,
                message,
                report: Some(report),
            })
        }
        Err(failure) => {
            let message = failure.to_string();
            if fetch {
                if let PassFailure::Fetch { .. } = failure {
                    // The fetch itself failed, and no revision was ever applied.
                    note_fetch_error(handle, state, sched, reported, &message, interval);
                } else if let PassFailure::Crashed { .. } = failure {
                    // The pass's process could not say what it did: nothing is known
                    // of the fetch, and it is tried again with the pass.
                    sched.fetch_at =
                        now + backoff(sched.pass_failures + 1, sched.retry_base, interval);
                } else {
                    // The fetch went through, or the pass's process ended before it
                    // could say: what failed came after it (the pass, a checkout, a
                    // record): a degraded node, not a source outage.
                    sched.fetch_failures = 0;
                    sched.fetch_at = now + jitter(interval);
                    if reported.unavailable.take().is_some() {
                        handle.emit(Event::new(
                            EventKind::Normal,
                            "SourceAvailable",
                            "the source answers again",
                        ));
                    }
                    state.last_fetch = Some(FetchState {
                        at: rfc3339::now(),
                        commit: None,
                        error: None,
                        refused: None,
                        next_at: rfc3339::format(
                            unix_now() + sched.fetch_at.saturating_duration_since(now).as_secs(),
                        ),
                    });
                }
            }
            sched.pass_failures += 1;
            sched.due_at = Some(now + backoff(sched.pass_failures, sched.retry_base, resync));
            if reported.failed.as_deref() != Some(&message) {
                handle.emit(Event::new(
                    EventKind::Warning,
                    "PassFailed",
                    message.clone(),
                ));
                reported.failed = Some(message.clone());
            }
            state.last_pass = Some(PassState {
                started_at: started,
                finished_at: rfc3339::now(),
                result: "failed".into(),
                message: Some(message.clone()),
                revision: None,
                next_at: Some(rfc3339::format(
                    unix_now() + sched.next().saturating_duration_since(now).as_secs(),
                )),
                planned: None,
            });
            Err(NotRun::Failed { message })
        }
    }
}

/// The fetch's part of a report: the next fetch, the fetch state, its events.
fn note_fetch(
    handle: &Handle,
    state: &mut AgentState,
    sched: &mut Schedule,
    reported: &mut Reported,
    s: &SourceSummary,
    interval: Duration,
) {
    let now = Instant::now();
    // Unavailable (the server, the network) or failed (a credential, a repository that
    // is not there): either way the source gives nothing now, and is tried again.
    if let Some(error) = s.fetch_error() {
        sched.fetch_failures += 1;
        let retry = backoff(sched.fetch_failures, sched.retry_base, interval);
        sched.fetch_at = now + retry;
        if reported.unavailable.as_deref() != Some(error) {
            handle.emit(Event::new(
                EventKind::Warning,
                "SourceUnavailable",
                format!(
                    "{error}; trying again in {}",
                    humantime::format_duration(retry)
                ),
            ));
            reported.unavailable = Some(error.to_string());
        }
    } else {
        if reported.unavailable.take().is_some() {
            handle.emit(Event::new(
                EventKind::Normal,
                "SourceAvailable",
                "the source answers again",
            ));
        }
        sched.fetch_failures = 0;
        sched.fetch_at = now + jitter(interval);
    }
    if let Some(commit) = &s.fetched
        && reported.fetched.as_deref() != Some(commit)
    {
        handle.emit(
            Event::new(
                EventKind::Normal,
                "Fetched",
                format!("{} ({}): commit {commit}", s.url, s.follows),
            )
            .revision(commit.clone()),
        );
        reported.fetched = Some(commit.clone());
    }
    if let Some(why) = &s.refused {
        if reported.refused.as_deref() != Some(why) {
            let mut e = Event::new(EventKind::Warning, "RevisionRefused", why.clone());
            e.revision = s.fetched.clone();
            handle.emit(e);
            reported.refused = Some(why.clone());
        }
    } else {
        reported.refused = None;
    }
    state.last_fetch = Some(FetchState {
        at: rfc3339::now(),
        commit: s.fetched.clone(),
        error: s.fetch_error().map(str::to_string),
        refused: s.refused.clone(),
        next_at: rfc3339::format(
            unix_now() + sched.fetch_at.saturating_duration_since(now).as_secs(),
        ),
    });
}

/// A follow that failed outright while fetching (no revision to fall back to): the
/// same record as a report whose fetch failed.
fn note_fetch_error(
    handle: &Handle,
    state: &mut AgentState,
    sched: &mut Schedule,
    reported: &mut Reported,
    error: &str,
    interval: Duration,
) {
    let source = SourceSummary {
        unavailable: Some(error.to_string()),
        ..SourceSummary::default()
    };
    note_fetch(handle, state, sched, reported, &source, interval);
}

/// `ContainerExited` for instance `id`, with its exit code (`Warning` unless 0), as
/// `docker events` says `die`; none when the instance is gone already (a pass removed
/// it: that exit was the pass's own doing).
fn exited_event(state_dir: &Path, id: &str) -> Option<Event> {
    let dirs = crate::runtime::state::InstanceDirs::new(state_dir, id);
    let name = id.rsplit_once('-').map_or(id, |(n, _)| n);
    let (kind, message) = match dirs.exit_status() {
        Ok(Some(exit)) if exit.exit_code == 0 => (
            EventKind::Normal,
            format!("instance {id} exited with code 0"),
        ),
        Ok(Some(exit)) => (
            EventKind::Warning,
            format!("instance {id} exited with code {}", exit.exit_code),
        ),
        // Gone, or started again since (a pass that stopped it for an update and then
        // rolled back to it): nothing exited that still is.
        Ok(None) => return None,
        Err(_) => (EventKind::Normal, format!("instance {id} exited")),
    };
    Some(Event::new(kind, "ContainerExited", message).container(name))
}

fn with_revision(e: Event, revision: Option<&str>) -> Event {
    match revision {
        Some(r) => e.revision(r),
        None => e,
    }
}

fn set_suspended(state_dir: &Path, on: bool, handle: &Handle) {
    // Asked for what already is: nothing to record.
    if agent_state::suspended(state_dir) == on {
        return;
    }
    let path = agent_state::suspend_path(state_dir);
    let done = if on {
        crate::runtime::state::write_atomic(&path, b"")
    } else {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    };
    match done {
        Ok(()) if on => handle.emit(Event::new(
            EventKind::Normal,
            "Suspended",
            "passes suspended until `berth resume`",
        )),
        Ok(()) => handle.emit(Event::new(EventKind::Normal, "Resumed", "passes resumed")),
        Err(e) => {
            tracing::warn!(target: "agent", error = %e, path = %path.display(), "cannot record the suspension")
        }
    }
}

/// The `n`th retry's delay: `min(base, cap)` doubling, at most `cap`.
fn backoff(n: u32, base: Duration, cap: Duration) -> Duration {
    let base = base.min(cap);
    base.saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(cap)
}

/// `d` ± 10 %.
fn jitter(d: Duration) -> Duration {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let r = h.finish() % 2001; // 0..=2000 → -10.00 % … +10.00 %
    let ms = d.as_millis() as u64;
    let delta = ms / 10;
    Duration::from_millis(ms - delta + delta * r / 1000)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Watches `<state_dir>/instances/*/exit.json` with inotify on a thread of its own,
/// and sends [`Trigger::Exited`] for each exit file written.
fn watch_exits(state_dir: &Path, tx: Sender<Trigger>) -> Result<(), ControllerError> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let root = state_dir.join("instances");
    let err = |source: std::io::Error| ControllerError::Watch {
        path: root.clone(),
        source,
    };
    crate::runtime::state::private_dir(&root).map_err(err)?;
    let ino = Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| err(e.into()))?;
    let dir_flags =
        AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR;
    let file_flags = AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE;
    let root_wd = ino.add_watch(&root, dir_flags).map_err(|e| err(e.into()))?;
    let mut dirs = std::collections::HashMap::new();
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            if let Ok(wd) = ino.add_watch(&e.path(), file_flags) {
                dirs.insert(wd, e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let watched = root.clone();
    std::thread::Builder::new()
        .name("exit-watch".into())
        .spawn(move || {
            loop {
                let Ok(events) = ino.read_events() else {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                };
                for ev in events {
                    let Some(name) = ev.name.as_ref().map(|n| n.to_string_lossy().into_owned())
                    else {
                        continue;
                    };
                    if ev.wd == root_wd {
                        if let Ok(wd) = ino.add_watch(&watched.join(&name), file_flags) {
                            dirs.insert(wd, name);
                        }
                    } else if name == "exit.json"
                        && let Some(id) = dirs.get(&ev.wd)
                        && tx.send(Trigger::Exited(id.clone())).is_err()
                    {
                        return;
                    }
                }
            }
        })
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_logged_with_its_revision_and_container() {
        use std::io::Write;
        #[derive(Clone)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf(Arc::new(std::sync::Mutex::new(Vec::new())));
        let writer = buf.clone();
        let sub = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let mut with = Event::new(EventKind::Warning, "ContainerExited", "web exited");
        with.revision = Some("4f0c".into());
        with.container = Some("web".into());
        let without = Event::new(EventKind::Normal, "Started", "agent started");
        tracing::subscriber::with_default(sub, || {
            log_event(&with);
            log_event(&without);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["fields"]["revision"], "4f0c", "{text}");
        assert_eq!(lines[0]["fields"]["container"], "web", "{text}");
        assert_eq!(lines[0]["fields"]["reason"], "ContainerExited", "{text}");
        assert!(lines[1]["fields"].get("revision").is_none(), "{text}");
        assert!(lines[1]["fields"].get("container").is_none(), "{text}");
    }

    #[test]
    fn backoff_doubles_from_the_smaller_of_five_seconds_and_the_cap() {
        let cap = Duration::from_secs(60);
        let got: Vec<u64> = (1..=6)
            .map(|n| backoff(n, RETRY_BASE, cap).as_secs())
            .collect();
        assert_eq!(got, [5, 10, 20, 40, 60, 60]);
        assert_eq!(
            backoff(1, RETRY_BASE, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(backoff(40, RETRY_BASE, cap), cap);
    }

    #[test]
    fn a_pass_is_counted_with_its_most_specific_trigger() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let sched = |fetch_at, due_at| Schedule {
            fetch_at,
            resync_at: now,
            due_at,
            fetch_failures: 0,
            pass_failures: 0,
            retry_base: RETRY_BASE,
            fetching: true,
        };
        let idle = sched(later, None);
        let wake = |f: &dyn Fn(&mut Wake)| {
            let mut w = Wake::default();
            f(&mut w);
            w
        };
        let (reply, _) = oneshot::channel();
        let mut api = Wake::default();
        api.waiters.push(reply);
        api.source = true;
        let t = |first, w: &Wake, fetch, s: &Schedule| trigger_of(first, w, fetch, now, s);
        assert_eq!(t(true, &api, true, &idle), PassTrigger::Start);
        assert_eq!(t(false, &api, true, &idle), PassTrigger::Api);
        let source = wake(&|w| {
            w.source = true;
            w.exited.push("web-1".into());
        });
        assert_eq!(t(false, &source, true, &idle), PassTrigger::Source);
        let exit = wake(&|w| {
            w.exited.push("web-1".into());
            w.health = true;
        });
        assert_eq!(t(false, &exit, false, &idle), PassTrigger::Exit);
        let health = wake(&|w| w.health = true);
        assert_eq!(t(false, &health, false, &idle), PassTrigger::Health);
        let none = Wake::default();
        assert_eq!(
            t(false, &none, true, &sched(now, Some(now))),
            PassTrigger::Interval
        );
        assert_eq!(
            t(false, &none, false, &sched(later, Some(now))),
            PassTrigger::Retry
        );
        assert_eq!(t(false, &none, false, &idle), PassTrigger::Resync);
    }

    #[test]
    fn a_pass_counts_its_fetch_findings_and_samples_and_a_failed_fetch_is_counted() {
        let metrics = Metrics::new();
        let mut findings = std::collections::BTreeMap::new();
        findings.insert(
            "web".to_string(),
            vec![agent_state::FindingNote {
                rule: "no-host-network".into(),
                severity: "error".into(),
                status: "waived".into(),
                key: "network".into(),
                file: "web.toml".into(),
                line: 3,
                message: "host network".into(),
            }],
        );
        let run = PassRun {
            source: SourceSummary {
                fetched: Some("abc".into()),
                refused: Some("unsigned".into()),
                ..SourceSummary::default()
            },
            revision: None,
            result: "not-converged".into(),
            message: None,
            changed: false,
            next_pass: None,
            converged: false,
            findings: Some(findings),
            report: serde_json::Value::Null,
            samples: PassSamples {
                steps: vec![crate::telemetry::metrics::StepSample {
                    action: "stop".into(),
                    result: "done".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        };
        count(
            &metrics,
            PassTrigger::Interval,
            true,
            &Ok(run),
            Duration::from_secs(1),
        );
        let failed = Err(PassFailure::Fetch {
            message: "no route".into(),
        });
        count(&metrics, PassTrigger::Retry, true, &failed, Duration::ZERO);
        // Without a fetch, none is counted.
        count(
            &metrics,
            PassTrigger::Resync,
            false,
            &failed,
            Duration::ZERO,
        );
        let text = metrics.encode();
        for line in [
            r#"berth_reconcile_passes_total{result="not_converged",trigger="interval"} 1"#,
            r#"berth_reconcile_passes_total{result="failed",trigger="retry"} 1"#,
            r#"berth_reconcile_passes_total{result="failed",trigger="resync"} 1"#,
            r#"berth_source_fetches_total{result="refused"} 1"#,
            r#"berth_source_fetches_total{result="failed"} 1"#,
            r#"berth_reconcile_steps_total{action="stop",result="done"} 1"#,
            r#"berth_policy_findings{rule="no-host-network",severity="error",status="waived"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains(r#"result="fetched""#), "{text}");
        assert_eq!(
            fetch_end(&SourceSummary {
                unavailable: Some("down".into()),
                ..SourceSummary::default()
            }),
            Some(FetchEnd::Unavailable)
        );
        assert_eq!(fetch_end(&SourceSummary::default()), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..200 {
            let j = jitter(Duration::from_secs(30)).as_millis();
            assert!((27_000..=33_000).contains(&j), "{j}");
        }
    }
}
