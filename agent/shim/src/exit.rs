//! The exit-status file: `{"exit_code": N, "signal": S|null, "finished_at": "RFC 3339"}`,
//! written atomically (temp file, fsync, rename, fsync of the directory), so a reader
//! sees either no file or a complete one. As Docker reports it, a container killed by
//! signal S has `exit_code` 128+S.
//!
//! Hand-written JSON: three scalar fields do not justify serde in a per-container binary.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

/// How the container's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// Seconds and nanoseconds since the epoch when the shim reaped it.
    pub finished_at: (i64, u32),
}

impl Exit {
    /// From a raw `waitpid` status.
    pub fn from_wait_status(raw: i32, finished_at: (i64, u32)) -> Self {
        let status = std::process::ExitStatus::from_raw(raw);
        let (exit_code, signal) = match (status.code(), status.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            // Stopped/continued are not reported (WNOHANG without WUNTRACED); be safe.
            (None, None) => (255, None),
        };
        Exit {
            exit_code,
            signal,
            finished_at,
        }
    }

    /// The file's JSON text (one line, ending in a newline).
    pub fn to_json(self) -> String {
        let signal = self
            .signal
            .map_or_else(|| "null".to_string(), |s| s.to_string());
        let time = crate::timefmt::format(self.finished_at.0, self.finished_at.1);
        format!(
            "{{\"exit_code\": {}, \"signal\": {}, \"finished_at\": \"{}\"}}\n",
            self.exit_code,
            signal,
            String::from_utf8_lossy(&time)
        )
    }
}

/// Writes `contents` to `path` atomically: `path.tmp`, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: (i64, u32) = (1_795_305_600, 42);

    #[test]
    fn normal_exit() {
        // waitpid encodes exit(3) as 3 << 8.
        let e = Exit::from_wait_status(3 << 8, T);
        assert_eq!((e.exit_code, e.signal), (3, None));
        assert_eq!(
            e.to_json(),
            "{\"exit_code\": 3, \"signal\": null, \"finished_at\": \"2026-11-22T00:00:00.000000042Z\"}\n"
        );
    }

    #[test]
    fn killed_by_a_signal_is_128_plus_signal() {
        let e = Exit::from_wait_status(9, T);
        assert_eq!((e.exit_code, e.signal), (137, Some(9)));
        assert!(e.to_json().contains("\"signal\": 9"));
        // With a core dump flag set.
        let e = Exit::from_wait_status(0x80 | 11, T);
        assert_eq!((e.exit_code, e.signal), (139, Some(11)));
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
