//! The plan in human form — what `berth plan` prints, what the agent logs, and what the
//! golden tests compare — and in JSON (`--format json`, the model's serde form).
//!
//! One line per step: id, verb, target, details, the reason in parentheses, then the
//! steps it needs and any backoff wait:
//!
//! ```text
//! plan for revision 3f2a1c0: 3 steps
//!  1  pull            127.0.0.1:5000/demo@sha256:0b1c2d3e4f5a  (image not in the store, for web)
//!  2  create          web-1a2b3c4d  (new container)  [needs 1]
//!  3  start           web-1a2b3c4d  (new container)  [needs 2]
//! ```
//!
//! An agent in observe mode also says, per container (and per image, network or
//! volume), what `apply` would do and why, read from the same plan and the outcome
//! `berth plan` reports ([`PlanReport::would`]):
//!
//! ```text
//! would pull 127.0.0.1:5000/demo@sha256:0b1c2d3e4f5a: image not in the store, for web
//! would recreate web: command changed
//! would remove legacy: no longer in the repository
//! ```

use std::fmt;

use berth_spec::types::format_duration;
use serde::Serialize;

use super::diff::short_digest;
use super::executor::container_of;
use super::model::{Action, Plan, Step};
use super::outcome::ContainerOutcome;
use super::pass::PlanReport;

/// The widest verb, `create-network`.
const VERB_WIDTH: usize = 14;

impl Action {
    /// The verb printed for the action.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Pull { .. } => "pull",
            Action::CreateNetwork { .. } => "create-network",
            Action::CreateVolume { .. } => "create-volume",
            Action::Create { .. } => "create",
            Action::Start { .. } => "start",
            Action::Stop { .. } => "stop",
            Action::Remove { .. } => "remove",
            Action::Forget { .. } => "forget",
            Action::WaitHealthy { .. } => "wait-healthy",
            Action::Verify { .. } => "verify",
            Action::RemoveNetwork { .. } => "remove-network",
            Action::RemoveVolume { .. } => "remove-volume",
            Action::Report { .. } => "report",
        }
    }

    /// What the action is about, with its parameters. Instance ids already name their
    /// container.
    pub fn target(&self) -> String {
        match self {
            Action::Pull { image, digest } => format!("{image}@{}", short_digest(digest)),
            Action::CreateNetwork { name }
            | Action::CreateVolume { name }
            | Action::Forget { name }
            | Action::RemoveNetwork { name }
            | Action::RemoveVolume { name } => name.clone(),
            Action::Create { instance, .. }
            | Action::Start { instance, .. }
            | Action::Remove { instance, .. } => instance.clone(),
            Action::Stop {
                instance,
                signal,
                timeout,
                ..
            } => format!("{instance}  {signal} {}", format_duration(*timeout)),
            Action::WaitHealthy {
                instance, timeout, ..
            }
            | Action::Verify {
                instance, timeout, ..
            } => format!("{instance}  up to {}", format_duration(*timeout)),
            Action::Report { name, kind } => format!("{name}  {}", kind.as_str()),
        }
    }
}

impl Step {
    fn write(&self, f: &mut fmt::Formatter<'_>, id_width: usize, plan: &Plan) -> fmt::Result {
        write!(
            f,
            "{:>id_width$}  {:<VERB_WIDTH$}  {}  ({})",
            self.id,
            self.action.verb(),
            berth_spec::diag::printable(&self.action.target()),
            berth_spec::diag::printable(&self.reason)
        )?;
        if !self.needs.is_empty() {
            let ids: Vec<String> = self.needs.iter().map(usize::to_string).collect();
            write!(f, "  [needs {}]", ids.join(", "))?;
        }
        if let Some(t) = self.not_before {
            write!(
                f,
                "  [not before now+{}]",
                format_duration(t.since(plan.now))
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.steps.len();
        match n {
            0 => return writeln!(f, "plan for revision {}: nothing to do", self.revision.id),
            1 => writeln!(f, "plan for revision {}: 1 step", self.revision.id)?,
            _ => writeln!(f, "plan for revision {}: {n} steps", self.revision.id)?,
        }
        let id_width = n.to_string().len();
        for step in &self.steps {
            step.write(f, id_width, self)?;
            writeln!(f)?;
        }
        Ok(())
    }
}

/// One thing `apply` would do, as observe mode reports it: `would recreate web: command
/// changed`. JSON: `{"action": "recreate", "target": "web", "reason": "command changed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Would {
    /// `create`, `recreate`, `start`, `stop`, `remove` (a container), `not apply` (a
    /// container blocked, held, not evaluated or unknown), `pull` (an image), `create
    /// network`, `remove network`, `create volume`, `remove volume`.
    pub action: String,
    /// The container, image, network or volume.
    pub target: String,
    /// Why, in the planner's words (a step's reason, or the outcome's); may be empty.
    pub reason: String,
}

impl fmt::Display for Would {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = berth_spec::diag::printable;
        write!(f, "would {} {}", self.action, p(&self.target))?;
        if !self.reason.is_empty() {
            write!(f, ": {}", p(&self.reason))?;
        }
        Ok(())
    }
}

impl PlanReport {
    /// What `apply` would do, in plan order for images, networks and volumes, then per
    /// container by name; nothing for a container left unchanged.
    pub fn would(&self) -> Vec<Would> {
        let steps = &self.plan.steps;
        let mut out: Vec<Would> = steps
            .iter()
            .filter_map(|s| {
                let (action, target) = match &s.action {
                    Action::Pull { .. } => ("pull", s.action.target()),
                    Action::CreateNetwork { name } => ("create network", name.clone()),
                    Action::RemoveNetwork { name } => ("remove network", name.clone()),
                    Action::CreateVolume { name } => ("create volume", name.clone()),
                    Action::RemoveVolume { name } => ("remove volume", name.clone()),
                    _ => return None,
                };
                Some(Would {
                    action: action.to_string(),
                    target,
                    reason: s.reason.clone(),
                })
            })
            .collect();
        // The reason of the first step on `name` that `pick` accepts.
        let reason_of = |name: &str, pick: &dyn Fn(&Action) -> bool| {
            steps
                .iter()
                .find(|s| container_of(&s.action) == Some(name) && pick(&s.action))
                .map(|s| s.reason.clone())
                .unwrap_or_default()
        };
        fn created(id: &str) -> impl Fn(&Action) -> bool + '_ {
            move |a| matches!(a, Action::Create { instance, .. } if instance == id)
        }
        for (name, c) in &self.containers {
            let (action, reason) = match &c.outcome {
                ContainerOutcome::Unchanged => continue,
                ContainerOutcome::Created { instance } => {
                    ("create", reason_of(name, &created(instance)))
                }
                ContainerOutcome::Recreated { instance, .. } => {
                    ("recreate", reason_of(name, &created(instance)))
                }
                ContainerOutcome::Started { instance } => (
                    "start",
                    reason_of(
                        name,
                        &|a| matches!(a, Action::Start { instance: i, .. } if i == instance),
                    ),
                ),
                ContainerOutcome::Deferred { until, reason, .. } => {
                    ("start", format!("{reason}; not before {until}"))
                }
                ContainerOutcome::Stopped { reason, .. } => ("stop", reason.clone()),
                ContainerOutcome::Removed => (
                    "remove",
                    reason_of(name, &|a| {
                        matches!(
                            a,
                            Action::Stop { .. } | Action::Remove { .. } | Action::Forget { .. }
                        )
                    }),
                ),
                other => ("not apply", other.why_not().unwrap_or_default()),
            };
            out.push(Would {
                action: action.to_string(),
                target: name.clone(),
                reason,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::reconcile::follow::PassResult;
    use crate::reconcile::model::{Revision, Timestamp};
    use crate::reconcile::outcome::ContainerReport;

    fn step(id: usize, action: Action, reason: &str) -> Step {
        Step {
            id,
            action,
            reason: reason.into(),
            needs: Vec::new(),
            not_before: None,
            stage: 0,
        }
    }

    fn report(outcome: ContainerOutcome) -> ContainerReport {
        ContainerReport {
            outcome,
            findings: Vec::new(),
            health: None,
        }
    }

    fn stop(name: &str, instance: &str) -> Action {
        Action::Stop {
            name: name.into(),
            instance: instance.into(),
            signal: "SIGTERM".into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// A plan that pulls, recreates web, creates api, removes db and a network, with a
    /// container blocked and one unchanged.
    fn observed() -> PlanReport {
        let (web, old, api) = ("web-22222222", "web-11111111", "api-33333333");
        let n = |s: &str| s.to_string();
        let steps = vec![
            step(
                1,
                Action::Pull {
                    image: n("127.0.0.1:5000/demo"),
                    digest: n("sha256:0b1c2d3e4f5a6b7c"),
                },
                "image not in the store, for web",
            ),
            step(
                2,
                stop("web", old),
                "replaced by web-22222222: command changed",
            ),
            step(
                3,
                Action::Create {
                    name: n("web"),
                    instance: n(web),
                },
                "command changed",
            ),
            step(
                4,
                Action::Start {
                    name: n("web"),
                    instance: n(web),
                },
                "replaces web-11111111",
            ),
            step(5, stop("db", "db-44444444"), "no longer in the repository"),
            step(
                6,
                Action::Forget { name: n("db") },
                "no longer in the repository",
            ),
            step(
                7,
                Action::Create {
                    name: n("api"),
                    instance: n(api),
                },
                "new container",
            ),
            step(
                8,
                Action::RemoveNetwork { name: n("old") },
                "no container uses it",
            ),
        ];
        let containers = BTreeMap::from([
            (
                n("web"),
                report(ContainerOutcome::Recreated {
                    instance: n(web),
                    replaced: vec![n(old)],
                }),
            ),
            (
                n("api"),
                report(ContainerOutcome::Created { instance: n(api) }),
            ),
            (n("db"), report(ContainerOutcome::Removed)),
            (n("keep"), report(ContainerOutcome::Unchanged)),
            (
                n("priv"),
                report(ContainerOutcome::Blocked {
                    reason: n("no-privileged: privileged = true"),
                }),
            ),
        ]);
        PlanReport {
            plan: Plan {
                revision: Revision {
                    id: n("c0ffee1"),
                    source: n("/srv/fleet#branch main"),
                },
                actual_generation: 0,
                now: Timestamp(1_000),
                steps,
            },
            containers,
            unknown: BTreeMap::new(),
            findings: BTreeMap::new(),
            next_pass: None,
        }
    }

    #[test]
    fn an_observed_plan_says_what_apply_would_do_and_why() {
        let lines: Vec<String> = observed().would().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "would pull 127.0.0.1:5000/demo@sha256:0b1c2d3e4f5a: image not in the store, for web",
                "would remove network old: no container uses it",
                "would create api: new container",
                "would remove db: no longer in the repository",
                "would not apply priv: blocked by policy: no-privileged: privileged = true",
                "would recreate web: command changed",
            ]
        );
    }

    #[test]
    fn an_observed_pass_in_json_is_the_plan_with_what_apply_would_do() {
        let r = observed();
        let plan = serde_json::to_value(&r).unwrap();
        let v = serde_json::to_value(PassResult::Observed(Box::new(r))).unwrap();
        // Every key of `berth plan --format json`, as it prints it, and `would`.
        for (k, want) in plan.as_object().unwrap() {
            assert_eq!(&v[k], want, "{k}");
        }
        assert_eq!(
            v["would"][5],
            serde_json::json!({"action": "recreate", "target": "web", "reason": "command changed"})
        );
        assert!(plan.get("would").is_none(), "{plan:#}");
    }

    #[test]
    fn what_would_be_done_is_printed_without_terminal_escapes() {
        let w = Would {
            action: "create".into(),
            target: "web".into(),
            reason: "env X changed\u{1b}[2J".into(),
        };
        assert!(!w.to_string().contains('\u{1b}'), "{w}");
    }
}
