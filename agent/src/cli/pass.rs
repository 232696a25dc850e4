//! What `berth plan`, `berth apply` and `berth agent` share around a pass: the flags
//! that name the node, setting the pass up, and how a pass that could not run is
//! reported. The pass itself is `reconcile::pass`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::config::{self, Loaded};
use super::validate::{node_identity, parse_key_value};
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, async_runtime};
use crate::reconcile::pass::{Env, Input, PassError};
use crate::util::error_chain;

/// The node a pass runs for, over the node configuration's identity.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// This node's name [default: the node configuration's, else the host name]
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// A node label (repeatable) [default: the node configuration's]
    #[arg(long = "label", value_name = "K=V", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
}

/// A pass ready to run: the node configuration loaded, the async runtime started, and
/// the input the flags give.
#[derive(Debug)]
pub struct Setup<'a> {
    loaded: Loaded,
    rt: &'static tokio::runtime::Runtime,
    pub input: Input<'a>,
}

impl<'a> Setup<'a> {
    /// The pass over the tree at `path` for the node `target` names.
    pub fn new(
        cli: &Cli,
        path: &'a Path,
        target: &NodeArgs,
        prune_volumes: bool,
    ) -> Result<Self, PassError> {
        let loaded = config::load(cli)?;
        let rt = async_runtime().map_err(|e| PassError::Setup {
            what: "cannot start the async runtime",
            source: Box::new(e),
        })?;
        let input = Input {
            path,
            node: node_identity(&target.node, &target.labels),
            prune_volumes,
            revision: None,
            retry_failed: true,
        };
        Ok(Setup { loaded, rt, input })
    }

    pub fn env(&self) -> Env<'_> {
        Env {
            loaded: &self.loaded,
            rt: self.rt.handle(),
            pulls: None,
        }
    }
}

/// Reports a pass that did not run, and its exit code: the tree's located errors
/// (then `nothing`, if given, on stderr), the node configuration's, or the policy keys
/// this host cannot enforce, on stdout, exit 1; any other error on stderr, exit 3.
pub fn not_run(e: &PassError, nothing: Option<&str>) -> ExitCode {
    match e {
        PassError::Invalid { errors } => {
            for e in errors {
                println!("{e}");
            }
            if let Some(nothing) = nothing {
                eprintln!("{nothing}");
            }
            ExitCode::from(EXIT_FINDINGS)
        }
        PassError::Config(e) => config::report(e),
        PassError::Unenforced { refused } => {
            for u in refused {
                println!("{}", u.diagnostic());
            }
            ExitCode::from(EXIT_FINDINGS)
        }
        e => {
            eprintln!("error: {}", error_chain(e));
            ExitCode::from(EXIT_FAILED)
        }
    }
}
