//! `berth source verify [REV] [--repo DIR] [--allowed-signers FILE]`: check a commit's
//! signature as the agent would.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Cli, EXIT_FAILED};

#[derive(Debug, Args)]
pub struct SourceArgs {
    #[command(subcommand)]
    pub command: SourceCommand,
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Check a commit's signature as the agent would (exit 0 verified, 1 refused)
    Verify,
}

pub fn run(_cli: &Cli, _args: &SourceArgs) -> ExitCode {
    eprintln!("error: `berth source verify` is not part of this build yet");
    ExitCode::from(EXIT_FAILED)
}
