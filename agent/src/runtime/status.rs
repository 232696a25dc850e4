//! A container's state as the operator commands (`ps`, `inspect`, `logs -f`, `stats`)
//! see it, derived from what is on disk, so they work while the agent is down.
//!
//! Inputs: the record (`containers/<name>/state.json`), the shim's `exit.json`, the
//! runtime's `pid` file, and whether that pid is still the container's init. The
//! derivation itself, [`derive`], is pure; [`container_status`] gathers the inputs and
//! is the one function to swap for the OCI driver's `status` once it lands.
//!
//! Liveness never uses `kill(pid, 0)`: PID 1 on some hosts reaps lazily, so a dead init
//! can linger as a zombie, and a recycled pid would answer too (DESIGN.md §8). A pid is
//! the container's init when `/proc/<pid>/stat` shows it is not a zombie, and either
//! `/proc/<pid>/cgroup` places it in the record's cgroup, or it started no later than
//! the record's start time (a recycled pid starts after the container died; runc keeps
//! the same check in its `state.json`). The cgroup check survives wall-clock steps that
//! skew the start-time computation; the start-time check covers records without a
//! usable cgroup path.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::health_file::{self, HealthRecord};
use super::record::{self, ContainerRecord, RecordError};
use super::state::{ExitStatus, InstanceDirs};
use crate::util::rfc3339;

/// Clock ticks per second in `/proc/<pid>/stat`: the kernel reports these times in
/// `USER_HZ`, which is 100 on every architecture berth targets.
const USER_HZ: u64 = 100;

/// Seconds of tolerance when comparing a process start time with the record: the
/// record keeps whole seconds and `btime` in `/proc/stat` is whole seconds too.
const START_SLACK_SECS: i64 = 2;

/// Why a container's state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no container {name} in state directory {}", state_dir.display())]
    Unknown { name: String, state_dir: PathBuf },
    /// A record that cannot be read, or is of a newer berth (the source names it).
    #[error("cannot read state directory {}", state_dir.display())]
    StateDir {
        state_dir: PathBuf,
        #[source]
        source: RecordError,
    },
    #[error("container {name}: cannot read exit status {}: {source}", path.display())]
    Exit {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The coarse state shown in `ps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created by the runtime, not started yet.
    Created,
    Running,
    /// The init exited; the exit status is known if the shim recorded it.
    Exited,
    /// Not running, and `berth stop` marked it: apply leaves it stopped.
    Stopped,
    /// The state could not be read (see the warning).
    Unknown,
}

impl State {
    /// The machine-readable name (`--format json`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
            State::Stopped => "stopped",
            State::Unknown => "unknown",
        }
    }
}

/// A container's derived state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// The init's pid while it lives.
    pub pid: Option<i32>,
    /// The recorded exit, once the init has exited.
    pub exit: Option<ExitStatus>,
    /// The health check's latest result while it runs (`runtime::health_file`); none
    /// without a health check.
    pub health: Option<HealthRecord>,
}

impl Status {
    pub fn unknown() -> Self {
        Status {
            state: State::Unknown,
            pid: None,
            exit: None,
            health: None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.state == State::Running
    }

    /// `running`, `running (healthy)`, `exited (137)`, `exited (unknown)`, `created`,
    /// `stopped by operator`.
    pub fn describe(&self) -> String {
        match (self.state, &self.exit) {
            (State::Running, _) => match &self.health {
                Some(h) => format!("running ({})", h.status.as_str()),
                None => "running".to_string(),
            },
            (State::Exited, Some(e)) => format!("exited ({})", e.exit_code),
            (State::Exited, None) => "exited (unknown)".to_string(),
            (State::Stopped, _) => "stopped by operator".to_string(),
            (s, _) => s.as_str().to_string(),
        }
    }
}

/// What was observed on the host for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    pub exit: Option<ExitStatus>,
    /// The pid the runtime recorded, if any.
    pub pid: Option<i32>,
    /// Whether that pid is still the container's init.
    pub alive: bool,
}

/// The state from the record and the observation. Pure.
///
/// An exit status wins (the shim writes it once the init is reaped); a live init is
/// running, or created until the record has a start time; no pid file yet means the
/// runtime has not got that far; a recorded pid that is gone without an exit status is
/// `exited (unknown)` (the shim died, or the host rebooted).
pub fn derive(record: &ContainerRecord, obs: &Observation) -> Status {
    let (state, pid) = match (&obs.exit, obs.pid, obs.alive) {
        (Some(_), _, _) => (State::Exited, None),
        (None, Some(pid), true) if record.started_at.is_some() => (State::Running, Some(pid)),
        (None, Some(pid), true) => (State::Created, Some(pid)),
        (None, None, _) => (State::Created, None),
        (None, Some(_), false) => (State::Exited, None),
    };
    let state = if record.operator_stopped && state != State::Running {
        State::Stopped
    } else {
        state
    };
    Status {
        state,
        pid,
        exit: obs.exit.clone(),
        health: None,
    }
}

/// The state of `record`'s current instance on this host.
///
/// This is the function to replace with the OCI driver's `status` (runtime/instance)
/// once that exists; callers only depend on its signature.
pub fn container_status(state_dir: &Path, record: &ContainerRecord) -> Result<Status, StatusError> {
    let obs = observe(state_dir, record, &ProcFs::host())?;
    let mut status = derive(record, &obs);
    if status.is_running() {
        let root = InstanceDirs::new(state_dir, &record.instance).root;
        status.health = health_file::current(
            &root,
            record.spec.health.is_some(),
            record.started_at.as_deref(),
        );
    }
    Ok(status)
}

/// Reads the instance's exit status and pid, and checks the pid under `proc`.
pub fn observe(
    state_dir: &Path,
    record: &ContainerRecord,
    proc: &ProcFs,
) -> Result<Observation, StatusError> {
    let dirs = InstanceDirs::new(state_dir, &record.instance);
    let exit = dirs.exit_status().map_err(|source| StatusError::Exit {
        name: record.name.clone(),
        path: dirs.exit_file(),
        source,
    })?;
    let pid = dirs.pid();
    let alive = match (&exit, pid) {
        (None, Some(pid)) => proc.is_container_init(pid, record),
        _ => false,
    };
    Ok(Observation { exit, pid, alive })
}

/// A container's record by name; [`StatusError::Unknown`] when berth has none.
pub fn load_record(state_dir: &Path, name: &str) -> Result<ContainerRecord, StatusError> {
    // Not a container's name (`../x`, `a/b`): no record has it, and no path is built.
    if !berth_spec::valid_name(name) {
        return Err(StatusError::Unknown {
            name: name.to_string(),
            state_dir: state_dir.to_path_buf(),
        });
    }
    match record::read_record(state_dir, name) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(StatusError::Unknown {
            name: name.to_string(),
            state_dir: state_dir.to_path_buf(),
        }),
        Err(source) => Err(StatusError::StateDir {
            state_dir: state_dir.to_path_buf(),
            source,
        }),
    }
}

/// Every record, by name.
pub fn load_records(
    state_dir: &Path,
) -> Result<std::collections::BTreeMap<String, ContainerRecord>, StatusError> {
    record::read_records(state_dir).map_err(|source| StatusError::StateDir {
        state_dir: state_dir.to_path_buf(),
        source,
    })
}

/// The proc filesystem, at `/proc` or (in tests) a directory laid out like it.
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl ProcFs {
    pub fn host() -> Self {
        ProcFs::at("/proc")
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        ProcFs { root: root.into() }
    }

    /// Whether `pid` is alive (not a zombie) and is `record`'s container init.
    pub fn is_container_init(&self, pid: i32, record: &ContainerRecord) -> bool {
        let pid_dir = self.root.join(pid.to_string());
        let Some(stat) = fs::read_to_string(pid_dir.join("stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        else {
            return false;
        };
        if matches!(stat.state, 'Z' | 'X' | 'x') {
            return false;
        }
        if fs::read_to_string(pid_dir.join("cgroup"))
            .is_ok_and(|t| in_cgroup(&t, &record.cgroup_path))
        {
            return true;
        }
        let started = self.boot_time().map(|b| b + stat.start_ticks / USER_HZ);
        started.is_some_and(|s| started_in_time(s, record))
    }

    /// `btime` from `/proc/stat`: the boot time in Unix seconds.
    fn boot_time(&self) -> Option<u64> {
        let text = fs::read_to_string(self.root.join("stat")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// The fields of `/proc/<pid>/stat` that identify a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), …
    pub state: char,
    /// Start time in clock ticks after boot (field 22).
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 come before starttime (field 22): skip 18.
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// Whether `/proc/<pid>/cgroup` (`id:controllers:path` lines) places the process in
/// `cgroup_path`. A path may appear below the reader's cgroup-namespace root, so a
/// suffix at a `/` boundary matches too; an empty or root path matches nothing.
pub fn in_cgroup(proc_cgroup: &str, cgroup_path: &str) -> bool {
    let want = cgroup_path.trim_end_matches('/');
    if want.trim_start_matches('/').is_empty() {
        return false;
    }
    let want = if want.starts_with('/') {
        want.to_string()
    } else {
        format!("/{want}")
    };
    proc_cgroup.lines().any(|line| {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            return false;
        };
        let path = path.trim_end_matches('/');
        path == want || path.ends_with(&want)
    })
}

/// Whether a process that started at `start` (Unix seconds) can be the init the record
/// describes: the init is created before the record's start time (or its creation time
/// when never started), while a recycled pid starts after the container died.
pub fn started_in_time(start: u64, record: &ContainerRecord) -> bool {
    let bound = record
        .started_at
        .as_deref()
        .or(Some(record.created_at.as_str()))
        .and_then(rfc3339::parse)
        .map(|(s, _)| s);
    bound.is_some_and(|b| (start as i64) <= b + START_SLACK_SECS)
}

/// Docker's human durations (`go-units.HumanDuration`): "Less than a second",
/// "About a minute", "5 minutes", "3 days", …
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let minutes = s / 60;
    // Hours are rounded, as Go's `d.Round(time.Hour)`.
    let hours = (s + 1800) / 3600;
    match s {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        2..=59 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", s / 3600 / 24 / 365),
    }
}

/// `Up 5 minutes`, `Exited (1) 2 minutes ago`, or `-`, as of `now` (Unix seconds).
pub fn uptime(record: &ContainerRecord, status: &Status, now: i64) -> String {
    let since = |t: Option<&str>| t.and_then(rfc3339::parse).map(|(s, _)| now - s);
    match status.state {
        State::Running => match since(record.started_at.as_deref()) {
            Some(d) => format!("Up {}", human_duration(d)),
            None => "Up".to_string(),
        },
        State::Exited | State::Stopped => match &status.exit {
            Some(e) => match since(Some(&e.finished_at)) {
                Some(d) => format!("Exited ({}) {} ago", e.exit_code, human_duration(d)),
                None => format!("Exited ({})", e.exit_code),
            },
            None => "-".to_string(),
        },
        State::Created | State::Unknown => "-".to_string(),
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
pub(crate) mod tests;
