//! `berth apply [PATH] [--prune-volumes]`: converge this node once from a directory —
//! no Git, no daemon. Reads the tree, makes its images ready, plans against what runs,
//! executes the plan, and prints one line per container saying what happened to it
//! (`reconcile::outcome`): created, recreated, started, stopped, unchanged, removed,
//! blocked by policy, held, not evaluated, or not applied with the step that did not
//! succeed and its error — and the policy findings reported with it.
//!
//! Exit codes: 0 every container applied (a restart deferred by crash-loop backoff
//! counts as applied, though the report's `converged` is false); 1 the tree is invalid,
//! or some containers were not applied (policy, verification, a failed step) while the
//! rest were; 3 berth could not do its job (state dir, runtime, network), or the state
//! lock was held past `--lock-timeout`.
//!
//! The pass itself is `reconcile::pass`; this file parses the arguments and renders.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::pass::{NodeArgs, Setup, not_run};
use super::{Cli, EXIT_FINDINGS, Format};
use crate::reconcile::outcome::{ContainerOutcome, ContainerReport};
use crate::reconcile::pass::{self, LockWait, PassError, Report};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The spec tree
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Also delete named volumes no container uses (data is kept otherwise)
    #[arg(long)]
    pub prune_volumes: bool,
    #[command(flatten)]
    pub target: NodeArgs,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(cli: &Cli, args: &ApplyArgs) -> ExitCode {
    match apply(cli, args) {
        Ok(report) => {
            render(&report, args.format);
            // From what was not applied, not from `converged`: a restart deferred by
            // crash-loop backoff is not a failure.
            if report.applied() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FINDINGS)
            }
        }
        Err(e) => not_run(&e, Some("nothing applied: the spec tree has errors")),
    }
}

fn apply(cli: &Cli, args: &ApplyArgs) -> Result<Report, PassError> {
    let setup = Setup::new(cli, &args.path, &args.target, args.prune_volumes)?;
    let mut waiting = |who: &str| eprintln!("{who}");
    let wait = LockWait {
        command: "berth apply",
        timeout: cli.lock_timeout,
        waiting: &mut waiting,
    };
    let format = args.format;
    let state_dir = setup.env().loaded.config.runtime.state_dir.clone();
    // The node is converged from a directory now: the revision an agent applied from
    // its source is forgotten, so that an agent without a source does not bring it
    // back (one with a source fetches and applies its source again). Forgotten once
    // the plan is made, under the state lock the pass holds, so that no agent pass
    // records its revision between this pass and the forgetting (the agent reads and
    // writes the record under the same lock).
    let mut forgotten = None;
    let report = pass::apply(&setup.env(), &setup.input, wait, &mut |plan| {
        if forgotten.is_none() {
            forgotten = Some(crate::source::applied::Applied::forget(&state_dir));
        }
        if format == Format::Text && !plan.is_empty() {
            print!("{plan}");
        }
    })?;
    match forgotten {
        Some(Ok(Some(commit))) => eprintln!(
            "note: the revision applied from the source before ({}) no longer describes this node: forgotten",
            &commit[..commit.len().min(12)]
        ),
        Some(Ok(None)) | None => {}
        Some(Err(e)) => eprintln!("warning: {}", crate::util::error_chain(&e)),
    }
    Ok(report)
}

/// The report as text (one line per container, then deferred networks) or JSON
/// (`{"revision": {"id", "source"}, "containers": {name: {"outcome": …, …,
/// "findings": […]}}, "steps": [{"id", "action", …, "reason", "result", …}],
/// "converged", "next_pass"}`, `"networks"` when a network's change was deferred; the
/// shape `berth plan --format json` shares).
pub(super) fn render(report: &Report, format: Format) {
    match format {
        Format::Json => match serde_json::to_string(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot write the report: {e}"),
        },
        Format::Text => {
            for (name, c) in &report.containers {
                println!("{name}: {}", berth_spec::diag::printable(&describe(c)));
            }
            for (name, n) in &report.networks {
                println!(
                    "network {name}: deferred: {}",
                    berth_spec::diag::printable(&n.reason)
                );
            }
            let failed = report.failed_steps();
            if failed > 0 {
                eprintln!("{failed} step(s) failed");
            }
        }
    }
}

/// One container's line, after its name: what happened, then its policy findings.
fn describe(report: &ContainerReport) -> String {
    let mut line = match &report.outcome {
        ContainerOutcome::Created { .. } => "created".to_string(),
        ContainerOutcome::Recreated { .. } => "recreated".to_string(),
        ContainerOutcome::Started { .. } => "started".to_string(),
        ContainerOutcome::Stopped { reason, .. } => format!("stopped: {reason}"),
        ContainerOutcome::Unchanged => "unchanged".to_string(),
        ContainerOutcome::Deferred { until, reason, .. } => {
            format!("restart deferred until {until} ({reason})")
        }
        ContainerOutcome::Removed => "removed".to_string(),
        // Blocked, held, not evaluated, not known, not applied: the one wording.
        other => other.why_not().unwrap_or_default(),
    };
    // It runs, but a wait for its health did not succeed: `created (unhealthy: …)`.
    if let Some(h) = &report.health {
        line.push_str(&format!(" ({}: {})", h.health, h.health_error));
    }
    if !report.findings.is_empty() {
        line.push_str(&format!(
            " (policy findings: {})",
            report.findings.join("; ")
        ));
    }
    line
}
