//! The verify step of an update: the new instance must be running — and healthy, with
//! a health check — within the container's `update_timeout`. Without a check it must
//! still run [`MONITOR`] after its start (Docker swarm's update monitor does the same
//! with 5 s), so that a process that dies at once is caught. A verified update forgets
//! the container's rollback mark; a failed one is rolled back by the pass.

use std::time::{Duration, Instant};

use crate::runtime::instance::InstanceStatus;
use crate::runtime::rollback;

use super::error::{HostStepError, at};
use super::{ContainerHost, StepError};

/// How long a new instance without a health check must keep running.
pub const MONITOR: Duration = Duration::from_secs(2);
/// How often its state is looked at meanwhile.
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
        let started = Instant::now();
        if dc.spec.health.is_some() {
            self.wait_until_healthy(name, id, timeout)
                .map_err(|e| match e {
                    StepError::Failed(f) => failed(f.chain()),
                    other => other,
                })?;
        }
        // Without a check, running for the monitor time; with one, still running now.
        let monitor = if dc.spec.health.is_some() {
            Duration::ZERO
        } else {
            MONITOR.min(timeout)
        };
        let inst = self.instance(id);
        loop {
            match self.runtime.status(&inst).map_err(at("status"))? {
                InstanceStatus::Running { .. } => {}
                InstanceStatus::Exited(e) => {
                    let ran = started.elapsed().as_secs_f32();
                    return Err(failed(match e.signal {
                        Some(sig) => {
                            format!("killed by signal {sig} within {ran:.1}s of its start")
                        }
                        None => {
                            format!("exited with {} within {ran:.1}s of its start", e.exit_code)
                        }
                    }));
                }
                InstanceStatus::Created { .. } => return Err(failed("never started".into())),
                InstanceStatus::Stopped | InstanceStatus::Missing => {
                    return Err(failed("stopped right after its start".into()));
                }
            }
            if started.elapsed() >= monitor {
                break;
            }
            std::thread::sleep(POLL);
        }
        if let Err(e) = rollback::clear(&self.state_dir, name) {
            tracing::warn!(container = name, "{}", crate::util::error_chain(&e));
        }
        Ok(())
    }
}
