//! The container log in the CRI format that kubelet, containerd and podman use:
//! `<RFC 3339 time> <stdout|stderr> <F|P> <text>\n`, one record per line of output.
//!
//! Framing ([`Framer`]) is pure: bytes in, records out. A line longer than
//! [`MAX_LINE`] is cut into `P` (partial) records followed by an `F` record with the
//! rest, as containerd does; the text never contains the newline. Output left without
//! a newline at end of stream is written as `F`.
//!
//! Rotation ([`LogWriter`]) is by size: before a record would take `ctr.log` past
//! `max_size`, `ctr.log.N-1 → ctr.log.N`, …, `ctr.log → ctr.log.1`, and a new `ctr.log`
//! starts; `max_files` counts the current file, so at most `ctr.log` … `ctr.log.{max_files-1}`
//! exist. A record is never split across files. Write errors (a full disk) drop records
//! rather than stall the container: the pipes must keep draining.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Longest text of one record; longer lines become `P` records. 16 KiB is containerd's
/// `max_container_log_line_size` default.
pub const MAX_LINE: usize = 16 * 1024;

/// Bytes collected before a write(2) to the log, so a burst of short lines costs one
/// syscall.
const WRITE_BATCH: usize = 64 * 1024;

/// Which output pipe a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

/// `F`: the record ends a line; `P`: the line goes on in the next record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Full,
    Partial,
}

impl Tag {
    fn byte(self) -> u8 {
        match self {
            Tag::Full => b'F',
            Tag::Partial => b'P',
        }
    }
}

/// Splits one stream's bytes into records; keeps an unfinished line between reads.
#[derive(Debug)]
pub struct Framer {
    pending: Vec<u8>,
    max_line: usize,
}

impl Framer {
    pub fn new(max_line: usize) -> Self {
        Framer {
            pending: Vec::new(),
            max_line: max_line.max(1),
        }
    }

    /// Feeds the next bytes read from the pipe; calls `emit` for each finished record.
    pub fn feed(&mut self, data: &[u8], mut emit: impl FnMut(Tag, &[u8])) {
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let line = &rest[..i];
                    if self.pending.is_empty() && line.len() <= self.max_line {
                        emit(Tag::Full, line); // the common case: no copy
                    } else {
                        self.extend(line, &mut emit);
                        emit(Tag::Full, &self.pending);
                        self.pending.clear();
                    }
                    rest = &rest[i + 1..];
                }
                None => {
                    self.extend(rest, &mut emit);
                    break;
                }
            }
        }
    }

    /// End of stream: an unfinished line becomes an `F` record.
    pub fn finish(&mut self, mut emit: impl FnMut(Tag, &[u8])) {
        if !self.pending.is_empty() {
            emit(Tag::Full, &self.pending);
            self.pending.clear();
        }
    }

    /// Appends to the unfinished line, emitting `P` records whenever it would outgrow
    /// `max_line`.
    fn extend(&mut self, mut part: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        while self.pending.len() + part.len() > self.max_line {
            let take = self.max_line - self.pending.len();
            self.pending.extend_from_slice(&part[..take]);
            emit(Tag::Partial, &self.pending);
            self.pending.clear();
            part = &part[take..];
        }
        self.pending.extend_from_slice(part);
    }
}

/// Appends one record to `out`.
pub fn encode(out: &mut Vec<u8>, time: &[u8], stream: Stream, tag: Tag, text: &[u8]) {
    out.extend_from_slice(time);
    out.push(b' ');
    out.extend_from_slice(stream.name());
    out.push(b' ');
    out.push(tag.byte());
    out.push(b' ');
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Length of the encoded record, without building it.
fn encoded_len(time: &[u8], stream: Stream, text: &[u8]) -> u64 {
    (time.len() + 1 + stream.name().len() + 3 + text.len() + 1) as u64
}

/// `path` with `.n` appended (`ctr.log.2`).
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The size-rotated log file of one container.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    buf: Vec<u8>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl LogWriter {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            max_size: max_size.max(1),
            max_files: max_files.max(1),
            file: Some(file),
            size,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Queues one record, rotating first if it would not fit in the current file.
    pub fn record(&mut self, time: &[u8], stream: Stream, tag: Tag, text: &[u8]) {
        let len = encoded_len(time, stream, text);
        let used = self.size + self.buf.len() as u64;
        if used > 0 && used + len > self.max_size {
            self.flush();
            self.rotate();
        }
        encode(&mut self.buf, time, stream, tag, text);
        if self.buf.len() >= WRITE_BATCH {
            self.flush();
        }
    }

    /// Writes the queued records.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.file.is_none() {
            self.file = open_append(&self.path).ok();
        }
        if let Some(file) = &mut self.file
            && file.write_all(&self.buf).is_ok()
        {
            self.size += self.buf.len() as u64;
        }
        // On error the batch is dropped: a stalled pump would block the container.
        self.buf.clear();
    }

    /// Shifts `ctr.log.N` up by one (dropping the oldest) and starts an empty `ctr.log`.
    fn rotate(&mut self) {
        self.file = None;
        if self.max_files > 1 {
            for n in (1..self.max_files).rev() {
                let from = if n == 1 {
                    self.path.clone()
                } else {
                    numbered(&self.path, n - 1)
                };
                // A missing file (a gap after a crash) is fine; keep going.
                let _ = std::fs::rename(&from, numbered(&self.path, n));
            }
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
        self.file = open_append(&self.path).ok();
        self.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(max: usize, chunks: &[&[u8]]) -> Vec<(Tag, String)> {
        let mut out = Vec::new();
        let mut f = Framer::new(max);
        for c in chunks {
            f.feed(c, |t, b| {
                out.push((t, String::from_utf8_lossy(b).into_owned()))
            });
        }
        f.finish(|t, b| out.push((t, String::from_utf8_lossy(b).into_owned())));
        out
    }

    fn full(s: &str) -> (Tag, String) {
        (Tag::Full, s.to_string())
    }

    fn part(s: &str) -> (Tag, String) {
        (Tag::Partial, s.to_string())
    }

    #[test]
    fn whole_lines_are_full_records() {
        assert_eq!(frame(16, &[b"a\nbc\n"]), vec![full("a"), full("bc")]);
    }

    #[test]
    fn empty_lines_are_kept() {
        assert_eq!(
            frame(16, &[b"\n\nx\n"]),
            vec![full(""), full(""), full("x")]
        );
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        assert_eq!(
            frame(16, &[b"hel", b"lo\nwo", b"rld\n"]),
            vec![full("hello"), full("world")]
        );
    }

    #[test]
    fn long_lines_become_partial_records() {
        assert_eq!(
            frame(4, &[b"abcdefghij\n"]),
            vec![part("abcd"), part("efgh"), full("ij")]
        );
        // Across reads, the partial boundary counts from the start of the line.
        assert_eq!(
            frame(4, &[b"ab", b"cdef\n"]),
            vec![part("abcd"), full("ef")]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_one_full_record() {
        assert_eq!(frame(4, &[b"abcd\n"]), vec![full("abcd")]);
        assert_eq!(frame(4, &[b"ab", b"cd", b"\n"]), vec![full("abcd")]);
        assert_eq!(frame(4, &[b"abcde\n"]), vec![part("abcd"), full("e")]);
    }

    #[test]
    fn unterminated_output_is_flushed_as_full_at_eof() {
        assert_eq!(frame(16, &[b"a\nlast"]), vec![full("a"), full("last")]);
        assert_eq!(frame(16, &[]), vec![]);
    }

    #[test]
    fn carriage_returns_and_binary_pass_through() {
        let out = frame(16, &[b"a\r\n\x00\xff\n"]);
        assert_eq!(out[0], full("a\r"));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn encoding_matches_the_cri_format() {
        let mut out = Vec::new();
        let t = b"2026-11-22T00:00:00.000000001Z";
        encode(&mut out, t, Stream::Stdout, Tag::Full, b"hi there");
        encode(&mut out, t, Stream::Stderr, Tag::Partial, b"");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-22T00:00:00.000000001Z stdout F hi there\n\
             2026-11-22T00:00:00.000000001Z stderr P \n"
        );
    }

    const T: &[u8] = b"2026-11-22T00:00:00.000000001Z";
    /// One record with 10 bytes of text: 30 + 1 + 6 + 3 + 10 + 1 = 51 bytes.
    const REC: u64 = 51;

    fn write_n(w: &mut LogWriter, from: usize, n: usize) {
        for i in from..from + n {
            w.record(
                T,
                Stream::Stdout,
                Tag::Full,
                format!("line-{i:05}").as_bytes(),
            );
        }
        w.flush();
    }

    fn read(p: &Path) -> Option<String> {
        std::fs::read_to_string(p).ok()
    }

    #[test]
    fn rotation_keeps_max_files_and_never_splits_records() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ctr.log");
        // Room for 2 records per file.
        let mut w = LogWriter::open(&log, 2 * REC + 10, 3).unwrap();
        write_n(&mut w, 0, 7);
        assert!(read(&log).unwrap().contains("line-00006"));
        let cur = read(&log).unwrap();
        assert_eq!(cur.lines().count(), 1);
        let one = read(&numbered(&log, 1)).unwrap();
        assert!(
            one.contains("line-00004") && one.contains("line-00005"),
            "{one}"
        );
        let two = read(&numbered(&log, 2)).unwrap();
        assert!(
            two.contains("line-00002") && two.contains("line-00003"),
            "{two}"
        );
        assert!(
            read(&numbered(&log, 3)).is_none(),
            "max_files counts ctr.log"
        );
        for f in [&cur, &one, &two] {
            assert!(f.len() as u64 <= 2 * REC + 10);
            assert!(f.lines().all(|l| l.len() as u64 == REC - 1));
        }
    }

    #[test]
    fn rotation_with_one_file_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ctr.log");
        let mut w = LogWriter::open(&log, REC, 1).unwrap();
        write_n(&mut w, 0, 3);
        assert_eq!(read(&log).unwrap().lines().collect::<Vec<_>>().len(), 1);
        assert!(read(&log).unwrap().contains("line-00002"));
        assert!(read(&numbered(&log, 1)).is_none());
    }

    #[test]
    fn a_record_larger_than_max_size_still_gets_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ctr.log");
        let mut w = LogWriter::open(&log, 10, 2).unwrap();
        write_n(&mut w, 0, 2);
        assert!(read(&log).unwrap().contains("line-00001"));
        assert!(read(&numbered(&log, 1)).unwrap().contains("line-00000"));
    }

    #[test]
    fn reopening_appends_and_counts_the_existing_size() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ctr.log");
        let mut w = LogWriter::open(&log, 2 * REC, 2).unwrap();
        write_n(&mut w, 0, 1);
        drop(w);
        let mut w = LogWriter::open(&log, 2 * REC, 2).unwrap();
        write_n(&mut w, 1, 2);
        assert_eq!(read(&numbered(&log, 1)).unwrap().lines().count(), 2);
        assert!(read(&log).unwrap().contains("line-00002"));
    }
}
