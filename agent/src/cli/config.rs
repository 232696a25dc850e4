//! Finding and reading the node configuration for a command (DESIGN.md §6): `--config`
//! or `$BERTH_CONFIG` must exist; the default `/etc/berth/berth.toml` may be missing,
//! which means all defaults. Global `--state-dir`/`--run-dir` override the file.

use std::path::{Path, PathBuf};

use berth_spec::Diagnostic;
use berth_spec::node::NodeConfig;

use super::Cli;

pub const DEFAULT_CONFIG: &str = "/etc/berth/berth.toml";

/// Why a node configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read node configuration {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node configuration {} is invalid ({} errors)", path.display(), diags.len())]
    Invalid {
        path: PathBuf,
        diags: Vec<Diagnostic>,
    },
}

/// The configuration in effect and the file it came from (`None`: built-in defaults).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: NodeConfig,
    pub path: Option<PathBuf>,
}

/// Reads the node configuration named by the command line, or the default one.
pub fn load(cli: &Cli) -> Result<Loaded, ConfigError> {
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let mut loaded = match std::fs::read_to_string(&path) {
        Ok(text) => Loaded {
            config: parse(&path, &text)?,
            path: Some(path),
        },
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Loaded {
            config: NodeConfig::default(),
            path: None,
        },
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    if let Some(dir) = &cli.state_dir {
        loaded.config.runtime.state_dir = dir.clone();
    }
    if let Some(dir) = &cli.run_dir {
        loaded.config.runtime.run_dir = dir.clone();
    }
    Ok(loaded)
}

/// Parses a configuration text; diagnostics name the file as given.
pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse(&path.display().to_string(), text).map_err(|diags| ConfigError::Invalid {
        path: path.to_path_buf(),
        diags,
    })
}
