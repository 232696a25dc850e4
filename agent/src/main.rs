//! `berth`: the declarative GitOps host agent and its command line.
//!
//! The binary is thin: `cli` parses arguments and calls into the domain modules
//! (`image`, `runtime`, `network`, `storage`, `reconcile`, `source`), which hold the
//! logic; `util` holds the few helpers that belong to no domain. `anyhow` is used only
//! at this edge; modules return their own error types.

mod api;
mod cli;
mod daemon;
mod image;
mod network;
mod node;
mod reconcile;
mod runtime;
mod source;
mod storage;
mod telemetry;
#[cfg(test)]
mod testing;
mod util;

fn main() -> std::process::ExitCode {
    // What berth itself creates has explicit modes (docs/layout.md); this covers what
    // the OCI runtime, the shim and the CNI plugins create under a careless umask
    // (`umask 000` would leave their files writable by everyone), as dockerd does.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    cli::main()
}
