//! The instance an update replaces, kept for a rollback: its record is kept as
//! `containers/<name>/previous.json` when the new instance is created; a stopped one
//! (`stop-first`) gives its network attachment up — its ports and address go to the new
//! instance — and gets one again when it is started as the container's instance once
//! more (a rollback). Its removal, after the new instance is verified, forgets it.

use berth_spec::types::NetworkMode;

use crate::network::AttachRequest;
use crate::runtime::instance::InstanceStatus;
use crate::runtime::record::{self, ContainerRecord};
use crate::runtime::rollback;
use crate::runtime::state::InstanceDirs;

use super::error::at;
use super::{ContainerHost, StepError};

impl ContainerHost<'_> {
    /// Before instance `id` of `name` is created: keeps the record of the instance it
    /// replaces, and releases that one's network if it no longer runs.
    pub(super) fn keep_previous(&self, name: &str, id: &str) -> Result<(), StepError> {
        let Some(old) = self.record(name)? else {
            return Ok(());
        };
        if old.instance == id
            || !InstanceDirs::new(&self.state_dir, &old.instance)
                .root
                .is_dir()
        {
            return Ok(());
        }
        record::write_previous(&self.state_dir, &old).map_err(at("keep the previous record"))?;
        let running = matches!(
            self.runtime.status(&self.instance(&old.instance)),
            Ok(InstanceStatus::Running { .. } | InstanceStatus::Created { .. })
        );
        if !running && old.spec.network_mode == NetworkMode::Bridge {
            self.touch(old.addresses.keys().cloned());
            self.networks
                .detach(&old.instance)
                .map_err(at("release the replaced instance's network"))?;
        }
        Ok(())
    }

    /// Before instance `id` of `name` starts: if it is the kept previous instance (a
    /// rollback), it becomes the container's instance again; and an instance that gave
    /// its network up for an update (its root filesystem still mounted) is attached
    /// again, as its own record says. Returns the record in force.
    pub(super) fn restore_previous(
        &self,
        name: &str,
        id: &str,
        current: ContainerRecord,
    ) -> Result<ContainerRecord, StepError> {
        let mut rec = if current.instance == id {
            current
        } else {
            let Some(prev) = record::read_previous(&self.state_dir, name)
                .map_err(at("read the previous record"))?
                .filter(|p| p.instance == id)
            else {
                return Ok(current);
            };
            tracing::info!(
                container = name,
                instance = id,
                "rolled back: the previous instance is the container's again"
            );
            record::write_record(&self.state_dir, &prev)
                .map_err(at("write the container record"))?;
            record::remove_previous(&self.state_dir, name)
                .map_err(at("forget the previous record"))?;
            prev
        };
        if rec.spec.network_mode == NetworkMode::Bridge
            && !matches!(self.networks.attachment(id), Ok(Some(_)))
            && self.mounts.rootfs_mounted(&self.instance(id).dirs)
        {
            let a = self
                .networks
                .attach(&AttachRequest::for_container(id, &rec.spec))
                .map_err(at("network attach"))?;
            rec.addresses = a
                .addresses
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            self.touch(rec.addresses.keys().cloned());
            record::write_record(&self.state_dir, &rec)
                .map_err(at("write the container record"))?;
        }
        Ok(rec)
    }

    /// After instance `id` of `name` started: a rollback to it is done, so the mark of
    /// the failed update says so (a later exit of `id` is restarted per its policy).
    pub(super) fn note_restored(&self, name: &str, id: &str) {
        let Some(mut mark) = rollback::load(&self.state_dir, name) else {
            return;
        };
        if mark.restored.is_some() || mark.failed == id {
            return;
        }
        mark.restored = Some(id.to_string());
        if let Err(e) = rollback::record(&self.state_dir, name, mark) {
            tracing::warn!(container = name, "{}", crate::util::error_chain(&e));
        }
    }

    /// After instance `id` of `name` is removed: forgets it as the previous instance.
    pub(super) fn forget_previous(&self, name: &str, id: &str) -> Result<(), StepError> {
        match record::read_previous(&self.state_dir, name) {
            Ok(Some(p)) if p.instance == id => record::remove_previous(&self.state_dir, name)
                .map_err(|e| at("forget the previous record")(e).into()),
            _ => Ok(()),
        }
    }
}
