//! `berth audit --live --verify`: every running container's chain checked again
//! against the node's current configuration — the commit's signature with the
//! follower's own check (`source::signature::check`) on the recorded commit in the
//! agent's clone, the image's signatures kept in the local image store with
//! `prepare::verify_stored` and the current trusted keys (each image once). Each link
//! gets a verdict in words and, when it does not hold, a flag:
//! - an error when it was vouched for and no longer is, naming who is gone — also when
//!   the node trusts no key of that kind any more — and when the node requires signed
//!   commits and the container was applied from a directory (no commit vouches);
//! - a warning when it was never vouched for (not required then, or run in the
//!   policy's audit mode) and does not verify now, and when a recorded key or identity
//!   no longer vouches while another still does (the link holds);
//! - cannot-check when the check could not run (a key file, the clone, a commit the
//!   clone does not hold, the image store, the applied-revision record).
//!
//! Keys are compared by fingerprint, identities by issuer and subject: a key file
//! moved or renamed is the same key, another key at the same path is not.

use std::collections::BTreeMap;
use std::path::Path;

use berth_policy::report::{ChainFlag, FlagLevel, TrustChain};
use berth_spec::node::NodeConfig;
use git2::{Oid, Repository};
use serde::Serialize;

use super::record::{ImageCheck, image_check};
use super::{Chain, CommitLink, ImageLink, NOT_REQUIRED, signer_words};
use crate::image::signature::Voucher;
use crate::source::applied::Signer;
use crate::source::signature;

/// The commit signer's link, as flags name it.
pub const COMMIT_LINK: &str = "commit signer";
/// The image signature's link, as flags name it.
pub const IMAGE_LINK: &str = "image signature";

/// A link that does not hold, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    pub level: FlagLevel,
    /// [`COMMIT_LINK`] or [`IMAGE_LINK`].
    pub link: &'static str,
    /// The recorded signers that no longer vouch (a key, an identity, a principal).
    pub gone: Vec<String>,
    pub message: String,
}

/// One chain checked again: each link now, in words, and the flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub commit_signer: String,
    pub image_signature: String,
    pub flags: Vec<Flag>,
}

/// What the commit check said now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitCheck {
    /// The node configures no signer keys.
    NotRequired,
    /// Signed by a trusted key.
    Verified(Signer),
    /// Refused, and why.
    Refused(String),
    /// The check could not run, and why.
    CannotCheck(String),
}

/// Checks `chain` again under `cfg`: `repo` is the agent's clone, when it can be
/// opened (why not, otherwise); `images` caches each image's check by digest.
pub fn verify(
    state_dir: &Path,
    cfg: &NodeConfig,
    repo: Result<&Repository, &str>,
    chain: &Chain,
    images: &mut BTreeMap<String, ImageCheck>,
) -> Verdict {
    let mut flags = Vec::new();
    let commit_signer = commit_verdict(chain, commit_check(cfg, repo, chain), &mut flags);
    let now = images
        .entry(chain.digest.clone())
        .or_insert_with(|| image_check(state_dir, &cfg.policy, &chain.digest))
        .clone();
    let image_signature = image_verdict(chain, now, &mut flags);
    Verdict {
        commit_signer,
        image_signature,
        flags,
    }
}

/// Whether two vouchers are the same signer: keys by fingerprint (whatever file
/// holds them now), identities by issuer and subject (each signature has its own log
/// entry).
pub fn same_voucher(a: &Voucher, b: &Voucher) -> bool {
    match (a, b) {
        (Voucher::Key { fingerprint: x, .. }, Voucher::Key { fingerprint: y, .. }) => x == y,
        (
            Voucher::Identity {
                issuer: i1,
                subject: s1,
                ..
            },
            Voucher::Identity {
                issuer: i2,
                subject: s2,
                ..
            },
        ) => i1 == i2 && s1 == s2,
        _ => false,
    }
}

fn names(vs: &[Voucher]) -> String {
    vs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The image's link now, in words, from what was recorded and what the check says
/// now; flags pushed on `flags` (see the module's doc). Pure.
pub fn image_verdict(chain: &Chain, now: ImageCheck, flags: &mut Vec<Flag>) -> String {
    let recorded: &[Voucher] = match &chain.image_signature {
        ImageLink::Verified { vouchers } => vouchers,
        _ => &[],
    };
    let digest = &chain.digest;
    let mut flag = |level: FlagLevel, gone: &[Voucher], message: String| {
        flags.push(Flag {
            level,
            link: IMAGE_LINK,
            gone: gone.iter().map(ToString::to_string).collect(),
            message,
        });
    };
    let link = match now {
        ImageCheck::CannotCheck(why) => {
            flag(
                FlagLevel::CannotCheck,
                &[],
                format!("image {digest} cannot be checked again: {why}"),
            );
            return "cannot be checked".to_string();
        }
        ImageCheck::Link(l) => l,
    };
    match link {
        ImageLink::NotRequired if recorded.is_empty() => format!("{NOT_REQUIRED} now"),
        ImageLink::NotRequired => {
            flag(
                FlagLevel::Error,
                recorded,
                format!(
                    "{} no longer vouches for image {digest}: the node trusts no image key or identity now (`policy.trusted_keys`, `policy.trusted_identities`)",
                    names(recorded)
                ),
            );
            format!("{NOT_REQUIRED} now, and no longer vouched for")
        }
        ImageLink::Verified { vouchers } if recorded.is_empty() => {
            format!(
                "vouched for by {} (it was not when applied)",
                names(&vouchers)
            )
        }
        ImageLink::Verified { vouchers } => {
            let gone: Vec<Voucher> = recorded
                .iter()
                .filter(|r| !vouchers.iter().any(|v| same_voucher(r, v)))
                .cloned()
                .collect();
            let mut s = format!("still vouched for by {}", names(&vouchers));
            if !gone.is_empty() {
                s.push_str(&format!("; no longer by {}", names(&gone)));
                // The image still holds, so a warning: what a rotation took away is
                // still shown in every format (SARIF, JUnit), not only in the text.
                flag(
                    FlagLevel::Warning,
                    &gone,
                    format!(
                        "{} no longer vouches for image {digest}; {} still does",
                        names(&gone),
                        names(&vouchers)
                    ),
                );
            }
            s
        }
        ImageLink::Failed { reason } if recorded.is_empty() => {
            flag(
                FlagLevel::Warning,
                &[],
                format!(
                    "image {digest} was never vouched for (the node did not require it, or its policy ran it in audit mode), and is not now: {reason}"
                ),
            );
            format!("never vouched for: {reason}")
        }
        ImageLink::Failed { reason } => {
            flag(
                FlagLevel::Error,
                recorded,
                format!(
                    "{} no longer vouches for image {digest}: {reason}",
                    names(recorded)
                ),
            );
            format!("no longer vouched for: {reason}")
        }
        ImageLink::NotRecorded => "not checked".to_string(),
    }
}

/// The commit check now, under `cfg`, for `chain`.
fn commit_check(cfg: &NodeConfig, repo: Result<&Repository, &str>, chain: &Chain) -> CommitCheck {
    let Some(section) = cfg.source.as_ref().filter(|s| signature::required(s)) else {
        return CommitCheck::NotRequired;
    };
    let Some(commit) = &chain.commit else {
        return CommitCheck::Refused("no commit".to_string());
    };
    let Ok(id) = Oid::from_str(commit) else {
        return CommitCheck::CannotCheck(format!("the record names no commit (`{commit}`)"));
    };
    // A key file that cannot be read refuses every revision to the follower; here it
    // means the link cannot be checked, not that it no longer holds.
    if let Some(path) = &section.allowed_signers
        && let Err(e) = crate::source::signers::AllowedSigners::load(path)
    {
        return CommitCheck::CannotCheck(crate::util::error_chain(&e));
    }
    if !section.trusted_pgp_keys.is_empty()
        && let Err(e) = crate::source::pgp::TrustedPgpKeys::load(&section.trusted_pgp_keys)
    {
        return CommitCheck::CannotCheck(crate::util::error_chain(&e));
    }
    let repo = match repo {
        Ok(r) => r,
        Err(why) => return CommitCheck::CannotCheck(why.to_string()),
    };
    if repo.find_commit(id).is_err() {
        return CommitCheck::CannotCheck(format!(
            "commit {commit} is not in the agent's clone ({}); a shallow clone may not hold it: `source.depth = 0` keeps the whole history",
            repo.path().display()
        ));
    }
    let tag = chain
        .tag_object
        .as_deref()
        .and_then(|t| Oid::from_str(t).ok());
    match signature::check(section, repo, id, tag) {
        Ok(Ok(signer)) => CommitCheck::Verified(signer),
        Ok(Err(why)) => CommitCheck::Refused(why),
        Err(e) => CommitCheck::CannotCheck(crate::util::error_chain(&e)),
    }
}

/// The commit's link now, in words, from what was recorded and what the check says
/// now; flags pushed on `flags` (see the module's doc). Pure.
pub fn commit_verdict(chain: &Chain, now: CommitCheck, flags: &mut Vec<Flag>) -> String {
    let mut flag = |level: FlagLevel, gone: &[String], message: String| {
        flags.push(Flag {
            level,
            link: COMMIT_LINK,
            gone: gone.to_vec(),
            message,
        });
    };
    if let CommitLink::Unknown { reason } = &chain.commit_signer {
        flag(
            FlagLevel::CannotCheck,
            &[],
            format!("what vouched for the running instance is not known: {reason}"),
        );
        return "cannot be checked".to_string();
    }
    let Some(commit) = &chain.commit else {
        if now == CommitCheck::NotRequired {
            return format!("{} (no commit to check)", super::FROM_DIRECTORY);
        }
        flag(
            FlagLevel::Error,
            &[],
            format!(
                "the node requires signed commits (`source.allowed_signers`, `source.trusted_pgp_keys`), and no commit vouches for what runs: it was {}",
                super::FROM_DIRECTORY
            ),
        );
        return format!("not vouched for: {}", super::FROM_DIRECTORY);
    };
    let gone: Vec<String> = match &chain.commit_signer {
        CommitLink::Verified(s) => vec![signer_words(s)],
        _ => Vec::new(),
    };
    match now {
        CommitCheck::NotRequired if gone.is_empty() => format!("{NOT_REQUIRED} now"),
        CommitCheck::NotRequired => {
            flag(
                FlagLevel::Error,
                &gone,
                format!(
                    "{} no longer vouches for commit {commit}: the node trusts no commit signer now (`source.allowed_signers`, `source.trusted_pgp_keys`)",
                    gone.join(", ")
                ),
            );
            format!("{NOT_REQUIRED} now, and no longer vouched for")
        }
        CommitCheck::Verified(s) if gone.is_empty() => {
            format!(
                "signed by {} (it was not checked when applied)",
                signer_words(&s)
            )
        }
        CommitCheck::Verified(s) => format!("still signed by {}", signer_words(&s)),
        CommitCheck::Refused(why) if gone.is_empty() => {
            flag(
                FlagLevel::Warning,
                &[],
                format!(
                    "commit {commit} was never vouched for (the node did not require it then), and is not now: {why}"
                ),
            );
            format!("never vouched for: {why}")
        }
        CommitCheck::Refused(why) => {
            flag(
                FlagLevel::Error,
                &gone,
                format!(
                    "{} no longer vouches for commit {commit}: {why}",
                    gone.join(", ")
                ),
            );
            format!("no longer vouched for: {why}")
        }
        CommitCheck::CannotCheck(why) => {
            flag(
                FlagLevel::CannotCheck,
                &[],
                format!("commit {commit} cannot be checked again: {why}"),
            );
            "cannot be checked".to_string()
        }
    }
}

/// The agent's clone cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("the clone {} cannot be read", path.display())]
pub struct CloneUnreadable {
    pub path: std::path::PathBuf,
    #[source]
    pub source: git2::Error,
}

/// The agent's clone under `state_dir`.
pub fn open_clone(state_dir: &Path) -> Result<Repository, CloneUnreadable> {
    let path = state_dir.join("source").join("repo.git");
    Repository::open_bare(&path).map_err(|source| CloneUnreadable { path, source })
}

/// The trust chains of every running container as the audit report carries them;
/// with `verify`, each checked again under `cfg` (see [`verify`]).
pub fn for_audit(state_dir: &Path, cfg: &NodeConfig, verify_now: bool) -> Vec<TrustChain> {
    if !verify_now {
        return super::live::chains(state_dir);
    }
    let chains = super::of_running(state_dir);
    let repo = chains
        .values()
        .any(|c| c.commit.is_some())
        .then(|| open_clone(state_dir).map_err(|e| crate::util::error_chain(&e)));
    let mut images = BTreeMap::new();
    chains
        .into_iter()
        .map(|(container, chain)| {
            let r = match &repo {
                Some(r) => r.as_ref().map_err(String::as_str),
                None => Err("no container runs a commit"),
            };
            let v = verify(state_dir, cfg, r, &chain, &mut images);
            let flags = v
                .flags
                .into_iter()
                .map(|f| ChainFlag {
                    level: f.level,
                    link: f.link.to_string(),
                    gone: f.gone,
                    message: f.message,
                })
                .collect();
            let now = vec![
                (COMMIT_LINK, v.commit_signer),
                (IMAGE_LINK, v.image_signature),
            ];
            super::live::shown(container, &chain, Some(now), flags)
        })
        .collect()
}
