//! The one error type of the signature module.
//!
//! Messages are lowercase and name what they are about: the key file, the digest, the
//! signature layer. Causes from other crates stay in the `#[source]` chain; the CLI
//! prints the chain.

use std::fmt;
use std::path::PathBuf;

/// A boxed error from a caller-supplied blob source (registry client, content store).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a key could not be loaded, a signature not made, or not verified.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("cannot read key file {path}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {key} holds no PEM block (expected `-----BEGIN {expected}-----`)")]
    NotPem { key: String, expected: &'static str },
    #[error(
        "key file {key} holds a `{label}` PEM block, not a public key (expected `-----BEGIN PUBLIC KEY-----`)"
    )]
    NotAPublicKey { key: String, label: String },
    #[error("key file {key} is not an ECDSA P-256 public key in PKIX form")]
    InvalidPublicKey {
        key: String,
        #[source]
        source: BoxError,
    },
    #[error(
        "key file {key} is a cosign encrypted private key (`{label}`), which berth does not read: \
         create a key pair with `berth key generate` (and, to sign with cosign too, import its \
         PREFIX.key with `cosign import-key-pair --key PREFIX.key`)"
    )]
    EncryptedCosignKey { key: String, label: String },
    #[error(
        "key file {key} holds a `{label}` PEM block, not a private key (expected `-----BEGIN PRIVATE KEY-----`)"
    )]
    NotAPrivateKey { key: String, label: String },
    #[error("key file {key} is not an ECDSA P-256 private key")]
    InvalidPrivateKey {
        key: String,
        #[source]
        source: BoxError,
    },
    #[error("cannot encode the key for {key}")]
    EncodeKey {
        key: String,
        #[source]
        source: BoxError,
    },
    #[error("cannot generate a key: the system random number generator failed")]
    Random(#[source] BoxError),
    #[error("{path} already exists; pass --force to overwrite it")]
    KeyExists { path: PathBuf },
    #[error("cannot write {path}")]
    WriteKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid digest `{digest}`: expected `sha256:` followed by 64 lowercase hex digits")]
    InvalidDigest { digest: String },
    #[error("the simple-signing payload is not valid JSON of the expected shape")]
    PayloadJson(#[source] serde_json::Error),
    #[error(
        "the simple-signing payload has type `{found}`, not `cosign container image signature`"
    )]
    PayloadType { found: String },
    #[error("the signature is not valid base64")]
    SignatureBase64(#[source] base64::DecodeError),
    #[error("the signature is not a DER-encoded ECDSA P-256 signature")]
    SignatureDer(#[source] p256::ecdsa::Error),
    #[error("the signature does not verify with key {key}")]
    BadSignature { key: String },
    #[error("the signature with key {key} is valid but signs {found}, not {expected}")]
    DigestMismatch {
        key: String,
        expected: String,
        found: String,
    },
    #[error("cannot sign with key {key}")]
    Sign {
        key: String,
        #[source]
        source: p256::ecdsa::Error,
    },
    #[error("the signature manifest is not a valid OCI image manifest")]
    ManifestJson(#[source] serde_json::Error),
    #[error("cannot encode {what} as JSON")]
    EncodeJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the signature manifest has {count} layers, more than the {max} berth reads")]
    TooManyLayers { count: usize, max: usize },
    #[error("signature layer {layer} has no `dev.cosignproject.cosign/signature` annotation")]
    MissingAnnotation { layer: String },
    #[error("signature layer {layer} declares {size} bytes, more than the {max} berth fetches")]
    LayerTooLarge { layer: String, size: u64, max: u64 },
    #[error("cannot fetch signature layer {layer}")]
    FetchBlob {
        layer: String,
        #[source]
        source: BoxError,
    },
    #[error("signature layer {layer} does not match its descriptor: got {actual} ({size} bytes)")]
    BlobMismatch {
        layer: String,
        actual: String,
        size: usize,
    },
    #[error("no trusted keys are configured to verify signatures of {digest}")]
    NoTrustedKeys { digest: String },
    #[error(
        "the `.sig` signature of {digest} is keyless (its layer carries a `dev.sigstore.cosign/certificate`): berth verifies keyless signatures only in Sigstore bundles; sign with cosign 3 (bundles, `--new-bundle-format` on cosign 2)"
    )]
    LegacyKeyless { digest: String },
    #[error("the signature manifest of {digest} has no cosign simple-signing layers")]
    NoSignatures { digest: String },
    #[error("{}", not_verified(digest, keys, rejections))]
    NotVerified {
        digest: String,
        keys: Vec<String>,
        rejections: Vec<Rejection>,
    },
}

impl SignatureError {
    /// True when retrying may help (a blob could not be fetched); false when the input
    /// itself is wrong and only a change to it (key, signature, image) will help.
    pub fn is_transient(&self) -> bool {
        match self {
            SignatureError::FetchBlob { .. } => true,
            SignatureError::NotVerified { rejections, .. } => {
                rejections.iter().any(|r| r.error.is_transient())
            }
            _ => false,
        }
    }
}

/// One signature layer (and, once its blob was read, one key) that did not verify.
#[derive(Debug)]
pub struct Rejection {
    /// Digest of the simple-signing layer.
    pub layer: String,
    /// The trusted key tried; `None` when the layer failed before any key was tried.
    pub key: Option<String>,
    /// Why it failed.
    pub error: SignatureError,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer {}", self.layer)?;
        if let Some(key) = &self.key {
            write!(f, " with key {key}")?;
        }
        write!(f, ": {}", crate::util::error_chain(&self.error))
    }
}

fn not_verified(digest: &str, keys: &[String], rejections: &[Rejection]) -> String {
    let mut msg = format!(
        "no signature of {digest} verifies with the trusted keys ({})",
        keys.join(", ")
    );
    for r in rejections {
        msg.push_str("; ");
        msg.push_str(&r.to_string());
    }
    msg
}
