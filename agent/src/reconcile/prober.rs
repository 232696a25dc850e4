//! The agent's health prober: probes run on their own schedule, between passes, so
//! that a container that turns unhealthy is noticed within its `interval × retries`,
//! not at the next pass.
//!
//! A thread of `berth-agentd` runs each round of probes as a short-lived child, as it
//! runs passes (`berth agent --pass-worker=PID --pass-probe`, `reconcile::worker`): the
//! child probes every running container whose check is due (`reconcile::host`'s
//! `probe_round`, the same probes a pass runs at its end), writes their health files
//! and prints one JSON line, a [`ProbeRound`]: what changed, the health of each, and
//! when the next probe is due. The agent itself links none of the runtime: it only
//! starts the child and reads its line.
//!
//! A round runs when the agent starts, after a pass that changed something
//! ([`Prober::passed`]; [`Prober::wake`] asks for one at any time), when the next probe
//! is due (with those due within half their interval: one round serves probes that
//! fall close together), and at least every `runtime.resync`; never while the agent is
//! suspended. A change of health is an event (`Unhealthy`, a warning, with
//! the probe's output; `Healthy`) and wakes the controller
//! ([`Trigger::HealthChanged`]), whose pass acts on it. The prober keeps the health it
//! saw of each container, so that a change a pass's own probes made is reported too;
//! a container it sees for the first time is reported when the round changed it, or
//! when it is unhealthy; one found `starting` (restarted, replaced) is no news.
//!
//! A round takes no lock: it never waits behind a pass.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::agent_state;
use super::controller::{Handle, Trigger};
use super::events::{Event, EventKind};
use super::worker::PassFailure;
use crate::runtime::health_file::HealthStatus;

/// A container whose health a round changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthChange {
    pub name: String,
    pub instance: String,
    pub from: HealthStatus,
    pub to: HealthStatus,
    /// The last probe's failure (bounded, `health_file::MAX_OUTPUT`); empty after a
    /// success.
    pub why: String,
}

/// The health of a running container with a check, after a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthNow {
    pub name: String,
    pub instance: String,
    pub status: HealthStatus,
    /// The last probe's failure (bounded); empty after a success.
    pub output: String,
}

/// The one line a round of probes writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRound {
    /// What this round's probes changed, by name.
    pub changed: Vec<HealthChange>,
    /// Every running container with a health check, by name.
    pub health: Vec<HealthNow>,
    /// When the next probe is due, in milliseconds from the end of the round; none
    /// when no running container has a health check.
    pub next_ms: Option<u64>,
}

/// What the round's process writes on stdout.
pub type ProbeOutcome = Result<ProbeRound, PassFailure>;

/// The shortest time between two rounds: a probe that is always due (a health file
/// that cannot be written) does not make the agent start a process without pause.
const MIN_GAP: Duration = Duration::from_millis(500);
/// How often the waiting thread looks at the agent's stop flag.
const STOP_POLL: Duration = Duration::from_secs(1);

/// The health the prober saw of each container, and the changes a round shows.
#[derive(Debug, Default)]
struct Seen {
    /// By name, whichever instance and run: the health last seen while it ran. Kept
    /// while it does not run, so that a container restarted unhealthy and healthy
    /// again is news.
    health: BTreeMap<String, HealthStatus>,
}

impl Seen {
    /// The changes `round` shows against what was seen before, and takes note of it.
    /// A container found `starting` (a new instance, a restart) is no news. Pure.
    fn changes(&mut self, round: &ProbeRound) -> Vec<HealthChange> {
        let mut out = Vec::new();
        for now in &round.health {
            let by_round = round
                .changed
                .iter()
                .find(|c| c.name == now.name && c.instance == now.instance);
            let from = match self.health.get(&now.name) {
                Some(status) => Some(*status),
                // Seen for the first time: what the round changed, or an unhealthy
                // container found so (a pass's probes made it).
                None => by_round.map(|c| c.from).or_else(|| {
                    (now.status == HealthStatus::Unhealthy).then_some(HealthStatus::Starting)
                }),
            };
            if let Some(from) = from.filter(|f| *f != now.status)
                && now.status != HealthStatus::Starting
            {
                out.push(HealthChange {
                    name: now.name.clone(),
                    instance: now.instance.clone(),
                    from,
                    to: now.status,
                    why: now.output.clone(),
                });
            }
            self.health.insert(now.name.clone(), now.status);
        }
        out
    }
}

/// The event of a change to healthy or unhealthy.
fn event(c: &HealthChange) -> Event {
    let e = if c.to == HealthStatus::Unhealthy {
        Event::new(
            EventKind::Warning,
            "Unhealthy",
            format!("{} is unhealthy: {}", c.name, c.why),
        )
    } else {
        Event::new(
            EventKind::Normal,
            "Healthy",
            format!("{} is healthy (was {})", c.name, c.from.as_str()),
        )
    };
    e.container(c.name.clone())
}

/// How long to wait after a round that said `next_ms`: until the next probe is due,
/// at most `resync`, at least [`MIN_GAP`].
fn next_wait(next_ms: Option<u64>, resync: Duration) -> Duration {
    next_ms
        .map_or(resync, |ms| Duration::from_millis(ms).min(resync))
        .max(MIN_GAP)
}

/// The prober as the controller sees it: a way to ask for a round now.
#[derive(Debug, Clone, Default)]
pub struct Prober {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Prober {
    /// Asks for a round of probes now (after a pass: its starts and its probes changed
    /// what is due). Cheap; a round in flight is followed by another.
    pub fn wake(&self) {
        *self.woken() = true;
        self.shared.cv.notify_one();
    }

    /// After a pass: a round now when the pass changed something (it started, stopped
    /// or replaced containers: what is due, and whose health, changed). A pass that
    /// changed nothing starts no process: a change of health its own probes made is
    /// seen by the next round, due within an interval anyway.
    pub fn passed(&self, changed: bool) {
        if changed {
            self.wake();
        }
    }

    fn woken(&self) -> std::sync::MutexGuard<'_, bool> {
        self.shared
            .woken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until woken, `until`, or the stop flag; true when woken.
    fn wait(&self, until: Instant, stop: &AtomicBool) -> bool {
        let mut woken = self.woken();
        loop {
            if *woken {
                *woken = false;
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                return false;
            }
            woken = self
                .shared
                .cv
                .wait_timeout(woken, left.min(STOP_POLL))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Runs one round; `stop` is polled while it runs (the daemon: the round's process,
/// `reconcile::worker::probe_in_child`).
pub type RoundRunner = dyn Fn(&dyn Fn() -> bool) -> ProbeOutcome + Send + Sync;

/// Starts the prober's thread: rounds by `runner` until `stop` is set, each change an
/// event and a [`Trigger::HealthChanged`] to the controller of `handle`.
pub fn start(
    handle: Handle,
    resync: Duration,
    stop: Arc<AtomicBool>,
    runner: Box<RoundRunner>,
) -> std::io::Result<Prober> {
    let prober = Prober::default();
    let me = prober.clone();
    let state_dir: PathBuf = handle.state_dir().to_path_buf();
    std::thread::Builder::new()
        .name("prober".into())
        .spawn(move || {
            let mut seen = Seen::default();
            let mut failed: Option<String> = None;
            let mut at = Instant::now();
            loop {
                me.wait(at, &stop);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let resync = resync.max(MIN_GAP);
                if agent_state::suspended(&state_dir) {
                    at = Instant::now() + resync;
                    continue;
                }
                let next_ms = match runner(&|| stop.load(Ordering::Relaxed)) {
                    Ok(round) => {
                        failed = None;
                        for c in seen.changes(&round) {
                            handle.emit(event(&c));
                            let why = if c.why.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", c.why)
                            };
                            handle.send(Trigger::HealthChanged(format!(
                                "health: {} is {}{why}",
                                c.name,
                                c.to.as_str()
                            )));
                        }
                        round.next_ms
                    }
                    Err(e) => {
                        let message = e.to_string();
                        // Said once until it changes; tried again at the resync.
                        if failed.as_deref() != Some(&message) {
                            tracing::warn!(target: "agent", "health probes: {message}");
                            failed = Some(message);
                        }
                        None
                    }
                };
                // From the end of the round, as `next_ms` is.
                at = Instant::now() + next_wait(next_ms, resync);
            }
        })?;
    Ok(prober)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(name: &str, instance: &str, status: HealthStatus, output: &str) -> HealthNow {
        HealthNow {
            name: name.into(),
            instance: instance.into(),
            status,
            output: output.into(),
        }
    }

    #[test]
    fn changes_are_against_what_was_seen_and_a_new_container_only_when_changed_or_unhealthy() {
        use HealthStatus::*;
        let mut seen = Seen::default();
        let names = |changes: Vec<HealthChange>| -> Vec<(String, HealthStatus, HealthStatus)> {
            changes
                .into_iter()
                .map(|c| (c.name, c.from, c.to))
                .collect()
        };
        // First sight: healthy ones found so are not news; an unhealthy one is; one the
        // round changed is, from what it was.
        let round = ProbeRound {
            changed: vec![HealthChange {
                name: "api".into(),
                instance: "api-1".into(),
                from: Starting,
                to: Healthy,
                why: String::new(),
            }],
            health: vec![
                now("api", "api-1", Healthy, ""),
                now("db", "db-1", Unhealthy, "`false` exited with 1"),
                now("web", "web-1", Healthy, ""),
            ],
            next_ms: Some(1000),
        };
        assert_eq!(
            names(seen.changes(&round)),
            [
                ("api".to_string(), Starting, Healthy),
                ("db".to_string(), Starting, Unhealthy)
            ]
        );
        // Then against what was seen, whoever probed: web failed (a pass's probe), db
        // recovered; a new instance of api that is starting is no news.
        let round = ProbeRound {
            changed: vec![],
            health: vec![
                now("api", "api-2", Starting, ""),
                now("db", "db-1", Healthy, ""),
                now("web", "web-1", Unhealthy, "refused"),
            ],
            next_ms: None,
        };
        let got = seen.changes(&round);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].name.as_str(), got[0].to), ("db", Healthy));
        assert_eq!(
            (got[1].name.as_str(), got[1].from, got[1].why.as_str()),
            ("web", Healthy, "refused")
        );
        // Nothing new: nothing reported.
        assert!(seen.changes(&round).is_empty());
        // web exits (not in the round), is restarted, and a pass's probe finds it
        // healthy: it recovered. api-2 became healthy.
        let gone = ProbeRound {
            health: vec![now("api", "api-2", Starting, "")],
            ..ProbeRound::default()
        };
        assert!(seen.changes(&gone).is_empty());
        let back = ProbeRound {
            health: vec![
                now("api", "api-2", Healthy, ""),
                now("web", "web-1", Healthy, ""),
            ],
            ..ProbeRound::default()
        };
        assert_eq!(
            names(seen.changes(&back)),
            [
                ("api".to_string(), Starting, Healthy),
                ("web".to_string(), Unhealthy, Healthy)
            ]
        );
    }

    #[test]
    fn the_next_round_is_when_a_probe_is_due_within_the_resync_and_never_at_once() {
        let resync = Duration::from_secs(60);
        assert_eq!(next_wait(Some(2500), resync), Duration::from_millis(2500));
        assert_eq!(next_wait(Some(0), resync), MIN_GAP);
        assert_eq!(next_wait(Some(3_600_000), resync), resync);
        assert_eq!(next_wait(None, resync), resync);
    }

    #[test]
    fn a_change_is_an_event_and_wakes_the_controller_and_a_suspended_agent_is_not_probed() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, rx) = super::super::controller::channel(
            dir.path(),
            super::super::backoff::RestartBackoff::default(),
        );
        let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = rounds.clone();
        let runner = move |_: &dyn Fn() -> bool| -> ProbeOutcome {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            let status = if n == 0 {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            };
            Ok(ProbeRound {
                changed: vec![],
                health: vec![now(
                    "web",
                    "web-1",
                    status,
                    "`test -f /tmp/ok` exited with 1",
                )],
                next_ms: Some(3_600_000),
            })
        };
        let stop = Arc::new(AtomicBool::new(false));
        let resync = Duration::from_secs(3600);
        let prober = start(handle.clone(), resync, stop.clone(), Box::new(runner)).unwrap();
        // The round at start: healthy, not news.
        let deadline = Instant::now() + Duration::from_secs(10);
        while rounds.load(Ordering::SeqCst) < 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
        assert!(rx.try_recv().is_err());
        // Woken (after a pass): web turned unhealthy.
        prober.wake();
        let t = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            matches!(&t, Trigger::HealthChanged(w) if w == "health: web is unhealthy: `test -f /tmp/ok` exited with 1"),
            "{t:?}"
        );
        let events = handle.recorded(None);
        let e = events.iter().find(|e| e.reason == "Unhealthy").unwrap();
        assert_eq!(e.kind, EventKind::Warning);
        assert_eq!(e.container.as_deref(), Some("web"));
        assert!(e.message.contains("exited with 1"), "{}", e.message);
        // A pass that changed nothing starts no round.
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        prober.passed(false);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        // Suspended: a wake runs no round.
        let suspended = agent_state::suspend_path(dir.path());
        std::fs::create_dir_all(suspended.parent().unwrap()).unwrap();
        std::fs::write(&suspended, b"").unwrap();
        prober.wake();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        stop.store(true, Ordering::SeqCst);
    }
}
