//! What a node trusts for image signatures: its keys (`policy.trusted_keys`) and, with a
//! Sigstore trusted root (`policy.trusted_root`), the identities whose keyless
//! signatures it accepts (`policy.trusted_identities`). The root also checks the log
//! entries and timestamps that keyed bundles carry.

use std::path::{Path, PathBuf};

use berth_spec::node::{PolicySection, TrustedIdentity};

use super::keyless::{IdentityMatcher, KeylessError, RootError, TrustedRoot};
use super::{SignatureError, TrustedKey};

/// Why the node's trust could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Key(#[from] SignatureError),
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("`policy.trusted_identities[{index}]` cannot be used")]
    Identity {
        index: usize,
        #[source]
        source: KeylessError,
    },
    #[error(
        "trusted identities are set but no trusted root (`policy.trusted_root`): keyless signatures cannot be verified without one"
    )]
    IdentitiesWithoutRoot,
}

/// The keys, trusted root and identities signatures are verified against.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub keys: Vec<TrustedKey>,
    /// Enables keyless verification (with `identities`) and checks log entries and
    /// timestamps of keyed bundles.
    pub root: Option<TrustedRoot>,
    pub identities: Vec<IdentityMatcher>,
}

impl Trust {
    /// Keys only: keyless signatures are refused, log entries not checked.
    #[cfg(test)]
    pub fn keys(keys: Vec<TrustedKey>) -> Trust {
        Trust {
            keys,
            ..Trust::default()
        }
    }

    /// The node's trust as configured in `[policy]`.
    pub fn from_policy(policy: &PolicySection) -> Result<Trust, TrustError> {
        Trust::load(
            &policy.trusted_keys,
            policy.trusted_root.as_deref(),
            &policy.trusted_identities,
        )
    }

    /// Loads the key files, the trusted root and the identities.
    pub fn load(
        keys: &[PathBuf],
        root: Option<&Path>,
        identities: &[TrustedIdentity],
    ) -> Result<Trust, TrustError> {
        let identities = identities
            .iter()
            .enumerate()
            .map(|(index, id)| {
                IdentityMatcher::from_config(id)
                    .map_err(|source| TrustError::Identity { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Trust::with(keys, root, identities)
    }

    /// Loads the key files and the trusted root; `identities` are ready.
    pub fn with(
        keys: &[PathBuf],
        root: Option<&Path>,
        identities: Vec<IdentityMatcher>,
    ) -> Result<Trust, TrustError> {
        if root.is_none() && !identities.is_empty() {
            return Err(TrustError::IdentitiesWithoutRoot);
        }
        Ok(Trust {
            keys: keys
                .iter()
                .map(|p| TrustedKey::load(p))
                .collect::<Result<_, _>>()?,
            root: root.map(TrustedRoot::load).transpose()?,
            identities,
        })
    }

    /// Nothing could verify a signature: no key, and no keyless trust.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.keyless()
    }

    /// Keyless signatures can verify: a root and at least one identity.
    pub fn keyless(&self) -> bool {
        self.root.is_some() && !self.identities.is_empty()
    }

    /// What a failure names as tried: `keys tried: a.pub, b.pub` and, with keyless
    /// trust, `identities expected: issuer=subject, …`.
    pub fn tried(&self) -> String {
        let mut parts = Vec::new();
        if !self.keys.is_empty() || !self.keyless() {
            parts.push(format!(
                "keys tried: {}",
                self.keys
                    .iter()
                    .map(TrustedKey::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.keyless() {
            parts.push(format!(
                "identities expected: {}",
                self.identities
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        parts.join("; ")
    }
}
