//! Reading a container's log, the CRI format the shim writes (DESIGN.md §7):
//! `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, one record per line, rotated by size
//! from `ctr.log` to `ctr.log.1`, `ctr.log.2`, … (higher is older).
//!
//! The pure parts are here: [`parse_record`], [`Joiner`] (a line longer than the shim's
//! record limit arrives as `P` records ended by an `F` one, per stream; they are joined
//! back), [`log_files`] (rotations, oldest first) and [`tail_start`], which finds where
//! the last N lines begin by reading the files backwards, so `--tail` on a large log
//! costs what it prints. Reading onwards from a position, and following the log while
//! the shim appends and rotates, is [`super::logs_follow`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes read per step when scanning a file backwards.
const BACKWARD_BLOCK: usize = 64 * 1024;

/// A joined line stops growing at this size and is emitted as is, so a process that
/// never writes a newline cannot grow `berth logs` without bound (64 records of the
/// shim's 16 KiB).
pub const MAX_JOINED: usize = 1024 * 1024;

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read log {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list log directory {}: {source}", dir.display())]
    List {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The output pipe a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// One record of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The time as written (RFC 3339).
    pub time: &'a str,
    pub stream: Stream,
    /// `P`: the line goes on in the stream's next record.
    pub partial: bool,
    /// The text, without the newline.
    pub text: &'a [u8],
}

/// A line that is not a CRI record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a CRI log record: {0}")]
pub struct Malformed(&'static str);

/// Parses one line (without its newline). A record with empty text may lack the space
/// after the tag.
pub fn parse_record(line: &[u8]) -> Result<Record<'_>, Malformed> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let (time, rest) = split_field(line).ok_or(Malformed("no stream field"))?;
    let time = std::str::from_utf8(time).map_err(|_| Malformed("time is not UTF-8"))?;
    if !looks_like_time(time) {
        return Err(Malformed("bad time"));
    }
    let (stream, rest) = split_field(rest).ok_or(Malformed("no tag field"))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(Malformed("bad stream")),
    };
    let (tag, text) = split_field(rest).unwrap_or((rest, b""));
    let partial = match tag {
        b"F" => false,
        b"P" => true,
        _ => return Err(Malformed("bad tag")),
    };
    Ok(Record {
        time,
        stream,
        partial,
        text,
    })
}

/// `field` and what follows its single separating space.
fn split_field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

/// A cheap shape check (`YYYY-MM-DDTHH:MM:SS…`); the time is printed, never computed on.
fn looks_like_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
}

/// A whole line of the container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The time of its first record.
    pub time: String,
    pub stream: Stream,
    pub text: Vec<u8>,
}

/// Joins `P` records with the stream's next records into whole lines.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: [Option<Line>; 2],
}

impl Joiner {
    /// Feeds one record; returns the line it completes, if any.
    pub fn push(&mut self, rec: &Record<'_>) -> Option<Line> {
        let slot = &mut self.pending[rec.stream.index()];
        let line = match slot.take() {
            Some(mut l) => {
                l.text.extend_from_slice(rec.text);
                l
            }
            None => Line {
                time: rec.time.to_string(),
                stream: rec.stream,
                text: rec.text.to_vec(),
            },
        };
        if rec.partial && line.text.len() < MAX_JOINED {
            *slot = Some(line);
            return None;
        }
        Some(line)
    }

    /// The unfinished lines (end of the log), stdout's first.
    pub fn flush(&mut self) -> Vec<Line> {
        self.pending.iter_mut().filter_map(Option::take).collect()
    }
}

/// The log's files, oldest first: `ctr.log.N` … `ctr.log.1`, then `ctr.log` if it
/// exists. Gaps (after a crash mid-rotation) are skipped.
pub fn log_files(log: &Path) -> Result<Vec<PathBuf>, LogError> {
    let dir = log.parent().unwrap_or(Path::new("."));
    let Some(base) = log.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LogError::List {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut numbered: Vec<(u32, PathBuf)> = Vec::new();
    let mut current = false;
    for entry in entries {
        let entry = entry.map_err(|source| LogError::List {
            dir: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == base {
            current = true;
        } else if let Some(n) = rotation_number(base, name) {
            numbered.push((n, entry.path()));
        }
    }
    numbered.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut files: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    if current {
        files.push(log.to_path_buf());
    }
    Ok(files)
}

/// `N` when `name` is `<base>.N` with N ≥ 1.
pub fn rotation_number(base: &str, name: &str) -> Option<u32> {
    let n = name.strip_prefix(base)?.strip_prefix('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|&n| n >= 1)
}

/// A place in the log: a file and a byte offset into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: PathBuf,
    pub offset: u64,
}

/// Where reading must start so that the last `n` lines come out whole, with `files`
/// oldest first (as [`log_files`] lists them). `None` when the log is empty or has no
/// files.
///
/// Records are read backwards, newest first: each `F` record ends a line, and so does
/// the newest `P` record of a stream that has no `F` after it (a line still being
/// written). Once `n` lines are counted, reading goes on until each stream met has
/// reached the `F` record that ends its previous line, so every counted line has all
/// its records. Reading forwards from there yields at most a few older, possibly cut,
/// lines before the `n` wanted ones; the caller keeps the last `n`.
pub fn tail_start(files: &[PathBuf], n: usize) -> Result<Option<Position>, LogError> {
    let Some(newest) = files.last() else {
        return Ok(None);
    };
    let len = std::fs::metadata(newest).map_or(0, |m| m.len());
    let mut start = Position {
        file: newest.clone(),
        offset: len,
    };
    if n == 0 {
        return Ok(Some(start));
    }
    let mut count = 0usize;
    // Streams with a counted line whose first record has not been reached yet.
    let mut open = [false; 2];
    let mut seen = [false; 2];
    for path in files.iter().rev() {
        let mut done = false;
        scan_backward(path, |offset, line| {
            let Ok(rec) = parse_record(line) else {
                return true; // malformed: the forward read warns about it
            };
            let s = rec.stream.index();
            if count < n {
                if !rec.partial || !seen[s] {
                    count += 1;
                }
                seen[s] = true;
                open[s] = true;
            } else if !open[s] {
                return true;
            } else if !rec.partial {
                open[s] = false;
                done = !open.iter().any(|&o| o);
                return !done;
            }
            start = Position {
                file: path.clone(),
                offset,
            };
            true
        })?;
        if done {
            break;
        }
    }
    Ok(Some(start))
}

/// Calls `visit(offset, line)` for each line of the file, last first, without the
/// newline; stops when `visit` returns false. A last line without a newline counts.
pub fn scan_backward(
    path: &Path,
    mut visit: impl FnMut(u64, &[u8]) -> bool,
) -> Result<(), LogError> {
    let err = |source| LogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        // Rotated away between listing and reading: nothing to add.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    let len = file.metadata().map_err(err)?.len();
    let mut pos = len;
    // The bytes [pos, end of the current line): a line not yet complete backwards.
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    while pos > 0 {
        let from = pos.saturating_sub(BACKWARD_BLOCK as u64);
        let mut block = vec![0u8; (pos - from) as usize];
        file.read_exact_at(&mut block, from).map_err(err)?;
        block.extend_from_slice(&buf);
        buf = block;
        pos = from;
        if first {
            first = false;
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
        }
        while let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            if !visit(pos + i as u64 + 1, &buf[i + 1..]) {
                return Ok(());
            }
            buf.truncate(i);
        }
    }
    if len > 0 {
        visit(0, &buf);
    }
    Ok(())
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
