//! `berth key generate [PREFIX] [--force]`: a cosign-compatible ECDSA P-256 key pair,
//! `PREFIX.key` (unencrypted PKCS#8 PEM, created with mode 0600) and `PREFIX.pub`
//! (PKIX PEM, as cosign writes it). Existing files are kept unless `--force` (exit 1).
//! The public key goes into a node's `policy.trusted_keys`; the private key signs with
//! `berth sign --key`, or with cosign after `cosign import-key-pair --key PREFIX.key`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{EXIT_FAILED, EXIT_FINDINGS, EXIT_USAGE, Format};
use crate::image::signature::{self, SignatureError};
use crate::util::error_chain;

/// Manage signing keys.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (PKIX PEM)
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Path prefix of the two files
    #[arg(default_value = "cosign")]
    pub prefix: PathBuf,
    /// Overwrite existing key files
    #[arg(long)]
    pub force: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(args: &KeyArgs) -> ExitCode {
    match &args.command {
        KeyCommand::Generate(args) => generate(args),
    }
}

fn generate(args: &GenerateArgs) -> ExitCode {
    let prefix = args.prefix.as_os_str().to_string_lossy();
    if prefix.is_empty() || prefix.ends_with('/') {
        eprintln!(
            "error: the key prefix `{prefix}` names no file (try `cosign` or `keys/release`)"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let paths = match signature::write_key_pair(&args.prefix, args.force) {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            let code = match e {
                SignatureError::KeyExists { .. } => EXIT_FINDINGS,
                _ => EXIT_FAILED,
            };
            return ExitCode::from(code);
        }
    };
    match args.format {
        Format::Text => {
            println!("Private key written to {}", paths.private_key.display());
            println!("Public key written to {}", paths.public_key.display());
        }
        Format::Json => {
            let out = serde_json::json!({
                "private_key": paths.private_key.display().to_string(),
                "public_key": paths.public_key.display().to_string(),
            });
            println!("{out}");
        }
    }
    ExitCode::SUCCESS
}
