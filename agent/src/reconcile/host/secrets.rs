//! The secrets of an instance: a small tmpfs of its own under the run directory
//! (never on disk), handed to the container's user, with each secret decrypted from
//! the repository with the node's age identity and written into it.

use std::path::PathBuf;

use crate::runtime::user::ResolvedUser;
use crate::storage::secrets;

use super::error::{HostStepError, at};
use super::{ContainerHost, StepError};

/// Size of each instance's secrets tmpfs.
const SECRETS_TMPFS: u64 = 1 << 20;

impl ContainerHost<'_> {
    /// Mounts the instance's secrets tmpfs and writes its secrets; `None` when the
    /// container has none.
    pub(super) fn mount_secrets(
        &self,
        c: &berth_spec::Container,
        id: &str,
        who: &ResolvedUser,
    ) -> Result<Option<PathBuf>, StepError> {
        if c.secrets.is_empty() {
            return Ok(None);
        }
        let identity = self.identity.ok_or(HostStepError::NoIdentity)?;
        let dir = secrets::secrets_dir(&self.run_dir, id);
        self.mounts
            .mount_secrets(&dir, SECRETS_TMPFS)
            .map_err(at("secrets tmpfs"))?;
        // The tmpfs is 0700: hand it to the container's user, and nobody else.
        self.files
            .chown(&dir, who.uid, who.gid)
            .map_err(at("secrets tmpfs"))?;
        for s in &c.secrets {
            let secret = self
                .spec
                .secrets
                .get(&s.name)
                .ok_or_else(|| HostStepError::UndefinedSecret(s.name.clone()))?;
            let plain = secrets::decrypt_tree_file(identity, &self.root, &secret.file)
                .map_err(at(format!("secret `{}`", s.name)))?;
            self.files
                .write_secret(&dir, &s.target, &plain, (who.uid, who.gid))
                .map_err(at(format!("secret `{}`", s.name)))?;
        }
        Ok(Some(dir))
    }
}
