//! `berth plan [PATH] [--offline]`: what `berth apply` would do now, with reasons — the
//! same pass (`reconcile::pass`) from the same facts, without executing it. It may ask
//! the registry what a tag resolves to, and for image configs and signatures (never a
//! layer); `--offline` forbids that. Nothing is written to the state directory.
//!
//! A fact the plan cannot know (`--offline`, an unreachable registry, an image whose
//! layers are not pulled) is printed per container after the plan, not guessed; when it
//! decides what `apply` would do (a signature under enforce, the user), the container
//! gets a `report … unknown` step instead of its create and start.
//!
//! Exit codes: 0 `apply` would apply every container; 1 the tree is invalid, or a
//! container would not be applied (blocked, held, not evaluated) or what `apply` would
//! do to it cannot be known; 3 berth could not do its job.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::pass::{NodeArgs, Setup, not_run};
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, Format};
use crate::reconcile::pass::{self, PassError, PlanReport, Registry};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The spec tree
    #[arg(default_value = ".")]
    pub path: PathBuf,
    #[command(flatten)]
    pub target: NodeArgs,
    /// Also remove volumes no container uses
    #[arg(long)]
    pub prune_volumes: bool,
    /// Ask no registry: what only a registry can say is reported as unknown
    #[arg(long)]
    pub offline: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(cli: &Cli, args: &PlanArgs) -> ExitCode {
    let report = match plan(cli, args) {
        Ok(r) => r,
        Err(e) => return not_run(&e, None),
    };
    match args.format {
        Format::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        },
        Format::Text => {
            if report.plan.is_empty() {
                println!("nothing to do: the host matches {}", args.path.display());
            } else {
                print!("{}", report.plan);
            }
            for (name, facts) in &report.unknown {
                for f in facts {
                    println!(
                        "{name}: not known: {}",
                        berth_spec::diag::printable(&f.to_string())
                    );
                }
            }
        }
    }
    // 0: `apply` would apply every container; 1: it would not apply one, or what it
    // would do to one cannot be known.
    if report.applied() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    }
}

fn plan(cli: &Cli, args: &PlanArgs) -> Result<PlanReport, PassError> {
    let registry = if args.offline {
        Registry::Offline
    } else {
        Registry::Online
    };
    let setup = Setup::new(cli, &args.path, &args.target, args.prune_volumes)?;
    pass::plan(&setup.env(), &setup.input, registry)
}
