use std::io::Write;
use std::path::Path;

use super::*;
use crate::runtime::logs_follow::{LogReader, Sink, Tail};

const T: &str = "2026-11-22T10:00:00.000000001Z";

fn rec(stream: &str, tag: &str, text: &str) -> String {
    format!("{T} {stream} {tag} {text}\n")
}

/// Collects lines as `stream:text`.
#[derive(Default)]
struct Collect(Vec<String>);

impl Sink for Collect {
    fn line(&mut self, line: Line) -> std::io::Result<()> {
        self.0.push(format!(
            "{}:{}",
            line.stream.as_str(),
            String::from_utf8_lossy(&line.text)
        ));
        Ok(())
    }
}

fn read_all(log: &Path, start: Option<Position>) -> (Vec<String>, u64) {
    let mut r = LogReader::new(log, start).unwrap();
    let mut out = Collect::default();
    r.poll(&mut out).unwrap();
    r.finish(&mut out).unwrap();
    (out.0, r.malformed)
}

fn tail(log: &Path, n: usize) -> Vec<String> {
    let files = log_files(log).unwrap();
    let start = tail_start(&files, n).unwrap();
    let mut r = LogReader::new(log, start).unwrap();
    let mut t = Tail::new(n);
    r.poll(&mut t).unwrap();
    r.finish(&mut t).unwrap();
    t.lines
        .into_iter()
        .map(|l| format!("{}:{}", l.stream.as_str(), String::from_utf8_lossy(&l.text)))
        .collect()
}

#[test]
fn parses_cri_records() {
    let r = parse_record(b"2026-11-22T10:00:00.000000001Z stdout F hello world").unwrap();
    assert_eq!(r.time, T);
    assert_eq!(r.stream, Stream::Stdout);
    assert!(!r.partial);
    assert_eq!(r.text, b"hello world");
    // Go's RFC3339Nano (containerd) trims zeros; any RFC 3339 time is printed as is.
    let r = parse_record(b"2026-11-22T10:00:00.5+01:00 stderr P  two  spaces").unwrap();
    assert_eq!((r.stream, r.partial), (Stream::Stderr, true));
    assert_eq!(r.text, b" two  spaces");
    // Empty text, with and without the separator.
    assert_eq!(
        parse_record(b"2026-11-22T10:00:00Z stdout F ")
            .unwrap()
            .text,
        b""
    );
    assert_eq!(
        parse_record(b"2026-11-22T10:00:00Z stdout F").unwrap().text,
        b""
    );
    for bad in [
        &b""[..],
        b"hello",
        b"2026-11-22T10:00:00Z stdin F x",
        b"2026-11-22T10:00:00Z stdout X x",
        b"yesterday stdout F x",
        b"2026-11-22T10:00:00Z stdout",
    ] {
        assert!(
            parse_record(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn joiner_joins_partials_per_stream() {
    let mut j = Joiner::default();
    let a = parse_record(b"2026-11-22T10:00:00Z stdout P ab").unwrap();
    let e = parse_record(b"2026-11-22T10:00:01Z stderr F err").unwrap();
    let b = parse_record(b"2026-11-22T10:00:02Z stdout F cd").unwrap();
    assert_eq!(j.push(&a), None);
    let err = j.push(&e).unwrap();
    assert_eq!(
        (err.stream, err.text.as_slice()),
        (Stream::Stderr, &b"err"[..])
    );
    let out = j.push(&b).unwrap();
    assert_eq!(out.text, b"abcd");
    assert_eq!(out.time, "2026-11-22T10:00:00Z", "the first record's time");
    assert!(j.flush().is_empty());
    // Unfinished at the end: flushed as lines.
    j.push(&a);
    assert_eq!(j.flush().len(), 1);
}

#[test]
fn joiner_caps_runaway_lines() {
    let mut j = Joiner::default();
    let chunk = "x".repeat(16 * 1024);
    let line = format!("{T} stdout P {chunk}");
    let mut emitted = 0;
    for _ in 0..(MAX_JOINED / chunk.len() + 1) {
        if let Some(l) = j.push(&parse_record(line.as_bytes()).unwrap()) {
            assert!(l.text.len() >= MAX_JOINED);
            emitted += 1;
        }
    }
    assert_eq!(emitted, 1);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// ctr.log.2 (oldest) … ctr.log, each with two records.
fn rotated_log(dir: &Path) -> std::path::PathBuf {
    let log = dir.join("ctr.log");
    write(
        &dir.join("ctr.log.2"),
        &(rec("stdout", "F", "one") + &rec("stdout", "F", "two")),
    );
    write(
        &dir.join("ctr.log.1"),
        &(rec("stderr", "F", "three") + &rec("stdout", "P", "fo")),
    );
    write(
        &log,
        &(rec("stdout", "F", "ur") + &rec("stdout", "F", "five")),
    );
    log
}

#[test]
fn log_files_are_listed_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    write(&dir.path().join("ctr.log.10"), "");
    write(&dir.path().join("ctr.log.tmp"), "");
    write(&dir.path().join("ctr.log.0"), "");
    write(&dir.path().join("other.log.1"), "");
    let names: Vec<String> = log_files(&log)
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ctr.log.10", "ctr.log.2", "ctr.log.1", "ctr.log"]);
    assert!(
        log_files(&dir.path().join("gone/ctr.log"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn reads_rotations_in_order_joining_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    let (lines, malformed) = read_all(&log, None);
    assert_eq!(
        lines,
        [
            "stdout:one",
            "stdout:two",
            "stderr:three",
            "stdout:four",
            "stdout:five"
        ]
    );
    assert_eq!(malformed, 0);
}

#[test]
fn malformed_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ctr.log");
    let text = rec("stdout", "F", "a") + "garbage\n\n" + &rec("stdout", "F", "b");
    write(&log, &text);
    let (lines, malformed) = read_all(&log, None);
    assert_eq!(lines, ["stdout:a", "stdout:b"]);
    assert_eq!(malformed, 2);
}

#[test]
fn an_unterminated_last_record_is_read_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ctr.log");
    write(
        &log,
        &(rec("stdout", "F", "a") + &format!("{T} stdout F torn")),
    );
    assert_eq!(read_all(&log, None).0, ["stdout:a", "stdout:torn"]);
}

#[test]
fn scan_backward_visits_lines_last_first_across_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let long = "y".repeat(BACKWARD_BLOCK + 10);
    write(&path, &format!("a\n{long}\n\nb"));
    let mut seen = Vec::new();
    scan_backward(&path, |off, line| {
        seen.push((off, line.len()));
        true
    })
    .unwrap();
    let b_off = (2 + long.len() + 2) as u64;
    assert_eq!(seen, [(b_off, 1), (b_off - 1, 0), (2, long.len()), (0, 1)]);
    // Stopping early.
    let mut count = 0;
    scan_backward(&path, |_, _| {
        count += 1;
        false
    })
    .unwrap();
    assert_eq!(count, 1);
    write(&path, "");
    scan_backward(&path, |_, _| panic!("empty file")).unwrap();
}

#[test]
fn tail_counts_whole_lines_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    assert_eq!(tail(&log, 1), ["stdout:five"]);
    // "four" starts in ctr.log.1 and ends in ctr.log: it comes out whole.
    assert_eq!(tail(&log, 2), ["stdout:four", "stdout:five"]);
    assert_eq!(
        tail(&log, 3),
        ["stderr:three", "stdout:four", "stdout:five"]
    );
    assert_eq!(tail(&log, 5).len(), 5);
    assert_eq!(tail(&log, 50).len(), 5);
    assert!(tail(&log, 0).is_empty());
}

#[test]
fn tail_start_reads_only_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    let files = log_files(&log).unwrap();
    let pos = tail_start(&files, 2).unwrap().unwrap();
    // The first record of "four", the P record at the end of ctr.log.1.
    assert_eq!(pos.file, dir.path().join("ctr.log.1"));
    assert_eq!(pos.offset, rec("stderr", "F", "three").len() as u64);
    assert_eq!(tail_start(&[], 3).unwrap(), None);
}

#[test]
fn tail_keeps_interleaved_partial_lines_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ctr.log");
    let text = [
        rec("stdout", "F", "old"),
        rec("stdout", "P", "a1-"),
        rec("stderr", "P", "b1-"),
        rec("stdout", "P", "a2-"),
        rec("stderr", "F", "b2"),
        rec("stdout", "F", "a3"),
        rec("stderr", "P", "unfinished"),
    ]
    .concat();
    write(&log, &text);
    assert_eq!(tail(&log, 1), ["stderr:unfinished"]);
    assert_eq!(tail(&log, 2), ["stdout:a1-a2-a3", "stderr:unfinished"]);
    assert_eq!(
        tail(&log, 3),
        ["stderr:b1-b2", "stdout:a1-a2-a3", "stderr:unfinished"]
    );
    assert_eq!(tail(&log, 4)[0], "stdout:old");
}

#[test]
fn tail_skips_malformed_lines_when_counting() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ctr.log");
    write(
        &log,
        &(rec("stdout", "F", "a") + &rec("stdout", "F", "b") + "junk\n" + "junk\n"),
    );
    assert_eq!(tail(&log, 1), ["stdout:b"]);
}

/// Appends like the shim: whole records, rotating by renaming ctr.log.N → N+1.
fn rotate(log: &Path, max_files: u32) {
    for n in (1..max_files).rev() {
        let from = if n == 1 {
            log.to_path_buf()
        } else {
            log.with_file_name(format!("ctr.log.{}", n - 1))
        };
        let _ = std::fs::rename(from, log.with_file_name(format!("ctr.log.{n}")));
    }
}

fn append(log: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn polling_follows_appends_and_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ctr.log");
    let mut r = LogReader::new(&log, None).unwrap();
    let mut out = Collect::default();
    r.poll(&mut out).unwrap(); // no log yet
    append(&log, &rec("stdout", "F", "1"));
    append(&log, &format!("{T} stdout F half"));
    r.poll(&mut out).unwrap();
    assert_eq!(out.0, ["stdout:1"], "a record without its newline waits");
    append(&log, "-done\n");
    append(&log, &rec("stdout", "P", "x"));
    r.poll(&mut out).unwrap();
    assert_eq!(out.0.last().unwrap(), "stdout:half-done");

    // Appended, then rotated before the next poll; and rotated twice more after that.
    append(&log, &rec("stdout", "F", "y"));
    rotate(&log, 4);
    append(&log, &rec("stdout", "F", "2"));
    rotate(&log, 4);
    append(&log, &rec("stdout", "F", "3"));
    rotate(&log, 4);
    r.poll(&mut out).unwrap(); // ctr.log does not exist right now
    append(&log, &rec("stdout", "F", "4"));
    r.poll(&mut out).unwrap();
    r.finish(&mut out).unwrap();
    assert_eq!(
        out.0,
        [
            "stdout:1",
            "stdout:half-done",
            "stdout:xy",
            "stdout:2",
            "stdout:3",
            "stdout:4"
        ]
    );
}

#[test]
fn a_rotation_that_drops_the_file_being_read_moves_to_the_oldest_left() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ctr.log");
    append(&log, &rec("stdout", "F", "1"));
    let mut r = LogReader::new(&log, None).unwrap();
    let mut out = Collect::default();
    r.poll(&mut out).unwrap();
    // max_files = 1: the shim removes ctr.log and starts a new one.
    std::fs::remove_file(&log).unwrap();
    append(&log, &rec("stdout", "F", "2"));
    r.poll(&mut out).unwrap();
    assert_eq!(out.0, ["stdout:1", "stdout:2"]);
}

#[test]
fn follow_ends_when_the_writer_is_done_and_the_log_drained() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ctr.log");
    let done = dir.path().join("exit.json");
    append(&log, &rec("stdout", "F", "0"));
    let writer = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 1..=20 {
                append(&log, &rec("stdout", "F", &i.to_string()));
                if i % 7 == 0 {
                    rotate(&log, 3);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            append(&log, &format!("{T} stderr F last words"));
            std::fs::write(&done, "{}").unwrap();
        })
    };
    let mut r = LogReader::new(&log, None).unwrap();
    let mut out = Collect::default();
    r.follow(
        std::time::Duration::from_millis(10),
        || done.exists(),
        &mut out,
    )
    .unwrap();
    writer.join().unwrap();
    let want: Vec<String> = (0..=20)
        .map(|i| format!("stdout:{i}"))
        .chain(["stderr:last words".to_string()])
        .collect();
    assert_eq!(out.0, want);
}
