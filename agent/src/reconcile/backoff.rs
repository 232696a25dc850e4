//! Crash-loop backoff, kubelet's: 10 s after the first exit, doubling up to 5 min, and
//! back to 10 s once a run lasted 10 min.
//!
//! [`Backoff`] is an endless iterator of delays with [`Backoff::reset`], as kube-runtime's
//! backoffs are, for the daemon to keep per container. The planner instead replays a
//! container's recent exits with [`restart_delay`], so the delay is a pure function of
//! the history it is given and survives an agent restart.

use std::time::Duration;

use super::model::{Exit, Timestamp};

/// The delay after the first exit.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest delay (kubelet's `MaxContainerBackOff`).
pub const MAX: Duration = Duration::from_secs(300);
/// A run at least this long resets the backoff: the container was healthy enough, and
/// its next crash is treated as a first one (kubelet resets after 2 × the max delay).
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// Exponential delays, `initial` doubling up to `max`. Never ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The crash-loop backoff: [`INITIAL`] doubling to [`MAX`].
    pub fn crash_loop() -> Backoff {
        Backoff::new(INITIAL, MAX)
    }

    /// Starts over at the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }

    /// The delay after an exit of a run that lasted `ran` (unknown: `None`): resets
    /// first when the run lasted [`RESET_AFTER`] or more.
    pub fn after_run(&mut self, ran: Option<Duration>) -> Duration {
        if ran.is_some_and(|r| r >= RESET_AFTER) {
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

/// The backoff before restarting after the last of `exits` (in any order), or `None`
/// without exits.
pub fn restart_delay(exits: &[Exit]) -> Option<Delay> {
    let mut sorted = exits.to_vec();
    sorted.sort_by_key(|e| e.finished_at);
    let mut backoff = Backoff::crash_loop();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn doubles_from_10s_to_5min() {
        let got: Vec<Duration> = Backoff::crash_loop().take(8).collect();
        assert_eq!(got, secs(&[10, 20, 40, 80, 160, 300, 300, 300]));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::crash_loop();
        b.by_ref().take(4).for_each(drop);
        assert_eq!(b.next(), Some(Duration::from_secs(160)));
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_secs(10)));
        assert_eq!(b.next(), Some(Duration::from_secs(20)));
    }

    #[test]
    fn a_long_run_resets() {
        let mut b = Backoff::crash_loop();
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
        assert_eq!(restart_delay(&[]), None);
        // Three quick crashes, given out of order: 10 s, 20 s, then 40 s.
        let exits = [exit(1030, 1031), exit(1000, 1001), exit(1011, 1012)];
        assert_eq!(
            restart_delay(&exits),
            Some(Delay {
                delay: Duration::from_secs(40),
                until: Timestamp(1071),
            })
        );
        // A run of ten minutes between crashes resets the count.
        let exits = [exit(1000, 1001), exit(1011, 1012), exit(1032, 1632)];
        assert_eq!(
            restart_delay(&exits).map(|d| d.delay),
            Some(Duration::from_secs(10))
        );
    }
}
