//! Crash-loop backoff, kubelet's: 10 s after the first exit, doubling up to 5 min, and
//! back to 10 s once a run lasted twice the longest delay (10 min). The first delay and
//! the longest are the node's `runtime.restart_backoff` and `runtime.restart_backoff_max`
//! ([`RestartBackoff`], a planner input carried in [`History`](super::model::History)).
//!
//! [`Backoff`] is an endless iterator of delays with [`Backoff::reset`], as kube-runtime's
//! backoffs are, for the daemon to keep per container. The planner instead replays a
//! container's recent exits with [`RestartBackoff::delay`], so the delay is a pure
//! function of the history and settings it is given and survives an agent restart.

use std::time::Duration;

use berth_spec::node::{DEFAULT_RESTART_BACKOFF, DEFAULT_RESTART_BACKOFF_MAX, RuntimeSection};

use super::model::{Exit, Timestamp};

/// The delay after the first exit, by default (`runtime.restart_backoff`).
pub const INITIAL: Duration = DEFAULT_RESTART_BACKOFF;
/// The longest delay, by default (kubelet's `MaxContainerBackOff`,
/// `runtime.restart_backoff_max`).
pub const MAX: Duration = DEFAULT_RESTART_BACKOFF_MAX;
/// A run at least this long resets the default backoff: the container was healthy
/// enough, and its next crash is treated as a first one (kubelet resets after 2 × the
/// max delay; see [`RestartBackoff::reset_after`]).
pub const RESET_AFTER: Duration = Duration::from_secs(2 * MAX.as_secs());

/// The crash-loop backoff's settings: the first delay and the longest. A planner input,
/// so that the plan stays a function of its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBackoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RestartBackoff {
    /// [`INITIAL`] doubling to [`MAX`].
    fn default() -> Self {
        RestartBackoff {
            initial: INITIAL,
            max: MAX,
        }
    }
}

impl RestartBackoff {
    /// The node's `runtime.restart_backoff` and `runtime.restart_backoff_max`.
    pub fn of(rt: &RuntimeSection) -> RestartBackoff {
        RestartBackoff {
            initial: rt.restart_backoff,
            max: rt.restart_backoff_max,
        }
    }

    /// A run at least this long resets the backoff: twice the longest delay.
    pub fn reset_after(self) -> Duration {
        self.max.saturating_mul(2)
    }

    /// The backoff before restarting after the last of `exits` (in any order), or
    /// `None` without exits.
    pub fn delay(self, exits: &[Exit]) -> Option<Delay> {
        let mut sorted = exits.to_vec();
        sorted.sort_by_key(|e| e.finished_at);
        let mut backoff = Backoff::crash_loop(self);
        let mut last = None;
        for e in &sorted {
            let ran = e.started_at.map(|s| e.finished_at.since(s));
            let delay = backoff.after_run(ran);
            last = Some(Delay {
                delay,
                until: e.finished_at.after(delay),
            });
        }
        last
    }
}

/// Exponential delays, `initial` doubling up to `max`. Never ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    reset_after: Duration,
}

impl Backoff {
    /// Resets after a run of [`RESET_AFTER`].
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial.min(max),
            reset_after: RESET_AFTER,
        }
    }

    /// The crash-loop backoff of `settings`: resets after a run of twice its longest
    /// delay.
    pub fn crash_loop(settings: RestartBackoff) -> Backoff {
        Backoff {
            reset_after: settings.reset_after(),
            ..Backoff::new(settings.initial, settings.max)
        }
    }

    /// Starts over at the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }

    /// The delay after an exit of a run that lasted `ran` (unknown: `None`): resets
    /// first when the run lasted long enough ([`RESET_AFTER`] by default).
    pub fn after_run(&mut self, ran: Option<Duration>) -> Duration {
        if ran.is_some_and(|r| r >= self.reset_after) {
            self.reset();
        }
        self.step()
    }

    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.step())
    }
}

/// A restart delayed by backoff: how long, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    pub delay: Duration,
    pub until: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn doubles_from_10s_to_5min() {
        let got: Vec<Duration> = Backoff::crash_loop(RestartBackoff::default())
            .take(8)
            .collect();
        assert_eq!(got, secs(&[10, 20, 40, 80, 160, 300, 300, 300]));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::crash_loop(RestartBackoff::default());
        b.by_ref().take(4).for_each(drop);
        assert_eq!(b.next(), Some(Duration::from_secs(160)));
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_secs(10)));
        assert_eq!(b.next(), Some(Duration::from_secs(20)));
    }

    #[test]
    fn a_long_run_resets() {
        let mut b = Backoff::crash_loop(RestartBackoff::default());
        assert_eq!(b.after_run(Some(Duration::from_secs(1))), secs(&[10])[0]);
        assert_eq!(b.after_run(None), secs(&[20])[0]);
        assert_eq!(b.after_run(Some(Duration::from_secs(599))), secs(&[40])[0]);
        assert_eq!(b.after_run(Some(RESET_AFTER)), secs(&[10])[0]);
    }

    #[test]
    fn initial_above_max_is_clamped() {
        let mut b = Backoff::new(Duration::from_secs(9), Duration::from_secs(5));
        assert_eq!(b.next(), Some(Duration::from_secs(5)));
        assert_eq!(b.next(), Some(Duration::from_secs(5)));
    }

    fn exit(started: u64, finished: u64) -> Exit {
        Exit {
            started_at: Some(Timestamp(started)),
            finished_at: Timestamp(finished),
            code: 1,
        }
    }

    #[test]
    fn replays_history_in_time_order() {
        assert_eq!(RestartBackoff::default().delay(&[]), None);
        // Three quick crashes, given out of order: 10 s, 20 s, then 40 s.
        let exits = [exit(1030, 1031), exit(1000, 1001), exit(1011, 1012)];
        assert_eq!(
            RestartBackoff::default().delay(&exits),
            Some(Delay {
                delay: Duration::from_secs(40),
                until: Timestamp(1071),
            })
        );
        // A run of ten minutes between crashes resets the count.
        let exits = [exit(1000, 1001), exit(1011, 1012), exit(1032, 1632)];
        assert_eq!(
            RestartBackoff::default().delay(&exits).map(|d| d.delay),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn configured_settings_change_the_delays_and_the_reset() {
        let fast = RestartBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
        };
        let got: Vec<Duration> = Backoff::crash_loop(fast).take(5).collect();
        assert_eq!(got, secs(&[1, 2, 4, 4, 4]));
        assert_eq!(fast.reset_after(), Duration::from_secs(8));
        let exits = [exit(1000, 1001), exit(1002, 1003), exit(1004, 1005)];
        assert_eq!(
            fast.delay(&exits),
            Some(Delay {
                delay: Duration::from_secs(4),
                until: Timestamp(1009),
            })
        );
        // A run of 8 s (twice the cap) resets to the first delay.
        let exits = [exit(1000, 1001), exit(1002, 1003), exit(1004, 1012)];
        assert_eq!(
            fast.delay(&exits).map(|d| d.delay),
            Some(Duration::from_secs(1))
        );
        assert_eq!(RestartBackoff::default().reset_after(), RESET_AFTER);
        assert_eq!(
            RestartBackoff::of(&RuntimeSection::default()),
            RestartBackoff::default()
        );
    }
}
