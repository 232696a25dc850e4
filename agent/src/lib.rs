//! `berth`: the declarative GitOps host agent and its command line.
//!
//! Two binaries share this library. `berth` is thin: `cli` parses arguments and calls
//! into the domain modules (`image`, `runtime`, `network`, `storage`, `reconcile`,
//! `source`), which hold the logic; `util` holds the few helpers that belong to no
//! domain. `berth-agentd` is what `berth agent` becomes once it has checked its
//! configuration (`daemon`): the long-running controller and API, which link only
//! what they use, and run each pass as `berth agent --pass-worker` (`reconcile::worker`),
//! so that the process that idles for months stays small. `anyhow` is used only at the
//! CLI's edge; modules return their own error types.

mod api;
pub mod cli;
pub mod daemon;
mod image;
mod network;
pub mod node;
mod reconcile;
mod runtime;
mod source;
mod storage;
pub mod telemetry;
#[cfg(test)]
mod testing;
mod trust;
mod util;

/// What berth itself creates has explicit modes (docs/layout.md); this covers what the
/// OCI runtime, the shim and the CNI plugins create under a careless umask (`umask 000`
/// would leave their files writable by everyone), as dockerd does.
pub fn set_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
}
