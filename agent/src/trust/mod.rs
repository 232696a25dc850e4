//! The trust chain of every running container: who vouched for what it runs — the
//! commit and its verified signer, the pinned image digest and the image signature's
//! vouchers — and when that was checked. The follower records it with the revision
//! (`Applied::chains` in `state/applied.json`, written in the same crash-safe step);
//! `berth status`, `inspect` and `audit --live` show it (the agent's live audit report,
//! `live`, carries it), and `audit --live --verify` checks it again against the node's
//! current keys and identities.
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
use crate::runtime::record::ContainerRecord;
use crate::source::applied::{Applied, Signer};

pub mod live;
pub mod record;
pub mod verify;

/// The words of a link the node does not require.
pub const NOT_REQUIRED: &str = "not required";
/// The words of a container that has no commit.
pub const FROM_DIRECTORY: &str = "applied from a directory";
/// How long a recorded reason may be: a failed check's error chain can quote what a
/// registry or a signature said, and the record is read by every `berth status`.
pub const MAX_REASON: usize = 1024;

/// What vouched for one running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// The commit it runs; none when it was applied from a directory, or is not known.
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
    /// The instance the chain was recorded for (`<name>-<8 hex>`), and its full spec
    /// hash: a chain is shown only while that very instance runs, so that a pass not
    /// recorded yet (a crash, a `berth apply DIR` in between) never lends its chain
    /// to another instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
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
    /// What vouched for the running instance is not known: the record cannot be read,
    /// or the chain recorded is another instance's. Only ever shown, never recorded.
    Unknown { reason: String },
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

impl ImageLink {
    /// A failed link, its reason cut to [`MAX_REASON`] bytes.
    pub fn failed(reason: &str) -> ImageLink {
        ImageLink::Failed {
            reason: capped(reason),
        }
    }
}

/// `s` cut to [`MAX_REASON`] bytes at a character boundary, saying so.
pub fn capped(s: &str) -> String {
    if s.len() <= MAX_REASON {
        return s.to_string();
    }
    let mut end = MAX_REASON;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut at {MAX_REASON} bytes)", &s[..end])
}

/// One running container's chain, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    pub container: String,
    #[serde(flatten)]
    pub chain: Chain,
}

/// The running instance a chain must describe, from its container record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub instance: String,
    pub spec_hash: String,
    pub digest: String,
}

impl Running {
    pub fn of(r: &ContainerRecord) -> Running {
        Running {
            instance: r.instance.clone(),
            spec_hash: r.spec_hash.clone(),
            digest: r.image.digest.clone(),
        }
    }
}

impl Chain {
    /// The chain of a container berth runs without a recorded one: applied from a
    /// directory (no commit), or at `commit` before chains were recorded.
    pub fn unrecorded(commit: Option<String>, running: &Running) -> Chain {
        Chain {
            commit_signer: match &commit {
                None => CommitLink::AppliedFromDirectory,
                Some(_) => CommitLink::NotRecorded,
            },
            commit,
            tag_object: None,
            digest: running.digest.clone(),
            image_signature: ImageLink::NotRecorded,
            instance: Some(running.instance.clone()),
            spec_hash: Some(running.spec_hash.clone()),
            checked_at: None,
        }
    }

    /// The chain of a running instance whose commit is not known, saying why.
    pub fn unknown(running: &Running, reason: String) -> Chain {
        Chain {
            commit_signer: CommitLink::Unknown {
                reason: capped(&reason),
            },
            ..Chain::unrecorded(None, running)
        }
    }

    /// Whether the chain was recorded for the instance `running`.
    pub fn describes(&self, running: &Running) -> bool {
        self.spec_hash.as_ref() == Some(&running.spec_hash)
            && self.instance.as_ref() == Some(&running.instance)
            && self.digest == running.digest
    }

    /// The commit's link in words.
    fn signer_text(&self) -> String {
        match (&self.commit_signer, &self.commit) {
            (CommitLink::Verified(s), _) => signer_words(s),
            (CommitLink::Unknown { .. }, _) => "not known".to_string(),
            (CommitLink::AppliedFromDirectory, _) | (_, None) => {
                format!("none ({FROM_DIRECTORY})")
            }
            (CommitLink::NotRecorded, Some(_)) => {
                "not recorded (applied before trust chains were recorded; the next pass records it)"
                    .to_string()
            }
            (CommitLink::NotRequired, Some(_)) => {
                format!("{NOT_REQUIRED} (no source.allowed_signers or trusted_pgp_keys)")
            }
        }
    }

    /// The image's link in words.
    fn image_text(&self) -> String {
        match &self.image_signature {
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
        }
    }

    /// The links in words, in order: commit, signer, image, image signer, checked.
    pub fn words(&self) -> Vec<(&'static str, String)> {
        let commit = match (&self.commit, &self.commit_signer) {
            (Some(c), _) => c.clone(),
            (None, CommitLink::Unknown { reason }) => format!("not known ({reason})"),
            (None, _) => format!("none ({FROM_DIRECTORY})"),
        };
        vec![
            ("commit", commit),
            ("signer", self.signer_text()),
            ("image", self.digest.clone()),
            ("image signer", self.image_text()),
            (
                "checked",
                self.checked_at
                    .clone()
                    .unwrap_or_else(|| "never".to_string()),
            ),
        ]
    }

    /// The chain in one line, for `berth status`: the commit (12 digits) and who
    /// signed it, the digest (12 digits) and who signed the image. `berth inspect`
    /// shows every link in full.
    pub fn summary(&self) -> String {
        let short = |s: &str, n: usize| s.get(..n).unwrap_or(s).to_string();
        let commit = match (&self.commit, &self.commit_signer) {
            (Some(c), CommitLink::Verified(s)) => {
                format!("commit {} signed by {}", short(c, 12), s.principal)
            }
            (Some(c), CommitLink::NotRequired) => {
                format!("commit {} (signature {NOT_REQUIRED})", short(c, 12))
            }
            (Some(c), _) => format!("commit {} (signer not recorded)", short(c, 12)),
            (None, CommitLink::Unknown { reason }) => format!("commit not known ({reason})"),
            (None, _) => FROM_DIRECTORY.to_string(),
        };
        let digest = short(&self.digest, 19);
        let image = match &self.image_signature {
            ImageLink::Verified { vouchers } => format!(
                "signed by {}",
                vouchers
                    .iter()
                    .map(Voucher::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ImageLink::NotRequired => format!("(signature {NOT_REQUIRED})"),
            ImageLink::Failed { .. } => "(signature not verified)".to_string(),
            ImageLink::NotRecorded => "(signature not recorded)".to_string(),
        };
        format!("{commit}; image {digest} {image}")
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
/// recorded one when it describes the running instance, else one saying it was
/// applied from a directory, before chains were recorded, or that it is not known
/// (`state/applied.json` cannot be read, or it describes another instance). Unreadable
/// container records are left out (the caller's listing reports them).
pub fn of_running(state_dir: &Path) -> BTreeMap<String, Chain> {
    let applied = Applied::load(state_dir).map_err(|e| crate::util::error_chain(&e));
    let records = crate::runtime::record::read_records(state_dir).unwrap_or_default();
    records
        .into_iter()
        .map(|(name, r)| {
            let chain = chain_of(
                applied.as_ref().map(Option::as_ref),
                &name,
                &Running::of(&r),
            );
            (name, chain)
        })
        .collect()
}

/// The chain of the container of record `r`, from the state directory.
pub fn of_container(state_dir: &Path, r: &ContainerRecord) -> Chain {
    let applied = Applied::load(state_dir).map_err(|e| crate::util::error_chain(&e));
    chain_of(
        applied.as_ref().map(Option::as_ref),
        &r.name,
        &Running::of(r),
    )
}

/// The chain of container `name`, whose instance `running` runs; `applied` is the
/// record, none when nothing was applied from a source, or why it cannot be read.
fn chain_of(applied: Result<Option<&Applied>, &String>, name: &str, running: &Running) -> Chain {
    let applied = match applied {
        Ok(a) => a,
        Err(why) => {
            return Chain::unknown(
                running,
                format!("the applied-revision record cannot be read: {why}"),
            );
        }
    };
    let Some(applied) = applied else {
        return Chain::unrecorded(None, running);
    };
    let commit = applied.containers.get(name);
    match (commit, applied.chains.get(name)) {
        (Some(c), Some(chain)) if chain.commit.as_ref() == Some(c) && chain.describes(running) => {
            chain.clone()
        }
        (_, Some(chain)) => Chain::unknown(
            running,
            format!(
                "the chain recorded is of instance {}, not of the running {}: a pass not recorded yet",
                chain.instance.as_deref().unwrap_or("(none)"),
                running.instance
            ),
        ),
        (commit, None) => Chain::unrecorded(commit.cloned(), running),
    }
}

/// Every running container's chain, in name order.
pub fn shown(chains: BTreeMap<String, Chain>) -> Vec<Shown> {
    chains
        .into_iter()
        .map(|(container, chain)| Shown { container, chain })
        .collect()
}

/// The chains as text, for `status`: a line per container ([`Chain::summary`]);
/// nothing when there are none. Terminal controls are escaped.
pub fn text(chains: &[Shown]) -> String {
    use std::fmt::Write;
    if chains.is_empty() {
        return String::new();
    }
    let mut out = String::from("\ntrust chains (berth inspect NAME shows every link):\n");
    for s in chains {
        let _ = writeln!(
            out,
            "  {}: {}",
            berth_spec::diag::printable(&s.container),
            berth_spec::diag::printable(&s.chain.summary())
        );
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
