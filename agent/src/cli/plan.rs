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

use super::validate::{node_identity, parse_key_value};
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, Format, async_runtime, config};
use crate::reconcile::pass::{self, Env, Input, PassError, PlanReport, Registry};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The spec tree
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// This node's name [default: the node configuration's, else the host name]
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// A node label (repeatable) [default: the node configuration's]
    #[arg(long = "label", value_name = "K=V", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
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
        Err(PassError::Invalid { errors }) => {
            for e in &errors {
                println!("{e}");
            }
            return ExitCode::from(EXIT_FINDINGS);
        }
        Err(PassError::Config(e)) => return config::report(&e),
        Err(PassError::Unenforced { refused }) => {
            for u in &refused {
                println!("{}", u.diagnostic());
            }
            return ExitCode::from(EXIT_FINDINGS);
        }
        Err(e) => {
            eprintln!("error: {}", crate::util::error_chain(&e));
            return ExitCode::from(EXIT_FAILED);
        }
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
    let loaded = config::load(cli)?;
    let rt = async_runtime().map_err(|e| PassError::Setup {
        what: "cannot start the async runtime",
        source: Box::new(e),
    })?;
    let env = Env {
        loaded: &loaded,
        rt: rt.handle(),
    };
    let input = Input {
        path: &args.path,
        node: node_identity(&args.node, &args.labels),
        prune_volumes: args.prune_volumes,
        revision: None,
    };
    let registry = if args.offline {
        Registry::Offline
    } else {
        Registry::Online
    };
    pass::plan(&env, &input, registry)
}
