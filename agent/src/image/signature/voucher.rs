//! What vouched for an image: the trusted key whose signature verified, or the
//! certificate identity of a keyless signature. Kept in the trust-chain record of every
//! running container and shown by `berth status`, `inspect` and `audit --live`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One signer of an image whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Voucher {
    /// A key of `policy.trusted_keys`.
    Key {
        /// The key's name (its file path, as configured).
        name: String,
        /// `sha256:<hex>` of the key's SubjectPublicKeyInfo.
        fingerprint: String,
    },
    /// A keyless (Sigstore) signature whose certificate names a trusted identity
    /// (`policy.trusted_identities`).
    Identity {
        /// The OIDC issuer the certificate names.
        issuer: String,
        /// The certificate's subject (SAN): an e-mail address or a workflow URI.
        subject: String,
        /// The transparency-log index of the signature's entry, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_index: Option<u64>,
    },
}

impl Voucher {
    /// The key of a legacy (`.sig`) signature that verified.
    pub fn of_legacy(v: &super::verify::Verified) -> Self {
        Voucher::Key {
            name: v.key.clone(),
            fingerprint: v.key_fingerprint.clone(),
        }
    }

    /// How reports name it: the key's name, or `issuer=subject`.
    pub fn name(&self) -> String {
        match self {
            Voucher::Key { name, .. } => name.clone(),
            Voucher::Identity {
                issuer, subject, ..
            } => format!("{issuer}={subject}"),
        }
    }
}

impl fmt::Display for Voucher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Voucher::Key { name, fingerprint } => write!(f, "key {name} ({fingerprint})"),
            Voucher::Identity {
                issuer,
                subject,
                log_index,
            } => {
                write!(f, "identity {subject} (issuer {issuer}")?;
                if let Some(i) = log_index {
                    write!(f, ", log index {i}")?;
                }
                write!(f, ")")
            }
        }
    }
}
