//! Start, stop and remove of an instance. A start of an instance that exited is a
//! restart in place (`runtime::instance::recreate`, shared with `berth start`) — the
//! same bundle and writable layer, a fresh runtime container — or, when a reboot took
//! its mounts and namespace, a create again on the same writable layer.

use std::time::Duration;

use berth_spec::MountSource;

use crate::runtime::health_file;
use crate::runtime::instance::{InstanceStatus, Ready, RecreateError, recreate};
use crate::runtime::record;
use crate::util::error_chain;

use super::error::{HostStepError, at};
use super::{ContainerHost, StepError, failpoint};

impl ContainerHost<'_> {
    /// The start step.
    pub(super) fn start_instance(&self, name: &str, id: &str) -> Result<(), StepError> {
        let inst = self.instance(id);
        let record = self
            .record(name)?
            .ok_or_else(|| HostStepError::NoRecord(name.to_string()))?;
        let mut record = self.restore_previous(name, id, record)?;
        // Started again: the runtime holds it once more.
        self.lock_stopped().remove(id);
        let status = if self.lock_created().remove(id) {
            InstanceStatus::Created { pid: 0 }
        } else {
            self.runtime.status(&inst).map_err(at("status"))?
        };
        match status {
            InstanceStatus::Created { .. } => {}
            InstanceStatus::Running { .. } => {
                // Started by a pass killed before it could record so: record it now,
                // or every later pass would plan this start again.
                if record.started_at.is_none() || record.instance != id {
                    record.started_at = Some(crate::util::rfc3339::now());
                    record.instance = id.to_string();
                    record::write_record(&self.state_dir, &record)
                        .map_err(at("write the container record"))?;
                }
                self.touch_networks_of(name);
                return Ok(());
            }
            InstanceStatus::Exited(_) | InstanceStatus::Stopped | InstanceStatus::Missing => {
                if record.started_at.is_some() {
                    record.restarts += 1;
                }
                let restarts = record.restarts;
                let ready = || -> Result<Ready, StepError> {
                    if self.lost_host_state(name, &inst) {
                        // A reboot took its overlay mount and namespace (they live in
                        // memory): make the instance again, on the same writable layer.
                        tracing::info!(
                            instance = id,
                            "its root filesystem or network namespace is gone; making it again"
                        );
                        self.teardown_keeping_upper(id)?;
                        self.create_instance(name, id)?;
                        self.lock_created().remove(id);
                        return Ok(Ready::Remade);
                    }
                    // The bundle names the staged binds: stage any that are gone.
                    if let Some(dc) = self.desired.containers.get(name)
                        && dc
                            .spec
                            .mounts
                            .iter()
                            .any(|m| matches!(m.source, MountSource::Bind { .. }))
                    {
                        self.stage_binds(&dc.spec, &inst.dirs.root)?;
                    }
                    Ok(Ready::InPlace)
                };
                let started_at = record.started_at.as_deref();
                match recreate(
                    self.runtime,
                    &self.state_dir,
                    name,
                    &inst,
                    started_at,
                    ready,
                ) {
                    Ok(Ready::InPlace) => {}
                    Ok(Ready::Remade) => {
                        record = self
                            .record(name)?
                            .ok_or_else(|| HostStepError::NoRecord(name.to_string()))?;
                        record.restarts = restarts;
                    }
                    Err(RecreateError::Delete(e)) => return Err(at("runtime delete")(e).into()),
                    Err(RecreateError::Ready(e)) => return Err(e),
                    Err(RecreateError::Create(e)) => return Err(at("create")(e).into()),
                }
            }
        }
        if self.networks.defers_peers()
            && let Err(err) = self.networks.refresh_own(id)
        {
            tracing::warn!(
                instance = id,
                "cannot update its hosts file: {}",
                error_chain(&err)
            );
        }
        self.runtime.start(&inst).map_err(at("start"))?;
        self.health.started(id);
        record.started_at = Some(crate::util::rfc3339::now());
        record.instance = id.to_string();
        record::write_record(&self.state_dir, &record).map_err(at("write the container record"))?;
        failpoint("after-start");
        self.note_restored(name, id);
        self.touch_networks_of(name);
        // One probe right away, so the scan sees a result from this run: it races the
        // application's start, and a failure leaves it `starting` (`health_file::next`).
        if let Some(h) = self
            .desired
            .containers
            .get(name)
            .and_then(|d| d.spec.health.as_ref())
        {
            let root = &inst.dirs.root;
            let since = self.health.since_start(id, record.started_at.as_deref());
            health_file::probe_and_record(root, h, None, since, || self.probe(id, h));
        }
        Ok(())
    }

    /// The stop step, which ends with the runtime's delete.
    pub(super) fn stop_instance(
        &self,
        _name: &str,
        id: &str,
        signal: &str,
        timeout: Duration,
    ) -> Result<(), StepError> {
        self.runtime
            .stop(&self.instance(id), signal_number(signal), timeout)
            .map_err(at("stop"))?;
        // A stop ends with the runtime's delete.
        self.lock_stopped().insert(id.to_string());
        Ok(())
    }

    /// The remove step: the instance and all it holds on the host.
    pub(super) fn remove_instance(&self, name: &str, id: &str) -> Result<(), StepError> {
        if let Ok(Some(a)) = self.networks.attachment(id) {
            self.touch(a.addresses.keys().cloned());
        }
        self.teardown(id)?;
        self.forget_previous(name, id)
    }
}

/// Signal number of a stop signal name (`SIGTERM`).
fn signal_number(name: &str) -> i32 {
    berth_spec::types::parse_signal(name).map_or(15, |s| s.number)
}
