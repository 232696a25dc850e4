//! `berth agent [--once] [--check]`: the GitOps daemon. `--check` validates the node
//! configuration (with the same located errors as specs) and exits.
//!
//! Keys this build parses but does not act on yet, and keys that have no effect where
//! they are (an ssh key with an https URL), are warnings on stderr, one line each. So
//! is a file the configuration names that cannot be read (`--check` only: a config is
//! often checked before its keys are installed, and the commands that need a file fail
//! when they open it). A security key it cannot enforce yet (commit or keyless image signatures) is
//! an error: the agent refuses to run rather than run without the check its owner
//! asked for.

use std::process::ExitCode;

use berth_spec::Diagnostic;
use berth_spec::node::Caller;
use clap::Args;

use super::config::{self, ConfigError};
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS};
use crate::node::unreadable_files;

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
    let loaded = match config::load_or_report(cli) {
        Ok(l) => l,
        Err(code) => return code,
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
    for w in loaded.config.warnings() {
        eprintln!("{w}");
    }
    // Errors in file order: security keys refused, and the policy (a profile file,
    // waivers) as the agent's passes would load it.
    let mut errors: Vec<Diagnostic> = loaded
        .config
        .unenforced(Caller::Agent)
        .iter()
        .map(|u| u.diagnostic())
        .collect();
    if args.check {
        for d in unreadable_files(&loaded) {
            eprintln!(
                "{}:{}:{}: warning: {}",
                berth_spec::diag::printable(&d.file),
                d.line,
                d.column,
                berth_spec::diag::printable(&d.message)
            );
        }
    }
    match config::node_policy(&loaded, None) {
        Ok(_) => {}
        Err(ConfigError::Invalid { diags, .. }) => errors.extend(diags),
        Err(e) => return config::report(&e),
    }
    if !errors.is_empty() {
        berth_spec::diag::sort(&mut errors);
        for d in &errors {
            println!("{d}");
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
