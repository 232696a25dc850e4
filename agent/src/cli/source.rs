//! `berth source verify [REV] [--repo DIR] [--allowed-signers FILE]
//! [--trusted-pgp-keys FILE]… [--format text|json]`: check a revision's signature as the
//! agent would (`source::verify`), on a local repository, against SSH allowed signers,
//! trusted OpenPGP keys, or both (either signature is then enough). Without either flag
//! the node config's `source.allowed_signers` and `source.trusted_pgp_keys` are used.
//! Exit 0 verified, 1 refused (or an invalid key file), 3 when the check cannot be done
//! (no repository, an unknown REV, an unreadable file, no keys at all).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, Args, Subcommand};
use git2::{ObjectType, Oid, Repository};
use serde_json::json;

use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, Format, config};
use crate::source::pgp::{PgpKeysError, TrustedPgpKeys};
use crate::source::signers::{AllowedSigners, SignersError};
use crate::source::verify::{
    MAX_OBJECT_BYTES, Refusal, SignatureFormat, TrustedKeys, Verified, format_time, tag_target,
    verify_revision,
};

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
    /// The allowed signers file (SSH signatures) [default, when neither this nor
    /// --trusted-pgp-keys is given: the node config's `source.allowed_signers`]
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// An OpenPGP public key file (`gpg --export --armor KEY`); repeat the flag for
    /// more files [default, when neither this nor --allowed-signers is given: the node
    /// config's `source.trusted_pgp_keys`]
    #[arg(long, value_name = "FILE", action = ArgAction::Append)]
    pub trusted_pgp_keys: Vec<PathBuf>,
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
#[derive(Debug)]
struct Revision {
    commit: Oid,
    /// An annotated tag: its id and name.
    tag: Option<(Oid, String)>,
}

fn verify(cli: &Cli, args: &VerifyArgs) -> ExitCode {
    let (ssh_file, pgp_files) =
        if args.allowed_signers.is_some() || !args.trusted_pgp_keys.is_empty() {
            (args.allowed_signers.clone(), args.trusted_pgp_keys.clone())
        } else {
            match configured_keys(cli) {
                Ok(k) => k,
                Err(code) => return code,
            }
        };
    let signers = match ssh_file.as_deref().map(AllowedSigners::load) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return signers_error(&e, args.format),
    };
    let pgp_keys = if pgp_files.is_empty() {
        None
    } else {
        match TrustedPgpKeys::load(&pgp_files) {
            Ok(k) => Some(k),
            Err(e) => return pgp_keys_error(&e, args.format),
        }
    };
    let keys = TrustedKeys {
        ssh: signers.as_ref(),
        pgp: pgp_keys.as_ref(),
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
        Err(e @ Unresolved::MovedTag { .. }) => {
            match args.format {
                Format::Text => println!("refused: {}: {e}", args.rev),
                Format::Json => println!(
                    "{}",
                    json!({
                        "verified": false,
                        "commit": null,
                        "tag": null,
                        "refusal": {"kind": "tag_moved", "reason": e.to_string()},
                    })
                ),
            }
            return ExitCode::from(EXIT_FINDINGS);
        }
        Err(e) => return failed(&format!("cannot resolve `{}`: {e}", args.rev)),
    };
    let result = verify_revision(&repo, rev.commit, rev.tag.as_ref().map(|t| t.0), keys);
    if let Err(refusal) = &result
        && !refusal.is_judgement()
    {
        return failed(&format!("commit {}: {refusal}", rev.commit));
    }
    match args.format {
        Format::Text => println!("{}", text(&rev, &result)),
        Format::Json => println!("{}", self::json(&rev, &result)),
    }
    // The refusal names the node config's key; with keys given by flag, name the flag.
    let flags = args.allowed_signers.is_some() || !args.trusted_pgp_keys.is_empty();
    if let (true, Err(Refusal::NoKeys { format })) = (flags, &result) {
        let flag = match format {
            SignatureFormat::Ssh => "--allowed-signers FILE",
            _ => "--trusted-pgp-keys FILE",
        };
        eprintln!("hint: it carries an {format} signature: pass {flag}");
    }
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(EXIT_FINDINGS),
    }
}

/// `source.allowed_signers` and `source.trusted_pgp_keys` of the node config, or the
/// exit code after saying why there are none.
fn configured_keys(cli: &Cli) -> Result<(Option<PathBuf>, Vec<PathBuf>), ExitCode> {
    let loaded = config::load_or_report(cli)?;
    let (ssh, pgp) = loaded
        .config
        .source
        .as_ref()
        .map_or((None, Vec::new()), |s| {
            (s.allowed_signers.clone(), s.trusted_pgp_keys.clone())
        });
    if ssh.is_none() && pgp.is_empty() {
        let config = loaded.path.as_deref().map_or_else(
            || format!("{} (which does not exist)", config::DEFAULT_CONFIG),
            |p: &Path| p.display().to_string(),
        );
        return Err(failed(&format!(
            "no keys to verify against: pass --allowed-signers FILE or --trusted-pgp-keys FILE (repeatable), or set `source.allowed_signers` or `source.trusted_pgp_keys` in the node config {config}"
        )));
    }
    Ok((ssh, pgp))
}

/// The revision `rev` names. A full id, a branch, a tag or `HEAD` is resolved without
/// reading the commit (a huge one is then refused from its header, unread); other
/// expressions (`HEAD~1`, a short id) go through `git rev-parse`'s rules.
fn resolve(repo: &Repository, rev: &str) -> Result<Revision, Unresolved> {
    let odb = repo.odb()?;
    // The tag name a `refs/tags/…` reference gives, to compare with the tag object's.
    let mut tag_ref = None;
    let named = Oid::from_str(rev)
        .ok()
        .filter(|id| rev.len() == 40 && odb.exists(*id))
        .or_else(|| {
            let r = repo
                .resolve_reference_from_short_name(rev)
                .and_then(|r| r.resolve())
                .ok()?;
            tag_ref = r
                .name()
                .ok()
                .and_then(|n| n.strip_prefix("refs/tags/"))
                .map(str::to_string);
            r.target()
        });
    let id = match named {
        Some(id) => id,
        None => repo.revparse_single(rev)?.id(),
    };
    let (size, kind) = odb.read_header(id)?;
    match kind {
        ObjectType::Commit => Ok(Revision {
            commit: id,
            tag: None,
        }),
        ObjectType::Tag if size > MAX_OBJECT_BYTES => Err(git2::Error::from_str(&format!(
            "the tag object {id} is {size} bytes, more than the {MAX_OBJECT_BYTES} berth reads"
        ))
        .into()),
        ObjectType::Tag => {
            let tag = repo.find_tag(id)?;
            // As the agent refuses it (source/fetch.rs): a signed tag moved under
            // another name would pass an old release off as the one asked for.
            if let Some(asked) = tag_ref.filter(|t| t.as_bytes() != tag.name_bytes()) {
                return Err(Unresolved::MovedTag {
                    asked,
                    named: berth_spec::diag::printable(&String::from_utf8_lossy(tag.name_bytes()))
                        .into_owned(),
                });
            }
            let name = tag.name().unwrap_or_default().to_string();
            Ok(Revision {
                commit: tag_target(repo, id)?,
                tag: Some((id, name)),
            })
        }
        other => Err(git2::Error::from_str(&format!(
            "{id} is a {}, not a commit or tag",
            other.str()
        ))
        .into()),
    }
}

/// Why a revision named on the command line is not checked.
#[derive(Debug, thiserror::Error)]
enum Unresolved {
    #[error("{}", .0.message())]
    Git(#[from] git2::Error),
    /// A refusal, as the agent's: `refs/tags/<asked>` holds the tag object `<named>`.
    #[error(
        "refs/tags/{asked} holds a tag object named `{named}`: a tag moved under another name; refusing it"
    )]
    MovedTag { asked: String, named: String },
}

fn text(rev: &Revision, result: &Result<Verified, Refusal>) -> String {
    let what = match &rev.tag {
        Some((id, name)) => format!("tag {name} ({id}) of commit {}", rev.commit),
        None => format!("commit {}", rev.commit),
    };
    match result {
        Ok(v) => {
            let key = match &v.primary_key {
                Some(primary) => format!("OpenPGP subkey {} of key {primary}", v.key_fingerprint),
                None if v.format == SignatureFormat::OpenPgp => {
                    format!("OpenPGP key {}", v.key_fingerprint)
                }
                None => v.key_fingerprint.clone(),
            };
            let by = format!(
                "signed by {} ({key}) at {}",
                v.principal,
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
        Ok(v) => {
            let mut signature = json!({
                "kind": v.format.as_str(),
                "object": v.object.as_str(),
                "principal": v.principal,
                "key": v.key_fingerprint,
                "algorithm": v.algorithm,
                "signed_at": format_time(v.signed_at),
            });
            if v.format == SignatureFormat::OpenPgp {
                signature["user_id"] = json!(v.principal);
                signature["primary_key"] =
                    json!(v.primary_key.as_ref().unwrap_or(&v.key_fingerprint));
                signature["key_file"] = json!(v.listed_at);
            } else {
                signature["allowed_signers_line"] = json!(v.listed_at);
            }
            json!({
                "verified": true,
                "commit": rev.commit.to_string(),
                "tag": tag,
                "signature": signature,
            })
        }
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

/// OpenPGP key files that cannot be used: the error on stdout and exit 1 when a file is
/// invalid, else one `error:` line and exit 3.
fn pgp_keys_error(e: &PgpKeysError, format: Format) -> ExitCode {
    if matches!(
        e,
        PgpKeysError::Read { .. } | PgpKeysError::NotRegular { .. } | PgpKeysError::TooLarge { .. }
    ) {
        return failed(&e.to_string());
    }
    match format {
        Format::Text => println!("{e}"),
        Format::Json => println!(
            "{}",
            json!({ "verified": false, "errors": [e.to_string()] })
        ),
    }
    ExitCode::from(EXIT_FINDINGS)
}

fn failed(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_FAILED)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    fn parsed(args: &[&str]) -> VerifyArgs {
        let cli = Cli::try_parse_from(["berth", "source", "verify"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Source(SourceArgs {
                command: SourceCommand::Verify(v),
            }) => v,
            other => panic!("{other:?}"),
        }
    }

    /// A repository whose branch `main` names a loose commit object whose header says
    /// it is `size` bytes, though it holds no more than the header: only its header can
    /// be read.
    fn header_only_commit(size: usize) -> (tempfile::TempDir, Repository, Oid) {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let raw = format!("commit {size}\0tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n");
        let id = Oid::from_bytes(&[0xab; 20]).unwrap();
        let hex = id.to_string();
        let path = dir.path().join(".git/objects").join(&hex[..2]);
        std::fs::create_dir_all(&path).unwrap();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(raw.as_bytes()).unwrap();
        std::fs::write(path.join(&hex[2..]), z.finish().unwrap()).unwrap();
        repo.reference("refs/heads/main", id, true, "test").unwrap();
        (dir, repo, id)
    }

    #[test]
    fn a_branch_resolves_without_its_commit_being_read_and_a_huge_one_is_refused_unread() {
        let (_dir, repo, id) = header_only_commit(300 * 1024 * 1024);
        let rev = resolve(&repo, "main").unwrap();
        assert_eq!((rev.commit, rev.tag.is_none()), (id, true));
        assert_eq!(resolve(&repo, &id.to_string()).unwrap().commit, id);
        let keys = TrustedPgpKeys::default();
        let refused = verify_revision(&repo, id, None, &keys).unwrap_err();
        assert_eq!(refused.kind(), "too_large", "{refused}");
        // Read whole, it cannot even be parsed.
        assert!(repo.revparse_single("main").is_err());
    }

    #[test]
    fn a_tag_moved_under_another_name_is_refused_as_the_agent_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.org").unwrap();
        let tree = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let commit = repo.commit(None, &sig, &sig, "c", &tree, &[]).unwrap();
        let object = repo.find_object(commit, None).unwrap();
        let tag = repo.tag("v1", &object, &sig, "release 1", false).unwrap();
        repo.reference("refs/tags/v2", tag, true, "moved").unwrap();
        let v1 = resolve(&repo, "v1").unwrap();
        assert_eq!(v1.commit, commit);
        assert_eq!(v1.tag.as_ref().map(|t| t.1.as_str()), Some("v1"));
        match resolve(&repo, "v2") {
            Err(e @ Unresolved::MovedTag { .. }) => {
                assert!(
                    e.to_string()
                        .contains("refs/tags/v2 holds a tag object named `v1`"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
        // The tag object by its id names no tag reference: it is its own name.
        assert!(resolve(&repo, &tag.to_string()).is_ok());
    }

    #[test]
    fn a_key_file_flag_takes_one_file_and_leaves_the_revision_alone() {
        let v = parsed(&["--trusted-pgp-keys", "a.asc", "main"]);
        assert_eq!(v.rev, "main");
        assert_eq!(v.trusted_pgp_keys, [PathBuf::from("a.asc")]);
        let v = parsed(&[
            "--trusted-pgp-keys",
            "a.asc",
            "--trusted-pgp-keys",
            "b.asc",
            "v1",
        ]);
        assert_eq!(v.rev, "v1");
        assert_eq!(
            v.trusted_pgp_keys,
            [PathBuf::from("a.asc"), PathBuf::from("b.asc")]
        );
        let v = parsed(&["--allowed-signers", "signers", "main"]);
        assert_eq!(
            (v.rev.as_str(), v.allowed_signers),
            ("main", Some(PathBuf::from("signers")))
        );
        assert!(
            Cli::try_parse_from([
                "berth",
                "source",
                "verify",
                "--allowed-signers",
                "a",
                "b",
                "c"
            ])
            .is_err()
        );
    }
}
