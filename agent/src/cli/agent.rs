//! `berth agent [--once] [--check]`: the GitOps daemon. `--check` validates the node
//! configuration (with the same located errors as specs) and exits.
//!
//! Keys this build parses but does not act on yet are warnings on stderr, one line
//! each. A security key it cannot enforce yet (commit or keyless image signatures) is
//! an error: the agent refuses to run rather than run without the check its owner
//! asked for.

use std::process::ExitCode;

use berth_spec::node::Caller;
use clap::Args;

use super::config::{self, ConfigError};
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Only check the node configuration, then exit
    #[arg(long)]
    pub check: bool,
    /// Run one reconcile pass and exit
    #[arg(long)]
    pub once: bool,
}

pub fn run(cli: &Cli, args: &AgentArgs) -> ExitCode {
    let loaded = match config::load(cli) {
        Ok(l) => l,
        Err(ConfigError::Invalid { diags, .. }) => {
            for d in &diags {
                println!("{d}");
            }
            return ExitCode::from(EXIT_FINDINGS);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let shown = loaded.path.as_ref().map_or_else(
        || config::DEFAULT_CONFIG.to_string(),
        |p| p.display().to_string(),
    );
    if let Err(d) = loaded.config.require_source(&shown) {
        println!("{d}");
        return ExitCode::from(EXIT_FINDINGS);
    }
    for inert in loaded.config.inert() {
        eprintln!("{inert}");
    }
    let refused = loaded.config.unenforced(Caller::Agent);
    if !refused.is_empty() {
        for u in &refused {
            println!("{}", u.diagnostic());
        }
        return ExitCode::from(EXIT_FINDINGS);
    }
    if args.check {
        println!("ok: node configuration {shown} is valid");
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "error: the GitOps daemon is not part of this build yet; use `berth agent --check` to validate {shown}, and `berth apply` to converge from a directory"
    );
    ExitCode::from(EXIT_FAILED)
}
