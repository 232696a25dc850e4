//! `berth audit --live --verify`: every running container's chain checked again
//! against the node's current configuration — the commit's signature with the
//! follower's own check (`source::signature::check`) on the recorded commit in the
//! agent's clone, the image's stored signatures with `prepare::verify_stored` and the
//! current trusted keys. What a removed key or identity no longer vouches for is
//! flagged, naming the link and who is gone — also when the node trusts no key of
//! that kind any more (a link it never required is said to be not required).

use std::path::Path;

use berth_policy::report::{ChainFlag, TrustChain};
use berth_spec::node::NodeConfig;
use git2::{Oid, Repository};
use serde::Serialize;

use super::record::image_link;
use super::{Chain, CommitLink, ImageLink, NOT_REQUIRED, signer_words};
use crate::source::signature;

/// The commit signer's link, as flags name it.
pub const COMMIT_LINK: &str = "commit signer";
/// The image signature's link, as flags name it.
pub const IMAGE_LINK: &str = "image signature";

/// What no longer vouches for a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
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

/// Checks `chain` again under `cfg`: `repo` is the agent's clone, when it can be
/// opened (why not, otherwise).
pub fn verify(
    state_dir: &Path,
    cfg: &NodeConfig,
    repo: Result<&Repository, &str>,
    chain: &Chain,
) -> Verdict {
    let mut flags = Vec::new();
    let commit_signer = commit_now(cfg, repo, chain, &mut flags);
    let image_signature = image_now(state_dir, cfg, chain, &mut flags);
    Verdict {
        commit_signer,
        image_signature,
        flags,
    }
}

/// The image's link now, in words; a flag when a recorded voucher no longer vouches
/// (its key or identity removed: the signature no longer verifies, or the node trusts
/// none at all now) or the node requires a signature that does not verify.
fn image_now(state_dir: &Path, cfg: &NodeConfig, chain: &Chain, flags: &mut Vec<Flag>) -> String {
    let recorded: &[crate::image::signature::Voucher] = match &chain.image_signature {
        ImageLink::Verified { vouchers } => vouchers,
        _ => &[],
    };
    let mut flag = |gone: Vec<String>, why: &str| {
        let who = if gone.is_empty() {
            "no trusted key or identity vouches".to_string()
        } else {
            format!("{} no longer vouches", gone.join(", "))
        };
        flags.push(Flag {
            link: IMAGE_LINK,
            gone,
            message: format!("{who} for image {}: {why}", chain.digest),
        });
    };
    match image_link(state_dir, &cfg.policy, &chain.digest) {
        ImageLink::NotRequired if recorded.is_empty() => format!("{NOT_REQUIRED} now"),
        ImageLink::NotRequired => {
            let gone = recorded.iter().map(ToString::to_string).collect();
            flag(
                gone,
                "the node trusts no image key or identity now (`policy.trusted_keys`, `policy.trusted_identities`)",
            );
            format!("{NOT_REQUIRED} now, and no longer vouched for")
        }
        ImageLink::Verified { vouchers } => {
            let words: Vec<String> = vouchers.iter().map(ToString::to_string).collect();
            let mut s = format!("still vouched for by {}", words.join(", "));
            let gone: Vec<String> = recorded
                .iter()
                .filter(|v| !vouchers.contains(v))
                .map(ToString::to_string)
                .collect();
            if !gone.is_empty() {
                s.push_str(&format!("; no longer by {}", gone.join(", ")));
            }
            s
        }
        ImageLink::Failed { reason } => {
            flag(recorded.iter().map(ToString::to_string).collect(), &reason);
            format!("not verified: {reason}")
        }
        ImageLink::NotRecorded => "not checked".to_string(),
    }
}

/// The commit's link now, in words; a flag when it no longer holds.
fn commit_now(
    cfg: &NodeConfig,
    repo: Result<&Repository, &str>,
    chain: &Chain,
    flags: &mut Vec<Flag>,
) -> String {
    let Some(commit) = &chain.commit else {
        return format!("{} (no commit to check)", super::FROM_DIRECTORY);
    };
    let gone = match &chain.commit_signer {
        CommitLink::Verified(s) => vec![signer_words(s)],
        _ => Vec::new(),
    };
    let Some(section) = cfg.source.as_ref().filter(|s| signature::required(s)) else {
        if gone.is_empty() {
            return format!("{NOT_REQUIRED} now");
        }
        flags.push(Flag {
            link: COMMIT_LINK,
            message: format!(
                "{} no longer vouches for commit {commit}: the node trusts no commit signer now (`source.allowed_signers`, `source.trusted_pgp_keys`)",
                gone.join(", ")
            ),
            gone,
        });
        return format!("{NOT_REQUIRED} now, and no longer vouched for");
    };
    let mut flag = |message: String| {
        flags.push(Flag {
            link: COMMIT_LINK,
            gone: gone.clone(),
            message,
        });
    };
    let Ok(id) = Oid::from_str(commit) else {
        flag(format!("the record names no commit (`{commit}`)"));
        return "cannot be checked".to_string();
    };
    let repo = match repo {
        Ok(r) => r,
        Err(why) => {
            flag(format!("commit {commit} cannot be checked again: {why}"));
            return "cannot be checked".to_string();
        }
    };
    let tag = chain
        .tag_object
        .as_deref()
        .and_then(|t| Oid::from_str(t).ok());
    match signature::check(section, repo, id, tag) {
        Ok(Ok(signer)) => format!("still signed by {}", signer_words(&signer)),
        Ok(Err(why)) => {
            let who = match gone.first() {
                Some(g) => format!("{g} no longer vouches"),
                None => "no trusted key vouches".to_string(),
            };
            flag(format!("{who} for commit {commit}: {why}"));
            format!("not verified: {why}")
        }
        Err(e) => {
            let why = crate::util::error_chain(&e);
            flag(format!("commit {commit} cannot be checked again: {why}"));
            "cannot be checked".to_string()
        }
    }
}

/// The agent's clone under `state_dir`, or why it cannot be opened.
pub fn open_clone(state_dir: &Path) -> Result<Repository, String> {
    let path = state_dir.join("source").join("repo.git");
    Repository::open_bare(&path).map_err(|e| {
        format!(
            "the clone {} cannot be read: {}",
            path.display(),
            e.message()
        )
    })
}

/// The trust chains of every running container as the audit report carries them;
/// with `verify`, each checked again under `cfg` (see [`verify`]).
pub fn for_audit(state_dir: &Path, cfg: &NodeConfig, verify_now: bool) -> Vec<TrustChain> {
    let chains = super::of_running(state_dir);
    let repo = if verify_now && !chains.is_empty() {
        Some(open_clone(state_dir))
    } else {
        None
    };
    chains
        .into_iter()
        .map(|(container, chain)| {
            let verdict = repo.as_ref().map(|r| {
                let r = r.as_ref().map_err(String::as_str);
                verify(state_dir, cfg, r, &chain)
            });
            let words = |v: Vec<(&str, String)>| -> Vec<(String, String)> {
                v.into_iter().map(|(k, w)| (k.to_string(), w)).collect()
            };
            TrustChain {
                file: format!("containers/{container}/state.json"),
                record: serde_json::to_value(&chain).unwrap_or_default(),
                links: words(chain.words()),
                now: verdict.as_ref().map(|v| {
                    words(vec![
                        (COMMIT_LINK, v.commit_signer.clone()),
                        (IMAGE_LINK, v.image_signature.clone()),
                    ])
                }),
                flags: verdict
                    .map(|v| {
                        v.flags
                            .into_iter()
                            .map(|f| ChainFlag {
                                link: f.link.to_string(),
                                gone: f.gone,
                                message: f.message,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                container,
            }
        })
        .collect()
}
