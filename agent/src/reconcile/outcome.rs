//! What one pass did to each container, typed: the executor's results read back per
//! container, so that `berth apply` prints (and the agent will report) what really
//! happened — created, recreated, started, unchanged, blocked, not applied with the step
//! that failed, removed — and never "applied" when a step failed.
//!
//! The outcome comes from the plan and the step results alone ([`summarise`]); what the
//! plan has no step for (a container left unchanged) and the policy findings come from
//! the desired state and the policy's decisions ([`Outcome::complete`]).
//!
//! How a container's steps are read, first match wins:
//! 1. a step refused by a check made on the host (a bind source resolving outside the
//!    allowed paths): blocked by policy, with that finding;
//! 2. a `report` step of the planner (blocked, held, not evaluated): that, even when a
//!    step on its kept instance failed (the step's result says so);
//! 3. a step of its own that failed: not applied, with the step and the error — but
//!    a wait for its health that did not succeed is not its failure: it runs, and its
//!    report notes its health ([`HealthNote`]);
//! 4. a step of its own skipped because a step it needs did not succeed: held when
//!    that step was a wait for a dependency's health, else not applied, naming the
//!    step that did not succeed and its error;
//! 5. a create: recreated when the plan also stops or removes another instance of it,
//!    else created;
//! 6. its record forgotten, or its instances removed with nothing created or started:
//!    removed;
//! 7. a start of an existing instance: started; a stop alone: stopped;
//! 8. otherwise unchanged.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::executor::{Failure, FailureKind, StepResult};
use super::host::HostStepError;
use super::model::{Action, Decision, Desired, Plan, PolicyDecisions, ReportKind, Step};

/// What one pass did to one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ContainerOutcome {
    /// Its first instance was created (and started, unless the operator stopped it).
    Created { instance: String },
    /// A new instance replaced the ones listed.
    Recreated {
        instance: String,
        replaced: Vec<String>,
    },
    /// An existing instance was started: after an exit, or created and never started.
    Started { instance: String },
    /// Its restart waits for the end of its crash-loop backoff: not before `until`
    /// (RFC 3339). Not a failure: the next pass (or the agent, at that time) restarts it.
    Deferred {
        instance: String,
        until: String,
        reason: String,
    },
    /// Its instance was stopped (`berth stop`) and left in place.
    Stopped { instance: String, reason: String },
    /// Nothing to do: it already matched the desired state.
    Unchanged,
    /// No longer desired here: its instances and record are gone.
    Removed,
    /// The policy blocks it, from the planner's verdict or from a check made on the
    /// host at create time. Its running version, if any, is kept.
    Blocked { reason: String },
    /// A dependency cannot run, so it was neither created nor started.
    Held { reason: String },
    /// Its update failed at this revision: the new instance did not run (and become
    /// healthy, with a health check) within `update_timeout`, and the last known good
    /// instance runs instead. Not tried again until a new revision or `berth reconcile`.
    RolledBack { reason: String },
    /// It could not be evaluated (an image or a secret that could not be read). `kind`
    /// says whether a later pass may evaluate it with the same input (the registry did
    /// not answer) or not until it changes (the image is missing, a secret undefined).
    NotEvaluated { reason: String, kind: FailureKind },
    /// `berth plan` only: a fact that decides what `apply` would do cannot be known
    /// (`--offline`, a registry that does not answer, layers not pulled).
    Unknown { reason: String },
    /// A step did not succeed. `step` is the container's own step (`create`, `start`,
    /// …); `error` the error of the step that failed. When the container's step was
    /// skipped because a step it needs did not succeed, `needed` names that step
    /// (`pull 127.0.0.1:5000/web@sha256:…`, `start db-1a2b3c4d`). `kind` is that
    /// error's: whether a later pass may succeed with the same input.
    NotApplied {
        step: String,
        error: String,
        kind: FailureKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        needed: Option<String>,
    },
}

impl ContainerOutcome {
    /// Why it was not applied, as `berth apply` says it (`blocked by policy: …`,
    /// `not applied: create failed: …`); none when it was.
    pub fn why_not(&self) -> Option<String> {
        match self {
            ContainerOutcome::Blocked { reason } => Some(format!("blocked by policy: {reason}")),
            ContainerOutcome::Held { reason } => Some(format!("held: {reason}")),
            ContainerOutcome::RolledBack { reason } => Some(format!("rolled back: {reason}")),
            ContainerOutcome::NotEvaluated { reason, .. } => {
                Some(format!("not evaluated: {reason}"))
            }
            ContainerOutcome::Unknown { reason } => Some(format!("not known: {reason}")),
            ContainerOutcome::NotApplied {
                step,
                error,
                needed,
                ..
            } => Some(match needed {
                Some(n) => format!("not applied: {step} skipped: {n} did not succeed: {error}"),
                None => format!("not applied: {step} failed: {error}"),
            }),
            _ => None,
        }
    }

    /// Whether the container is as desired after the pass (exit code 0 for it).
    pub fn applied(&self) -> bool {
        !matches!(
            self,
            ContainerOutcome::Blocked { .. }
                | ContainerOutcome::Held { .. }
                | ContainerOutcome::RolledBack { .. }
                | ContainerOutcome::NotEvaluated { .. }
                | ContainerOutcome::Unknown { .. }
                | ContainerOutcome::NotApplied { .. }
        )
    }
}

/// One container's outcome and, in addition, the policy findings reported with it
/// (warnings, or errors in audit mode) when the pass created or tried to create its
/// instance, and its health when a wait for it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerReport {
    #[serde(flatten)]
    pub outcome: ContainerOutcome,
    pub findings: Vec<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthNote>,
}

/// A container's health when the pass waited for it in vain: the status its health
/// file was left in (`unhealthy`, or `starting` when the wait's limit ran out first)
/// and why. JSON: `"health": "unhealthy", "health_error": "…"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthNote {
    pub health: String,
    pub health_error: String,
}

impl HealthNote {
    /// The note of a failed `wait-healthy` step, when it failed because the container
    /// did not become healthy (not because the step could not run).
    fn of(f: &Failure) -> Option<HealthNote> {
        match f.error().downcast_ref::<HostStepError>() {
            Some(HostStepError::Unhealthy { why, .. }) => Some(HealthNote {
                health: if why.starts_with(crate::runtime::health::CUT) {
                    "starting"
                } else {
                    "unhealthy"
                }
                .to_string(),
                health_error: why.clone(),
            }),
            _ => None,
        }
    }
}

impl ContainerReport {
    fn new(outcome: ContainerOutcome) -> Self {
        ContainerReport {
            outcome,
            findings: Vec::new(),
            health: None,
        }
    }
}

/// The outcome of a whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// One result per step, in plan order.
    pub results: Vec<(usize, StepResult)>,
    /// Per container touched by the plan (after [`Outcome::complete`], per container
    /// desired too).
    pub containers: BTreeMap<String, ContainerReport>,
    /// Networks whose change waits for instances that still use them, with the reason.
    pub deferred_networks: BTreeMap<String, String>,
    /// Containers whose policy findings the plan reports (their instance was created).
    #[serde(skip)]
    findings_due: BTreeSet<String>,
}

impl Outcome {
    /// Whether every container is as desired and no step failed. A restart deferred
    /// by crash-loop backoff is not converged (the container is not running yet),
    /// though it is not a failure either: see [`Outcome::not_applied`].
    pub fn converged(&self) -> bool {
        self.containers
            .values()
            .all(|c| c.outcome.applied() && !matches!(c.outcome, ContainerOutcome::Deferred { .. }))
            && self.results.iter().all(|(_, r)| {
                matches!(
                    r,
                    StepResult::Done
                        | StepResult::Reported
                        | StepResult::Skipped(_)
                        | StepResult::Deferred(_)
                )
            })
    }

    /// The containers not applied, by name.
    #[cfg(test)]
    pub fn not_applied(&self) -> BTreeSet<&str> {
        self.containers
            .iter()
            .filter(|(_, c)| !c.outcome.applied())
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Adds what the steps do not say: every container desired here that the plan had
    /// nothing to do for is unchanged (its old instances may have been cleaned up), and
    /// the policy findings of each container whose instance the plan created.
    pub fn complete(&mut self, desired: &Desired, policy: &PolicyDecisions) {
        for name in desired
            .containers
            .keys()
            .chain(desired.not_evaluated.keys())
        {
            let entry = self
                .containers
                .entry(name.clone())
                .or_insert_with(|| ContainerReport::new(ContainerOutcome::Unchanged));
            // Only instances other than the desired one went.
            if entry.outcome == ContainerOutcome::Removed {
                entry.outcome = ContainerOutcome::Unchanged;
            }
        }
        for name in &self.findings_due {
            let (Some(entry), Some(Decision::Reported { findings })) =
                (self.containers.get_mut(name), policy.containers.get(name))
            else {
                continue;
            };
            entry.findings = findings.clone();
        }
    }
}

/// What the steps of one container did.
#[derive(Debug, Default)]
struct Seen {
    refused: Option<String>,
    report: Option<ContainerOutcome>,
    /// The container's first failed step: its verb and error.
    failed: Option<(String, String, FailureKind)>,
    /// The container's first skipped step: its verb and id.
    skipped: Option<(String, usize)>,
    /// A wait for its health that did not succeed.
    health: Option<HealthNote>,
    created: Option<String>,
    started: Option<String>,
    deferred: Option<(String, String, String)>,
    stopped: Option<(String, String)>,
    /// Instances the plan stops or removes.
    gone: Vec<String>,
    removed: bool,
    forgotten: bool,
}

impl Seen {
    fn outcome(self, root: impl Fn(usize) -> Root) -> ContainerOutcome {
        if let Some(reason) = self.refused {
            return ContainerOutcome::Blocked { reason };
        }
        if let Some((instance, until, reason)) = self.deferred {
            return ContainerOutcome::Deferred {
                instance,
                until,
                reason,
            };
        }
        if let Some(report) = self.report {
            return report;
        }
        if let Some((step, error, kind)) = self.failed {
            return ContainerOutcome::NotApplied {
                step,
                error,
                kind,
                needed: None,
            };
        }
        if let Some((step, id)) = self.skipped {
            let Root {
                needed,
                error,
                kind,
                held,
            } = root(id);
            // Waiting for a dependency that runs but is not healthy: held, like a
            // dependency that cannot run.
            if held {
                return ContainerOutcome::Held { reason: error };
            }
            return ContainerOutcome::NotApplied {
                step,
                error,
                kind,
                needed: Some(needed),
            };
        }
        if let Some(instance) = self.created {
            let mut replaced: Vec<String> = Vec::new();
            for i in self.gone {
                if i != instance && !replaced.contains(&i) {
                    replaced.push(i);
                }
            }
            return if replaced.is_empty() {
                ContainerOutcome::Created { instance }
            } else {
                ContainerOutcome::Recreated { instance, replaced }
            };
        }
        if self.forgotten || (self.removed && self.started.is_none()) {
            return ContainerOutcome::Removed;
        }
        if let Some(instance) = self.started {
            return ContainerOutcome::Started { instance };
        }
        if let Some((instance, reason)) = self.stopped {
            return ContainerOutcome::Stopped { instance, reason };
        }
        ContainerOutcome::Unchanged
    }
}

/// The container a step acts on.
fn target(action: &Action) -> Option<&str> {
    match action {
        Action::Create { name, .. }
        | Action::Start { name, .. }
        | Action::Stop { name, .. }
        | Action::Remove { name, .. }
        | Action::Forget { name }
        | Action::WaitHealthy { name, .. } => Some(name),
        Action::Report { name, kind } if *kind != ReportKind::Deferred => Some(name),
        _ => None,
    }
}

/// Reads the results of `plan`'s steps back per container. A step without a result
/// counts as skipped.
pub fn summarise(plan: &Plan, results: &BTreeMap<usize, StepResult>) -> Outcome {
    let result_of = |step: &Step| {
        results.get(&step.id).cloned().unwrap_or_else(|| {
            StepResult::Skipped("the executor did not reach this step".to_string())
        })
    };
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    let mut deferred_networks = BTreeMap::new();
    let mut findings_due = BTreeSet::new();
    let mut out = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let result = result_of(step);
        if let Action::Report {
            name,
            kind: ReportKind::Deferred,
        } = &step.action
        {
            deferred_networks.insert(name.clone(), step.reason.clone());
        }
        if let Some(name) = target(&step.action) {
            let s = seen.entry(name).or_default();
            match (&step.action, &result) {
                (Action::Report { kind, .. }, _) => {
                    let reason = step.reason.clone();
                    match kind {
                        ReportKind::Blocked => {
                            s.report = Some(ContainerOutcome::Blocked { reason })
                        }
                        ReportKind::Held => s.report = Some(ContainerOutcome::Held { reason }),
                        // Permanent unless the pass knows better (an image the registry
                        // did not serve: `pass` sets the image error's kind).
                        ReportKind::NotEvaluated => {
                            s.report = Some(ContainerOutcome::NotEvaluated {
                                reason,
                                kind: FailureKind::Permanent,
                            })
                        }
                        ReportKind::Unknown => {
                            s.report = Some(ContainerOutcome::Unknown { reason })
                        }
                        ReportKind::Audit => {
                            findings_due.insert(name.to_string());
                        }
                        ReportKind::Deferred => {}
                        ReportKind::RolledBack => {
                            s.report = Some(ContainerOutcome::RolledBack { reason })
                        }
                    }
                }
                (Action::Start { instance, .. }, StepResult::Deferred(t)) => {
                    s.deferred = Some((
                        instance.clone(),
                        crate::util::rfc3339::format(t.0),
                        step.reason.clone(),
                    ));
                }
                (_, StepResult::Refused(e)) => {
                    s.refused.get_or_insert_with(|| e.clone());
                }
                (Action::WaitHealthy { .. }, StepResult::Failed(e))
                    if HealthNote::of(e).is_some() =>
                {
                    s.health = s.health.take().or_else(|| HealthNote::of(e));
                }
                (action, StepResult::Failed(e)) => {
                    s.failed
                        .get_or_insert_with(|| (action.verb().to_string(), e.chain(), e.kind()));
                }
                (action, StepResult::Skipped(_)) => {
                    s.skipped
                        .get_or_insert_with(|| (action.verb().to_string(), step.id));
                }
                (Action::Create { instance, .. }, _) => s.created = Some(instance.clone()),
                (Action::Start { instance, .. }, _) => s.started = Some(instance.clone()),
                (Action::Stop { instance, .. }, _) => {
                    s.gone.push(instance.clone());
                    s.stopped = Some((instance.clone(), step.reason.clone()));
                }
                (Action::Remove { instance, .. }, _) => {
                    s.gone.push(instance.clone());
                    s.removed = true;
                }
                (Action::Forget { .. }, _) => s.forgotten = true,
                _ => {}
            }
        } else if let (Action::Pull { image, digest }, StepResult::Failed(e)) =
            (&step.action, &result)
        {
            tracing::error!("pull of {image}@{digest} failed: {e}");
        }
        out.push((step.id, result));
    }
    let by_id: BTreeMap<usize, &Step> = plan.steps.iter().map(|s| (s.id, s)).collect();
    let root = |id: usize| root_cause(&by_id, results, id);
    let containers = seen
        .into_iter()
        .map(|(name, mut s)| {
            let health = s.health.take();
            let mut report = ContainerReport::new(s.outcome(root));
            report.health = health;
            (name.to_string(), report)
        })
        .collect();
    Outcome {
        results: out,
        containers,
        deferred_networks,
        findings_due,
    }
}

/// What a skipped step waited for: the step that did not succeed, its error and kind.
struct Root {
    needed: String,
    error: String,
    kind: FailureKind,
    /// The step was a wait for a container's health that did not become healthy.
    held: bool,
}

/// For a skipped step: the first step it needs (directly or through other skipped
/// steps) that failed, was refused or never ran, as `verb target`, and its error. A
/// step that never ran is reported permanent: nothing says a retry would run it.
fn root_cause(
    by_id: &BTreeMap<usize, &Step>,
    results: &BTreeMap<usize, StepResult>,
    id: usize,
) -> Root {
    let describe = |s: &Step| format!("{} {}", s.action.verb(), s.action.target());
    let root = |needed: String, error: String, kind: FailureKind| Root {
        needed,
        error,
        kind,
        held: false,
    };
    let permanent =
        |needed: String, error: &str| root(needed, error.to_string(), FailureKind::Permanent);
    let mut stack = vec![id];
    let mut visited = BTreeSet::new();
    while let Some(id) = stack.pop() {
        if !visited.insert(id) {
            continue;
        }
        let Some(step) = by_id.get(&id) else {
            continue;
        };
        // Depth first, in the order the needs are listed.
        let mut deeper = Vec::new();
        for need in &step.needs {
            let Some(n) = by_id.get(need) else {
                return permanent(format!("step {need}"), "not in the plan");
            };
            match results.get(need) {
                Some(StepResult::Failed(e)) => {
                    let held = matches!(n.action, Action::WaitHealthy { .. })
                        && HealthNote::of(e).is_some();
                    return Root {
                        held,
                        ..root(describe(n), e.chain(), e.kind())
                    };
                }
                Some(StepResult::Refused(e)) => return permanent(describe(n), e),
                Some(StepResult::Deferred(t)) => {
                    let until = crate::util::rfc3339::format(t.0);
                    return root(
                        describe(n),
                        format!("not due before {until}"),
                        FailureKind::Transient,
                    );
                }
                Some(StepResult::Skipped(_)) => deeper.push(*need),
                Some(StepResult::Done | StepResult::Reported) => {}
                None => return permanent(describe(n), "did not run"),
            }
        }
        stack.extend(deeper.into_iter().rev());
    }
    match by_id.get(&id).and_then(|s| results.get(&s.id)) {
        Some(StepResult::Skipped(why)) => permanent(format!("step {id}"), why),
        _ => permanent(format!("step {id}"), "a step it needs did not succeed"),
    }
}

#[cfg(test)]
mod health_tests {
    use std::time::Duration;

    use super::*;
    use crate::reconcile::model::{Revision, Timestamp};

    fn step(id: usize, action: Action, needs: &[usize]) -> Step {
        Step {
            id,
            reason: format!("step {id}"),
            needs: needs.to_vec(),
            not_before: None,
            stage: 5,
            action,
        }
    }

    /// `dep` depends on `exbad`, whose wait for health fails.
    fn plan() -> Plan {
        let s = |n: &str| n.to_string();
        Plan {
            revision: Revision::default(),
            actual_generation: 0,
            now: Timestamp(0),
            steps: vec![
                step(
                    1,
                    Action::Create {
                        name: s("exbad"),
                        instance: s("exbad-1"),
                    },
                    &[],
                ),
                step(
                    2,
                    Action::Start {
                        name: s("exbad"),
                        instance: s("exbad-1"),
                    },
                    &[1],
                ),
                step(
                    3,
                    Action::WaitHealthy {
                        name: s("exbad"),
                        instance: s("exbad-1"),
                        timeout: Duration::from_secs(25),
                    },
                    &[2],
                ),
                step(
                    4,
                    Action::Create {
                        name: s("dep"),
                        instance: s("dep-1"),
                    },
                    &[],
                ),
                step(
                    5,
                    Action::Start {
                        name: s("dep"),
                        instance: s("dep-1"),
                    },
                    &[2, 3, 4],
                ),
            ],
        }
    }

    fn results(wait: StepResult) -> BTreeMap<usize, StepResult> {
        let skipped = StepResult::Skipped("needs step 3 which did not succeed".into());
        [
            (1, StepResult::Done),
            (2, StepResult::Done),
            (3, wait),
            (4, StepResult::Done),
            (5, skipped),
        ]
        .into_iter()
        .collect()
    }

    fn unhealthy(why: &str) -> StepResult {
        StepResult::Failed(Failure::new(
            HostStepError::Unhealthy {
                name: "exbad".into(),
                why: why.into(),
            },
            FailureKind::Transient,
        ))
    }

    #[test]
    fn an_unhealthy_dependency_is_applied_with_its_health_and_holds_its_dependents() {
        let out = summarise(
            &plan(),
            &results(unhealthy("`false` exited with 1 (1 consecutive failures)")),
        );
        let exbad = &out.containers["exbad"];
        assert_eq!(
            exbad.outcome,
            ContainerOutcome::Created {
                instance: "exbad-1".into()
            }
        );
        assert_eq!(
            exbad.health,
            Some(HealthNote {
                health: "unhealthy".into(),
                health_error: "`false` exited with 1 (1 consecutive failures)".into(),
            })
        );
        let json = serde_json::to_value(exbad).unwrap();
        assert_eq!(json["outcome"], "created");
        assert_eq!(json["health"], "unhealthy");
        assert!(matches!(
            &out.containers["dep"].outcome,
            ContainerOutcome::Held { reason } if reason.starts_with("`exbad` did not become healthy: `false`")
        ));
        assert_eq!(out.not_applied(), BTreeSet::from(["dep"]));
        assert!(!out.converged());
        // Without a health check wait, no note.
        let json = serde_json::to_value(&out.containers["dep"]).unwrap();
        assert!(json.get("health").is_none(), "{json}");
    }

    #[test]
    fn a_wait_cut_by_its_limit_notes_starting() {
        let why = format!(
            "{} when the step's limit of 25s ran out",
            crate::runtime::health::CUT
        );
        let out = summarise(&plan(), &results(unhealthy(&why)));
        let note = out.containers["exbad"].health.clone().unwrap();
        assert_eq!(note.health, "starting");
    }

    #[test]
    fn a_wait_that_could_not_run_is_a_failure_of_its_own() {
        let out = summarise(
            &plan(),
            &results(StepResult::Failed(Failure::from(
                "no such container".to_string(),
            ))),
        );
        assert!(matches!(
            &out.containers["exbad"].outcome,
            ContainerOutcome::NotApplied { step, .. } if step == "wait-healthy"
        ));
        assert!(matches!(
            &out.containers["dep"].outcome,
            ContainerOutcome::NotApplied {
                needed: Some(_),
                ..
            }
        ));
    }
}
