//! Rolling a failed update back, within the pass that made it: a `verify` step that
//! failed (the new instance did not run, or become healthy, within `update_timeout`)
//! marks the update failed at this revision (`runtime::rollback`), and the pass plans
//! again: the planner then stops and removes the failed instance and starts the one it
//! replaced as the container's instance again (`fate::rolled_back`). The two plans'
//! reports are merged into the pass's one.

use std::path::Path;

use super::executor::StepResult;
use super::host::HostStepError;
use super::model::Action;
use super::outcome::ContainerOutcome;
use super::pass::Report;
use crate::runtime::rollback::{self, RollbackMark};

/// Why the update to `instance` of `name` failed in `report`: its verify step failed,
/// or was skipped because its create or start failed.
fn failure(report: &Report, name: &str, instance: &str) -> Option<String> {
    report.steps.iter().find_map(|s| {
        let StepResult::Failed(f) = &s.result else {
            return None;
        };
        let (verb, n, i) = match &s.step.action {
            Action::Verify { name, instance, .. } => ("verify", name, instance),
            Action::Create { name, instance } => ("create", name, instance),
            Action::Start { name, instance } => ("start", name, instance),
            _ => return None,
        };
        if n != name || i != instance {
            return None;
        }
        Some(match f.error().downcast_ref::<HostStepError>() {
            Some(HostStepError::UpdateFailed { why, .. }) => why.clone(),
            _ => format!("{verb} failed: {}", f.chain()),
        })
    })
}

/// Marks every update whose verify step did not succeed in `report` (it failed, or its
/// create or start did); true if one was marked.
pub fn mark_failed(state_dir: &Path, report: &Report) -> bool {
    let mut any = false;
    for s in &report.steps {
        let (Action::Verify { name, instance, .. }, false) =
            (&s.step.action, matches!(s.result, StepResult::Done))
        else {
            continue;
        };
        let Some(reason) = failure(report, name, instance) else {
            continue;
        };
        let reason = berth_spec::diag::printable(&reason).into_owned();
        let mark = RollbackMark {
            failed: instance.clone(),
            revision: report.revision.id.clone(),
            reason,
            at: crate::util::rfc3339::now(),
            restored: None,
        };
        tracing::warn!(container = %name, instance = %instance, "update failed: {}; rolling back", mark.reason);
        match rollback::record(state_dir, name, mark) {
            Ok(()) => any = true,
            Err(e) => tracing::warn!(container = %name, "{}", crate::util::error_chain(&e)),
        }
    }
    any
}

/// Forgets every container's failed update, so that this pass tries them again
/// (`berth apply`, `berth reconcile`).
pub fn forget_all(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir.join("containers")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if rollback::load(state_dir, &name).is_none() {
            continue;
        }
        match rollback::clear(state_dir, &name) {
            Ok(()) => tracing::info!(container = %name, "trying the failed update again"),
            Err(e) => tracing::warn!(container = %name, "{}", crate::util::error_chain(&e)),
        }
    }
}

/// The report of a pass that rolled updates back: the first plan's steps, then the
/// rollback's (numbered on), and each container as the rollback left it when the
/// rollback touched it.
pub fn merged(mut first: Report, second: Report) -> Report {
    let offset = first.steps.iter().map(|s| s.step.id).max().unwrap_or(0);
    for mut s in second.steps {
        s.step.id += offset;
        for n in &mut s.step.needs {
            *n += offset;
        }
        first.steps.push(s);
    }
    for (name, c) in second.containers {
        if !matches!(c.outcome, ContainerOutcome::Unchanged) {
            first.containers.insert(name, c);
        }
    }
    first.converged = false;
    first.next_pass = match (first.next_pass, second.next_pass) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    first
}
