//! An instance's latest health result, `instances/<id>/health.json` (mode 0600),
//! written by whoever probes (the `wait-healthy` step, the probe `berth apply` runs
//! once after a start, the end of a pass, and the agent's prober on its own schedule,
//! `reconcile::prober`) and read by the scan, `ps` and `inspect`. Writers take no
//! lock: each write is atomic, and two probes of one instance at once lose at most a
//! count of its failing streak.
//!
//! The state machine is Docker's: one success makes the container healthy and resets
//! the failing streak; a failure while the container is still `starting` and within
//! its grace (`start_period`, and at least one `interval`: Docker's first probe is at
//! `interval` after the start, so an earlier probe — the one `berth apply` runs right
//! after a start — races the application's start and cannot count) leaves it
//! `starting`; `retries` consecutive failures make it unhealthy. Each `berth apply`
//! probes again every running instance whose last probe is at least `interval` old
//! ([`due_in`]), so the status converges without a daemon.
//! A file older than the instance's start (a restart reuses the instance) is stale and
//! reads as `starting`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::Health;
use serde::{Deserialize, Serialize};

use super::health::ProbeResult;
use super::state::{self, InstanceDirs};
use crate::util::rfc3339;

/// The file's name in the instance directory.
pub const FILE: &str = "health.json";

/// The longest probe output kept, in bytes.
pub const MAX_OUTPUT: usize = 512;

/// The largest file read back: anything larger was not written by berth.
const MAX_FILE: u64 = 16 * 1024;

/// Docker's health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// The content of `health.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub status: HealthStatus,
    /// When the last probe ran (RFC 3339); none before the first.
    pub last_probe: Option<String>,
    /// Consecutive failures that counted (outside the start period).
    pub failing_streak: u32,
    /// The last probe's failure, at most [`MAX_OUTPUT`] bytes; empty after a success.
    pub output: String,
}

impl HealthRecord {
    /// A container with a health check that has not been probed yet.
    pub fn starting() -> Self {
        HealthRecord {
            status: HealthStatus::Starting,
            last_probe: None,
            failing_streak: 0,
            output: String::new(),
        }
    }
}

/// Why a health file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HealthFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a health record: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} is larger than {MAX_FILE} bytes", path.display())]
    TooLarge { path: PathBuf },
}

/// `instances/<id>/health.json` of the instance directory `instance_root`.
pub fn path(instance_root: &Path) -> PathBuf {
    instance_root.join(FILE)
}

/// The record after one probe. `prev` is the record so far (none before the first
/// probe), `since_start` the time between the container's start and the probe. Pure.
pub fn next(
    prev: Option<&HealthRecord>,
    h: &Health,
    result: &ProbeResult,
    since_start: Duration,
    now: String,
) -> HealthRecord {
    let prev = prev.cloned().unwrap_or_else(HealthRecord::starting);
    match result {
        ProbeResult::Healthy => HealthRecord {
            status: HealthStatus::Healthy,
            last_probe: Some(now),
            failing_streak: 0,
            output: String::new(),
        },
        ProbeResult::Unhealthy(why) => {
            // Docker: the start period only excuses a container not yet healthy once.
            let excused = prev.status == HealthStatus::Starting && since_start < grace(h);
            let failing_streak = if excused {
                prev.failing_streak
            } else {
                prev.failing_streak.saturating_add(1)
            };
            let status = if failing_streak >= h.retries.max(1) {
                HealthStatus::Unhealthy
            } else {
                prev.status
            };
            HealthRecord {
                status,
                last_probe: Some(now),
                failing_streak,
                output: bounded(why),
            }
        }
    }
}

/// How long after its start a container's failures do not count while it is still
/// `starting`: its `start_period`, and at least one `interval` (Docker's first probe).
pub fn grace(h: &Health) -> Duration {
    h.start_period.max(h.interval)
}

/// How long after `now` (since the epoch) an instance is due for a probe; zero when it
/// is: never probed in this run (`record` is [`read_fresh`]'s), or its last probe at
/// least `interval` old. A last probe that cannot be read is due, and so is one more
/// than an interval in the future (a clock set back). The start period does not move
/// probes (Docker's: one every interval from the start); it only excuses failures
/// ([`next`]), so the first probe of an instance is due at once, and each later one an
/// interval after the last.
pub fn due_in(record: Option<&HealthRecord>, h: &Health, now: Duration) -> Duration {
    let Some((secs, nanos)) = record
        .and_then(|r| r.last_probe.as_deref())
        .and_then(rfc3339::parse)
    else {
        return Duration::ZERO;
    };
    let Ok(secs) = u64::try_from(secs) else {
        return Duration::ZERO;
    };
    let last = Duration::new(secs, nanos);
    match now.checked_sub(last) {
        Some(age) => h.interval.saturating_sub(age),
        None if last - now > h.interval => Duration::ZERO,
        None => last - now + h.interval,
    }
}

/// The time since the epoch.
pub fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// `s` cut to at most [`MAX_OUTPUT`] bytes, at a character boundary.
fn bounded(s: &str) -> String {
    if s.len() <= MAX_OUTPUT {
        return s.to_string();
    }
    let mut end = MAX_OUTPUT - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Writes the record (atomically, 0600) in the instance directory only if it exists:
/// a probe that ends after its instance was removed does not make the directory again.
fn write_existing(instance_root: &Path, record: &HealthRecord) -> Result<(), HealthFileError> {
    let path = path(instance_root);
    let json = serde_json::to_vec_pretty(record).map_err(|source| HealthFileError::Parse {
        path: path.clone(),
        source,
    })?;
    state::write_atomic_via(instance_root, &path, &json, 0o600)
        .map_err(|source| HealthFileError::Write { path, source })
}

/// Writes the record as a probe does, making the instance directory first.
#[cfg(test)]
pub fn write(instance_root: &Path, record: &HealthRecord) -> Result<(), HealthFileError> {
    std::fs::create_dir_all(instance_root).map_err(|source| HealthFileError::Write {
        path: path(instance_root),
        source,
    })?;
    write_existing(instance_root, record)
}

/// Reads the record; `None` when there is none.
pub fn read(instance_root: &Path) -> Result<Option<HealthRecord>, HealthFileError> {
    use std::io::Read;
    let path = path(instance_root);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(HealthFileError::Read { path, source }),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| HealthFileError::Read {
            path: path.clone(),
            source,
        })?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(HealthFileError::TooLarge { path });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| HealthFileError::Parse { path, source })
}

/// The instance's record if it is from this run (probed no earlier than
/// `started_at`); an unreadable file is warned about and counts as none.
pub fn read_fresh(instance_root: &Path, started_at: Option<&str>) -> Option<HealthRecord> {
    let record = match read(instance_root) {
        Ok(r) => r?,
        Err(err) => {
            tracing::warn!("{}", crate::util::error_chain(&err));
            return None;
        }
    };
    let probed = record.last_probe.as_deref().and_then(rfc3339::parse);
    let started = started_at.and_then(rfc3339::parse);
    let fresh = match (probed, started) {
        (Some(p), Some(s)) => p >= s,
        (Some(_), None) => true,
        (None, _) => false,
    };
    fresh.then_some(record)
}

/// The health of a running instance: `None` without a health check (`has_check`
/// false); its file when the file is from this run, else `starting`.
pub fn current(
    instance_root: &Path,
    has_check: bool,
    started_at: Option<&str>,
) -> Option<HealthRecord> {
    has_check.then(|| read_fresh(instance_root, started_at).unwrap_or_else(HealthRecord::starting))
}

/// Time since `started_at` (RFC 3339); zero when unknown.
pub fn since(started_at: Option<&str>) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    started_at
        .and_then(rfc3339::parse)
        .map_or(Duration::ZERO, |(s, _)| {
            Duration::from_secs(u64::try_from(now - s).unwrap_or(0))
        })
}

/// Runs `probe` once and records its result after `prev` (the record so far): the
/// prober's one step. `since_start` is the time from the container's start to the
/// probe's; the probe's time is when it began. A record that cannot be written is
/// warned about.
pub fn probe_and_record(
    instance_root: &Path,
    h: &Health,
    prev: Option<&HealthRecord>,
    since_start: Duration,
    probe: impl FnOnce() -> ProbeResult,
) -> (ProbeResult, HealthRecord) {
    probe_and_record_if(instance_root, h, prev, since_start, probe, || true)
}

/// [`probe_and_record`], which writes the record only when `keep` says so once the
/// probe ran (its instance still runs).
fn probe_and_record_if(
    instance_root: &Path,
    h: &Health,
    prev: Option<&HealthRecord>,
    since_start: Duration,
    probe: impl FnOnce() -> ProbeResult,
    keep: impl FnOnce() -> bool,
) -> (ProbeResult, HealthRecord) {
    let at = rfc3339::format_millis(now());
    let result = probe();
    let record = next(prev, h, &result, since_start, at);
    if keep()
        && let Err(err) = write_existing(instance_root, &record)
    {
        tracing::warn!("{}", crate::util::error_chain(&err));
    }
    (result, record)
}

/// A running instance with a health check, as a round of probes takes it.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub name: &'a str,
    pub instance: &'a str,
    pub dirs: InstanceDirs,
    /// Its record's start time (RFC 3339).
    pub started_at: Option<&'a str>,
    pub check: &'a Health,
}

impl Target<'_> {
    /// Its health record if it is from this run ([`read_fresh`]).
    pub fn record(&self) -> Option<HealthRecord> {
        read_fresh(&self.dirs.root, self.started_at)
    }

    /// Whether it still runs: no exit file, and its directory is there.
    fn runs(&self) -> bool {
        !self.dirs.exit_file().exists() && self.dirs.root.is_dir()
    }
}

/// One probe of a round: its target, its health before and the record after.
#[derive(Debug)]
pub struct Probed<'t, 'a> {
    pub target: &'t Target<'a>,
    pub before: HealthStatus,
    pub after: HealthRecord,
}

/// The most a round of the agent's prober probes ahead of time ([`Round::early`]): a
/// pass starts its containers within a few seconds.
const EARLY: Duration = Duration::from_secs(5);

/// How a round of probes runs.
pub struct Round<'f> {
    /// Probes at once.
    pub parallel: usize,
    /// Also probe what is due within half its interval (at most [`EARLY`]): the
    /// agent's prober then serves, in one process, probes that fall close together —
    /// once probed together, they stay together (containers started one after the
    /// other by a pass come to one round per interval, not one each).
    pub early: bool,
    /// The time between the target's start and now.
    pub since_start: &'f (dyn Fn(&Target<'_>) -> Duration + Sync),
    /// Runs the target's probe once.
    pub probe: &'f (dyn Fn(&Target<'_>) -> ProbeResult + Sync),
    /// Whether to start another probe (false once the process is asked to stop).
    pub go_on: &'f (dyn Fn() -> bool + Sync),
}

/// One probe of each target that is due now ([`due_in`]), up to `parallel` at once, each
/// recorded after the record it read: what the end of a pass and the agent's prober
/// both run. A target that ended while its probe ran is not recorded (its probe says
/// nothing of it, and its directory may be on its way out), nor returned.
pub fn probe_due<'t, 'a>(targets: &'t [Target<'a>], round: &Round<'_>) -> Vec<Probed<'t, 'a>> {
    let at = now();
    let due: Vec<&Target<'a>> = targets
        .iter()
        .filter(|t| {
            let slack = if round.early {
                (t.check.interval / 2).min(EARLY)
            } else {
                Duration::ZERO
            };
            due_in(t.record().as_ref(), t.check, at) <= slack
        })
        .collect();
    if due.is_empty() {
        return Vec::new();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::new());
    let one = |t: &'t Target<'a>| {
        // Read again: a probe of this pass may have written it since.
        let prev = t.record();
        let before = prev.as_ref().map_or(HealthStatus::Starting, |r| r.status);
        let mut runs = true;
        let (_, after) = probe_and_record_if(
            &t.dirs.root,
            t.check,
            prev.as_ref(),
            (round.since_start)(t),
            || (round.probe)(t),
            || {
                runs = t.runs();
                runs
            },
        );
        if runs {
            let mut done = done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            done.push(Probed {
                target: t,
                before,
                after,
            });
        }
    };
    std::thread::scope(|s| {
        for _ in 0..round.parallel.clamp(1, due.len()) {
            s.spawn(|| {
                while (round.go_on)() {
                    let Some(t) = due.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    else {
                        break;
                    };
                    one(t);
                }
            });
        }
    });
    let mut done = done
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    done.sort_by(|a, b| a.target.name.cmp(b.target.name));
    done
}

#[cfg(test)]
mod tests {
    use berth_spec::HealthProbe;

    use super::*;

    fn check(retries: u32, start_period: u64) -> Health {
        Health {
            probe: HealthProbe::Exec(vec!["true".into()]),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries,
            start_period: Duration::from_secs(start_period),
        }
    }

    fn fail() -> ProbeResult {
        ProbeResult::Unhealthy("`false` exited with 1".into())
    }

    fn at(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_probe_after_start_races_the_start_and_does_not_count() {
        // No start period, interval 1 s, retries 1: a failure right after the start
        // (a server not yet listening) leaves it starting; one an interval later counts.
        let h = check(1, 0);
        let r = next(None, &h, &fail(), at(0), "t0".into());
        assert_eq!((r.status, r.failing_streak), (HealthStatus::Starting, 0));
        let r = next(Some(&r), &h, &fail(), at(1), "t1".into());
        assert_eq!((r.status, r.failing_streak), (HealthStatus::Unhealthy, 1));
        // A longer interval is a longer grace.
        let mut slow = check(1, 2);
        slow.interval = Duration::from_secs(30);
        assert_eq!(grace(&slow), at(30));
        let r = next(None, &slow, &fail(), at(29), "t".into());
        assert_eq!(r.status, HealthStatus::Starting);
    }

    fn due(record: Option<&HealthRecord>, h: &Health, now: Duration) -> bool {
        due_in(record, h, now).is_zero()
    }

    #[test]
    fn an_instance_is_due_for_a_probe_when_its_last_is_an_interval_old() {
        let mut h = check(3, 0);
        h.interval = Duration::from_secs(30);
        let t0 = Duration::from_secs(rfc3339::parse("2026-11-22T10:00:00Z").unwrap().0 as u64);
        let s = Duration::from_secs;
        let probed = |s: &str| HealthRecord {
            last_probe: Some(s.into()),
            ..HealthRecord::starting()
        };
        assert!(due(None, &h, t0));
        assert!(due(Some(&HealthRecord::starting()), &h, t0));
        assert!(due(Some(&probed("garbage")), &h, t0));
        let r = probed("2026-11-22T10:00:00Z");
        assert!(!due(Some(&r), &h, t0));
        assert!(!due(Some(&r), &h, t0 + s(29)));
        assert!(due(Some(&r), &h, t0 + s(30)));
        // Milliseconds count: 29.5 s is not an interval.
        let r = probed("2026-11-22T10:00:00.500Z");
        assert!(!due(Some(&r), &h, t0 + s(30)));
        assert!(due(Some(&r), &h, t0 + Duration::from_millis(30_500)));
        assert_eq!(
            rfc3339::format_millis(t0 + Duration::from_millis(500)),
            "2026-11-22T10:00:00.500Z"
        );
        // A clock set back a little: not due; by more than an interval: due.
        assert!(!due(Some(&r), &h, t0 - s(10)));
        assert!(due(Some(&r), &h, t0 - s(100)));
        // When the next one is due: an interval after the last.
        assert_eq!(
            due_in(Some(&r), &h, t0 + s(20)),
            Duration::from_millis(10_500)
        );
        assert_eq!(
            due_in(Some(&r), &h, t0 - s(10)),
            Duration::from_millis(40_500)
        );
        assert_eq!(due_in(Some(&r), &h, t0 + s(31)), Duration::ZERO);
        assert_eq!(due_in(None, &h, t0), Duration::ZERO);
    }

    #[test]
    fn failures_within_the_start_period_leave_it_starting() {
        let h = check(1, 10);
        let r = next(None, &h, &fail(), at(0), "t0".into());
        assert_eq!(r.status, HealthStatus::Starting);
        assert_eq!(r.failing_streak, 0);
        assert_eq!(r.output, "`false` exited with 1");
        let r = next(Some(&r), &h, &fail(), at(9), "t1".into());
        assert_eq!(r.status, HealthStatus::Starting);
        // Past the start period one failure (retries = 1) is enough.
        let r = next(Some(&r), &h, &fail(), at(10), "t2".into());
        assert_eq!(r.status, HealthStatus::Unhealthy);
        assert_eq!(r.failing_streak, 1);
        assert_eq!(r.last_probe.as_deref(), Some("t2"));
    }

    #[test]
    fn retries_consecutive_failures_make_it_unhealthy_and_one_success_recovers() {
        let h = check(3, 0);
        let mut r = next(None, &h, &ProbeResult::Healthy, at(0), "t".into());
        assert_eq!(r.status, HealthStatus::Healthy);
        for streak in 1..=2 {
            r = next(Some(&r), &h, &fail(), at(5), "t".into());
            assert_eq!(
                (r.status, r.failing_streak),
                (HealthStatus::Healthy, streak)
            );
        }
        r = next(Some(&r), &h, &fail(), at(5), "t".into());
        assert_eq!((r.status, r.failing_streak), (HealthStatus::Unhealthy, 3));
        r = next(Some(&r), &h, &ProbeResult::Healthy, at(6), "t".into());
        assert_eq!(r.status, HealthStatus::Healthy);
        assert_eq!(r.failing_streak, 0);
        assert_eq!(r.output, "");
    }

    #[test]
    fn a_healthy_container_failing_in_its_start_period_counts() {
        let h = check(1, 60);
        let r = next(None, &h, &ProbeResult::Healthy, at(0), "t".into());
        let r = next(Some(&r), &h, &fail(), at(1), "t".into());
        assert_eq!(r.status, HealthStatus::Unhealthy);
    }

    #[test]
    fn output_is_bounded() {
        let long = "é".repeat(1000);
        let r = next(
            None,
            &check(1, 0),
            &ProbeResult::Unhealthy(long),
            at(0),
            "t".into(),
        );
        assert!(r.output.len() <= MAX_OUTPUT, "{}", r.output.len());
        assert!(r.output.ends_with('…'));
    }

    #[test]
    fn file_round_trip_mode_and_freshness() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (spec, no_check) = (true, false);
        assert_eq!(read(dir.path()).unwrap(), None);
        assert_eq!(current(dir.path(), no_check, None), None);
        assert_eq!(
            current(dir.path(), spec, Some("2026-11-22T10:00:00Z")),
            Some(HealthRecord::starting())
        );
        let r = HealthRecord {
            status: HealthStatus::Unhealthy,
            last_probe: Some("2026-11-22T10:00:05Z".into()),
            failing_streak: 1,
            output: "no".into(),
        };
        write(dir.path(), &r).unwrap();
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read(dir.path()).unwrap(), Some(r.clone()));
        assert_eq!(
            current(dir.path(), spec, Some("2026-11-22T10:00:05Z")),
            Some(r.clone())
        );
        // Restarted since: the file is from the previous run.
        assert_eq!(
            current(dir.path(), spec, Some("2026-11-22T10:01:00Z")),
            Some(HealthRecord::starting())
        );
        std::fs::write(path(dir.path()), "{").unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(HealthFileError::Parse { .. })
        ));
        assert_eq!(
            current(dir.path(), spec, None),
            Some(HealthRecord::starting())
        );
        std::fs::remove_file(path(dir.path())).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_round_probes_what_is_due_records_it_and_skips_an_instance_that_ended() {
        let state = tempfile::tempdir().unwrap();
        let h = check(1, 0);
        let dirs = |id: &str| {
            let d = InstanceDirs::new(state.path(), id);
            std::fs::create_dir_all(&d.root).unwrap();
            d
        };
        let target = |name: &'static str, id: &'static str| Target {
            name,
            instance: id,
            dirs: dirs(id),
            started_at: None,
            check: &h,
        };
        let targets = [
            target("a", "a-1"),
            target("b", "b-1"),
            target("gone", "gone-1"),
            target("later", "later-1"),
        ];
        // `later` was probed a moment ago: not due.
        let fresh = HealthRecord {
            last_probe: Some(rfc3339::format_millis(now())),
            ..HealthRecord::starting()
        };
        write(&targets[3].dirs.root, &fresh).unwrap();
        let probed = std::sync::Mutex::new(Vec::new());
        let probe = |t: &Target<'_>| {
            probed.lock().unwrap().push(t.name.to_string());
            if t.name == "gone" {
                // The instance ends while its probe runs.
                std::fs::write(t.dirs.exit_file(), "{}").unwrap();
            }
            if t.name == "a" {
                ProbeResult::Healthy
            } else {
                fail()
            }
        };
        let round = Round {
            parallel: 2,
            early: false,
            since_start: &|_| Duration::from_secs(60),
            probe: &probe,
            go_on: &|| true,
        };
        let got = probe_due(&targets, &round);
        let mut ran = probed.lock().unwrap().clone();
        ran.sort();
        assert_eq!(ran, ["a", "b", "gone"]);
        let summary: Vec<(&str, HealthStatus, HealthStatus)> = got
            .iter()
            .map(|p| (p.target.name, p.before, p.after.status))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", HealthStatus::Starting, HealthStatus::Healthy),
                ("b", HealthStatus::Starting, HealthStatus::Unhealthy)
            ]
        );
        assert_eq!(
            read(&targets[1].dirs.root).unwrap().unwrap().status,
            HealthStatus::Unhealthy
        );
        // Nothing written for the one that ended, nor a directory made for one removed.
        assert_eq!(read(&targets[2].dirs.root).unwrap(), None);
        std::fs::remove_dir_all(&targets[0].dirs.root).unwrap();
        assert!(write_existing(&targets[0].dirs.root, &fresh).is_err());
        assert!(!targets[0].dirs.root.exists());
        // Asked to stop: no probe starts.
        let none = Round {
            go_on: &|| false,
            ..round
        };
        assert!(probe_due(&targets[1..2], &none).is_empty());
    }
}
