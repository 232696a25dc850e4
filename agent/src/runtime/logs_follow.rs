//! Reading a container log onwards from a [`Position`], and following it (`logs -f`)
//! while the shim appends and rotates it.
//!
//! The reader holds one open file and the byte after the last whole record read. When
//! it reaches the end and `ctr.log` is no longer that file (the shim renamed it to
//! `ctr.log.1` and started a new one), it reads what was appended before the rename,
//! then moves to the next newer file: found by inode among the rotations, so several
//! rotations between two polls lose nothing that still exists. The shim never splits a
//! record across files; bytes after the last newline of a rotated file (a torn write
//! after a crash) are parsed as a record when the file is left, as is the tail of the
//! current file when reading ends. `P` records are joined across files.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::logs::{Joiner, Line, LogError, Position, log_files, parse_record};

/// Where lines go.
pub trait Sink {
    fn line(&mut self, line: Line) -> io::Result<()>;
    /// Called after each batch, so a follower's output is not held in a buffer.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Keeps the last `n` lines (`--tail N`).
#[derive(Debug)]
pub struct Tail {
    n: usize,
    pub lines: VecDeque<Line>,
}

impl Tail {
    pub fn new(n: usize) -> Self {
        Tail {
            n,
            lines: VecDeque::with_capacity(n.min(4096)),
        }
    }
}

impl Sink for Tail {
    fn line(&mut self, line: Line) -> io::Result<()> {
        if self.n == 0 {
            return Ok(());
        }
        if self.lines.len() == self.n {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        Ok(())
    }
}

/// `(device, inode)`: which file a name refers to now.
type FileId = (u64, u64);

fn id_of(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[derive(Debug)]
struct Current {
    file: File,
    id: FileId,
    /// The name it was opened under, for messages.
    path: PathBuf,
    /// Offset of the first byte not yet consumed as a record.
    offset: u64,
}

/// Reads a log from a position onwards; see the module doc.
#[derive(Debug)]
pub struct LogReader {
    /// `ctr.log`.
    log: PathBuf,
    current: Option<Current>,
    /// Bytes read after the last newline.
    fragment: Vec<u8>,
    joiner: Joiner,
    /// Lines skipped because they were not CRI records.
    pub malformed: u64,
}

/// Why output stopped; a write error on the sink is the caller's (a closed pipe).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot write log output: {0}")]
    Output(#[source] io::Error),
}

impl LogReader {
    /// A reader starting at `start`, or at the oldest file when `None`.
    pub fn new(log: &Path, start: Option<Position>) -> Result<Self, LogError> {
        let mut reader = LogReader {
            log: log.to_path_buf(),
            current: None,
            fragment: Vec::new(),
            joiner: Joiner::default(),
            malformed: 0,
        };
        if let Some(pos) = start {
            // Rotated away since the position was found: start from the oldest file.
            reader.current = open_at(&pos.file, pos.offset)?;
        }
        Ok(reader)
    }

    /// Reads everything available now, following rotations; keeps unfinished lines.
    pub fn poll(&mut self, sink: &mut dyn Sink) -> Result<(), ReadError> {
        loop {
            if self.current.is_none() {
                let Some(first) = log_files(&self.log)?.into_iter().next() else {
                    return Ok(());
                };
                self.current = open_at(&first, 0)?;
                if self.current.is_none() {
                    return Ok(());
                }
            }
            self.read_available(sink)?;
            let Some(cur) = &self.current else {
                return Ok(());
            };
            if id_of(&self.log) == Some(cur.id) {
                return Ok(());
            }
            // Renamed (or removed) by a rotation: the shim appended its last records
            // before the rename; read them, then move to the next newer file.
            self.read_available(sink)?;
            let Some(next) = self.next_file()? else {
                return Ok(());
            };
            let Some(opened) = open_at(&next, 0)? else {
                // The new ctr.log is not created yet: stay, look again next poll.
                return Ok(());
            };
            self.end_of_file(sink)?;
            self.current = Some(opened);
        }
    }

    /// End of reading: the tail of the file and unfinished lines come out as lines.
    pub fn finish(&mut self, sink: &mut dyn Sink) -> Result<(), ReadError> {
        self.end_of_file(sink)?;
        for line in self.joiner.flush() {
            sink.line(line).map_err(ReadError::Output)?;
        }
        sink.flush().map_err(ReadError::Output)
    }

    /// Polls every `interval` until `stop()` says the writer is done, then reads what
    /// is left and finishes. `stop` is asked before the last poll, so records written
    /// before the stop condition became true are never lost.
    pub fn follow(
        &mut self,
        interval: Duration,
        mut stop: impl FnMut() -> bool,
        sink: &mut dyn Sink,
    ) -> Result<(), ReadError> {
        loop {
            let stopping = stop();
            self.poll(sink)?;
            sink.flush().map_err(ReadError::Output)?;
            if stopping {
                break;
            }
            std::thread::sleep(interval);
        }
        self.finish(sink)
    }

    /// The file after the current one, oldest first: by inode among the rotations,
    /// or the oldest that exists if the current one has been removed.
    fn next_file(&self) -> Result<Option<PathBuf>, LogError> {
        let files = log_files(&self.log)?;
        let Some(cur) = &self.current else {
            return Ok(files.into_iter().next());
        };
        match files.iter().position(|p| id_of(p) == Some(cur.id)) {
            Some(i) => Ok(files.get(i + 1).cloned()),
            None => Ok(files.into_iter().next()),
        }
    }

    /// Reads the current file to its end, emitting whole records.
    fn read_available(&mut self, sink: &mut dyn Sink) -> Result<(), ReadError> {
        let Some(cur) = &mut self.current else {
            return Ok(());
        };
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match cur.file.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LogError::Read {
                        path: cur.path.clone(),
                        source,
                    }
                    .into());
                }
            };
            let mut data = &chunk[..n];
            while let Some(i) = data.iter().position(|&b| b == b'\n') {
                let record_len = self.fragment.len() + i + 1;
                let at = cur.offset;
                cur.offset += record_len as u64;
                if self.fragment.is_empty() {
                    consume(
                        &mut self.joiner,
                        &mut self.malformed,
                        &cur.path,
                        at,
                        &data[..i],
                        sink,
                    )?;
                } else {
                    self.fragment.extend_from_slice(&data[..i]);
                    let line = std::mem::take(&mut self.fragment);
                    consume(
                        &mut self.joiner,
                        &mut self.malformed,
                        &cur.path,
                        at,
                        &line,
                        sink,
                    )?;
                }
                data = &data[i + 1..];
            }
            self.fragment.extend_from_slice(data);
        }
    }

    /// Leaving a file: bytes after its last newline are taken as a record.
    fn end_of_file(&mut self, sink: &mut dyn Sink) -> Result<(), ReadError> {
        if self.fragment.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.fragment);
        let (path, at) = match &mut self.current {
            Some(cur) => {
                let at = cur.offset;
                cur.offset += line.len() as u64;
                (cur.path.clone(), at)
            }
            None => (self.log.clone(), 0),
        };
        consume(
            &mut self.joiner,
            &mut self.malformed,
            &path,
            at,
            &line,
            sink,
        )
    }
}

/// Parses one record and feeds the joiner; warns about (and skips) a malformed line.
fn consume(
    joiner: &mut Joiner,
    malformed: &mut u64,
    path: &Path,
    offset: u64,
    line: &[u8],
    sink: &mut dyn Sink,
) -> Result<(), ReadError> {
    match parse_record(line) {
        Ok(rec) => {
            if let Some(l) = joiner.push(&rec) {
                sink.line(l).map_err(ReadError::Output)?;
            }
        }
        Err(e) => {
            *malformed += 1;
            tracing::warn!(
                "{}: skipping the line at byte {offset}: {e}",
                path.display()
            );
        }
    }
    Ok(())
}

/// Opens `path` positioned at `offset`; `None` if it does not exist (rotated away).
fn open_at(path: &Path, offset: u64) -> Result<Option<Current>, LogError> {
    let err = |source| LogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let meta = file.metadata().map_err(err)?;
    let offset = offset.min(meta.len());
    file.seek(SeekFrom::Start(offset)).map_err(err)?;
    Ok(Some(Current {
        file,
        id: (meta.dev(), meta.ino()),
        path: path.to_path_buf(),
        offset,
    }))
}
