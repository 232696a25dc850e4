//! What the node applied from its source, kept crash-safely in
//! `<state_dir>/state/applied.json`: the revision (commit, author, time, subject, who
//! signed it), when, and — per container — the commit of the revision it runs, so that
//! every revision some container still runs is kept on disk (last-known-good is per
//! container) and the rest pruned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record's format; a newer one is refused rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

/// Why the record cannot be read or written.
pub type AppliedError = crate::util::versioned::VersionedError;

/// Who signed a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// SSH: the principal of the `allowed_signers` line whose key signed. OpenPGP: the
    /// key's primary user id.
    pub principal: String,
    /// SSH: `SHA256:…` of the key. OpenPGP: the fingerprint of the key that signed (a
    /// subkey or the primary key), upper-case hex.
    pub key: String,
    /// `commit` or `tag`: which object carried the signature.
    pub object: String,
    /// `ssh` or `openpgp` (records written before OpenPGP was verified are SSH).
    #[serde(default = "ssh")]
    pub kind: String,
    /// OpenPGP, when a subkey signed: the primary key's fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
}

fn ssh() -> String {
    "ssh".to_string()
}

/// One revision of the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionInfo {
    pub commit: String,
    /// The repository, without userinfo.
    pub url: String,
    /// What the node follows: `branch main`, `tag v1`, `commit <id>`.
    pub follows: String,
    /// The spec sub-directory.
    pub path: String,
    pub author: String,
    /// The committer time, RFC 3339.
    pub time: String,
    /// The first line of the message.
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
    /// The annotated tag object followed (`tag =`), so that its signature can be checked
    /// again when the node falls back to this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_object: Option<String>,
}

impl RevisionInfo {
    /// The commit's first 12 hex digits.
    pub fn short(&self) -> &str {
        self.commit.get(..12).unwrap_or(&self.commit)
    }
}

/// `state/applied.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub schema_version: u32,
    /// The revision applied last.
    pub revision: RevisionInfo,
    /// When, RFC 3339.
    pub applied_at: String,
    /// Whether that pass applied every container.
    pub applied: bool,
    /// Per container: the commit of the revision it runs.
    #[serde(default)]
    pub containers: BTreeMap<String, String>,
    /// Per container: what vouched for what it runs (`trust`), written in the same step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub chains: BTreeMap<String, crate::trust::Chain>,
}

impl Applied {
    /// The record's path under a state directory.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("state").join("applied.json")
    }

    /// The record, or none when nothing was applied from a source yet.
    pub fn load(state_dir: &Path) -> Result<Option<Self>, AppliedError> {
        crate::util::versioned::load(&Self::path(state_dir), SCHEMA_VERSION)
    }

    /// Writes the record (temp file, fsync, rename, directory fsync).
    pub fn store(&self, state_dir: &Path) -> Result<(), AppliedError> {
        crate::util::versioned::store(&Self::path(state_dir), self)
    }

    /// Forgets the record, when `berth apply DIR` converged the node from a directory:
    /// the revision applied from the source no longer describes it, and an agent
    /// without a source must not bring that revision back. Returns its commit. Called
    /// under the state lock (`berth apply` does, while its pass holds it), under which
    /// the agent reads and writes the record after its passes.
    pub fn forget(state_dir: &Path) -> Result<Option<String>, AppliedError> {
        let before = Self::load(state_dir)?;
        if before.is_some() {
            let path = Self::path(state_dir);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(AppliedError::Write { path, source: e });
            }
        }
        Ok(before.map(|a| a.revision.commit))
    }

    /// Every commit some container runs, and the one applied last.
    pub fn in_use(&self) -> BTreeSet<String> {
        let mut keep: BTreeSet<String> = self.containers.values().cloned().collect();
        keep.insert(self.revision.commit.clone());
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Applied {
        Applied {
            schema_version: SCHEMA_VERSION,
            revision: RevisionInfo {
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                url: "https://git.example.com/fleet.git".into(),
                follows: "branch main".into(),
                path: "fleet".into(),
                author: "Ops <ops@example.com>".into(),
                time: "2026-12-04T10:00:00Z".into(),
                subject: "web: 1.2".into(),
                signer: None,
                tag_object: None,
            },
            applied_at: "2026-12-04T10:00:05Z".into(),
            applied: true,
            containers: BTreeMap::from([("web".into(), "aaaa".into())]),
            chains: BTreeMap::new(),
        }
    }

    #[test]
    fn a_signer_recorded_before_openpgp_reads_as_ssh() {
        let old = r#"{"principal":"ops","key":"SHA256:abc","object":"commit"}"#;
        let s: Signer = serde_json::from_str(old).expect("old signer");
        assert_eq!((s.kind.as_str(), s.primary_key), ("ssh", None));
    }

    #[test]
    fn round_trips_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Applied::load(dir.path()).expect("load").is_none());
        let a = sample();
        a.store(dir.path()).expect("store");
        assert_eq!(Applied::load(dir.path()).expect("load"), Some(a.clone()));
        assert_eq!(a.revision.short(), "0123456789ab");
        assert_eq!(
            a.in_use(),
            BTreeSet::from(["aaaa".to_string(), a.revision.commit.clone()])
        );
        let mut newer = serde_json::to_value(&a).expect("json");
        newer["schema_version"] = serde_json::json!(SCHEMA_VERSION + 1);
        std::fs::write(Applied::path(dir.path()), newer.to_string()).expect("write");
        let err = Applied::load(dir.path()).expect_err("newer");
        assert!(err.to_string().contains("newer berth"), "{err}");
    }
}
