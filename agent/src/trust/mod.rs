//! The trust chain of every running container: who vouched for what it runs — the
//! commit and its verified signer, the pinned image digest and the image signature's
//! vouchers — and when that was checked. The follower records it with the revision
//! (`Applied::chains` in `state/applied.json`, written in the same crash-safe step);
//! `berth status`, `inspect` and `audit --live` show it, and `audit --live --verify`
//! checks it again against the node's current keys and identities.
//!
//! A link the node does not require is recorded as `not-required`, never left out; a
//! container applied by `berth apply DIR` has no commit (`applied-from-directory`).
//!
//! This file is the data and its words (pure); `record` builds a chain when the
//! follower records a pass, `verify` checks the chains again. Reading the chains
//! (`of_running`) links no Git or registry code, so the agent's daemon shows them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::image::signature::Voucher;
use crate::source::applied::{Applied, Signer};

pub mod record;
pub mod verify;

/// The words of a link the node does not require.
pub const NOT_REQUIRED: &str = "not required";
/// The words of a container that has no commit.
pub const FROM_DIRECTORY: &str = "applied from a directory";

/// What vouched for one running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// The commit it runs; none when it was applied from a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The annotated tag followed, when its signature vouched for the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_object: Option<String>,
    /// Who signed the commit (or tag).
    pub commit_signer: CommitLink,
    /// The pinned image digest it runs.
    pub digest: String,
    /// Who signed the image.
    pub image_signature: ImageLink,
    /// When the chain was checked, RFC 3339; none when it was not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
}

/// The commit's link. JSON: `{"status": "verified", "principal": …, "key": …, …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CommitLink {
    /// Signed by a key of `source.allowed_signers` or `source.trusted_pgp_keys`.
    Verified(Signer),
    /// The node configures no signer keys.
    NotRequired,
    /// `berth apply DIR`: no commit.
    AppliedFromDirectory,
    /// Applied before chains were recorded: the signer is not known.
    NotRecorded,
}

/// The image's link. JSON: `{"status": "verified", "vouchers": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ImageLink {
    /// Each key or identity whose signature verified.
    Verified { vouchers: Vec<Voucher> },
    /// The node configures no trusted keys or identities.
    NotRequired,
    /// Checked and not verified (the policy's audit mode runs it anyway).
    Failed { reason: String },
    /// Not checked when it was applied (from a directory, or before chains were
    /// recorded); `berth audit --live --verify` checks it.
    NotRecorded,
}

/// One running container's chain, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    pub container: String,
    #[serde(flatten)]
    pub chain: Chain,
}

impl Chain {
    /// The chain of a container berth runs without a recorded one: applied from a
    /// directory (no commit), or at `commit` before chains were recorded.
    pub fn unrecorded(commit: Option<String>, digest: String) -> Chain {
        Chain {
            commit_signer: match &commit {
                None => CommitLink::AppliedFromDirectory,
                Some(_) => CommitLink::NotRecorded,
            },
            commit,
            tag_object: None,
            digest,
            image_signature: ImageLink::NotRecorded,
            checked_at: None,
        }
    }

    /// The links in words, in order: commit, signer, image, image signer, checked.
    pub fn words(&self) -> Vec<(&'static str, String)> {
        let commit = self
            .commit
            .clone()
            .unwrap_or_else(|| format!("none ({FROM_DIRECTORY})"));
        let signer = match (&self.commit_signer, &self.commit) {
            (CommitLink::Verified(s), _) => signer_words(s),
            (CommitLink::AppliedFromDirectory, _) | (_, None) => {
                format!("none ({FROM_DIRECTORY})")
            }
            (CommitLink::NotRecorded, Some(_)) => {
                "not recorded (applied before trust chains were recorded)".to_string()
            }
            (CommitLink::NotRequired, Some(_)) => {
                format!("{NOT_REQUIRED} (no source.allowed_signers or trusted_pgp_keys)")
            }
        };
        let image = match &self.image_signature {
            ImageLink::Verified { vouchers } => vouchers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            ImageLink::NotRequired => {
                format!("{NOT_REQUIRED} (no policy.trusted_keys or trusted_identities)")
            }
            ImageLink::Failed { reason } => format!("not verified: {reason}"),
            ImageLink::NotRecorded => {
                "not recorded (`berth audit --live --verify` checks it)".to_string()
            }
        };
        vec![
            ("commit", commit),
            ("signer", signer),
            ("image", self.digest.clone()),
            ("image signer", image),
            (
                "checked",
                self.checked_at
                    .clone()
                    .unwrap_or_else(|| "never".to_string()),
            ),
        ]
    }
}

/// A commit signer in words: `ops@example.com (SHA256:…, commit signature)`.
pub fn signer_words(s: &Signer) -> String {
    let kind = if s.kind == "openpgp" {
        "OpenPGP key "
    } else {
        ""
    };
    format!("{} ({kind}{}, {} signature)", s.principal, s.key, s.object)
}

/// The chain of every container berth runs, by name, from the state directory: the
/// recorded one, or one saying it was applied from a directory (or before chains were
/// recorded). Unreadable records are left out (the caller's listing reports them).
pub fn of_running(state_dir: &Path) -> BTreeMap<String, Chain> {
    let applied = Applied::load(state_dir).ok().flatten();
    let records = crate::runtime::record::read_records(state_dir).unwrap_or_default();
    records
        .into_iter()
        .map(|(name, r)| {
            let chain = chain_of(applied.as_ref(), &name, r.image.digest);
            (name, chain)
        })
        .collect()
}

/// The chain of container `name`, which runs `digest`, from the state directory.
pub fn of_container(state_dir: &Path, name: &str, digest: &str) -> Chain {
    let applied = Applied::load(state_dir).ok().flatten();
    chain_of(applied.as_ref(), name, digest.to_string())
}

/// The chain of container `name`, which runs `digest`.
fn chain_of(applied: Option<&Applied>, name: &str, digest: String) -> Chain {
    let commit = applied.and_then(|a| a.containers.get(name));
    match (commit, applied.and_then(|a| a.chains.get(name))) {
        (Some(c), Some(chain)) if chain.commit.as_ref() == Some(c) && chain.digest == digest => {
            chain.clone()
        }
        (commit, _) => Chain::unrecorded(commit.cloned(), digest),
    }
}

/// Every running container's chain, in name order.
pub fn shown(chains: BTreeMap<String, Chain>) -> Vec<Shown> {
    chains
        .into_iter()
        .map(|(container, chain)| Shown { container, chain })
        .collect()
}

/// The chains as text, for `status` and `inspect`: a block per container, each link
/// on its own line; nothing when there are none. Terminal controls are escaped.
pub fn text(chains: &[Shown]) -> String {
    use std::fmt::Write;
    if chains.is_empty() {
        return String::new();
    }
    let mut out = String::from("\ntrust chains:\n");
    for s in chains {
        let _ = writeln!(out, "  {}", berth_spec::diag::printable(&s.container));
        out.push_str(&links_text(&s.chain, "    "));
    }
    out
}

/// One chain's links, a line each, indented by `indent`.
pub fn links_text(chain: &Chain, indent: &str) -> String {
    chain
        .words()
        .iter()
        .map(|(k, v)| {
            format!(
                "{indent}{:<14}{}\n",
                format!("{k}:"),
                berth_spec::diag::printable(v)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
