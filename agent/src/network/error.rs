//! The network module's error type: one enum, each variant naming its network,
//! container or file.

use std::path::PathBuf;

use berth_spec::types::Cidr;

use super::cni::CniError;
use super::host::NetHostError;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid {what} `{name}`: use letters, digits, `-`, `_` and `.`")]
    InvalidName { what: &'static str, name: String },
    #[error("network `{0}` does not exist on this node")]
    NotFound(String),
    #[error("network `{network}`: subnet {subnet} overlaps network `{other}` ({other_subnet})")]
    Overlap {
        network: String,
        subnet: Cidr,
        other: String,
        other_subnet: Cidr,
    },
    #[error("network `{network}`: no free /{prefix} subnet left in {pool}")]
    PoolExhausted {
        network: String,
        prefix: u8,
        pool: Cidr,
    },
    #[error("network `{network}` is in use by {}; detach them first", instances.join(", "))]
    InUse {
        network: String,
        instances: Vec<String>,
    },
    #[error("container `{container}` (instance {instance}) joins no network")]
    NoNetworks { container: String, instance: String },
    #[error("container `{container}`: CNI gave no address on network `{network}`")]
    NoAddress { container: String, network: String },
    #[error("container `{container}`")]
    Cni {
        container: String,
        #[source]
        source: Box<CniError>,
    },
    #[error("container `{container}`")]
    Host {
        container: String,
        #[source]
        source: NetHostError,
    },
    #[error("network `{network}`")]
    Link {
        network: String,
        #[source]
        source: NetHostError,
    },
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid berth {what}: {reason}", path.display())]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

impl NetworkError {
    /// Whether trying again later may work: a CNI plugin that timed out or asked to
    /// be called again, a network still in use by instances on their way out, or a
    /// transient I/O failure (a full disk). Invalid names, overlaps and an exhausted
    /// pool stay until the spec or the node changes.
    pub fn is_transient(&self) -> bool {
        match self {
            NetworkError::Cni { source, .. } => source.is_transient(),
            NetworkError::InUse { .. } => true,
            NetworkError::Host { source, .. } | NetworkError::Link { source, .. } => {
                crate::runtime::state::chain_is_transient(source)
            }
            NetworkError::Io { source, .. } => crate::runtime::state::io_is_transient(source),
            NetworkError::InvalidName { .. }
            | NetworkError::NotFound(_)
            | NetworkError::Overlap { .. }
            | NetworkError::PoolExhausted { .. }
            | NetworkError::NoNetworks { .. }
            | NetworkError::NoAddress { .. }
            | NetworkError::Corrupt { .. } => false,
        }
    }

    pub(super) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| NetworkError::Io {
            action,
            path,
            source,
        }
    }
}
