//! The host operations' error: what a step was doing when it failed, over the typed
//! error of the module that failed (mount, volume, bind, secret, network, runtime,
//! render …), so the cause chain survives to where it is printed. Each error says
//! whether it is transient ([`HostStepError::kind`]), from its cause's own judgement.

use crate::network::NetworkError;
use crate::reconcile::executor::{Failure, FailureKind, StepError};
use crate::runtime::instance::InstanceError;
use crate::runtime::mount::MountError;
use crate::runtime::record::RecordError;
use crate::runtime::render::RenderError;
use crate::runtime::state::io_is_transient;
use crate::runtime::user::UserError;
use crate::storage::binds::BindError;
use crate::storage::secrets::SecretError;
use crate::storage::treefile::TreeFileError;
use crate::storage::volumes::VolumeError;
use crate::util::error_chain;

/// The typed error of the module a host operation called. Transparent: it shows and
/// chains as the error it holds.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    TreeFile(#[from] TreeFileError),
}

impl Cause {
    /// Each module judges its own errors; a render or a user lookup fails the same
    /// way until the spec or the image changes, as does a config that does not encode.
    pub fn is_transient(&self) -> bool {
        match self {
            Cause::Io(e) => io_is_transient(e),
            Cause::Mount(e) => e.is_transient(),
            Cause::Volume(e) => e.is_transient(),
            Cause::Bind(e) => e.is_transient(),
            Cause::Secret(e) => e.is_transient(),
            Cause::Network(e) => e.is_transient(),
            Cause::Instance(e) => e.is_transient(),
            Cause::TreeFile(e) => e.is_transient(),
            Cause::Record(e) => e.is_transient(),
            Cause::User(_) | Cause::Render(_) | Cause::Json(_) => false,
        }
    }
}

/// Why a host operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HostStepError {
    /// A part of the operation failed: what it was doing (`mount the root filesystem`,
    /// `network attach`, `secret \`db\``), and why.
    #[error("{what}")]
    Step {
        what: String,
        #[source]
        source: Cause,
    },
    /// The runtime's create of the instance, which names the instance itself.
    #[error(transparent)]
    Create(InstanceError),
    /// The runtime's create and the CNI ADD that ran alongside it both failed.
    #[error("{}; {}", error_chain(.create.as_ref()), error_chain(.attach.as_ref()))]
    CreateAndAttach {
        create: Box<HostStepError>,
        attach: Box<HostStepError>,
    },
    #[error("container `{0}` is not desired")]
    NotDesired(String),
    #[error("the image of `{0}` is not ready")]
    ImageNotReady(String),
    /// A pull step left in the plan: the image could not be made ready before planning
    /// (the container's report says why).
    #[error("image {image}@{digest} could not be made ready")]
    NotPulled { image: String, digest: String },
    #[error("container `{0}` has no record")]
    NoRecord(String),
    #[error("the node has no age identity (`[secrets] identity`) to decrypt its secrets")]
    NoIdentity,
    #[error("secret `{0}` is not defined")]
    UndefinedSecret(String),
    #[error("network attach panicked")]
    AttachPanicked,
    #[error("`{name}` did not become healthy: {why}")]
    Unhealthy { name: String, why: String },
    /// An update's new instance did not run (and become healthy, with a check) within
    /// its `update_timeout`: the update is to be rolled back.
    #[error("update to `{instance}` failed: {why}")]
    UpdateFailed { instance: String, why: String },
}

/// `what` failed with `err`: for `map_err`.
pub fn at<E: Into<Cause>>(what: impl Into<String>) -> impl FnOnce(E) -> HostStepError {
    let what = what.into();
    move |err| HostStepError::Step {
        what,
        source: err.into(),
    }
}

impl HostStepError {
    /// Whether a later pass may succeed with the same input. A container that did not
    /// become healthy in time may yet (a slow dependency); what the spec or the state
    /// lacks (a record, a secret, an identity) stays missing until it changes. A create
    /// and attach that both failed are transient only when both are.
    pub fn kind(&self) -> FailureKind {
        match self {
            HostStepError::Step { source, .. } => FailureKind::of(source.is_transient()),
            HostStepError::Create(e) => FailureKind::of(e.is_transient()),
            HostStepError::CreateAndAttach { create, attach } => create.kind().max(attach.kind()),
            HostStepError::Unhealthy { .. } => FailureKind::Transient,
            HostStepError::UpdateFailed { .. } => FailureKind::Permanent,
            HostStepError::NotDesired(_)
            | HostStepError::ImageNotReady(_)
            | HostStepError::NotPulled { .. }
            | HostStepError::NoRecord(_)
            | HostStepError::NoIdentity
            | HostStepError::UndefinedSecret(_)
            | HostStepError::AttachPanicked => FailureKind::Permanent,
        }
    }
}

impl From<HostStepError> for StepError {
    fn from(e: HostStepError) -> Self {
        let kind = e.kind();
        StepError::Failed(Failure::new(e, kind))
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;
    use crate::network::cni::{CniCommand, CniError, ExecFailure};
    use crate::reconcile::executor::StepResult;

    fn enospc() -> io::Error {
        io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32)
    }

    fn volume_full() -> HostStepError {
        at("volume")(VolumeError {
            name: "data".into(),
            op: "create",
            path: PathBuf::from("/var/lib/berth/volumes/data"),
            source: enospc(),
        })
    }

    fn cni(source: CniError) -> HostStepError {
        at("network attach")(NetworkError::Cni {
            container: "web-1".into(),
            source: Box::new(source),
        })
    }

    #[test]
    fn a_full_disk_is_transient_and_the_chain_names_it() {
        let err = volume_full();
        assert_eq!(err.kind(), FailureKind::Transient);
        let step = StepError::from(err);
        assert_eq!(step.kind(), FailureKind::Transient);
        let StepError::Failed(failure) = &step else {
            panic!("not a failure: {step:?}");
        };
        // The typed error survives behind the step error.
        assert!(failure.error().downcast_ref::<HostStepError>().is_some());
        let chain = failure.chain();
        assert!(
            chain.starts_with("volume: volume `data`: cannot create /var/lib/berth/volumes/data: "),
            "{chain}"
        );
        assert!(
            chain.ends_with(&enospc().to_string()),
            "the innermost cause is lost: {chain}"
        );
        let json = serde_json::to_value(StepResult::Failed(failure.clone())).unwrap();
        assert_eq!(json["result"], "failed");
        assert_eq!(json["kind"], "transient");
        assert_eq!(json["detail"], chain.as_str());
    }

    #[test]
    fn a_missing_bind_source_is_permanent() {
        let err = at("bind")(BindError::Resolve {
            source_path: "/srv/missing".into(),
            source: io::Error::from_raw_os_error(nix::errno::Errno::ENOENT as i32),
        });
        assert_eq!(err.kind(), FailureKind::Permanent);
        assert!(
            error_chain(&err)
                .starts_with("bind: bind source `/srv/missing` cannot be resolved on this host: "),
            "{}",
            error_chain(&err)
        );
    }

    #[test]
    fn a_render_error_and_a_bad_seccomp_profile_are_permanent() {
        let err = at("render")(RenderError::Seccomp {
            container: "web".into(),
            profile: "strict.json".into(),
            reason: "rule 3: no syscall names".into(),
        });
        assert_eq!(err.kind(), FailureKind::Permanent);
        assert_eq!(
            error_chain(&err),
            "render: container `web`: seccomp profile `strict.json`: rule 3: no syscall names"
        );
    }

    #[test]
    fn a_policy_refusal_is_permanent() {
        let refused = StepError::Refused("bind source /srv resolves to /".into());
        assert_eq!(refused.kind(), FailureKind::Permanent);
        let json = serde_json::to_value(StepResult::Refused("no".into())).unwrap();
        assert_eq!(json["kind"], "permanent");
        assert_eq!(json["result"], "refused");
    }

    #[test]
    fn a_cni_plugin_that_timed_out_or_asks_to_try_again_is_transient() {
        let timed_out = cni(CniError::Exec {
            command: CniCommand::Add,
            network: "default".into(),
            container: "web-1".into(),
            plugin: "dhcp".into(),
            source: ExecFailure::Failed {
                status: Some(1),
                stdout: Vec::new(),
                stderr: "error calling DHCP.Allocate: timed out waiting for a lease".into(),
            },
        });
        assert_eq!(timed_out.kind(), FailureKind::Transient);
        let plugin = |code: u64, msg: &str| {
            cni(CniError::Plugin {
                command: CniCommand::Add,
                network: "default".into(),
                container: "web-1".into(),
                plugin: "bridge".into(),
                code,
                msg: msg.into(),
                details: String::new(),
            })
        };
        assert_eq!(plugin(11, "try again later").kind(), FailureKind::Transient);
        assert_eq!(
            plugin(7, "invalid network config").kind(),
            FailureKind::Permanent
        );
        let missing = cni(CniError::Exec {
            command: CniCommand::Add,
            network: "default".into(),
            container: "web-1".into(),
            plugin: "bridge".into(),
            source: ExecFailure::NotFound {
                searched: "/opt/cni/bin".into(),
            },
        });
        assert_eq!(missing.kind(), FailureKind::Permanent);
    }

    #[test]
    fn a_runtime_timeout_is_transient_and_its_refusal_permanent() {
        let timeout = HostStepError::Create(InstanceError::ShimTimeout {
            id: "web-1".into(),
            timeout: std::time::Duration::from_secs(60),
        });
        assert_eq!(timeout.kind(), FailureKind::Transient);
        let refused = InstanceError::Create {
            id: "web-1".into(),
            runtime: PathBuf::from("/usr/bin/runc"),
            stderr: "invalid mount destination".into(),
        };
        assert_eq!(
            HostStepError::Create(refused).kind(),
            FailureKind::Permanent
        );
    }

    #[test]
    fn a_create_and_attach_that_both_failed_is_transient_only_when_both_are() {
        let both = |create: HostStepError, attach: HostStepError| HostStepError::CreateAndAttach {
            create: Box::new(create),
            attach: Box::new(attach),
        };
        let missing = || HostStepError::NoRecord("web".into());
        assert_eq!(
            both(volume_full(), volume_full()).kind(),
            FailureKind::Transient
        );
        assert_eq!(
            both(volume_full(), missing()).kind(),
            FailureKind::Permanent
        );
        let text = error_chain(&both(missing(), volume_full()));
        assert!(
            text.starts_with("container `web` has no record; volume: "),
            "{text}"
        );
    }
}
