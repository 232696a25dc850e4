//! Named volumes (directories under the state directory, handed to the container's
//! user) and bind mounts (each source resolved on the host, judged again by the
//! policy, and mounted as checked: `storage::binds`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_spec::MountSource;

use crate::runtime::user::ResolvedUser;
use crate::storage::binds;

use super::error::at;
use super::{ContainerHost, StepError};

impl ContainerHost<'_> {
    /// The directory of each named volume the container mounts, made if need be and
    /// owned by its user.
    pub(super) fn volume_paths(
        &self,
        c: &berth_spec::Container,
        who: &ResolvedUser,
    ) -> Result<BTreeMap<String, PathBuf>, StepError> {
        let mut volume_paths = BTreeMap::new();
        for m in &c.mounts {
            if let MountSource::Volume { name: v } = &m.source {
                let p = self
                    .files
                    .ensure_volume(&self.state_dir, v, Some((who.uid, who.gid)))
                    .map_err(at("volume"))?;
                volume_paths.insert(v.clone(), p);
            }
        }
        Ok(volume_paths)
    }

    /// Binds: each source resolved on the host, judged again by the policy, and
    /// mounted as checked (`storage::binds`). Already staged binds are kept.
    pub(super) fn stage_binds(
        &self,
        c: &berth_spec::Container,
        instance_root: &Path,
    ) -> Result<BTreeMap<usize, PathBuf>, StepError> {
        let mut staged = BTreeMap::new();
        for (i, m) in c.mounts.iter().enumerate() {
            if let MountSource::Bind { path } = &m.source {
                let resolved = binds::resolve(path).map_err(at("bind"))?;
                if let Some(why) = self.binds.refuse(c, i, &resolved) {
                    return Err(StepError::Refused(why));
                }
                let point = self
                    .mounts
                    .stage_bind(instance_root, i, path, &resolved)
                    .map_err(at("bind"))?;
                staged.insert(i, point);
            }
        }
        Ok(staged)
    }

    /// The create-volume step.
    pub(super) fn ensure_volume(&self, name: &str) -> Result<(), StepError> {
        self.files
            .ensure_volume(&self.state_dir, name, None)
            .map(drop)
            .map_err(|err| at("volume")(err).into())
    }

    /// The remove-volume step.
    pub(super) fn drop_volume(&self, name: &str) -> Result<(), StepError> {
        self.files
            .remove_volume(&self.state_dir, name)
            .map_err(|err| at("volume")(err).into())
    }
}
