//! Registry errors. Each names the registry, the repository and the tag or digest
//! involved, and says whether retrying later could help ([`RegistryError::is_transient`]).

use std::time::Duration;

use crate::image::auth::AuthError;
use crate::image::digest::Digest;
use crate::image::manifest::ManifestError;

/// What a request was about: the names an error message needs. Boxed, so errors
/// that carry it stay small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(Box<TargetNames>);

/// The fields of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetNames {
    pub registry: String,
    pub repository: String,
    /// A tag or a digest.
    pub reference: String,
}

impl Target {
    pub fn new(registry: &str, repository: &str, reference: &str) -> Target {
        Target(Box::new(TargetNames {
            registry: registry.to_string(),
            repository: repository.to_string(),
            reference: reference.to_string(),
        }))
    }
}

impl std::ops::Deref for Target {
    type Target = TargetNames;
    fn deref(&self) -> &TargetNames {
        &self.0
    }
}

/// A failed registry operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {} at {url} for repository {}, reference {}", .target.registry, .target.repository, .target.reference)]
    Connect {
        target: Target,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("connection to registry {} broke while reading {} in repository {}", .target.registry, .target.reference, .target.repository)]
    Body {
        target: Target,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry {host}: no response headers within {} (repository {}, {})", humantime::format_duration(*.after), .target.repository, .target.reference)]
    NoHeaders {
        target: Target,
        /// The host actually spoken to (the registry, or its mirror).
        host: String,
        after: Duration,
    },
    #[error("{what} {} from registry {host}: less than 1 KiB in {} (repository {})", .target.reference, humantime::format_duration(*.after), .target.repository)]
    Stalled {
        target: Target,
        host: String,
        what: &'static str,
        after: Duration,
    },
    #[error("{what} {} from registry {host}: not received whole within {} (repository {})", .target.reference, humantime::format_duration(*.after), .target.repository)]
    TooSlow {
        target: Target,
        host: String,
        what: &'static str,
        after: Duration,
    },
    #[error("registry {} requires authentication for repository {} ({}) and no credentials are configured for it: add them to a docker config.json ($DOCKER_CONFIG, ~/.docker, or the registry's auth_file)", .target.registry, .target.repository, .target.reference)]
    NoCredentials { target: Target },
    #[error("registry {} rejected the credentials for repository {} ({}): 401 unauthorized{detail}", .target.registry, .target.repository, .target.reference)]
    Unauthorized { target: Target, detail: String },
    #[error("registry {} denied access to repository {} ({}): 403 forbidden{detail}", .target.registry, .target.repository, .target.reference)]
    Forbidden { target: Target, detail: String },
    #[error("{} not found in repository {} on registry {} (404){detail}", .target.reference, .target.repository, .target.registry)]
    NotFound { target: Target, detail: String },
    #[error("registry {} answered {status} for {} in repository {}{detail}", .target.registry, .target.reference, .target.repository)]
    Status {
        target: Target,
        status: u16,
        detail: String,
    },
    #[error("{} in repository {} on registry {}", .target.reference, .target.repository, .target.registry)]
    Manifest {
        target: Target,
        #[source]
        source: ManifestError,
    },
    #[error("registry {} served content for {expected} in repository {} whose digest is {actual}: rejected", .target.registry, .target.repository)]
    DigestMismatch {
        target: Target,
        expected: Digest,
        actual: Digest,
    },
    #[error("token server {realm} for registry {}: {detail}", .target.registry)]
    Token {
        target: Target,
        realm: String,
        detail: String,
        transient: bool,
    },
    #[error(
        "refusing plain http to {url} for registry {registry}: only loopback registries and registries marked `insecure` may use http"
    )]
    Insecure { registry: String, url: String },
    #[error("registry {registry}: {detail}")]
    Protocol { registry: String, detail: String },
    #[error("invalid settings for registry {registry}: {detail}")]
    Settings { registry: String, detail: String },
    #[error("cannot set up the http client")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl RegistryError {
    /// True when retrying later may succeed (network trouble, 5xx, 429); false when
    /// the request itself is wrong (404, 401, a digest mismatch, bad settings).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Connect { .. } | RegistryError::Body { .. } => true,
            RegistryError::NoHeaders { .. }
            | RegistryError::Stalled { .. }
            | RegistryError::TooSlow { .. } => true,
            RegistryError::Status { status, .. } => super::retry::is_transient_status(*status),
            RegistryError::Token { transient, .. } => *transient,
            _ => false,
        }
    }

    /// True when the registry did not answer in time (`runtime.pull_*_timeout`):
    /// transient, but not retried within the request (the pass moves on).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            RegistryError::NoHeaders { .. }
                | RegistryError::Stalled { .. }
                | RegistryError::TooSlow { .. }
        )
    }

    /// True for a 404: the tag, manifest or blob does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// True when content did not match its digest: an integrity failure, never retried.
    pub fn is_integrity(&self) -> bool {
        matches!(self, RegistryError::DigestMismatch { .. })
    }
}
