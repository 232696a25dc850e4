//! `berth secret keygen|recipient|encrypt`: the node's age identity and the files that
//! go into the repository. The agent decrypts them in-process (`storage::secrets`); the
//! `age` CLI is never needed on a node, and reads/writes the same formats.
//!
//! - `keygen [--output FILE]`: a new X25519 identity in age-keygen format, mode 0600,
//!   at FILE (default: the node config's `[secrets] identity`, else
//!   `/etc/berth/age.key`; `-` prints it); never overwrites (exit 1). Prints the
//!   recipient on stdout (on stderr when the key itself goes to stdout).
//! - `recipient [--identity FILE]`: the recipient of the configured (or given) identity.
//! - `encrypt -r RECIPIENT… [--armor] [--output FILE] FILE|-`: ciphertext to FILE or
//!   stdout (binary output to a terminal is refused).
//!
//! Plaintext is never printed or logged; errors name files, never content.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use zeroize::Zeroizing;

use super::config;
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, EXIT_USAGE, Format};
use crate::storage::secrets::{self, AgeIdentity, Plaintext, Recipient, SecretError};
use crate::util::error_chain;

/// Where `keygen` writes without `--output` and no `[secrets] identity` in the config.
pub const DEFAULT_IDENTITY: &str = "/etc/berth/age.key";

/// Manage the node's age identity and encrypt secrets for the repository.
#[derive(Debug, Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Generate the node's age identity (mode 0600) and print its recipient
    Keygen(KeygenArgs),
    /// Print the recipient (age1…) of the node's age identity
    Recipient(RecipientArgs),
    /// Encrypt a file to age recipients (the nodes that need it)
    Encrypt(EncryptArgs),
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Identity file to create, `-` for stdout [default: `[secrets] identity`, else /etc/berth/age.key]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RecipientArgs {
    /// Identity file [default: `[secrets] identity` of the node configuration]
    #[arg(short, long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Recipient (age1…), repeatable: typically each node that needs the secret
    #[arg(short, long = "recipient", value_name = "RECIPIENT", required = true, value_parser = recipient_arg)]
    pub recipients: Vec<Recipient>,
    /// ASCII-armored output (PEM-like text)
    #[arg(short, long)]
    pub armor: bool,
    /// Write the ciphertext here instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The plaintext file, `-` for stdin
    pub file: PathBuf,
}

fn recipient_arg(s: &str) -> Result<Recipient, String> {
    secrets::parse_recipient(s).map_err(|e| e.to_string())
}

pub fn run(cli: &Cli, args: &SecretArgs) -> ExitCode {
    match &args.command {
        SecretCommand::Keygen(a) => keygen(cli, a),
        SecretCommand::Recipient(a) => recipient(cli, a),
        SecretCommand::Encrypt(a) => encrypt(a),
    }
}

fn fail(e: &dyn std::error::Error, code: u8) -> ExitCode {
    eprintln!("error: {}", error_chain(e));
    ExitCode::from(code)
}

/// The configured identity path (`Ok(None)`: not configured), or the exit code after
/// reporting an unusable configuration.
fn configured_identity(cli: &Cli) -> Result<Option<PathBuf>, ExitCode> {
    config::load_or_report(cli).map(|loaded| loaded.config.secrets.identity)
}

fn keygen(cli: &Cli, args: &KeygenArgs) -> ExitCode {
    let path = match &args.output {
        Some(p) => p.clone(),
        None => match configured_identity(cli) {
            Ok(p) => p.unwrap_or_else(|| PathBuf::from(DEFAULT_IDENTITY)),
            Err(code) => return code,
        },
    };
    let identity = AgeIdentity::generate();
    let recipient = identity.recipients().join("\n");
    if path == Path::new("-") {
        let text = identity.to_file_text();
        if std::io::stdout().write_all(text.as_bytes()).is_err() {
            return ExitCode::from(EXIT_FAILED);
        }
        eprintln!("Public key: {recipient}");
        return ExitCode::SUCCESS;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Err(source) = std::fs::create_dir_all(parent)
    {
        return fail(&SecretError::WriteIdentity { path, source }, EXIT_FAILED);
    }
    if let Err(e) = identity.write_new(&path) {
        let code = match e {
            SecretError::IdentityExists { .. } => EXIT_FINDINGS,
            _ => EXIT_FAILED,
        };
        return fail(&e, code);
    }
    match args.format {
        Format::Text => println!("{recipient}"),
        Format::Json => println!(
            "{}",
            json!({ "identity": path.display().to_string(), "recipient": recipient })
        ),
    }
    ExitCode::SUCCESS
}

fn recipient(cli: &Cli, args: &RecipientArgs) -> ExitCode {
    let path = match &args.identity {
        Some(p) => p.clone(),
        None => match configured_identity(cli) {
            Ok(Some(p)) => p,
            Ok(None) => {
                let config = cli.config.as_ref().map_or_else(
                    || config::DEFAULT_CONFIG.to_string(),
                    |p| p.display().to_string(),
                );
                eprintln!(
                    "error: no node identity: set `[secrets] identity` in {config} or pass --identity FILE"
                );
                return ExitCode::from(EXIT_FAILED);
            }
            Err(code) => return code,
        },
    };
    let identity = match AgeIdentity::load(&path) {
        Ok(id) => id,
        Err(e @ SecretError::ReadIdentity { .. }) => return fail(&e, EXIT_FAILED),
        Err(e) => return fail(&e, EXIT_FINDINGS),
    };
    let recipients = identity.recipients();
    match args.format {
        Format::Text => {
            for r in &recipients {
                println!("{r}");
            }
        }
        Format::Json => println!(
            "{}",
            json!({ "identity": path.display().to_string(), "recipients": recipients })
        ),
    }
    ExitCode::SUCCESS
}

fn read_plaintext(file: &Path) -> std::io::Result<Plaintext> {
    let mut bytes = Zeroizing::new(Vec::new());
    if file == Path::new("-") {
        std::io::stdin().lock().read_to_end(&mut bytes)?;
    } else {
        let mut f = std::fs::File::open(file)?;
        let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
        // Sized up front so the buffer holding the plaintext never reallocates.
        bytes.reserve_exact(len + 1);
        f.read_to_end(&mut bytes)?;
    }
    Ok(Plaintext::new(bytes))
}

fn encrypt(args: &EncryptArgs) -> ExitCode {
    let to_stdout = args.output.as_deref().is_none_or(|p| p == Path::new("-"));
    if to_stdout && !args.armor && std::io::stdout().is_terminal() {
        eprintln!(
            "error: refusing to write binary age output to a terminal; use --armor or --output FILE"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let plaintext = match read_plaintext(&args.file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.file.display());
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let ciphertext = match secrets::encrypt(&args.recipients, plaintext.as_bytes(), args.armor) {
        Ok(c) => c,
        Err(e) => return fail(&e, EXIT_FAILED),
    };
    drop(plaintext);
    let written = match &args.output {
        Some(path) if !to_stdout => std::fs::write(path, &ciphertext)
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(&ciphertext)
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write to stdout: {e}"))
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
