//! The agent's events: one JSON object a line in `<state_dir>/state/events.jsonl`,
//! rotated to `events.jsonl.1` past [`MAX_BYTES`] (so at most twice that is kept), and
//! sent to live subscribers (`berth events -f`, the API's stream).
//!
//! An event says what happened, not what the agent is: a fetch, a refused revision, a
//! pass and its result, a container that exited, a suspend. `berth status` shows the
//! agent's state; `berth events` its history.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The size past which the log is rotated.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// The most events a read returns (the newest).
pub const MAX_READ: usize = 10_000;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 UTC, milliseconds.
    pub time: String,
    /// `Normal` or `Warning`, as Kubernetes events.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// A CamelCase word: `Fetched`, `SourceUnavailable`, `RevisionRefused`, `Applied`,
    /// `NotApplied`, `PassFailed`, `ContainerExited`, `Suspended`, `Resumed`,
    /// `Started`, `Stopping`, `GarbageCollected`, `RolledBack`, `Unhealthy`, `Healthy`, `Observed` (what an observing agent would do).
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Normal,
    Warning,
}

impl Event {
    pub fn new(kind: EventKind, reason: &str, message: impl Into<String>) -> Self {
        Self {
            time: crate::util::rfc3339::format_millis(now()),
            kind,
            reason: reason.to_string(),
            message: message.into(),
            revision: None,
            container: None,
        }
    }

    pub fn revision(mut self, commit: impl Into<String>) -> Self {
        self.revision = Some(commit.into());
        self
    }

    pub fn container(mut self, name: impl Into<String>) -> Self {
        self.container = Some(name.into());
        self
    }
}

fn now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The log file of a state directory.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    /// Serialises appends and rotation within the process.
    lock: Mutex<()>,
}

impl EventLog {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("state").join("events.jsonl"),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event (and rotates the file first when it is full).
    pub fn append(&self, event: &Event) -> io::Result<()> {
        let _g = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(dir) = self.path.parent() {
            crate::runtime::state::private_dir(dir)?;
        }
        if fs::metadata(&self.path).is_ok_and(|m| m.len() >= MAX_BYTES) {
            fs::rename(&self.path, rotated(&self.path))?;
        }
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        line.push(b'\n');
        // Never through a link planted at the log's path.
        let mut f = fs::File::options()
            .create(true)
            .append(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all(&line)
    }

    /// The events recorded, oldest first, those at or after `since` (RFC 3339) when
    /// given; at most [`MAX_READ`] (the newest). Lines that do not parse (a torn last
    /// line after a crash) are skipped.
    pub fn read(&self, since: Option<&str>) -> Vec<Event> {
        read_file(&self.path, since)
    }
}

/// The events of a state directory, as [`EventLog::read`] (for readers without a log).
pub fn read_file(path: &Path, since: Option<&str>) -> Vec<Event> {
    let mut out = Vec::new();
    for p in [rotated(path), path.to_path_buf()] {
        let Ok(text) = crate::runtime::state::read_small(&p, 2 * MAX_BYTES) else {
            continue;
        };
        for line in String::from_utf8_lossy(&text).lines() {
            if let Ok(e) = serde_json::from_str::<Event>(line)
                && since.is_none_or(|s| e.time.as_str() >= s)
            {
                out.push(e);
            }
        }
    }
    if out.len() > MAX_READ {
        out.drain(..out.len() - MAX_READ);
    }
    out
}

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_reads_since_and_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::new(dir.path());
        let mut a = Event::new(EventKind::Normal, "Fetched", "one").revision("abc");
        a.time = "2026-12-04T10:00:00.000Z".into();
        let mut b = Event::new(EventKind::Warning, "NotApplied", "two").container("web");
        b.time = "2026-12-04T11:00:00.000Z".into();
        log.append(&a).expect("append");
        log.append(&b).expect("append");
        assert_eq!(log.read(None), vec![a.clone(), b.clone()]);
        assert_eq!(log.read(Some("2026-12-04T10:30:00Z")), vec![b.clone()]);
        // A torn line is skipped.
        fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .and_then(|mut f| f.write_all(b"{\"time\":"))
            .expect("torn");
        assert_eq!(log.read(None).len(), 2);
        // Past the limit the file is rotated; both halves are read.
        let big = Event::new(EventKind::Normal, "Fetched", "x".repeat(MAX_BYTES as usize));
        log.append(&big).expect("big");
        log.append(&a).expect("after");
        assert!(rotated(log.path()).exists());
        let all = log.read(None);
        assert_eq!(all.first(), Some(&a));
        assert_eq!(all.last(), Some(&a));
    }
}
