//! The OCI runtime driver: which runtime (runc or crun) berth calls, and how.
//!
//! As containerd's runc wrapper does, every command line is rendered from plain data by
//! a pure function (`*_argv`), golden-tested for both runtimes with `/bin/true` and
//! shell scripts standing in for the binary; [`Runtime::run`] is the one place that
//! executes them. The shapes berth uses:
//!
//! - create goes through `berth-shim` ([`Runtime::shim_argv`]), which runs
//!   `RUNTIME --root R create --bundle B --pid-file P ID` and stays as the container's
//!   parent;
//! - `start`, `kill ID SIGNUM`, `state`, and `delete` **without** `-f`: berth waits for
//!   the exit itself (the shim's exit file), since runc 1.1's `delete -f` polls the
//!   killed process every 100 ms (research/baseline.md §1);
//! - `exec --process FILE` (or `exec [--user] [--env]… [--cwd] -- ID CMD…`), with a
//!   JSON `--log` so a failure of the runtime can be told apart from the command's own
//!   exit code ([`exec_failure_code`]).
//!
//! Which runtime to use is decided once per boot by [`detect`], which actually creates
//! a container with each candidate (see [`detect`]'s module for why).

pub mod detect;
pub mod run;
#[cfg(test)]
mod tests;

pub use run::{run_captured, spawn};

pub use detect::detect;

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a runtime command other than `create` and `exec` may take. runc and crun
/// answer in tens of milliseconds; a runtime stuck for this long is broken, and the
/// caller gets an error instead of a hung reconcile pass.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The two runtimes berth knows. Their command lines are the same for everything berth
/// uses; the kind names the runtime's `--root` directory and explains behaviour in
/// messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Runc,
    Crun,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Runc => "runc",
            RuntimeKind::Crun => "crun",
        }
    }

    /// The kind from the first word of `--version` output (`crun version 1.8.1`).
    /// Anything else is driven as runc, whose command line youki and others copy.
    pub fn from_version(text: &str) -> RuntimeKind {
        match text.split_whitespace().next() {
            Some("crun") => RuntimeKind::Crun,
            _ => RuntimeKind::Runc,
        }
    }

    /// The kind of a recorded binary path, by its file name (`/usr/bin/crun`).
    pub fn from_binary(binary: &Path) -> RuntimeKind {
        match binary.file_name().and_then(OsStr::to_str) {
            Some(name) if name.contains("crun") => RuntimeKind::Crun,
            _ => RuntimeKind::Runc,
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One OCI runtime binary and the `--root` directory where it keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub binary: PathBuf,
    pub kind: RuntimeKind,
    pub root: PathBuf,
}

/// The paths and limits `berth-shim` is launched with.
#[derive(Debug, Clone, Copy)]
pub struct ShimLaunch<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub log: &'a Path,
    pub exit_file: &'a Path,
    pub pid_file: &'a Path,
    pub shim_pid_file: &'a Path,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// The `cgroup.procs` files the shim joins first (`runtime::shim_cgroup`).
    pub cgroup_procs: &'a [PathBuf],
}

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

impl Runtime {
    /// A runtime recorded for an existing container (its kind guessed from the name).
    pub fn from_record(binary: &Path, root: &Path) -> Runtime {
        Runtime {
            binary: binary.to_path_buf(),
            kind: RuntimeKind::from_binary(binary),
            root: root.to_path_buf(),
        }
    }

    /// The global options every command starts with.
    fn global(&self) -> Vec<OsString> {
        vec![os("--root"), os(&self.root)]
    }

    /// The arguments of `berth-shim` (after the program name) for a create.
    pub fn shim_argv(&self, l: &ShimLaunch<'_>) -> Vec<OsString> {
        let mut v = vec![
            os("--id"),
            os(l.id),
            os("--bundle"),
            os(l.bundle),
            os("--runtime"),
            os(&self.binary),
            os("--runtime-root"),
            os(&self.root),
            os("--log"),
            os(l.log),
            os("--log-max-size"),
            os(l.log_max_size.to_string()),
            os("--log-max-files"),
            os(l.log_max_files.to_string()),
            os("--exit-file"),
            os(l.exit_file),
            os("--pid-file"),
            os(l.pid_file),
            os("--shim-pid-file"),
            os(l.shim_pid_file),
        ];
        for procs in l.cgroup_procs {
            v.extend([os("--cgroup-procs"), os(procs)]);
        }
        v
    }

    /// `create` run directly, for the detection probe (containers go through the shim).
    pub fn create_argv(&self, id: &str, bundle: &Path, pid_file: &Path) -> Vec<OsString> {
        let mut v = self.global();
        v.extend([os("create"), os("--bundle"), os(bundle), os("--pid-file")]);
        v.extend([os(pid_file), os(id)]);
        v
    }

    pub fn start_argv(&self, id: &str) -> Vec<OsString> {
        let mut v = self.global();
        v.extend([os("start"), os(id)]);
        v
    }

    /// `kill ID SIGNUM`: both runtimes take the number, which also names real-time
    /// signals without ambiguity.
    pub fn kill_argv(&self, id: &str, signal: i32) -> Vec<OsString> {
        let mut v = self.global();
        v.extend([os("kill"), os(id), os(signal.to_string())]);
        v
    }

    /// `delete ID`, never `-f` (see the module docs); `force` only for the probe and
    /// for the abandon path of a half-created container.
    pub fn delete_argv(&self, id: &str, force: bool) -> Vec<OsString> {
        let mut v = self.global();
        v.push(os("delete"));
        if force {
            v.push(os("--force"));
        }
        v.push(os(id));
        v
    }

    pub fn state_argv(&self, id: &str) -> Vec<OsString> {
        let mut v = self.global();
        v.extend([os("state"), os(id)]);
        v
    }

    /// `exec --process FILE ID` in the foreground, without a terminal; stdio is the
    /// caller's. The process file holds the whole OCI `process` object: berth never
    /// passes `--env` flags, since crun's replaces the environment where runc's appends
    /// to it. With `log`, the runtime writes its own errors there as JSON lines
    /// (`--log-format json`).
    pub fn exec_argv(&self, id: &str, process: &Path, log: Option<&Path>) -> Vec<OsString> {
        let mut v = self.global();
        if let Some(log) = log {
            v.extend([os("--log"), os(log), os("--log-format"), os("json")]);
        }
        v.extend([os("exec"), os("--process"), os(process), os(id)]);
        v
    }

    /// A command for `argv` (no stdio set).
    pub fn command(&self, argv: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(argv);
        cmd
    }

    /// Runs one runtime command with stdin `/dev/null`, capturing its output, within
    /// [`COMMAND_TIMEOUT`]; a non-zero exit is [`RuntimeError::Failed`] with stderr.
    pub fn run(
        &self,
        op: &'static str,
        id: &str,
        argv: &[OsString],
    ) -> Result<String, RuntimeError> {
        let out = run_captured(&mut self.command(argv), COMMAND_TIMEOUT).map_err(|source| {
            RuntimeError::Spawn {
                binary: self.binary.clone(),
                op,
                source,
            }
        })?;
        let Some(out) = out else {
            return Err(RuntimeError::Timeout {
                binary: self.binary.clone(),
                op,
                id: id.to_string(),
                timeout: COMMAND_TIMEOUT,
            });
        };
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(RuntimeError::Failed {
            binary: self.binary.clone(),
            op,
            id: id.to_string(),
            status: out.status.to_string(),
            stderr: error_text(&out.stderr),
        })
    }

    /// `state ID`, parsed; `Ok(None)` when the runtime does not know the container.
    pub fn state(&self, id: &str) -> Result<Option<RuntimeState>, RuntimeError> {
        match self.run("state", id, &self.state_argv(id)) {
            Ok(stdout) => parse_state(&stdout)
                .map(Some)
                .map_err(|e| RuntimeError::State {
                    binary: self.binary.clone(),
                    id: id.to_string(),
                    reason: e.to_string(),
                }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Why a runtime command failed. Each names the runtime binary and the container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("oci runtime `{}`: cannot run `{op}`", binary.display())]
    Spawn {
        binary: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("oci runtime `{}`: `{op}` of container `{id}` failed ({status}): {stderr}", binary.display())]
    Failed {
        binary: PathBuf,
        op: &'static str,
        id: String,
        status: String,
        stderr: String,
    },
    #[error("oci runtime `{}`: `{op}` of container `{id}` did not finish within {timeout:?}", binary.display())]
    Timeout {
        binary: PathBuf,
        op: &'static str,
        id: String,
        timeout: Duration,
    },
    #[error("oci runtime `{}`: cannot parse the state of container `{id}`: {reason}", binary.display())]
    State {
        binary: PathBuf,
        id: String,
        reason: String,
    },
}

impl RuntimeError {
    /// Whether the runtime said the container does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::Failed { stderr, .. } if is_not_found(stderr))
    }

    /// Whether trying again later may work: the command timed out, could not be
    /// started for want of a resource, or the runtime reports a full disk or a
    /// resource short for now. A refusal of the bundle stays until it changes.
    pub fn is_transient(&self) -> bool {
        match self {
            RuntimeError::Timeout { .. } => true,
            RuntimeError::Spawn { source, .. } => crate::runtime::state::io_is_transient(source),
            RuntimeError::Failed { stderr, .. } => says_transient(stderr),
            RuntimeError::State { .. } => false,
        }
    }

    /// The runtime's own error text, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            RuntimeError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Whether runtime stderr says "no such container": runc prints `container does not
/// exist`, crun ``error opening file `ROOT/ID/status`: No such file or directory``.
pub fn is_not_found(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("does not exist") || s.contains("no such file or directory")
}

/// Whether a runtime's stderr names a condition that clears up by itself (the text of
/// ENOSPC, EDQUOT, EAGAIN, ENOMEM): the runtime reports errno only as text.
pub fn says_transient(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    [
        "no space left on device",
        "disk quota exceeded",
        "resource temporarily unavailable",
        "cannot allocate memory",
    ]
    .iter()
    .any(|t| s.contains(t))
}

/// The runtime's error as one line: the `msg` of runc's logrus line
/// (`time=… level=error msg="…"`) or crun's plain text, whitespace collapsed.
pub fn error_text(stderr: &str) -> String {
    let text = stderr
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() {
                return None;
            }
            Some(match l.split_once("msg=\"") {
                Some((_, rest)) => rest
                    .strip_suffix('"')
                    .unwrap_or(rest)
                    .replace("\\\"", "\"")
                    .to_string(),
                None => l.to_string(),
            })
        })
        .collect::<Vec<_>>()
        .join("; ");
    if text.is_empty() {
        "no error output".to_string()
    } else {
        text
    }
}

/// The container states of the OCI runtime spec (runc adds `paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeStatus {
    Creating,
    Created,
    Running,
    Pausing,
    Paused,
    Stopped,
}

/// What `runtime state ID` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeState {
    pub status: RuntimeStatus,
    /// The init pid; absent (or 0) once stopped.
    pub pid: Option<i32>,
}

/// Parses `state` output (the runtime spec's state JSON; extra fields ignored).
pub fn parse_state(json: &str) -> Result<RuntimeState, serde_json::Error> {
    #[derive(Deserialize)]
    struct Raw {
        status: RuntimeStatus,
        #[serde(default)]
        pid: Option<i32>,
    }
    let raw: Raw = serde_json::from_str(json)?;
    Ok(RuntimeState {
        status: raw.status,
        pid: raw.pid.filter(|p| *p > 0),
    })
}

/// The last error a runtime wrote to its JSON `--log` (`{"level":"error","msg":…}`).
pub fn last_logged_error(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .find_map(|v| v["msg"].as_str().map(str::to_string))
}

/// The exit code of a failed `exec` as Docker reports it (`translateContainerdStartErr`):
/// 127 when the command was not found (the error names it, so a missing container or
/// working directory is not mistaken for it), 126 when it cannot be run (permission,
/// a directory, a wrong format), and 125 for any other failure of the runtime
/// (DESIGN.md §6).
pub fn exec_failure_code(runtime_error: &str, command: &str) -> i32 {
    let e = runtime_error.to_ascii_lowercase();
    let names_command = !command.is_empty() && runtime_error.contains(command);
    if e.contains("executable file not found")
        || (names_command && e.contains("no such file or directory"))
    {
        127
    } else if e.contains("permission denied")
        || e.contains("exec format error")
        || e.contains("is a directory")
    {
        126
    } else {
        125
    }
}
