//! `berth source verify [REV] [--repo DIR] [--allowed-signers FILE] [--format text|json]`:
//! check a revision's signature as the agent would (`source::verify`), on a local
//! repository. Exit 0 verified, 1 refused (or an invalid allowed signers file), 3 when
//! the check cannot be done (no repository, an unknown REV, an unreadable file, no
//! allowed signers at all).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use git2::{ObjectType, Oid, Repository};
use serde_json::json;

use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, Format, config};
use crate::source::signers::{AllowedSigners, SignersError};
use crate::source::verify::{Refusal, Verified, format_time, verify_revision};

#[derive(Debug, Args)]
pub struct SourceArgs {
    #[command(subcommand)]
    pub command: SourceCommand,
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Check a commit's signature as the agent would (exit 0 verified, 1 refused)
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The revision: a commit, branch or tag (a signed annotated tag counts, as with
    /// `source.tag`)
    #[arg(default_value = "HEAD")]
    pub rev: String,
    /// The repository (searched upwards from here)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// The allowed signers file [default: the node config's `source.allowed_signers`]
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(cli: &Cli, args: &SourceArgs) -> ExitCode {
    match &args.command {
        SourceCommand::Verify(args) => verify(cli, args),
    }
}

/// The revision named on the command line.
struct Revision {
    commit: Oid,
    /// An annotated tag: its id and name.
    tag: Option<(Oid, String)>,
}

fn verify(cli: &Cli, args: &VerifyArgs) -> ExitCode {
    let path = match &args.allowed_signers {
        Some(p) => p.clone(),
        None => match configured_signers(cli) {
            Ok(p) => p,
            Err(code) => return code,
        },
    };
    let signers = match AllowedSigners::load(&path) {
        Ok(s) => s,
        Err(e) => return signers_error(&e, args.format),
    };
    let repo = match Repository::discover(&args.repo) {
        Ok(r) => r,
        Err(e) => {
            return failed(&format!(
                "no Git repository at or above {}: {}",
                args.repo.display(),
                e.message()
            ));
        }
    };
    let rev = match resolve(&repo, &args.rev) {
        Ok(r) => r,
        Err(e) => return failed(&format!("cannot resolve `{}`: {}", args.rev, e.message())),
    };
    let result = verify_revision(&repo, rev.commit, rev.tag.as_ref().map(|t| t.0), &signers);
    if let Err(refusal) = &result
        && !refusal.is_judgement()
    {
        return failed(&format!("commit {}: {refusal}", rev.commit));
    }
    match args.format {
        Format::Text => println!("{}", text(&rev, &result)),
        Format::Json => println!("{}", self::json(&rev, &result)),
    }
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(EXIT_FINDINGS),
    }
}

/// `source.allowed_signers` of the node config, or the exit code after saying why
/// there is none.
fn configured_signers(cli: &Cli) -> Result<PathBuf, ExitCode> {
    let loaded = config::load_or_report(cli)?;
    let configured = loaded
        .config
        .source
        .as_ref()
        .and_then(|s| s.allowed_signers.clone());
    configured.ok_or_else(|| {
        let config = loaded.path.as_deref().map_or_else(
            || format!("{} (which does not exist)", config::DEFAULT_CONFIG),
            |p: &Path| p.display().to_string(),
        );
        failed(&format!(
            "no allowed signers to verify against: pass --allowed-signers FILE, or set `source.allowed_signers` in the node config {config}"
        ))
    })
}

fn resolve(repo: &Repository, rev: &str) -> Result<Revision, git2::Error> {
    let object = repo.revparse_single(rev)?;
    let commit = object.peel_to_commit()?.id();
    let tag = match object.kind() {
        Some(ObjectType::Tag) => object
            .as_tag()
            .map(|t| (t.id(), t.name().unwrap_or_default().to_string())),
        _ => None,
    };
    Ok(Revision { commit, tag })
}

fn text(rev: &Revision, result: &Result<Verified, Refusal>) -> String {
    let what = match &rev.tag {
        Some((id, name)) => format!("tag {name} ({id}) of commit {}", rev.commit),
        None => format!("commit {}", rev.commit),
    };
    match result {
        Ok(v) => {
            let by = format!(
                "signed by {} ({}) at {}",
                v.principal,
                v.key_fingerprint,
                format_time(v.signed_at)
            );
            match rev.tag {
                Some(_) => format!("verified: {what}: the {} is {by}", v.object.as_str()),
                None => format!("verified: {what} {by}"),
            }
        }
        Err(r) => format!("refused: {what}: {r}"),
    }
}

fn json(rev: &Revision, result: &Result<Verified, Refusal>) -> serde_json::Value {
    let tag = rev
        .tag
        .as_ref()
        .map(|(id, name)| json!({ "name": name, "id": id.to_string() }));
    match result {
        Ok(v) => json!({
            "verified": true,
            "commit": rev.commit.to_string(),
            "tag": tag,
            "signature": {
                "object": v.object.as_str(),
                "principal": v.principal,
                "key": v.key_fingerprint,
                "algorithm": v.algorithm,
                "signed_at": format_time(v.signed_at),
                "allowed_signers_line": v.listed_at,
            },
        }),
        Err(r) => json!({
            "verified": false,
            "commit": rev.commit.to_string(),
            "tag": tag,
            "refusal": { "kind": r.kind(), "reason": r.to_string() },
        }),
    }
}

/// An allowed signers file that cannot be used: its located errors on stdout and exit
/// 1 when it is invalid, else one `error:` line and exit 3.
fn signers_error(e: &SignersError, format: Format) -> ExitCode {
    if !e.is_invalid() {
        return failed(&e.to_string());
    }
    let lines: Vec<String> = match e {
        SignersError::Invalid { errors } => errors.iter().map(ToString::to_string).collect(),
        e => vec![e.to_string()],
    };
    match format {
        Format::Text => lines.iter().for_each(|l| println!("{l}")),
        Format::Json => println!("{}", json!({ "verified": false, "errors": lines })),
    }
    ExitCode::from(EXIT_FINDINGS)
}

fn failed(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_FAILED)
}
