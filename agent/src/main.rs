//! `berth`: the declarative GitOps host agent and its command line.
//!
//! The binary is thin: `cli` parses arguments and calls into the domain modules
//! (`image`, `runtime`, `network`, `storage`, `reconcile`, `source`), which hold the
//! logic. `anyhow` is used only at this edge; modules return their own error types.

mod cli;
mod image;
mod network;
mod reconcile;
mod runtime;
mod storage;
mod telemetry;

fn main() -> std::process::ExitCode {
    cli::main()
}
