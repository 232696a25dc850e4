//! The create step: everything of a new instance up to the runtime's `create`, in
//! order — directories and root filesystem, user, volumes, binds, secrets, network,
//! bundle — then the runtime's create (beside the CNI ADD when it can run alongside),
//! then the record. A create that fails half-way tears down what it made.

use crate::network::AttachRequest;
use crate::runtime::record::{self, ContainerRecord};
use crate::runtime::state::InstanceDirs;
use crate::runtime::user;
use crate::util::error_chain;

use super::bundle::BundleInput;
use super::error::{HostStepError, at};
use super::{ContainerHost, StepError, failpoint};

impl ContainerHost<'_> {
    /// Creates everything of a new instance up to the runtime's `create`. With
    /// `deferred_attach` set, the CNI ADD is still to run (see [`Self::create_instance`]).
    fn materialise(&self, name: &str, id: &str) -> Result<(ContainerRecord, bool), StepError> {
        let dc = self
            .desired
            .containers
            .get(name)
            .ok_or_else(|| HostStepError::NotDesired(name.to_string()))?;
        let c = &dc.spec;
        let image = self
            .images
            .get(name)
            .ok_or_else(|| HostStepError::ImageNotReady(name.to_string()))?;
        let dirs = InstanceDirs::new(&self.state_dir, id);
        self.mount_root(&dirs, image)?;

        let user_spec = image.user_of(c);
        let who = user::resolve(&user_spec, image.passwd.as_deref(), image.group.as_deref())
            .map_err(at(format!("resolve user `{user_spec}`")))?;

        let volume_paths = self.volume_paths(c, &who)?;
        let bind_paths = self.stage_binds(c, &dirs.root)?;
        let secrets_dir = self.mount_secrets(c, id, &who)?;
        let net = self.network_files(c, id)?;
        self.write_bundle(&BundleInput {
            dc,
            image,
            dirs: &dirs,
            volumes: volume_paths,
            binds: bind_paths,
            secrets_dir,
            net: &net,
        })?;
        let record = self.new_record(name, dc, image, id, &who, net.addresses)?;
        Ok((record, net.deferred_attach))
    }

    /// The create step: [`Self::materialise`], then the runtime's create, then the
    /// record. Nothing of a create that failed stays until the next pass.
    pub(super) fn create_instance(&self, name: &str, id: &str) -> Result<(), StepError> {
        self.keep_previous(name, id)?;
        let (mut record, deferred_attach) = match self.materialise(name, id) {
            Ok(made) => made,
            Err(err) => {
                // Nothing of a half-made instance stays until the next pass: the rootfs
                // and secrets mounts, the namespace, the directories.
                if let Err(cleanup) = self.teardown(id) {
                    tracing::warn!(
                        instance = id,
                        "cleanup after a failed create: {}",
                        error_chain(&cleanup)
                    );
                }
                return Err(err);
            }
        };
        if !deferred_attach {
            // As below: the record once the runtime's create worked; a failure tears
            // the instance down at once, and a pass killed in between leaves an orphan.
            if let Err(err) = self.runtime.create(&self.instance(id)) {
                return Err(self.failed_create(id, HostStepError::Create(err)));
            }
            record::write_record(&self.state_dir, &record)
                .map_err(at("write the container record"))?;
            failpoint("after-create");
            self.lock_created().insert(id.to_string());
            return Ok(());
        }
        // CNI ADD and the runtime's create side by side. The record is written once
        // both have worked: a pass killed in between leaves an instance no record
        // accounts for, which the next pass removes as an orphan and creates afresh.
        let c = &self
            .desired
            .containers
            .get(name)
            .ok_or_else(|| HostStepError::NotDesired(name.to_string()))?
            .spec;
        let inst = self.instance(id);
        let (attached, created) = std::thread::scope(|s| {
            let add = s.spawn(|| {
                let a = self
                    .networks
                    .attach(&AttachRequest::for_container(id, c))
                    .map_err(at("network attach"));
                if a.is_ok() {
                    failpoint("after-cni-add");
                }
                a
            });
            let created = self
                .runtime
                .create(&inst)
                .map(drop)
                .map_err(HostStepError::Create);
            let attached = add.join().unwrap_or(Err(HostStepError::AttachPanicked));
            (attached, created)
        });
        let a = match (created, attached) {
            (Ok(()), Ok(a)) => a,
            (Err(create), Err(attach)) => {
                return Err(self.failed_create(
                    id,
                    HostStepError::CreateAndAttach {
                        create: Box::new(create),
                        attach: Box::new(attach),
                    },
                ));
            }
            (Err(err), Ok(_)) | (Ok(()), Err(err)) => return Err(self.failed_create(id, err)),
        };
        record.addresses = a
            .addresses
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        record::write_record(&self.state_dir, &record).map_err(at("write the container record"))?;
        failpoint("after-create");
        self.lock_created().insert(id.to_string());
        Ok(())
    }

    /// Tears down what a failed create made, and returns its error.
    fn failed_create(&self, id: &str, err: HostStepError) -> StepError {
        if let Err(cleanup) = self.teardown(id) {
            tracing::warn!(
                instance = id,
                "cleanup after a failed create: {}",
                error_chain(&cleanup)
            );
        }
        err.into()
    }
}
