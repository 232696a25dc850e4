//! The containers of this node as people see them: one [`Row`] each, what `berth ps`
//! prints (`--format json` is these rows), `berth status` shows, and the API's
//! `GET /v1/containers` answers — read from the state directory, so they work while
//! the agent is down.
//!
//! A row is the record, the observed status (`runtime::status`) and, while a crash
//! loop holds the next restart back, that backoff: replayed from the restart history
//! (`runtime::history`) with the planner's own backoff (`RestartBackoff::delay`, the node's settings), so `ps` and `status`
//! say what the next pass will wait for. That is why the rows live here and not in
//! `runtime/`: the backoff is the reconciler's rule.

use std::path::Path;

use berth_spec::types::{Restart, format_duration};
use serde::{Deserialize, Serialize};

use super::backoff::RestartBackoff;
use super::model::{Exit, Timestamp};
use crate::runtime::history;
use crate::runtime::record::ContainerRecord;
use crate::runtime::status::{self, State, Status, StatusError};
use crate::util::{error_chain, rfc3339};

/// One container as `ps` lists it; its JSON form is the `--format json` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Always `container`.
    pub kind: String,
    pub name: String,
    pub instance: String,
    /// `running`, `exited`, `created`, `stopped`, `unknown`.
    pub state: String,
    /// The state as shown: `running (healthy)`, `exited (1)`, `exited (1), backoff
    /// 40s`, `stopped by operator`, …
    pub status: String,
    /// `starting`, `healthy`, `unhealthy` while it runs with a health check.
    pub health: Option<String>,
    pub exit_code: Option<i32>,
    pub pid: Option<i32>,
    pub image: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// `Up 5 minutes`, `Exited (1) 2 minutes ago`, `-`.
    pub uptime: String,
    pub restarts: u32,
    /// The crash-loop backoff holding the next restart back, while it does.
    #[serde(default)]
    pub backoff: Option<RowBackoff>,
    pub ports: Vec<String>,
    pub operator_stopped: bool,
}

/// A restart held back by crash-loop backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowBackoff {
    /// The delay after the last exit, as the plan's reasons write it (`40s`).
    pub delay: String,
    pub delay_seconds: u64,
    /// When the restart is due, RFC 3339.
    pub until: String,
}

impl Row {
    /// The row of `r` in status `s`, as of `now` (Unix seconds). Pure.
    pub fn new(r: &ContainerRecord, s: &Status, now: i64) -> Self {
        Row {
            kind: "container".to_string(),
            name: r.name.clone(),
            instance: r.instance.clone(),
            state: s.state.as_str().to_string(),
            status: s.describe(),
            health: s.health.as_ref().map(|h| h.status.as_str().to_string()),
            exit_code: s.exit.as_ref().map(|e| e.exit_code),
            pid: s.pid,
            image: r.image.reference.clone(),
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone(),
            finished_at: s.exit.as_ref().map(|e| e.finished_at.clone()),
            uptime: status::uptime(r, s, now),
            restarts: r.restarts,
            backoff: None,
            ports: r.ports.clone(),
            operator_stopped: r.operator_stopped,
        }
    }

    /// The row with a backoff, which its status then names.
    pub fn with_backoff(mut self, b: Option<RowBackoff>) -> Self {
        if let Some(b) = &b {
            self.status = format!("{}, backoff {}", self.status, b.delay);
        }
        self.backoff = b;
        self
    }
}

/// Now, in Unix seconds, as rows take it.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Every container's row, by name.
pub fn list(state_dir: &Path, now: i64, backoff: RestartBackoff) -> Result<Vec<Row>, StatusError> {
    let records = status::load_records(state_dir)?;
    Ok(records
        .values()
        .map(|r| row(state_dir, r, now, backoff))
        .collect())
}

/// One container's row; [`StatusError::Unknown`] when berth has no such container.
pub fn one(
    state_dir: &Path,
    name: &str,
    now: i64,
    backoff: RestartBackoff,
) -> Result<Row, StatusError> {
    let r = status::load_record(state_dir, name)?;
    Ok(row(state_dir, &r, now, backoff))
}

/// The row of `r` on this host.
pub fn row(state_dir: &Path, r: &ContainerRecord, now: i64, backoff: RestartBackoff) -> Row {
    let s = status_or_warn(state_dir, r);
    let b = current_backoff(r, &s, &exits_of(state_dir, r), now, backoff);
    Row::new(r, &s, now).with_backoff(b)
}

/// A container's status; an unreadable one is warned about and shown as unknown, so
/// one broken instance does not hide the others.
pub fn status_or_warn(state_dir: &Path, record: &ContainerRecord) -> Status {
    status::container_status(state_dir, record).unwrap_or_else(|e| {
        tracing::warn!("{}", error_chain(&e));
        Status::unknown()
    })
}

/// The recorded exits of `r`'s current instance (an older spec's exits do not count
/// against a new one, as the planner counts them). An unreadable history counts as
/// none: it only shortens a backoff.
fn exits_of(state_dir: &Path, r: &ContainerRecord) -> Vec<Exit> {
    match history::load(state_dir, &r.name) {
        Ok(exits) => exits
            .into_iter()
            .filter(|e| e.instance.as_deref().is_none_or(|i| i == r.instance))
            .map(|e| Exit {
                started_at: e.started_at.map(Timestamp),
                finished_at: Timestamp(e.finished_at),
                code: e.code,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(container = %r.name, "{}", error_chain(&e));
            Vec::new()
        }
    }
}

/// The backoff that holds `r`'s restart back at `now`, if any: the container exited,
/// its restart policy restarts it, and the delay after its exits (`history`, plus the
/// current exit) has not passed. Never further than the longest delay from now, as the
/// planner caps it. Pure.
pub fn current_backoff(
    r: &ContainerRecord,
    s: &Status,
    history: &[Exit],
    now: i64,
    backoff: RestartBackoff,
) -> Option<RowBackoff> {
    if s.state != State::Exited {
        return None;
    }
    let exit = s.exit.as_ref()?;
    let restarts = match r.spec.restart {
        Restart::No => false,
        Restart::OnFailure => exit.exit_code != 0,
        Restart::Always => true,
    };
    if !restarts {
        return None;
    }
    let finished = Timestamp(rfc3339::parse_secs(&exit.finished_at)?);
    let mut exits = history.to_vec();
    if !exits.iter().any(|e| e.finished_at == finished) {
        exits.push(Exit {
            started_at: r
                .started_at
                .as_deref()
                .and_then(rfc3339::parse_secs)
                .map(Timestamp),
            finished_at: finished,
            code: exit.exit_code,
        });
    }
    let delay = backoff.delay(&exits)?;
    let now = Timestamp(u64::try_from(now).ok()?);
    let until = delay.until.min(now.after(backoff.max));
    (until > now).then(|| RowBackoff {
        delay: format_duration(delay.delay),
        delay_seconds: delay.delay.as_secs(),
        until: rfc3339::format(until.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::record::sample;
    use crate::runtime::state::ExitStatus;

    fn exited(code: i32, at: &str) -> Status {
        Status {
            state: State::Exited,
            pid: None,
            exit: Some(ExitStatus {
                exit_code: code,
                signal: None,
                finished_at: at.into(),
            }),
            health: None,
        }
    }

    fn at(s: &str) -> i64 {
        rfc3339::parse(s).map_or(0, |t| t.0)
    }

    fn exit(started: &str, finished: &str, code: i32) -> Exit {
        Exit {
            started_at: Some(Timestamp(at(started) as u64)),
            finished_at: Timestamp(at(finished) as u64),
            code,
        }
    }

    #[test]
    fn a_crash_loop_shows_its_backoff_until_it_ends() {
        let mut r = sample("web");
        r.spec.restart = Restart::Always;
        r.started_at = Some("2026-11-22T10:00:09Z".into());
        // Two exits recorded, the third is the current one: 10 s, 20 s, then 40 s.
        let history = [
            exit("2026-11-22T10:00:00Z", "2026-11-22T10:00:01Z", 1),
            exit("2026-11-22T10:00:11Z", "2026-11-22T10:00:12Z", 1),
        ];
        let s = exited(1, "2026-11-22T10:00:40Z");
        let now = at("2026-11-22T10:00:50Z");
        let b =
            current_backoff(&r, &s, &history, now, RestartBackoff::default()).expect("a backoff");
        assert_eq!(b.delay, "40s");
        assert_eq!(b.delay_seconds, 40);
        assert_eq!(b.until, "2026-11-22T10:01:20Z");
        let row = Row::new(&r, &s, now).with_backoff(Some(b));
        assert_eq!(row.status, "exited (1), backoff 40s");
        // Once the delay has passed, the restart is due: no backoff.
        assert_eq!(
            current_backoff(
                &r,
                &s,
                &history,
                at("2026-11-22T10:01:20Z"),
                RestartBackoff::default()
            ),
            None
        );
    }

    #[test]
    fn no_backoff_without_a_restart_to_hold() {
        let mut r = sample("job");
        let now = at("2026-11-22T10:00:02Z");
        let done = exited(0, "2026-11-22T10:00:01Z");
        r.spec.restart = Restart::OnFailure;
        assert_eq!(
            current_backoff(&r, &done, &[], now, RestartBackoff::default()),
            None
        );
        r.spec.restart = Restart::No;
        assert_eq!(
            current_backoff(
                &r,
                &exited(1, "2026-11-22T10:00:01Z"),
                &[],
                now,
                RestartBackoff::default()
            ),
            None
        );
        r.spec.restart = Restart::Always;
        let first =
            current_backoff(&r, &done, &[], now, RestartBackoff::default()).expect("first exit");
        assert_eq!(
            (first.delay_seconds, first.until.as_str()),
            (10, "2026-11-22T10:00:11Z")
        );
        let mut stopped = done.clone();
        stopped.state = State::Stopped;
        assert_eq!(
            current_backoff(&r, &stopped, &[], now, RestartBackoff::default()),
            None
        );
    }
}
