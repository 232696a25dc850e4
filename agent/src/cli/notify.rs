//! `berth notify --mqtt URL --topic T [--revision SHA] [--ref REF] [--username U
//! --password-file F] [--ca-file C] [--client-cert F --client-key F]`: tells a fleet
//! that a ref moved, from a CI step or a `post-receive` hook (docs/fleet.md). It
//! publishes `{"ref": REF, "commit": SHA}` retained with QoS 1 on the topic the nodes'
//! `source.notify.topic` names, and exits 0 once the broker acknowledged it; each node
//! then fetches within its `spread` and verifies what it fetched as usual.
//!
//! `--revision` defaults to `HEAD` of the repository in the current directory, `--ref`
//! to its current branch. Exit codes: 0 delivered; 2 usage (a bad URL, no repository
//! to read the defaults from); 3 not delivered (the broker down, TLS or the password
//! refused, an unusable file), saying why.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_spec::diag::printable;
use berth_spec::node::Broker;
use clap::Args;

use super::{Cli, EXIT_FAILED, EXIT_USAGE};
use crate::source::mqtt::conn::{FLAG_NAMES, Settings};
use crate::source::mqtt::message::Revision;
use crate::source::mqtt::publish::publish;
use crate::util::error_chain;

#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// The broker: mqtt://HOST[:PORT] (1883) or mqtts://HOST[:PORT] (8883)
    #[arg(long, value_name = "URL")]
    pub mqtt: String,
    /// The topic the nodes' `source.notify.topic` names
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// The commit announced: a full id, or anything Git resolves in the repository in
    /// the current directory (default: what --ref points at there, else HEAD)
    #[arg(long, value_name = "SHA")]
    pub revision: Option<String>,
    /// The ref that moved: refs/heads/B, refs/tags/T, or a short name (a tag of the
    /// repository here, else a branch) (default: the current branch)
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// User name at the broker
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// A file whose first line is the password (needs --username)
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<PathBuf>,
    /// An extra CA for an mqtts:// broker (the system's CAs are trusted too)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: the client certificate (PEM)
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Mutual TLS: the client certificate's key (PEM)
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Give up when the broker has not acknowledged the message within this (30s, 2m)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = timeout)]
    pub timeout: Duration,
}

pub fn run(_cli: &Cli, args: &NotifyArgs) -> ExitCode {
    let usage = |msg: String| {
        eprintln!("error: {}", printable(&msg));
        ExitCode::from(EXIT_USAGE)
    };
    let broker = match Broker::parse(&args.mqtt) {
        Ok(b) => b,
        Err(e) => {
            return usage(format!(
                "--mqtt `{}` {e}",
                berth_spec::node::without_userinfo(&args.mqtt)
            ));
        }
    };
    if args.topic.is_empty() || args.topic.contains(['#', '+', '\0']) {
        return usage(format!(
            "--topic must be a topic name without wildcards (`#`, `+`), found `{}`",
            args.topic
        ));
    }
    if !args.mqtt.starts_with("mqtts://") {
        for (set, flag) in [
            (args.ca_file.is_some(), "--ca-file"),
            (args.client_cert.is_some(), "--client-cert"),
            (args.client_key.is_some(), "--client-key"),
        ] {
            if set {
                return usage(format!("{flag} is for an mqtts:// broker only"));
            }
        }
    }
    let (commit, git_ref) = match defaults(args.revision.as_deref(), args.git_ref.as_deref()) {
        Ok(r) => r,
        Err(e) => return usage(error_chain(&e)),
    };
    let settings = Settings {
        broker,
        username: args.username.clone(),
        password_file: args.password_file.clone(),
        ca_file: args.ca_file.clone(),
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
        names: FLAG_NAMES,
    };
    let revision = Revision {
        git_ref,
        commit: Some(commit),
    };
    let rt = match super::async_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match rt.block_on(publish(&settings, &args.topic, &revision, args.timeout)) {
        Ok(()) => {
            println!(
                "notified {}: {} at {}",
                printable(&args.topic),
                printable(&revision.git_ref),
                revision.commit.as_deref().unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", printable(&error_chain(&e)));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Why `--timeout` is not a duration berth waits.
#[derive(Debug, thiserror::Error)]
enum BadTimeout {
    #[error("{0}")]
    Unreadable(String),
    #[error("`{0}` is not between 1s and 1h")]
    OutOfRange(String),
}

/// `--timeout`: a duration from 1 s to 1 h.
fn timeout(s: &str) -> Result<Duration, BadTimeout> {
    match berth_spec::types::parse_duration(s).map_err(BadTimeout::Unreadable)? {
        d if d < Duration::from_secs(1) || d > Duration::from_secs(3600) => {
            Err(BadTimeout::OutOfRange(s.to_string()))
        }
        d => Ok(d),
    }
}

/// A full SHA-1 or SHA-256 object id.
fn full_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// libgit2's error as its message alone (without its class and code numbers).
fn said(e: &git2::Error) -> git2::Error {
    git2::Error::from_str(e.message())
}

/// Why the ref or the commit to announce cannot be told (a usage error: exit 2).
#[derive(Debug, thiserror::Error)]
enum Unresolved {
    #[error("no Git repository here to take {what} from; give it")]
    NoRepository {
        what: &'static str,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read HEAD")]
    Head(#[source] git2::Error),
    #[error("HEAD is detached: give --ref (e.g. refs/heads/main)")]
    Detached,
    #[error("--ref `{0}` is not a valid Git ref name")]
    BadRef(String),
    #[error("--revision `{revision}` is not a commit here")]
    NotACommit {
        revision: String,
        #[source]
        source: git2::Error,
    },
    #[error("`{git_ref}` (or HEAD) is not a commit here")]
    RefNotACommit {
        git_ref: String,
        #[source]
        source: git2::Error,
    },
}

/// The commit and ref announced. The ref: as given when it starts with `refs/`; a
/// short name is a tag when the repository here has that tag and no such branch, else
/// a branch; none given, the current branch. The commit: a full id as given (no
/// repository needed); anything else resolved in the repository here; none given,
/// what the ref points at here, else `HEAD`.
fn defaults(revision: Option<&str>, git_ref: Option<&str>) -> Result<(String, String), Unresolved> {
    let repo = git2::Repository::discover(".");
    let need_repo = |what: &'static str| -> Result<&git2::Repository, Unresolved> {
        repo.as_ref().map_err(|e| Unresolved::NoRepository {
            what,
            source: said(e),
        })
    };
    let git_ref = match git_ref {
        Some(g) if g.starts_with("refs/") => g.to_string(),
        Some(g) => {
            let tag = format!("refs/tags/{g}");
            let branch = format!("refs/heads/{g}");
            let has = |r: &str| {
                repo.as_ref()
                    .is_ok_and(|repo| repo.find_reference(r).is_ok())
            };
            if has(&tag) && !has(&branch) {
                tag
            } else {
                branch
            }
        }
        None => {
            let head = need_repo("--ref")?
                .find_reference("HEAD")
                .map_err(|e| Unresolved::Head(said(&e)))?;
            match head.symbolic_target().ok().flatten() {
                Some(t) if t.starts_with("refs/heads/") => t.to_string(),
                _ => return Err(Unresolved::Detached),
            }
        }
    };
    if !git2::Reference::is_valid_name(&git_ref) {
        return Err(Unresolved::BadRef(git_ref));
    }
    let commit = match revision {
        Some(r) if full_id(r) => r.to_ascii_lowercase(),
        Some(r) => need_repo("--revision")?
            .revparse_single(r)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| Unresolved::NotACommit {
                revision: r.to_string(),
                source: said(&e),
            })?
            .id()
            .to_string(),
        None => {
            let repo = need_repo("--revision")?;
            repo.find_reference(&git_ref)
                .or_else(|_| repo.head())
                .and_then(|at| at.peel_to_commit())
                .map_err(|e| Unresolved::RefNotACommit {
                    git_ref: git_ref.clone(),
                    source: said(&e),
                })?
                .id()
                .to_string()
        }
    };
    Ok((commit, git_ref))
}
