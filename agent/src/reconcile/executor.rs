//! Carrying out a [`Plan`]: each step is handed to a [`HostOps`] in order; a step whose
//! `needs` failed or were skipped is skipped too, so a failed pull never takes down the
//! running version. One result per step is recorded (omicron's reconciler records one
//! result per item), and the containers touched are summarised for the user.
//!
//! The sequencing here is pure and tested with a recording fake; the real host
//! operations live in `reconcile::host`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::model::{Action, Plan, ReportKind};

/// The side effects of a plan's actions.
pub trait HostOps {
    /// Pull, verify and unpack an image (usually already done before planning).
    fn pull(&mut self, image: &str, digest: &str) -> Result<(), String>;
    fn create_network(&mut self, name: &str) -> Result<(), String>;
    fn create_volume(&mut self, name: &str) -> Result<(), String>;
    fn create(&mut self, name: &str, instance: &str) -> Result<(), String>;
    fn start(&mut self, name: &str, instance: &str) -> Result<(), String>;
    fn stop(
        &mut self,
        name: &str,
        instance: &str,
        signal: &str,
        timeout: Duration,
    ) -> Result<(), String>;
    fn remove(&mut self, name: &str, instance: &str) -> Result<(), String>;
    fn forget(&mut self, name: &str) -> Result<(), String>;
    fn wait_healthy(&mut self, name: &str, instance: &str, timeout: Duration)
    -> Result<(), String>;
    fn remove_network(&mut self, name: &str) -> Result<(), String>;
    fn remove_volume(&mut self, name: &str) -> Result<(), String>;
    /// Work batched over the whole plan (peers' hosts files), after the last step.
    fn finish(&mut self) {}
}

/// What happened to one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "result", content = "detail")]
pub enum StepResult {
    Done,
    Failed(String),
    /// Not run because a step it needs did not succeed.
    Skipped(String),
    /// A report step: nothing was done to the host.
    Reported,
}

/// The outcome of a whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub results: Vec<(usize, StepResult)>,
    /// Per container: `applied`, `unchanged`, `failed: …`, `blocked: …`, … for printing.
    pub containers: BTreeMap<String, String>,
    /// Containers the plan or its execution left not applied (exit code 1).
    pub not_applied: BTreeSet<String>,
}

impl Outcome {
    pub fn converged(&self) -> bool {
        self.not_applied.is_empty()
    }
}

fn target(action: &Action) -> Option<&str> {
    match action {
        Action::Create { name, .. }
        | Action::Start { name, .. }
        | Action::Stop { name, .. }
        | Action::Remove { name, .. }
        | Action::Forget { name }
        | Action::WaitHealthy { name, .. }
        | Action::Report { name, .. } => Some(name),
        _ => None,
    }
}

/// Runs the plan's steps in order against `host`.
pub fn execute(plan: &Plan, host: &mut dyn HostOps) -> Outcome {
    let mut ok: BTreeSet<usize> = BTreeSet::new();
    let mut results = Vec::with_capacity(plan.steps.len());
    let mut containers: BTreeMap<String, String> = BTreeMap::new();
    let mut not_applied = BTreeSet::new();
    for step in &plan.steps {
        let blocked_by: Vec<usize> = step
            .needs
            .iter()
            .copied()
            .filter(|n| !ok.contains(n))
            .collect();
        let result = if !blocked_by.is_empty() {
            let list: Vec<String> = blocked_by.iter().map(|n| n.to_string()).collect();
            StepResult::Skipped(format!(
                "needs step {} which did not succeed",
                list.join(", ")
            ))
        } else {
            let _span = tracing::info_span!("step", id = step.id).entered();
            let r = match &step.action {
                Action::Pull { image, digest } => host.pull(image, digest),
                Action::CreateNetwork { name } => host.create_network(name),
                Action::CreateVolume { name } => host.create_volume(name),
                Action::Create { name, instance } => host.create(name, instance),
                Action::Start { name, instance } => host.start(name, instance),
                Action::Stop {
                    name,
                    instance,
                    signal,
                    timeout,
                } => host.stop(name, instance, signal, *timeout),
                Action::Remove { name, instance } => host.remove(name, instance),
                Action::Forget { name } => host.forget(name),
                Action::WaitHealthy {
                    name,
                    instance,
                    timeout,
                } => host.wait_healthy(name, instance, *timeout),
                Action::RemoveNetwork { name } => host.remove_network(name),
                Action::RemoveVolume { name } => host.remove_volume(name),
                Action::Report { .. } => Ok(()),
            };
            match (r, &step.action) {
                (Ok(()), Action::Report { .. }) => StepResult::Reported,
                (Ok(()), _) => StepResult::Done,
                (Err(e), _) => {
                    tracing::warn!(step = step.id, "{}: {e}", step.reason);
                    StepResult::Failed(e)
                }
            }
        };
        if matches!(result, StepResult::Done | StepResult::Reported) {
            ok.insert(step.id);
        }
        if let Some(name) = target(&step.action) {
            let entry = containers
                .entry(name.to_string())
                .or_insert_with(|| "applied".to_string());
            match (&step.action, &result) {
                (Action::Report { kind, .. }, _) => {
                    if matches!(
                        kind,
                        ReportKind::Blocked | ReportKind::Held | ReportKind::NotEvaluated
                    ) {
                        not_applied.insert(name.to_string());
                    }
                    *entry = format!("{}: {}", kind.as_str(), step.reason);
                }
                (_, StepResult::Failed(e)) => {
                    not_applied.insert(name.to_string());
                    *entry = format!("failed: {e}");
                }
                (_, StepResult::Skipped(why)) if !entry.starts_with("failed") => {
                    not_applied.insert(name.to_string());
                    *entry = format!("not applied: {why}");
                }
                (Action::Forget { .. } | Action::Remove { .. }, StepResult::Done)
                    if entry == "applied" =>
                {
                    *entry = "removed".to_string();
                }
                (Action::Create { .. } | Action::Start { .. }, StepResult::Done)
                    if entry == "removed" =>
                {
                    *entry = "applied".to_string();
                }
                _ => {}
            }
        } else if let (Action::Pull { image, digest }, StepResult::Failed(e)) =
            (&step.action, &result)
        {
            tracing::error!("pull of {image}@{digest} failed: {e}");
        }
        results.push((step.id, result));
    }
    host.finish();
    Outcome {
        results,
        containers,
        not_applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::model::{Revision, Step, Timestamp};

    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        fail: BTreeSet<String>,
    }

    impl Recorder {
        fn call(&mut self, what: String) -> Result<(), String> {
            let failed = self.fail.contains(&what);
            self.calls.push(what.clone());
            if failed {
                Err(format!("{what} broke"))
            } else {
                Ok(())
            }
        }
    }

    impl HostOps for Recorder {
        fn pull(&mut self, image: &str, _: &str) -> Result<(), String> {
            self.call(format!("pull {image}"))
        }
        fn create_network(&mut self, n: &str) -> Result<(), String> {
            self.call(format!("net {n}"))
        }
        fn create_volume(&mut self, n: &str) -> Result<(), String> {
            self.call(format!("vol {n}"))
        }
        fn create(&mut self, _: &str, i: &str) -> Result<(), String> {
            self.call(format!("create {i}"))
        }
        fn start(&mut self, _: &str, i: &str) -> Result<(), String> {
            self.call(format!("start {i}"))
        }
        fn stop(&mut self, _: &str, i: &str, _: &str, _: Duration) -> Result<(), String> {
            self.call(format!("stop {i}"))
        }
        fn remove(&mut self, _: &str, i: &str) -> Result<(), String> {
            self.call(format!("remove {i}"))
        }
        fn forget(&mut self, n: &str) -> Result<(), String> {
            self.call(format!("forget {n}"))
        }
        fn wait_healthy(&mut self, _: &str, i: &str, _: Duration) -> Result<(), String> {
            self.call(format!("wait {i}"))
        }
        fn remove_network(&mut self, n: &str) -> Result<(), String> {
            self.call(format!("rmnet {n}"))
        }
        fn remove_volume(&mut self, n: &str) -> Result<(), String> {
            self.call(format!("rmvol {n}"))
        }
    }

    fn step(id: usize, action: Action, needs: &[usize]) -> Step {
        Step {
            id,
            action,
            reason: format!("step {id}"),
            needs: needs.to_vec(),
            not_before: None,
        }
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

    #[test]
    fn a_failed_pull_skips_everything_that_needs_it() {
        let mut host = Recorder::default();
        host.fail.insert("pull r/web".into());
        let out = execute(&update_plan(), &mut host);
        assert_eq!(
            host.calls,
            vec!["pull r/web"],
            "the old instance is never stopped"
        );
        assert!(matches!(out.results[1].1, StepResult::Skipped(_)));
        assert!(
            out.containers["web"].starts_with("not applied"),
            "{:?}",
            out.containers
        );
        assert_eq!(
            out.not_applied,
            ["db".to_string(), "web".to_string()].into()
        );
    }

    #[test]
    fn a_converging_plan_runs_every_step_in_order() {
        let mut host = Recorder::default();
        let out = execute(&update_plan(), &mut host);
        assert_eq!(
            host.calls,
            vec![
                "pull r/web",
                "stop web-old",
                "remove web-old",
                "create web-new",
                "start web-new"
            ]
        );
        assert_eq!(out.containers["web"], "applied");
        assert!(out.containers["db"].starts_with("blocked"));
        assert_eq!(out.not_applied, ["db".to_string()].into());
        assert_eq!(out.results[5].1, StepResult::Reported);
    }

    #[test]
    fn a_failed_create_reports_the_container() {
        let mut host = Recorder::default();
        host.fail.insert("create web-new".into());
        let out = execute(&update_plan(), &mut host);
        assert_eq!(out.containers["web"], "failed: create web-new broke");
        assert!(matches!(out.results[4].1, StepResult::Skipped(_)));
    }
}
