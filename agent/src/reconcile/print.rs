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

use std::fmt;

use berth_spec::types::format_duration;

use super::diff::short_digest;
use super::model::{Action, Plan, Step};

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
