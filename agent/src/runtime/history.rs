//! Restart history: each container's recent exits, kept across berth's restarts so the
//! planner's crash-loop backoff comes from what really happened.
//!
//! `containers/<name>/history.json` holds the last [`KEEP`] exits, oldest first, written
//! atomically (`state::write_atomic`, mode 0600). An exit is recorded when a restart is
//! about to replace the instance's `exit.json`; the scan adds the current `exit.json`
//! itself, so the planner always sees every exit once. Recording the same exit twice
//! (a pass killed after recording, before restarting) keeps one.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state;

/// How many exits are kept per container: more than the crash-loop backoff needs to
/// reach its longest delay (10 s doubling to 5 min is six exits).
pub const KEEP: usize = 16;

/// A history file larger than this is not berth's: it counts as damaged.
const MAX_FILE: u64 = 64 << 10;

/// One exit of a container's process; times in seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitEntry {
    /// The instance that exited: a new spec (a new instance) starts a fresh backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    pub finished_at: u64,
    pub code: i32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct HistoryFile {
    exits: Vec<ExitEntry>,
}

/// Why the history could not be read or written; names the file.
#[derive(Debug, thiserror::Error)]
#[error("restart history {}: cannot {op}", path.display())]
pub struct HistoryError {
    pub path: PathBuf,
    pub op: &'static str,
    #[source]
    pub source: io::Error,
}

/// The history file of container `name`.
pub fn history_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("containers").join(name).join("history.json")
}

/// The recorded exits of `name`, oldest first; none when nothing was recorded. A file
/// that does not parse counts as empty (it only ever shortens a backoff).
pub fn load(state_dir: &Path, name: &str) -> Result<Vec<ExitEntry>, HistoryError> {
    let path = history_path(state_dir, name);
    match state::read_small(&path, MAX_FILE) {
        Ok(bytes) => Ok(serde_json::from_slice::<HistoryFile>(&bytes)
            .map(|f| f.exits)
            .unwrap_or_else(|err| {
                tracing::warn!("ignoring {}: {err}", path.display());
                Vec::new()
            })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(HistoryError {
            path,
            op: "read",
            source,
        }),
    }
}

/// Records the exit the instance `dirs` left (its `exit.json`), if any, before a
/// restart replaces it — by `berth apply` and by the operator's `start`/`restart`
/// alike. `started_at` is the record's. Failures are logged: a history can only
/// shorten a backoff.
pub fn record_exit_of(
    state_dir: &Path,
    name: &str,
    dirs: &state::InstanceDirs,
    started_at: Option<&str>,
) {
    let Ok(Some(exit)) = dirs.exit_status() else {
        return;
    };
    let secs = crate::util::rfc3339::parse_secs;
    let entry = ExitEntry {
        instance: dirs
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        started_at: started_at.and_then(secs),
        finished_at: secs(&exit.finished_at).unwrap_or(0),
        code: exit.exit_code,
    };
    if let Err(err) = record(state_dir, name, entry) {
        tracing::warn!(container = name, "{}", crate::util::error_chain(&err));
    }
}

/// Appends `exit` to `name`'s history unless it is there already, keeping the last
/// [`KEEP`].
pub fn record(state_dir: &Path, name: &str, exit: ExitEntry) -> Result<(), HistoryError> {
    let mut exits = load(state_dir, name)?;
    if exits.iter().any(|e| e.finished_at == exit.finished_at) {
        return Ok(());
    }
    exits.push(exit);
    exits.sort_by_key(|e| e.finished_at);
    let skip = exits.len().saturating_sub(KEEP);
    let file = HistoryFile {
        exits: exits.split_off(skip),
    };
    let path = history_path(state_dir, name);
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| HistoryError {
        path: path.clone(),
        op: "encode",
        source: e.into(),
    })?;
    state::write_atomic(&path, &bytes).map_err(|source| HistoryError {
        path,
        op: "write",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(finished_at: u64, code: i32) -> ExitEntry {
        ExitEntry {
            instance: None,
            started_at: Some(finished_at - 1),
            finished_at,
            code,
        }
    }

    #[test]
    fn records_once_in_order_and_keeps_the_last_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(load(d, "web").unwrap().is_empty());
        record(d, "web", exit(200, 1)).unwrap();
        record(d, "web", exit(100, 2)).unwrap();
        record(d, "web", exit(200, 1)).unwrap();
        assert_eq!(load(d, "web").unwrap(), vec![exit(100, 2), exit(200, 1)]);
        for t in 0..40 {
            record(d, "web", exit(1000 + t, 1)).unwrap();
        }
        let kept = load(d, "web").unwrap();
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept.first().unwrap().finished_at, 1000 + 40 - KEEP as u64);
        assert_eq!(kept.last().unwrap().finished_at, 1039);
        // Other containers are apart.
        assert!(load(d, "db").unwrap().is_empty());
    }

    #[test]
    fn a_planted_link_or_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = history_path(dir.path(), "web");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        assert!(load(dir.path(), "web").is_err());
        std::fs::remove_file(&p).unwrap();
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(load(dir.path(), "web").is_err());
    }

    #[test]
    fn a_damaged_file_counts_as_empty_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = history_path(dir.path(), "web");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "{ not json").unwrap();
        assert!(load(dir.path(), "web").unwrap().is_empty());
        record(dir.path(), "web", exit(5, 1)).unwrap();
        assert_eq!(load(dir.path(), "web").unwrap(), vec![exit(5, 1)]);
    }
}
