//! `berth logs [-f] [--tail N] [--timestamps] [--format text|json] NAME`: a container's
//! output from its CRI log and rotations, oldest first. As `docker logs`, lines the
//! container wrote to stdout go to stdout and its stderr lines to stderr;
//! `--format json` writes one JSON object per line (`time`, `stream`, `text`) to stdout.
//!
//! `-f` follows the log as the shim appends and rotates it, and ends by itself once the
//! container has exited (its `exit.json` exists, its instance was removed, or its init
//! is gone with no exit recorded for longer than the shim needs to write one) and the
//! log is drained; SIGINT ends it too.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use super::ps::{fail, state_dir};
use super::{Cli, EXIT_FAILED, Format};
use crate::runtime::logs::{self, Line, Stream};
use crate::runtime::logs_follow::{LogReader, ReadError, Sink, Tail};
use crate::runtime::state::InstanceDirs;
use crate::runtime::status::{self, State};
use crate::util::error_chain;

/// How often `-f` looks for new output.
const POLL: Duration = Duration::from_millis(200);

/// How long an init may be gone without an exit status before `-f` gives up: longer
/// than the shim's drain timeout (2 s) plus writing `exit.json`.
const GONE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The container's name
    pub name: String,
    /// Follow the output until the container exits
    #[arg(short, long)]
    pub follow: bool,
    /// Show only the last N lines ("all" for every line)
    #[arg(short = 'n', long, value_name = "N", default_value = "all", value_parser = parse_tail)]
    pub tail: TailArg,
    /// Prefix each line with the time it was written (RFC 3339)
    #[arg(short, long)]
    pub timestamps: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// `--tail`: every line, or the last N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailArg {
    All,
    Last(usize),
}

fn parse_tail(s: &str) -> Result<TailArg, String> {
    if s == "all" {
        return Ok(TailArg::All);
    }
    s.parse()
        .map(TailArg::Last)
        .map_err(|_| format!("expected a number of lines or `all`, not `{s}`"))
}

pub fn run(cli: &Cli, args: &LogsArgs) -> ExitCode {
    let state_dir = match state_dir(cli) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let record = match status::load_record(&state_dir, &args.name) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let dirs = InstanceDirs::new(&state_dir, &record.instance);
    let mut out = Output::new(args.timestamps, args.format);
    let result = (|| -> Result<(), ReadError> {
        let log = dirs.log();
        let start = match args.tail {
            TailArg::All => None,
            TailArg::Last(n) => logs::tail_start(&logs::log_files(&log)?, n)?,
        };
        let mut reader = LogReader::new(&log, start)?;
        match args.tail {
            TailArg::Last(n) => {
                let mut tail = Tail::new(n);
                reader.poll(&mut tail)?;
                if !args.follow {
                    reader.finish(&mut tail)?;
                }
                for line in tail.lines {
                    out.line(line).map_err(ReadError::Output)?;
                }
            }
            TailArg::All if !args.follow => {
                reader.poll(&mut out)?;
                reader.finish(&mut out)?;
            }
            TailArg::All => {}
        }
        if args.follow {
            let mut gone_since: Option<Instant> = None;
            let stop = || {
                if !dirs.root.is_dir() || dirs.exit_file().exists() {
                    return true;
                }
                // Re-read: a restart writes a new pid and start time.
                let current = status::load_record(&state_dir, &record.name)
                    .ok()
                    .filter(|r| r.instance == record.instance)
                    .unwrap_or_else(|| record.clone());
                match status::container_status(&state_dir, &current) {
                    Ok(s) if matches!(s.state, State::Running | State::Created) => {
                        gone_since = None;
                        false
                    }
                    // Gone without an exit status yet: the shim may still be draining.
                    _ => gone_since.get_or_insert_with(Instant::now).elapsed() >= GONE_GRACE,
                }
            };
            reader.follow(POLL, stop, &mut out)?;
        }
        out.flush().map_err(ReadError::Output)
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `berth logs web | head`: the reader went away; not an error.
        Err(ReadError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: container {}: {}", record.name, error_chain(&e));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Writes lines to stdout/stderr, or as JSON lines to stdout.
struct Output {
    stdout: BufWriter<io::Stdout>,
    stderr: io::Stderr,
    timestamps: bool,
    json: bool,
}

impl Output {
    fn new(timestamps: bool, format: Format) -> Self {
        Output {
            stdout: BufWriter::with_capacity(64 * 1024, io::stdout()),
            stderr: io::stderr(),
            timestamps,
            json: format == Format::Json,
        }
    }
}

impl Sink for Output {
    fn line(&mut self, line: Line) -> io::Result<()> {
        if self.json {
            let v = serde_json::json!({
                "time": line.time,
                "stream": line.stream.as_str(),
                "text": String::from_utf8_lossy(&line.text),
            });
            return writeln!(self.stdout, "{v}");
        }
        let mut buf = Vec::with_capacity(line.text.len() + 40);
        if self.timestamps {
            buf.extend_from_slice(line.time.as_bytes());
            buf.push(b' ');
        }
        buf.extend_from_slice(&line.text);
        buf.push(b'\n');
        match line.stream {
            Stream::Stdout => self.stdout.write_all(&buf),
            Stream::Stderr => {
                // Keep the interleaving a terminal would have shown.
                self.stdout.flush()?;
                self.stderr.write_all(&buf)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stdout.flush()?;
        self.stderr.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_argument() {
        assert_eq!(parse_tail("all"), Ok(TailArg::All));
        assert_eq!(parse_tail("3"), Ok(TailArg::Last(3)));
        assert!(parse_tail("-1").is_err());
        assert!(parse_tail("lots").is_err());
    }
}
