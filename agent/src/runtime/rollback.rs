//! A failed update, remembered: `containers/<name>/rollback.json` (mode 0600) says
//! which instance did not become running (and healthy, with a health check) within the
//! container's `update_timeout`, at which revision, and why. The planner keeps the
//! last known good instance while the mark names the instance the revision wants, so
//! a failing revision is not retried in a loop; a new revision (or `berth reconcile`,
//! `berth apply`) tries again, and a verified update removes the mark.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state;

/// A mark larger than this is not berth's: it is ignored.
const MAX_FILE: u64 = 64 << 10;
/// The longest reason kept (a probe's output can be long).
const MAX_REASON: usize = 2048;

/// One failed update of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackMark {
    /// The instance that failed (`<name>-<8 hex>`).
    pub failed: String,
    /// The revision that asked for it (a commit, or a tree digest for `berth apply`).
    pub revision: String,
    /// Why: the probe's output or the exit code.
    pub reason: String,
    /// When it failed (RFC 3339 UTC).
    pub at: String,
    /// The instance rolled back to, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<String>,
}

/// Why a mark could not be written or removed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("rollback mark {}: cannot {op}", path.display())]
pub struct RollbackError {
    pub path: PathBuf,
    pub op: &'static str,
    #[source]
    pub source: io::Error,
}

/// The mark file of container `name`.
pub fn mark_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir
        .join("containers")
        .join(name)
        .join("rollback.json")
}

/// The mark of `name`, if there is a readable one. A damaged mark counts as none, with
/// a warning: it only ever lets an update be tried again.
pub fn load(state_dir: &Path, name: &str) -> Option<RollbackMark> {
    let path = mark_path(state_dir, name);
    let bytes = match state::read_small(&path, MAX_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the rollback mark; ignoring it");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "a damaged rollback mark; ignoring it");
            None
        }
    }
}

/// Records a failed update of `name` (replacing an older mark).
pub fn record(state_dir: &Path, name: &str, mut mark: RollbackMark) -> Result<(), RollbackError> {
    let path = mark_path(state_dir, name);
    if mark.reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !mark.reason.is_char_boundary(end) {
            end -= 1;
        }
        mark.reason.truncate(end);
        mark.reason.push('…');
    }
    let err = |op| {
        let path = path.clone();
        move |source| RollbackError { path, op, source }
    };
    let bytes = serde_json::to_vec_pretty(&mark).map_err(|e| err("encode")(e.into()))?;
    state::write_atomic_mode(&path, &bytes, 0o600).map_err(err("write"))
}

/// Forgets the mark of `name`; none is fine.
pub fn clear(state_dir: &Path, name: &str) -> Result<(), RollbackError> {
    let path = mark_path(state_dir, name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RollbackError {
            path,
            op: "remove",
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(reason: &str) -> RollbackMark {
        RollbackMark {
            failed: "web-0123abcd".into(),
            revision: "c0ffee".into(),
            reason: reason.into(),
            at: "2026-12-04T18:00:00Z".into(),
            restored: None,
        }
    }

    #[test]
    fn a_mark_is_written_read_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("containers/web")).unwrap();
        assert_eq!(load(dir.path(), "web"), None);
        record(dir.path(), "web", mark("exited with 1")).unwrap();
        assert_eq!(load(dir.path(), "web"), Some(mark("exited with 1")));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(mark_path(dir.path(), "web"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        clear(dir.path(), "web").unwrap();
        clear(dir.path(), "web").unwrap();
        assert_eq!(load(dir.path(), "web"), None);
    }

    #[test]
    fn a_long_reason_is_cut_and_a_damaged_mark_is_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("containers/web")).unwrap();
        record(dir.path(), "web", mark(&"é".repeat(5000))).unwrap();
        let m = load(dir.path(), "web").unwrap();
        assert!(m.reason.len() <= MAX_REASON + '…'.len_utf8());
        std::fs::write(mark_path(dir.path(), "web"), b"{not json").unwrap();
        assert_eq!(load(dir.path(), "web"), None);
    }
}
