//! The node configuration for a command: `crate::node` read with the global
//! `--config`, `--state-dir` and `--run-dir`, and the one way every command reports a
//! configuration it cannot use.

use std::process::ExitCode;

pub use crate::node::{ConfigError, DEFAULT_CONFIG, Loaded, NodePolicy, node_policy, today};

use super::{Cli, EXIT_FAILED, EXIT_FINDINGS};
use crate::util::error_chain;

/// Reads the node configuration named by the command line, or the default one.
pub fn load(cli: &Cli) -> Result<Loaded, ConfigError> {
    crate::node::load(
        cli.config.as_deref(),
        cli.state_dir.as_deref(),
        cli.run_dir.as_deref(),
    )
}

/// [`load`], or the exit code after [`report`]ing why the configuration is unusable.
pub fn load_or_report(cli: &Cli) -> Result<Loaded, ExitCode> {
    load(cli).map_err(|e| report(&e))
}

/// Reports a configuration that cannot be used, as every command does (DESIGN.md §6):
/// an invalid one (a TOML syntax error, an unknown key, a bad value) prints its located
/// errors on stdout, as `berth validate` prints errors, and exits 1; one that cannot be
/// read (an explicit `--config` that is missing) prints one `error:` line with its cause
/// on stderr and exits 3.
pub fn report(e: &ConfigError) -> ExitCode {
    match e {
        ConfigError::Invalid { diags, .. } => {
            for d in diags {
                println!("{d}");
            }
            ExitCode::from(EXIT_FINDINGS)
        }
        e => {
            eprintln!("error: {}", error_chain(e));
            ExitCode::from(EXIT_FAILED)
        }
    }
}
