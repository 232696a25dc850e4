//! The container record a create writes (`runtime::state`): what the instance was
//! made from, for the scan, the operator commands and the next pass.

use std::collections::BTreeMap;

use crate::reconcile::images::ReadyImage;
use crate::reconcile::model::DesiredContainer;
use crate::runtime::record::{ContainerRecord, ImageRef, SCHEMA_VERSION};
use crate::runtime::render;
use crate::runtime::user::ResolvedUser;

use super::{ContainerHost, StepError};

impl ContainerHost<'_> {
    /// The record of container `name`'s instance `id` of `dc`, not yet started.
    pub(super) fn new_record(
        &self,
        name: &str,
        dc: &DesiredContainer,
        image: &ReadyImage,
        id: &str,
        who: &ResolvedUser,
        addresses: BTreeMap<String, String>,
    ) -> Result<ContainerRecord, StepError> {
        let c = &dc.spec;
        Ok(ContainerRecord {
            schema_version: SCHEMA_VERSION,
            name: name.to_string(),
            instance: id.to_string(),
            spec_hash: dc.hash.as_str().to_string(),
            spec: c.clone(),
            image: ImageRef {
                reference: c.image.clone(),
                digest: dc.digest.clone(),
                chain_ids: image.chain_ids.clone(),
            },
            runtime: self.runtime_binary.display().to_string(),
            runtime_root: self.runtime_root.clone(),
            created_at: crate::util::rfc3339::now(),
            started_at: None,
            restarts: 0,
            operator_stopped: false,
            addresses,
            ports: c.ports.iter().map(|p| p.to_string()).collect(),
            cgroup_path: render::cgroups_path(&self.state_dir, id),
            uid: Some(who.uid),
            gid: Some(who.gid),
        })
    }
}
