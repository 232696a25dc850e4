//! The node configuration for a command: `crate::node` read with the global
//! `--config`, `--state-dir` and `--run-dir`.

pub use crate::node::{ConfigError, DEFAULT_CONFIG, Loaded, NodePolicy, node_policy, today};

use super::Cli;

/// Reads the node configuration named by the command line, or the default one.
pub fn load(cli: &Cli) -> Result<Loaded, ConfigError> {
    crate::node::load(
        cli.config.as_deref(),
        cli.state_dir.as_deref(),
        cli.run_dir.as_deref(),
    )
}
