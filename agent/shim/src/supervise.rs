//! The detached half of the shim: runs the runtime's `create` with the container's
//! stdout/stderr on pipes, reports readiness, then pumps output into the log and reaps
//! children until the container's init exits.
//!
//! One thread, one `poll(2)` over the two output pipes and a SIGCHLD self-pipe. Output
//! read while `create` runs is held back: if `create` fails it is the runtime's error
//! text (sent to the caller, not logged); if it succeeds it is logged as usual.

use std::fs::OpenOptions;
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::args::{self, Options};
use crate::exit::{self, Exit};
use crate::log::{Framer, LogWriter, MAX_LINE, Stream, Tag};
use crate::{sys, timefmt};

/// How long to keep reading output after the container's init exited. With a PID
/// namespace every writer is gone by then and EOF comes at once; without one, a
/// leftover process may hold the pipes, and the exit must still be recorded.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Output held back while `create` runs, beyond which it is logged anyway (a runtime
/// error is a few lines; this only bounds memory).
const HOLD_MAX: usize = 64 * 1024;

/// Longest runtime error text passed back to the caller.
const ERROR_MAX: usize = 4096;

/// Size of the read buffer: one pipe's default capacity.
const READ_BUF: usize = 64 * 1024;

/// Records emitted while `create` runs.
type Held = Vec<([u8; timefmt::LEN], Stream, Tag, Vec<u8>)>;

struct Output {
    reader: PipeReader,
    stream: Stream,
    framer: Framer,
    open: bool,
}

/// Why the event loop stopped.
enum Finish {
    Container(Exit),
    RuntimeFailed(std::process::ExitStatus),
}

struct Supervisor<'a> {
    opts: &'a Options,
    log: LogWriter,
    outputs: [Output; 2],
    sigchld: PipeReader,
    /// Kept open for the signal handler, which writes to its raw descriptor.
    _sigchld_write: PipeWriter,
    ready: Option<PipeWriter>,
    runtime_pid: Option<i32>,
    container_pid: Option<i32>,
    /// Children reaped before the container's pid was known: (pid, status, time).
    orphans: Vec<(i32, i32, (i64, u32))>,
    held: Option<Held>,
    held_bytes: usize,
    finish: Option<Finish>,
    /// Why a cgroup could not be joined, for the readiness message.
    warnings: Vec<String>,
}

/// Sends the readiness message: `ok SHIM_PID PID` (then a `warn TEXT` line per
/// warning) or `error TEXT`. A caller that went
/// away (the agent was killed) is not an error: the container is supervised anyway.
fn report(ready: PipeWriter, message: &str) {
    let mut ready = ready;
    let _ = ready.write_all(message.as_bytes());
}

/// Runs the daemon; returns the process exit code (nobody waits for it).
pub fn run(opts: &Options, ready: PipeWriter) -> i32 {
    // Before anything else, and before the runtime's `create` above all: out of the
    // caller's cgroups.
    let warnings = crate::cgroup::join(&opts.cgroup_procs);
    let mut ready = Some(ready);
    let result = match Supervisor::start(opts, &mut ready, warnings) {
        Ok(mut s) => {
            let result = s.run();
            // Not yet reported (create failed): the error goes back to the caller.
            ready = s.ready.take();
            result
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => 0,
        Err(message) => {
            if let Some(r) = ready.take() {
                report(r, &format!("error {message}"));
            }
            1
        }
    }
}

fn detach_stdio() -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..=2 {
        sys::dup2(&null, fd)?;
    }
    std::env::set_current_dir("/")
}

impl<'a> Supervisor<'a> {
    fn start(
        opts: &'a Options,
        ready: &mut Option<PipeWriter>,
        warnings: Vec<String>,
    ) -> Result<Self, String> {
        let os = |what: &str, e: io::Error| format!("{what}: {e}");
        sys::set_child_subreaper().map_err(|e| os("cannot become a subreaper", e))?;
        sys::ignore_hangups().map_err(|e| os("cannot set signal handlers", e))?;
        detach_stdio().map_err(|e| os("cannot detach from the caller's stdio", e))?;
        let (sigchld, sigchld_write) = io::pipe().map_err(|e| os("pipe", e))?;
        sys::set_nonblocking(&sigchld).map_err(|e| os("fcntl", e))?;
        sys::notify_sigchld(&sigchld_write).map_err(|e| os("cannot handle SIGCHLD", e))?;

        // The exit file is the shim's: a stale one would announce an exit that did not happen.
        match std::fs::remove_file(&opts.exit_file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(format!("cannot remove {}: {e}", opts.exit_file.display()));
            }
            _ => {}
        }
        if let Some(path) = &opts.shim_pid_file {
            exit::write_atomic(path, std::process::id().to_string().as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let log = LogWriter::open(&opts.log, opts.log_max_size, opts.log_max_files)
            .map_err(|e| format!("cannot open log {}: {e}", opts.log.display()))?;

        let (out_r, out_w) = io::pipe().map_err(|e| os("pipe", e))?;
        let (err_r, err_w) = io::pipe().map_err(|e| os("pipe", e))?;
        let runtime = opts.runtime.display().to_string();
        let child = Command::new(&opts.runtime)
            .args(args::create_argv(opts))
            .stdin(Stdio::null())
            .stdout(out_w)
            .stderr(err_w)
            .spawn()
            // The Command (and with it our copies of the write ends) is dropped here, so
            // EOF on the pipes means every container process closed them.
            .map_err(|e| format!("cannot run runtime `{runtime}`: {e}"))?;
        let runtime_pid = child.id() as i32;
        // Not waited through `child`: the loop reaps every child with waitpid(-1).
        drop(child);

        let output = |reader, stream| Output {
            reader,
            stream,
            framer: Framer::new(MAX_LINE),
            open: true,
        };
        Ok(Supervisor {
            opts,
            log,
            outputs: [output(out_r, Stream::Stdout), output(err_r, Stream::Stderr)],
            sigchld,
            _sigchld_write: sigchld_write,
            ready: ready.take(),
            runtime_pid: Some(runtime_pid),
            container_pid: None,
            orphans: Vec::new(),
            held: Some(Vec::new()),
            held_bytes: 0,
            finish: None,
            warnings,
        })
    }

    fn run(&mut self) -> Result<(), String> {
        let mut buf = vec![0u8; READ_BUF];
        let mut deadline: Option<Instant> = None;
        loop {
            let mut timeout = -1;
            if self.finish.is_some() {
                let end = *deadline.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
                let left = end.saturating_duration_since(Instant::now());
                if self.outputs.iter().all(|o| !o.open) || left.is_zero() {
                    break;
                }
                timeout = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            }
            let mut fds = vec![sys::poll_in(self.sigchld.as_raw_fd())];
            let mut which = Vec::with_capacity(2);
            for (i, o) in self.outputs.iter().enumerate().filter(|(_, o)| o.open) {
                fds.push(sys::poll_in(o.reader.as_raw_fd()));
                which.push(i);
            }
            sys::poll(&mut fds, timeout).map_err(|e| format!("poll: {e}"))?;
            for (p, &i) in fds[1..].iter().zip(&which) {
                if sys::is_ready(p) {
                    self.read_output(i, &mut buf);
                }
            }
            if sys::is_ready(&fds[0]) {
                self.reap()?;
            }
            self.log.flush();
        }
        self.conclude()
    }

    /// After the loop: write the exit file, or turn a failed `create` into the error.
    fn conclude(&mut self) -> Result<(), String> {
        let time = timefmt::now_formatted();
        for o in &mut self.outputs {
            let (stream, log, held, held_bytes) = (
                o.stream,
                &mut self.log,
                &mut self.held,
                &mut self.held_bytes,
            );
            o.framer
                .finish(|tag, text| sink(held, held_bytes, log, &time, stream, tag, text));
        }
        match self.finish.take() {
            Some(Finish::Container(exit)) => {
                self.log.flush();
                // Written after the drain: once the file exists, the log is complete.
                exit::write_atomic(&self.opts.exit_file, exit.to_json().as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", self.opts.exit_file.display()))
            }
            Some(Finish::RuntimeFailed(status)) => Err(self.runtime_error(status)),
            None => Ok(()),
        }
    }

    fn read_output(&mut self, i: usize, buf: &mut [u8]) {
        let o = &mut self.outputs[i];
        let n = match o.reader.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => 0, // treat a broken pipe like EOF
        };
        let time = timefmt::now_formatted();
        let (stream, log, held, held_bytes) = (
            o.stream,
            &mut self.log,
            &mut self.held,
            &mut self.held_bytes,
        );
        let mut emit = |tag, text: &[u8]| sink(held, held_bytes, log, &time, stream, tag, text);
        if n == 0 {
            o.open = false;
            o.framer.finish(emit);
        } else {
            o.framer.feed(&buf[..n], &mut emit);
        }
    }

    fn reap(&mut self) -> Result<(), String> {
        let mut sink = [0u8; 64];
        while matches!(self.sigchld.read(&mut sink), Ok(n) if n > 0) {}
        while let Some((pid, raw)) = sys::reap_one() {
            let now = timefmt::now();
            if Some(pid) == self.runtime_pid {
                self.runtime_pid = None;
                self.runtime_exited(raw)?;
            } else if Some(pid) == self.container_pid {
                self.finish = Some(Finish::Container(Exit::from_wait_status(raw, now)));
            } else if self.container_pid.is_none() {
                self.orphans.push((pid, raw, now));
            }
        }
        Ok(())
    }

    fn runtime_exited(&mut self, raw: i32) -> Result<(), String> {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(raw);
        if !status.success() {
            self.finish = Some(Finish::RuntimeFailed(status));
            return Ok(());
        }
        let path = &self.opts.pid_file;
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "runtime create succeeded but {} is unreadable: {e}",
                path.display()
            )
        })?;
        let pid: i32 = text.trim().parse().map_err(|_| {
            format!(
                "runtime create succeeded but {} holds no pid",
                path.display()
            )
        })?;
        self.container_pid = Some(pid);
        if let Some(&(_, raw, at)) = self.orphans.iter().find(|(p, _, _)| *p == pid) {
            self.finish = Some(Finish::Container(Exit::from_wait_status(raw, at)));
        }
        self.orphans = Vec::new();
        // Whatever the runtime printed on success belongs to the log, in order.
        for (time, stream, tag, text) in self.held.take().unwrap_or_default() {
            self.log.record(&time, stream, tag, &text);
        }
        if let Some(ready) = self.ready.take() {
            let mut message = format!("ok {} {pid}\n", std::process::id());
            for w in &self.warnings {
                message.push_str(&format!("warn {w}\n"));
            }
            report(ready, &message);
        }
        Ok(())
    }

    /// The runtime's error: what it wrote on stderr (else stdout), last [`ERROR_MAX`] bytes.
    fn runtime_error(&mut self, status: std::process::ExitStatus) -> String {
        let held = self.held.take().unwrap_or_default();
        let pick = |s: Stream| -> Vec<String> {
            held.iter()
                .filter(|r| r.1 == s)
                .map(|r| String::from_utf8_lossy(&r.3).trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        };
        let mut lines = pick(Stream::Stderr);
        if lines.is_empty() {
            lines = pick(Stream::Stdout);
        }
        let mut text = lines.join("\n");
        if text.len() > ERROR_MAX {
            let mut cut = text.len() - ERROR_MAX;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text = format!("…{}", &text[cut..]);
        }
        if text.is_empty() {
            text = "no output".to_string();
        }
        format!(
            "runtime `{}` create failed ({status}): {text}",
            self.opts.runtime.display()
        )
    }
}

/// Routes a record to the held list while `create` runs, else to the log.
fn sink(
    held: &mut Option<Held>,
    held_bytes: &mut usize,
    log: &mut LogWriter,
    time: &[u8; timefmt::LEN],
    stream: Stream,
    tag: Tag,
    text: &[u8],
) {
    if let Some(h) = held {
        if *held_bytes + text.len() <= HOLD_MAX {
            *held_bytes += text.len();
            h.push((*time, stream, tag, text.to_vec()));
            return;
        }
        for (t, s, g, x) in held.take().unwrap_or_default() {
            log.record(&t, s, g, &x);
        }
    }
    log.record(time, stream, tag, text);
}
