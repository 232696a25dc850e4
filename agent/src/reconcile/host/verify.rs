//! The verify step of an update: the new instance must be running — and, with a health
//! check, healthy (one passing probe, as Docker's first success is) — within the
//! container's `update_timeout`. Without a check it must still run [`MONITOR`] after its
//! start (Docker swarm's update monitor does the same with 5 s), so that a process that
//! dies at once is caught. A process that exits is a failure at once, named by its exit
//! code — except a job that completed (exit 0 under `restart` `no` or `on-failure`). A
//! failing probe is not final before the timeout: the application may still be
//! starting. A verified update forgets the container's rollback mark; a failed one is
//! rolled back by the pass.

use std::time::{Duration, Instant};

use berth_spec::types::Restart;

use crate::runtime::health::ProbeResult;
use crate::runtime::health_file;
use crate::runtime::instance::InstanceStatus;
use crate::runtime::rollback;

use super::error::{HostStepError, at};
use super::{ContainerHost, StepError};

/// How long a new instance without a health check must keep running.
pub const MONITOR: Duration = Duration::from_secs(2);
/// How often the instance's state is looked at.
const POLL: Duration = Duration::from_millis(100);

impl ContainerHost<'_> {
    /// The verify step.
    pub(super) fn verify_update(
        &self,
        name: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<(), StepError> {
        let failed = |why: String| -> StepError {
            HostStepError::UpdateFailed {
                instance: id.to_string(),
                why,
            }
            .into()
        };
        let dc = self
            .desired
            .containers
            .get(name)
            .ok_or_else(|| HostStepError::NotDesired(name.to_string()))?;
        let spec = &dc.spec;
        let inst = self.instance(id);
        let root = inst.dirs.root.clone();
        let started_at = self.record(name).ok().flatten().and_then(|r| r.started_at);
        let mut prev = health_file::read_fresh(&root, started_at.as_deref());
        let started = Instant::now();
        // Without a check: running for the monitor time (or the whole timeout, if
        // shorter). With one: the first probe at once, then every interval.
        let monitor = MONITOR.min(timeout);
        let mut next_probe = started;
        let mut last_failure = String::new();
        let mut stopped_seen = 0u32;
        loop {
            let ran = started.elapsed();
            match self.runtime.status(&inst).map_err(at("status"))? {
                InstanceStatus::Running { .. } => {}
                InstanceStatus::Exited(e) => {
                    if e.exit_code == 0 && e.signal.is_none() && spec.restart != Restart::Always {
                        // A job that did its work (restart = "no" or "on-failure").
                        break;
                    }
                    let secs = ran.as_secs_f32();
                    return Err(failed(match e.signal {
                        Some(sig) => format!("killed by signal {sig} {secs:.1}s after its start"),
                        None => format!("exited with {} {secs:.1}s after its start", e.exit_code),
                    }));
                }
                InstanceStatus::Created { .. } => return Err(failed("never started".into())),
                InstanceStatus::Stopped | InstanceStatus::Missing if stopped_seen < 10 => {
                    // The runtime may say stopped a moment before the shim has written
                    // the exit status: look again for up to a second, so that the exit
                    // code is said.
                    stopped_seen += 1;
                    std::thread::sleep(POLL);
                    continue;
                }
                InstanceStatus::Stopped | InstanceStatus::Missing => {
                    return Err(failed("stopped right after its start".into()));
                }
            }
            match &spec.health {
                None if ran >= monitor => break,
                None => {}
                Some(h) if Instant::now() >= next_probe => {
                    let since = self.health.since_start(id, started_at.as_deref());
                    let (result, record) =
                        health_file::probe_and_record(&root, h, prev.as_ref(), since, || {
                            self.probe(id, h)
                        });
                    prev = Some(record);
                    match result {
                        ProbeResult::Healthy => break,
                        ProbeResult::Unhealthy(why) => last_failure = why,
                    }
                    next_probe = Instant::now() + h.interval.max(POLL);
                }
                Some(_) => {}
            }
            if started.elapsed() >= timeout {
                let waited = humantime::format_duration(timeout);
                return Err(failed(if last_failure.is_empty() {
                    format!("not running after {waited}")
                } else {
                    format!("not healthy after {waited}: {last_failure}")
                }));
            }
            std::thread::sleep(POLL);
        }
        if let Err(e) = rollback::clear(&self.state_dir, name) {
            tracing::warn!(container = name, "{}", crate::util::error_chain(&e));
        }
        Ok(())
    }
}
