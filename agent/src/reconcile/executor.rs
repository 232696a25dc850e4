//! Carrying out a [`Plan`]: each step is handed to the [`StepHost`] trait of its kind
//! (images, networks and volumes, containers); a step whose `needs`
//! failed or were skipped is skipped too, so a failed pull never takes down the running
//! version. One result per step is recorded (omicron's reconciler records one result
//! per item), and read back per container as a typed [`Outcome`] (`reconcile::outcome`).
//!
//! Steps run stage by stage ([`Step::stage`]). Within a stage, up to `workers` steps run
//! side by side, each once the steps it needs have finished — as Compose creates
//! independent services in parallel. One worker runs the plan strictly in order.
//!
//! A failed step keeps its typed error (the cause chain) and says which
//! [`FailureKind`] it is: the pass retries nothing itself, the caller (the agent) retries
//! transient failures with backoff and reports permanent ones once. The error becomes
//! text only when the result is printed or serialised.
//!
//! The sequencing here is pure and tested with a recording fake; the real host
//! operations live in `reconcile::host`.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::ser::SerializeMap;

use super::model::{Action, Plan, Step, Timestamp};
pub use super::outcome::Outcome;
use super::outcome::summarise;

/// Whether a failure may go away without its input changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Retrying later may work: a registry or Git remote unreachable, a CNI plugin or
    /// the runtime timed out, the disk full.
    Transient,
    /// Stalled until its input changes: a policy refusal, a signature, an invalid spec,
    /// an image missing from its registry, a bad seccomp profile, a missing bind source.
    Permanent,
}

impl FailureKind {
    /// `Transient` when `transient`, else `Permanent`.
    pub fn of(transient: bool) -> Self {
        if transient {
            FailureKind::Transient
        } else {
            FailureKind::Permanent
        }
    }
}

/// A failed step's error, typed and with its cause chain, and its kind. Clones share
/// the error. Two failures are equal when their kinds and rendered chains are.
#[derive(Clone)]
pub struct Failure {
    error: Arc<dyn Error + Send + Sync>,
    kind: FailureKind,
}

impl Failure {
    pub fn new(error: impl Error + Send + Sync + 'static, kind: FailureKind) -> Self {
        Failure {
            error: Arc::new(error),
            kind,
        }
    }

    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The typed error, to walk its causes or downcast it.
    pub fn error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The error and its causes, `: `-separated, as the CLI prints them.
    pub fn chain(&self) -> String {
        crate::util::error_chain(&*self.error)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("error", &self.chain())
            .field("kind", &self.kind)
            .finish()
    }
}

/// The whole chain: a failure is shown where it is printed, and only there.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.chain())
    }
}

impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.chain() == other.chain()
    }
}

impl Eq for Failure {}

/// A failure known only by its message (a fake host's, a panicking step's): permanent,
/// as nothing says retrying would help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::new(Message(s), FailureKind::Permanent)
    }
}

impl From<&str> for Failure {
    fn from(s: &str) -> Self {
        Failure::from(s.to_string())
    }
}

/// Why a step did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The step was tried and failed: the runtime, a plugin, the filesystem.
    #[error("{0}")]
    Failed(Failure),
    /// A check made on the host at this step refused it (a bind source that resolves
    /// outside the allowed host paths): the container is blocked by policy.
    #[error("{0}")]
    Refused(String),
}

impl StepError {
    /// A refusal is the policy's and permanent; a failure says what it is.
    #[cfg(test)]
    pub fn kind(&self) -> FailureKind {
        match self {
            StepError::Failed(f) => f.kind(),
            StepError::Refused(_) => FailureKind::Permanent,
        }
    }
}

impl From<Failure> for StepError {
    fn from(f: Failure) -> Self {
        StepError::Failed(f)
    }
}

impl From<String> for StepError {
    fn from(s: String) -> Self {
        StepError::Failed(s.into())
    }
}

/// The image steps of a plan.
pub trait ImageSteps: Sync {
    /// Pull, verify and unpack an image (usually already done before planning).
    fn pull(&self, image: &str, digest: &str) -> Result<(), StepError>;
}

/// The steps on the planner's objects: networks and named volumes.
pub trait ObjectSteps: Sync {
    fn create_network(&self, name: &str) -> Result<(), StepError>;
    fn remove_network(&self, name: &str) -> Result<(), StepError>;
    fn create_volume(&self, name: &str) -> Result<(), StepError>;
    fn remove_volume(&self, name: &str) -> Result<(), StepError>;
}

/// The steps on containers and their instances.
pub trait ContainerSteps: Sync {
    fn create(&self, name: &str, instance: &str) -> Result<(), StepError>;
    fn start(&self, name: &str, instance: &str) -> Result<(), StepError>;
    fn stop(
        &self,
        name: &str,
        instance: &str,
        signal: &str,
        timeout: Duration,
    ) -> Result<(), StepError>;
    fn remove(&self, name: &str, instance: &str) -> Result<(), StepError>;
    fn forget(&self, name: &str) -> Result<(), StepError>;
    fn wait_healthy(&self, name: &str, instance: &str, timeout: Duration) -> Result<(), StepError>;
    /// The new instance of an update runs (and is healthy, with a health check) within
    /// `timeout`; else the update is to be rolled back.
    fn verify(&self, name: &str, instance: &str, timeout: Duration) -> Result<(), StepError>;
    /// Work batched over the whole plan (peers' hosts files), after the last step.
    fn finish(&self) {}
}

/// The side effects of a plan's actions, by concern. Steps of one stage may be called
/// from several threads at once, each for a different container.
#[derive(Clone, Copy)]
pub struct StepHost<'h> {
    pub images: &'h dyn ImageSteps,
    pub objects: &'h dyn ObjectSteps,
    pub containers: &'h dyn ContainerSteps,
}

impl<'h> StepHost<'h> {
    /// One host that does every kind of step.
    pub fn of<H: ImageSteps + ObjectSteps + ContainerSteps>(host: &'h H) -> Self {
        StepHost {
            images: host,
            objects: host,
            containers: host,
        }
    }
}

/// What happened to one step. Serialised as `{"result": "done"}`, or with a `detail`
/// (the error or the reason) and, for a failed or refused step, its `kind`
/// (`transient` or `permanent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    Done,
    Failed(Failure),
    /// Refused by a check made on the host (the container is blocked by policy).
    Refused(String),
    /// Not run because a step it needs did not succeed.
    Skipped(String),
    /// A report step: nothing was done to the host.
    Reported,
    /// Not due yet (a restart in its crash-loop backoff): not run before this time.
    Deferred(Timestamp),
}

impl StepResult {
    fn ok(&self) -> bool {
        matches!(self, StepResult::Done | StepResult::Reported)
    }

    /// The result as a report names it (`done`, `failed`, `refused`, `skipped`,
    /// `reported`, `deferred`).
    pub fn name(&self) -> &'static str {
        match self {
            StepResult::Done => "done",
            StepResult::Failed(_) => "failed",
            StepResult::Refused(_) => "refused",
            StepResult::Skipped(_) => "skipped",
            StepResult::Reported => "reported",
            StepResult::Deferred(_) => "deferred",
        }
    }

    /// The error of a failed step (its cause chain) or why a step was refused.
    pub fn error(&self) -> Option<String> {
        match self {
            StepResult::Failed(f) => Some(f.chain()),
            StepResult::Refused(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// The kind of a failed or refused step (a refusal is permanent).
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            StepResult::Failed(f) => Some(f.kind()),
            StepResult::Refused(_) => Some(FailureKind::Permanent),
            _ => None,
        }
    }
}

impl Serialize for StepResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (result, detail) = match self {
            StepResult::Done => ("done", None),
            StepResult::Failed(f) => ("failed", Some(f.chain())),
            StepResult::Refused(why) => ("refused", Some(why.clone())),
            StepResult::Skipped(why) => ("skipped", Some(why.clone())),
            StepResult::Reported => ("reported", None),
            StepResult::Deferred(t) => ("deferred", Some(crate::util::rfc3339::format(t.0))),
        };
        let kind = self.kind();
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("result", result)?;
        if let Some(detail) = detail {
            map.serialize_entry("detail", &detail)?;
        }
        if let Some(kind) = kind {
            map.serialize_entry("kind", &kind)?;
        }
        map.end()
    }
}

/// The container a step is about; none for an image, a network or a volume.
pub fn container_of(action: &Action) -> Option<&str> {
    match action {
        Action::Create { name, .. }
        | Action::Start { name, .. }
        | Action::Stop { name, .. }
        | Action::Remove { name, .. }
        | Action::Forget { name }
        | Action::WaitHealthy { name, .. }
        | Action::Verify { name, .. }
        | Action::Report { name, .. } => Some(name),
        Action::Pull { .. }
        | Action::CreateNetwork { .. }
        | Action::CreateVolume { .. }
        | Action::RemoveNetwork { .. }
        | Action::RemoveVolume { .. } => None,
    }
}

/// The log line of a finished step: its revision, container, action and result, and
/// in the agent's pass the trace the step's span belongs to (`telemetry::pass_trace`).
/// At `info` in the agent's pass, at `debug` elsewhere (`berth apply` prints its report).
/// A report step does nothing: it has no duration.
fn log_step(revision: &str, step: &Step, result: &StepResult, time: Option<&StepTime>) {
    let time = time.filter(|_| !matches!(step.action, Action::Report { .. }));
    log_step_as(revision, step, result.name(), time);
}

/// The log line of a step of a plan that is observed, not applied (`observe` mode):
/// `planned`, or `reported` for a report step; no duration.
pub fn log_observed(revision: &str, step: &Step) {
    log_step_as(revision, step, observed_result(step), None);
}

/// A step's result in a plan observed, not applied: `reported` for a report step,
/// `planned` for any other.
pub fn observed_result(step: &Step) -> &'static str {
    match step.action {
        Action::Report { .. } => "reported",
        _ => "planned",
    }
}

fn log_step_as(revision: &str, step: &Step, outcome: &str, time: Option<&StepTime>) {
    let container = container_of(&step.action).unwrap_or("");
    let action = step.action.verb();
    let duration_ms = time.map(|t| u64::try_from(t.took.as_millis()).unwrap_or(u64::MAX));
    let target = step.action.target();
    match crate::telemetry::pass_trace() {
        Some(trace_id) => tracing::info!(
            target: "step",
            revision,
            container,
            action,
            result = outcome,
            duration_ms,
            trace_id,
            "step {} {action} {}: {outcome}",
            step.id,
            berth_spec::diag::printable(&target)
        ),
        None => tracing::debug!(
            target: "step",
            revision,
            container,
            action,
            result = outcome,
            duration_ms,
            "step {} {action} {}: {outcome}",
            step.id,
            berth_spec::diag::printable(&target)
        ),
    }
}

/// Runs one step's action against `host`.
fn run_step(step: &Step, host: StepHost<'_>) -> StepResult {
    let _span = tracing::info_span!("step", id = step.id).entered();
    let (images, objects, containers) = (host.images, host.objects, host.containers);
    let r = match &step.action {
        Action::Pull { image, digest } => images.pull(image, digest),
        Action::CreateNetwork { name } => objects.create_network(name),
        Action::CreateVolume { name } => objects.create_volume(name),
        Action::Create { name, instance } => containers.create(name, instance),
        Action::Start { name, instance } => containers.start(name, instance),
        Action::Stop {
            name,
            instance,
            signal,
            timeout,
        } => containers.stop(name, instance, signal, *timeout),
        Action::Remove { name, instance } => containers.remove(name, instance),
        Action::Forget { name } => containers.forget(name),
        Action::WaitHealthy {
            name,
            instance,
            timeout,
        } => containers.wait_healthy(name, instance, *timeout),
        Action::Verify {
            name,
            instance,
            timeout,
        } => containers.verify(name, instance, *timeout),
        Action::RemoveNetwork { name } => objects.remove_network(name),
        Action::RemoveVolume { name } => objects.remove_volume(name),
        Action::Report { .. } => return StepResult::Reported,
    };
    match r {
        Ok(()) => StepResult::Done,
        Err(StepError::Failed(e)) => {
            tracing::warn!(step = step.id, kind = ?e.kind(), "{}: {e}", step.reason);
            StepResult::Failed(e)
        }
        Err(StepError::Refused(e)) => {
            tracing::warn!(step = step.id, "{}: refused: {e}", step.reason);
            StepResult::Refused(e)
        }
    }
}

/// What the workers of one stage share.
struct Board<'p> {
    /// Steps of the stage not yet taken, in plan order.
    pending: Vec<&'p Step>,
    /// Steps taken and not finished.
    running: BTreeSet<usize>,
    /// Every finished step of the plan so far.
    results: BTreeMap<usize, StepResult>,
    /// When each step that ran started, and how long it took.
    durations: BTreeMap<usize, StepTime>,
}

/// When a step that ran started (wall clock, for its trace span) and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTime {
    pub started: SystemTime,
    pub took: Duration,
}

#[cfg(test)]
impl StepTime {
    /// A step that took `took` and started at the epoch (tests).
    pub fn took(took: Duration) -> StepTime {
        StepTime {
            started: SystemTime::UNIX_EPOCH,
            took,
        }
    }
}

impl<'p> Board<'p> {
    /// The first pending step none of whose needs is still pending or running: taken
    /// from `pending`, with its result already decided when a need did not succeed.
    /// A need that never ran (not in any stage before) counts as not succeeded.
    fn take(&mut self) -> Option<(&'p Step, Option<StepResult>)> {
        let waiting =
            |n: &usize| self.running.contains(n) || self.pending.iter().any(|s| s.id == *n);
        let pos = self
            .pending
            .iter()
            .position(|s| !s.needs.iter().any(waiting))?;
        let step = self.pending.remove(pos);
        let blocked_by: Vec<String> = step
            .needs
            .iter()
            .filter(|n| !self.results.get(n).is_some_and(StepResult::ok))
            .map(|n| n.to_string())
            .collect();
        let skipped = (!blocked_by.is_empty()).then(|| {
            StepResult::Skipped(format!(
                "needs step {} which did not succeed",
                blocked_by.join(", ")
            ))
        });
        Some((step, skipped))
    }
}

/// Runs the plan's steps against `host`, with at most `workers` (at least 1) steps at
/// a time within a stage; returns the outcome and when each step that ran started and
/// how long it took (a skipped or report step has no time).
pub fn execute_timed(
    plan: &Plan,
    host: StepHost<'_>,
    workers: usize,
) -> (Outcome, BTreeMap<usize, StepTime>) {
    let mut stages: BTreeMap<u32, Vec<&Step>> = BTreeMap::new();
    let mut results: BTreeMap<usize, StepResult> = BTreeMap::new();
    for step in &plan.steps {
        // Not due at the plan's time: deferred, and what needs it is skipped.
        if let Some(t) = step.not_before.filter(|t| *t > plan.now) {
            results.insert(step.id, StepResult::Deferred(t));
            continue;
        }
        stages.entry(step.stage).or_default().push(step);
    }
    let mut durations = BTreeMap::new();
    for steps in stages.into_values() {
        let stage;
        (results, stage) = run_stage(steps, results, host, workers.max(1), &plan.revision.id);
        durations.extend(stage);
    }
    host.containers.finish();
    (summarise(plan, &results), durations)
}

fn run_stage(
    steps: Vec<&Step>,
    results: BTreeMap<usize, StepResult>,
    host: StepHost<'_>,
    workers: usize,
    revision: &str,
) -> (BTreeMap<usize, StepResult>, BTreeMap<usize, StepTime>) {
    let workers = workers.min(steps.len());
    let board = Mutex::new(Board {
        pending: steps,
        running: BTreeSet::new(),
        results,
        durations: BTreeMap::new(),
    });
    let changed = Condvar::new();
    let lock = || board.lock().unwrap_or_else(PoisonError::into_inner);
    let work = || {
        let mut b = lock();
        while !b.pending.is_empty() {
            let Some((step, decided)) = b.take() else {
                // Everything left waits for a running step.
                b = changed.wait(b).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            let result = match decided {
                Some(skipped) => skipped,
                // SIGTERM in the pass's process: the steps in flight finish, no other
                // starts (the next pass takes it up).
                None if super::worker::stopping() => {
                    StepResult::Skipped("not started: the agent is stopping".into())
                }
                None => {
                    b.running.insert(step.id);
                    drop(b);
                    let started = std::time::Instant::now();
                    let wall = SystemTime::now();
                    // A panicking step fails alone; the others are not left waiting.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_step(step, host)
                    }))
                    .unwrap_or_else(|_| StepResult::Failed("the step panicked".into()));
                    b = lock();
                    b.running.remove(&step.id);
                    b.durations.insert(
                        step.id,
                        StepTime {
                            started: wall,
                            took: started.elapsed(),
                        },
                    );
                    r
                }
            };
            log_step(revision, step, &result, b.durations.get(&step.id));
            b.results.insert(step.id, result);
            changed.notify_all();
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(work);
        }
        work();
    });
    let board = board.into_inner().unwrap_or_else(PoisonError::into_inner);
    (board.results, board.durations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::model::{
        Decision, Desired, PolicyDecisions, ReportKind, Revision, Step, Timestamp,
    };
    use crate::reconcile::outcome::{ContainerOutcome, ContainerReport};

    /// The outcome of running `plan` against `host`.
    fn execute(plan: &Plan, host: StepHost<'_>, workers: usize) -> Outcome {
        execute_timed(plan, host, workers).0
    }

    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        fail: BTreeSet<String>,
        /// Calls that fail as a full disk does: transient.
        full: BTreeSet<String>,
    }

    impl Recorder {
        fn call(&self, what: String) -> Result<(), StepError> {
            let failed = self.fail.contains(&what);
            let full = self.full.contains(&what);
            self.calls.lock().unwrap().push(what.clone());
            if full {
                let enospc = std::io::Error::from_raw_os_error(28);
                Err(Failure::new(enospc, FailureKind::Transient).into())
            } else if failed {
                Err(format!("{what} broke").into())
            } else {
                Ok(())
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl ImageSteps for Recorder {
        fn pull(&self, image: &str, _: &str) -> Result<(), StepError> {
            self.call(format!("pull {image}"))
        }
    }

    impl ObjectSteps for Recorder {
        fn create_network(&self, n: &str) -> Result<(), StepError> {
            self.call(format!("net {n}"))
        }
        fn remove_network(&self, n: &str) -> Result<(), StepError> {
            self.call(format!("rmnet {n}"))
        }
        fn create_volume(&self, n: &str) -> Result<(), StepError> {
            self.call(format!("vol {n}"))
        }
        fn remove_volume(&self, n: &str) -> Result<(), StepError> {
            self.call(format!("rmvol {n}"))
        }
    }

    impl ContainerSteps for Recorder {
        fn create(&self, _: &str, i: &str) -> Result<(), StepError> {
            self.call(format!("create {i}"))
        }
        fn start(&self, _: &str, i: &str) -> Result<(), StepError> {
            self.call(format!("start {i}"))
        }
        fn stop(&self, _: &str, i: &str, _: &str, _: Duration) -> Result<(), StepError> {
            self.call(format!("stop {i}"))
        }
        fn remove(&self, _: &str, i: &str) -> Result<(), StepError> {
            self.call(format!("remove {i}"))
        }
        fn forget(&self, n: &str) -> Result<(), StepError> {
            self.call(format!("forget {n}"))
        }
        fn wait_healthy(&self, _: &str, i: &str, _: Duration) -> Result<(), StepError> {
            self.call(format!("wait {i}"))
        }
        fn verify(&self, _: &str, i: &str, _: Duration) -> Result<(), StepError> {
            self.call(format!("verify {i}"))
        }
    }

    /// `rec` for images, networks and volumes, `containers` for the container steps.
    fn hosts<'h>(rec: &'h Recorder, containers: &'h dyn ContainerSteps) -> StepHost<'h> {
        StepHost {
            containers,
            ..StepHost::of(rec)
        }
    }

    fn step(id: usize, action: Action, needs: &[usize]) -> Step {
        Step {
            id,
            reason: format!("step {id}"),
            needs: needs.to_vec(),
            not_before: None,
            // The planner's phases, by kind, for these hand-written plans.
            stage: match &action {
                Action::Pull { .. } => 1,
                Action::CreateNetwork { .. } | Action::CreateVolume { .. } => 2,
                Action::Stop { .. } => 3,
                Action::Remove { .. } | Action::Forget { .. } => 4,
                Action::Report { .. } => 6,
                _ => 5,
            },
            action,
        }
    }

    #[test]
    fn a_report_step_is_logged_without_a_duration_and_an_observed_step_as_planned() {
        use std::io::Write;
        use std::sync::{Arc, Mutex};
        #[derive(Clone)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf(Arc::new(Mutex::new(Vec::new())));
        let writer = buf.clone();
        let sub = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let report = step(
            1,
            Action::Report {
                name: "db".into(),
                kind: ReportKind::Blocked,
            },
            &[],
        );
        let start = step(
            2,
            Action::Start {
                name: "web".into(),
                instance: "web-1".into(),
            },
            &[],
        );
        let took = StepTime::took(Duration::from_millis(7));
        tracing::subscriber::with_default(sub, || {
            log_step("abc", &report, &StepResult::Reported, Some(&took));
            log_step("abc", &start, &StepResult::Done, Some(&took));
            log_observed("abc", &start);
            log_observed("abc", &report);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let fields: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["fields"].clone())
            .collect();
        assert_eq!(fields.len(), 4, "{text}");
        assert!(fields[0].get("duration_ms").is_none(), "{text}");
        assert_eq!(fields[1]["duration_ms"], 7, "{text}");
        assert_eq!(fields[2]["result"], "planned", "{text}");
        assert!(fields[2].get("duration_ms").is_none(), "{text}");
        assert_eq!(
            (&fields[3]["result"], &fields[3]["container"]),
            (&"reported".into(), &"db".into()),
            "{text}"
        );
    }

    fn update_plan() -> Plan {
        let s = |n: &str| n.to_string();
        Plan {
            revision: Revision::default(),
            actual_generation: 0,
            now: Timestamp(0),
            steps: vec![
                step(
                    1,
                    Action::Pull {
                        image: s("r/web"),
                        digest: s("sha256:new"),
                    },
                    &[],
                ),
                step(
                    2,
                    Action::Stop {
                        name: s("web"),
                        instance: s("web-old"),
                        signal: s("SIGTERM"),
                        timeout: Duration::from_secs(1),
                    },
                    &[1],
                ),
                step(
                    3,
                    Action::Remove {
                        name: s("web"),
                        instance: s("web-old"),
                    },
                    &[2],
                ),
                step(
                    4,
                    Action::Create {
                        name: s("web"),
                        instance: s("web-new"),
                    },
                    &[1, 3],
                ),
                step(
                    5,
                    Action::Start {
                        name: s("web"),
                        instance: s("web-new"),
                    },
                    &[4],
                ),
                step(
                    6,
                    Action::Report {
                        name: s("db"),
                        kind: ReportKind::Blocked,
                    },
                    &[],
                ),
            ],
        }
    }

    /// The outcome of one container, without its findings.
    fn outcome(out: &Outcome, name: &str) -> ContainerOutcome {
        out.containers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", out.containers))
            .outcome
            .clone()
    }

    fn not_applied(step: &str, error: &str, needed: Option<&str>) -> ContainerOutcome {
        ContainerOutcome::NotApplied {
            step: step.into(),
            error: error.into(),
            // The recorder's failures are messages only: permanent.
            kind: FailureKind::Permanent,
            needed: needed.map(String::from),
        }
    }

    /// A start not due at the plan's time (crash-loop backoff) is not run: it is
    /// deferred, and the container's outcome says until when. Due, it runs.
    #[test]
    fn a_start_in_its_backoff_is_deferred_and_runs_once_due() {
        let s = |n: &str| n.to_string();
        let mut start = step(
            1,
            Action::Start {
                name: s("web"),
                instance: s("web-1"),
            },
            &[],
        );
        start.not_before = Some(Timestamp(1_040));
        let mut plan = Plan {
            revision: Revision::default(),
            actual_generation: 0,
            now: Timestamp(1_000),
            steps: vec![start],
        };
        let rec = Recorder::default();
        let out = execute(&plan, StepHost::of(&rec), 2);
        assert!(rec.calls().is_empty(), "{:?}", rec.calls());
        assert_eq!(out.results[0].1, StepResult::Deferred(Timestamp(1_040)));
        let until = crate::util::rfc3339::format(1_040);
        assert_eq!(
            outcome(&out, "web"),
            ContainerOutcome::Deferred {
                instance: s("web-1"),
                until: until.clone(),
                reason: s("step 1"),
            }
        );
        // Not a failure, but not converged either: it is not running yet.
        assert!(
            out.not_applied().is_empty(),
            "a deferred restart is not a failure"
        );
        assert!(!out.converged());
        assert_eq!(
            serde_json::to_value(&out.results[0].1).unwrap(),
            serde_json::json!({"result": "deferred", "detail": until})
        );
        plan.now = Timestamp(1_040);
        let out = execute(&plan, StepHost::of(&rec), 2);
        assert_eq!(rec.calls(), vec!["start web-1"]);
        assert_eq!(
            outcome(&out, "web"),
            ContainerOutcome::Started {
                instance: s("web-1")
            }
        );
    }

    #[test]
    fn a_transient_failure_says_so_in_its_outcome_and_in_what_it_skipped() {
        let mut host = Slow::default();
        host.rec.full.insert("create a-1".into());
        host.rec.fail.insert("create c-1".into());
        let out = execute(&four_new(), hosts(&host.rec, &host), 1);
        let enospc = std::io::Error::from_raw_os_error(28).to_string();
        assert_eq!(
            outcome(&out, "a"),
            ContainerOutcome::NotApplied {
                step: "create".into(),
                error: enospc.clone(),
                kind: FailureKind::Transient,
                needed: None,
            }
        );
        // b's start waited for a's: the same error, the same kind.
        assert_eq!(
            outcome(&out, "b"),
            ContainerOutcome::NotApplied {
                step: "start".into(),
                error: enospc,
                kind: FailureKind::Transient,
                needed: Some("create a-1".into()),
            }
        );
        assert_eq!(
            outcome(&out, "c"),
            not_applied("create", "create c-1 broke", None)
        );
        let json = serde_json::to_value(&out.containers["a"]).unwrap();
        assert_eq!(json["kind"], "transient", "{json}");
        let kinds: Vec<Option<FailureKind>> = out.results.iter().map(|(_, r)| r.kind()).collect();
        assert_eq!(kinds[0], Some(FailureKind::Transient), "{kinds:?}");
        assert_eq!(
            serde_json::to_value(&out.results[1].1).unwrap(),
            serde_json::json!({"result": "skipped", "detail": "needs step 1 which did not succeed"})
        );
    }

    #[test]
    fn a_failed_pull_skips_everything_that_needs_it() {
        let mut host = Recorder::default();
        host.fail.insert("pull r/web".into());
        let out = execute(&update_plan(), StepHost::of(&host), 1);
        assert_eq!(
            host.calls(),
            vec!["pull r/web"],
            "the old instance is never stopped"
        );
        assert!(matches!(out.results[1].1, StepResult::Skipped(_)));
        // The container's first step was skipped; the line names the pull and its error.
        assert_eq!(
            outcome(&out, "web"),
            not_applied("stop", "pull r/web broke", Some("pull r/web@sha256:new"))
        );
        assert_eq!(out.not_applied(), ["db", "web"].into());
        assert!(!out.converged());
    }

    #[test]
    fn a_converging_plan_runs_every_step_in_order() {
        let host = Recorder::default();
        let out = execute(&update_plan(), StepHost::of(&host), 1);
        assert_eq!(
            host.calls(),
            vec![
                "pull r/web",
                "stop web-old",
                "remove web-old",
                "create web-new",
                "start web-new"
            ]
        );
        // A create that replaces a stopped and removed instance is a recreate.
        assert_eq!(
            outcome(&out, "web"),
            ContainerOutcome::Recreated {
                instance: "web-new".into(),
                replaced: vec!["web-old".into()],
            }
        );
        assert_eq!(
            outcome(&out, "db"),
            ContainerOutcome::Blocked {
                reason: "step 6".into()
            }
        );
        assert_eq!(out.not_applied(), ["db"].into());
        assert_eq!(out.results[5].1, StepResult::Reported);
    }

    #[test]
    fn a_failed_create_reports_the_container() {
        let mut host = Recorder::default();
        host.fail.insert("create web-new".into());
        let out = execute(&update_plan(), StepHost::of(&host), 1);
        assert_eq!(
            outcome(&out, "web"),
            not_applied("create", "create web-new broke", None)
        );
        assert!(matches!(out.results[4].1, StepResult::Skipped(_)));
    }

    /// web is new, with audit-mode findings reported after its create and start.
    fn new_with_findings() -> (Plan, PolicyDecisions) {
        let s = |n: &str| n.to_string();
        let plan = Plan {
            revision: Revision::default(),
            actual_generation: 0,
            now: Timestamp(0),
            steps: vec![
                step(
                    1,
                    Action::Create {
                        name: s("web"),
                        instance: s("web-1"),
                    },
                    &[],
                ),
                step(
                    2,
                    Action::Start {
                        name: s("web"),
                        instance: s("web-1"),
                    },
                    &[1],
                ),
                step(
                    3,
                    Action::Report {
                        name: s("web"),
                        kind: ReportKind::Audit,
                    },
                    &[],
                ),
            ],
        };
        let mut policy = PolicyDecisions::default();
        policy.containers.insert(
            s("web"),
            Decision::Reported {
                findings: vec![s("read-only-rootfs (the root filesystem is writable)")],
            },
        );
        (plan, policy)
    }

    fn desired(names: &[&str]) -> Desired {
        let mut d = Desired::default();
        for n in names {
            // Only the names are read; a not-evaluated entry needs no spec.
            d.not_evaluated.insert(n.to_string(), String::new());
        }
        d
    }

    #[test]
    fn a_failed_create_followed_by_a_findings_report_is_not_applied() {
        let (plan, policy) = new_with_findings();
        let mut host = Recorder::default();
        host.fail.insert("create web-1".into());
        let mut out = execute(&plan, StepHost::of(&host), 1);
        out.complete(&desired(&["web"]), &policy);
        assert_eq!(
            out.containers["web"],
            ContainerReport {
                outcome: not_applied("create", "create web-1 broke", None),
                findings: vec!["read-only-rootfs (the root filesystem is writable)".into()],
                health: None,
            },
            "the report step after the create must not hide its failure"
        );
        assert!(!out.converged());
        let json = serde_json::to_value(&out.containers["web"]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "outcome": "not_applied",
                "step": "create",
                "error": "create web-1 broke",
                "kind": "permanent",
                "findings": ["read-only-rootfs (the root filesystem is writable)"],
            })
        );
    }

    #[test]
    fn findings_come_in_addition_to_the_outcome() {
        let (plan, policy) = new_with_findings();
        let mut out = execute(&plan, StepHost::of(&Recorder::default()), 1);
        out.complete(&desired(&["web"]), &policy);
        let web = &out.containers["web"];
        assert_eq!(
            web.outcome,
            ContainerOutcome::Created {
                instance: "web-1".into()
            }
        );
        assert_eq!(
            web.findings,
            vec!["read-only-rootfs (the root filesystem is writable)".to_string()]
        );
        assert!(out.converged());
        assert_eq!(
            serde_json::to_value(web).unwrap(),
            serde_json::json!({
                "outcome": "created",
                "instance": "web-1",
                "findings": ["read-only-rootfs (the root filesystem is writable)"],
            })
        );
    }

    /// A host that refuses a create, as the bind-source check does.
    struct Refusing(Recorder);

    impl ContainerSteps for Refusing {
        fn create(&self, _: &str, i: &str) -> Result<(), StepError> {
            Err(StepError::Refused(format!(
                "{i}: bind source /srv/shared/link resolves to / outside the allowed host paths"
            )))
        }
        fn start(&self, n: &str, i: &str) -> Result<(), StepError> {
            self.0.start(n, i)
        }
        fn stop(&self, n: &str, i: &str, sig: &str, t: Duration) -> Result<(), StepError> {
            self.0.stop(n, i, sig, t)
        }
        fn remove(&self, n: &str, i: &str) -> Result<(), StepError> {
            self.0.remove(n, i)
        }
        fn forget(&self, n: &str) -> Result<(), StepError> {
            self.0.forget(n)
        }
        fn wait_healthy(&self, n: &str, i: &str, t: Duration) -> Result<(), StepError> {
            self.0.wait_healthy(n, i, t)
        }
        fn verify(&self, n: &str, i: &str, t: Duration) -> Result<(), StepError> {
            self.0.verify(n, i, t)
        }
    }

    #[test]
    fn a_refused_create_is_blocked_by_policy() {
        let (plan, policy) = new_with_findings();
        let host = Refusing(Recorder::default());
        let mut out = execute(&plan, hosts(&host.0, &host), 1);
        out.complete(&desired(&["web"]), &policy);
        assert_eq!(
            out.containers["web"].outcome,
            ContainerOutcome::Blocked {
                reason: "web-1: bind source /srv/shared/link resolves to / outside the allowed \
                         host paths"
                    .into()
            }
        );
        assert!(host.0.calls().is_empty(), "nothing started");
        assert_eq!(
            out.results[0].1,
            StepResult::Refused(
                "web-1: bind source /srv/shared/link resolves to / outside the allowed host paths"
                    .into()
            )
        );
        assert_eq!(out.not_applied(), ["web"].into());
        assert!(!out.converged());
    }

    #[test]
    fn a_start_alone_is_a_start_and_nothing_planned_is_unchanged() {
        let s = |n: &str| n.to_string();
        let plan = Plan {
            revision: Revision::default(),
            actual_generation: 0,
            now: Timestamp(0),
            steps: vec![step(
                1,
                Action::Start {
                    name: s("job"),
                    instance: s("job-1"),
                },
                &[],
            )],
        };
        let mut out = execute(&plan, StepHost::of(&Recorder::default()), 1);
        out.complete(&desired(&["job", "web"]), &PolicyDecisions::default());
        assert_eq!(
            outcome(&out, "job"),
            ContainerOutcome::Started {
                instance: s("job-1")
            }
        );
        assert_eq!(outcome(&out, "web"), ContainerOutcome::Unchanged);
        assert!(out.containers["web"].findings.is_empty());
        assert!(out.converged());
    }

    #[test]
    fn a_container_no_longer_desired_is_removed_and_a_stale_cleanup_leaves_it_unchanged() {
        let s = |n: &str| n.to_string();
        let stop = |id, name: &str, instance: &str| {
            step(
                id,
                Action::Stop {
                    name: s(name),
                    instance: s(instance),
                    signal: s("SIGTERM"),
                    timeout: Duration::from_secs(1),
                },
                &[],
            )
        };
        let remove = |id, name: &str, instance: &str, needs: &[usize]| {
            step(
                id,
                Action::Remove {
                    name: s(name),
                    instance: s(instance),
                },
                needs,
            )
        };
        let plan = Plan {
            revision: Revision::default(),
            actual_generation: 0,
            now: Timestamp(0),
            steps: vec![
                stop(1, "old", "old-1"),
                stop(2, "web", "web-0"),
                remove(3, "old", "old-1", &[1]),
                remove(4, "web", "web-0", &[2]),
                step(5, Action::Forget { name: s("old") }, &[3]),
            ],
        };
        let mut out = execute(&plan, StepHost::of(&Recorder::default()), 1);
        // `web` is still desired: only an old instance of it went.
        out.complete(&desired(&["web"]), &PolicyDecisions::default());
        assert_eq!(outcome(&out, "old"), ContainerOutcome::Removed);
        assert_eq!(outcome(&out, "web"), ContainerOutcome::Unchanged);
        assert!(out.converged());
    }

    #[test]
    fn an_operator_stop_alone_is_a_stop() {
        let s = |n: &str| n.to_string();
        let plan = Plan {
            revision: Revision::default(),
            actual_generation: 0,
            now: Timestamp(0),
            steps: vec![step(
                1,
                Action::Stop {
                    name: s("web"),
                    instance: s("web-1"),
                    signal: s("SIGTERM"),
                    timeout: Duration::from_secs(1),
                },
                &[],
            )],
        };
        let out = execute(&plan, StepHost::of(&Recorder::default()), 1);
        assert_eq!(
            outcome(&out, "web"),
            ContainerOutcome::Stopped {
                instance: s("web-1"),
                reason: s("step 1")
            }
        );
    }

    #[test]
    fn a_failed_removal_of_a_container_no_longer_desired_is_not_applied() {
        let s = |n: &str| n.to_string();
        let plan = Plan {
            revision: Revision::default(),
            actual_generation: 0,
            now: Timestamp(0),
            steps: vec![
                step(
                    1,
                    Action::Remove {
                        name: s("old"),
                        instance: s("old-1"),
                    },
                    &[],
                ),
                step(2, Action::Forget { name: s("old") }, &[1]),
            ],
        };
        let mut host = Recorder::default();
        host.fail.insert("remove old-1".into());
        let out = execute(&plan, StepHost::of(&host), 1);
        assert_eq!(
            outcome(&out, "old"),
            not_applied("remove", "remove old-1 broke", None)
        );
        assert!(!out.converged());
    }

    /// A recorder that also holds each create and stop for a while and counts how many
    /// run at once.
    #[derive(Default)]
    struct Slow {
        rec: Recorder,
        now: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    impl Slow {
        fn hold(&self, what: String) -> Result<(), StepError> {
            use std::sync::atomic::Ordering::SeqCst;
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(n, SeqCst);
            std::thread::sleep(Duration::from_millis(60));
            self.now.fetch_sub(1, SeqCst);
            self.rec.call(what)
        }
    }

    impl ContainerSteps for Slow {
        fn create(&self, _: &str, i: &str) -> Result<(), StepError> {
            self.hold(format!("create {i}"))
        }
        fn start(&self, n: &str, i: &str) -> Result<(), StepError> {
            self.rec.start(n, i)
        }
        fn stop(&self, _: &str, i: &str, _: &str, _: Duration) -> Result<(), StepError> {
            self.hold(format!("stop {i}"))
        }
        fn remove(&self, n: &str, i: &str) -> Result<(), StepError> {
            self.rec.remove(n, i)
        }
        fn forget(&self, n: &str) -> Result<(), StepError> {
            self.rec.forget(n)
        }
        fn wait_healthy(&self, n: &str, i: &str, t: Duration) -> Result<(), StepError> {
            self.rec.wait_healthy(n, i, t)
        }
        fn verify(&self, n: &str, i: &str, t: Duration) -> Result<(), StepError> {
            self.rec.verify(n, i, t)
        }
    }

    /// Four containers, each created then started; `b` starts after `a` (depends_on).
    fn four_new() -> Plan {
        let s = |n: &str| n.to_string();
        let mut steps = Vec::new();
        for (k, n) in ["a", "b", "c", "d"].iter().enumerate() {
            let id = 2 * k + 1;
            let create = Action::Create {
                name: s(n),
                instance: format!("{n}-1"),
            };
            let start = Action::Start {
                name: s(n),
                instance: format!("{n}-1"),
            };
            steps.push(step(id, create, &[]));
            let needs: Vec<usize> = if *n == "b" { vec![id, 2] } else { vec![id] };
            steps.push(step(id + 1, start, &needs));
        }
        Plan {
            revision: Revision::default(),
            actual_generation: 0,
            now: Timestamp(0),
            steps,
        }
    }

    fn position(calls: &[String], what: &str) -> usize {
        calls
            .iter()
            .position(|c| c == what)
            .unwrap_or_else(|| panic!("{what} not called: {calls:?}"))
    }

    #[test]
    fn independent_creates_run_side_by_side_and_starts_wait_for_their_needs() {
        let host = Slow::default();
        let out = execute(&four_new(), hosts(&host.rec, &host), 4);
        assert!(out.converged(), "{:?}", out.containers);
        let most = host.most.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            most >= 2,
            "creates ran one at a time (most at once: {most})"
        );
        let calls = host.rec.calls();
        assert_eq!(calls.len(), 8, "{calls:?}");
        for n in ["a", "b", "c", "d"] {
            assert!(
                position(&calls, &format!("create {n}-1"))
                    < position(&calls, &format!("start {n}-1")),
                "{calls:?}"
            );
        }
        assert!(position(&calls, "start a-1") < position(&calls, "start b-1"));
        // Results come back in plan order whatever the completion order.
        let ids: Vec<usize> = out.results.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=8).collect::<Vec<_>>());
    }

    #[test]
    fn one_worker_runs_the_plan_in_order() {
        let host = Slow::default();
        execute(&four_new(), hosts(&host.rec, &host), 1);
        assert_eq!(host.most.load(std::sync::atomic::Ordering::SeqCst), 1);
        let calls = host.rec.calls();
        assert_eq!(calls[0], "create a-1");
        assert_eq!(calls[1], "start a-1");
        assert_eq!(calls[7], "start d-1");
    }

    #[test]
    fn a_failed_create_skips_only_what_needs_it_when_steps_run_side_by_side() {
        let mut host = Slow::default();
        host.rec.fail.insert("create a-1".into());
        let out = execute(&four_new(), hosts(&host.rec, &host), 4);
        assert_eq!(
            outcome(&out, "a"),
            not_applied("create", "create a-1 broke", None)
        );
        // b's start needs a's: skipped, naming the step that failed and its error.
        assert_eq!(
            outcome(&out, "b"),
            not_applied("start", "create a-1 broke", Some("create a-1"))
        );
        for n in ["c", "d"] {
            assert_eq!(
                outcome(&out, n),
                ContainerOutcome::Created {
                    instance: format!("{n}-1")
                }
            );
        }
        let calls = host.rec.calls();
        assert!(!calls.contains(&"start a-1".to_string()), "{calls:?}");
        assert!(!calls.contains(&"start b-1".to_string()), "{calls:?}");
        assert!(calls.contains(&"create b-1".to_string()), "{calls:?}");
    }

    #[test]
    fn a_later_stage_waits_for_every_step_of_the_one_before() {
        let s = |n: &str| n.to_string();
        let stop = |id: usize, n: &str, stage: u32| {
            let mut st = step(
                id,
                Action::Stop {
                    name: s(n),
                    instance: format!("{n}-1"),
                    signal: s("SIGTERM"),
                    timeout: Duration::from_secs(1),
                },
                &[],
            );
            st.stage = stage;
            st
        };
        // `app` depends on `db`: the planner puts the dependent's stop a stage earlier.
        let plan = Plan {
            revision: Revision::default(),
            actual_generation: 0,
            now: Timestamp(0),
            steps: vec![stop(1, "app", 3), stop(2, "web", 3), stop(3, "db", 4)],
        };
        let host = Slow::default();
        execute(&plan, hosts(&host.rec, &host), 4);
        let calls = host.rec.calls();
        assert_eq!(
            calls.last().map(String::as_str),
            Some("stop db-1"),
            "{calls:?}"
        );
        let most = host.most.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            most <= 2,
            "db stopped alongside its dependents ({most} at once)"
        );
    }
}
