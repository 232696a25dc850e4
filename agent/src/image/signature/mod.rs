//! Image signatures in cosign's legacy keyed layout (security.md §3.1, §3.4): verifying
//! them against the node's trusted keys (`policy.trusted_keys`, DESIGN.md §4), making
//! them (`berth sign`), and the key files (`berth key generate`).
//!
//! Contract:
//! - A signature is base64 (standard, padded) of a DER ECDSA P-256 signature over
//!   SHA-256 of the simple-signing payload bytes, stored as the annotation
//!   `dev.cosignproject.cosign/signature` on a layer of media type
//!   `application/vnd.dev.cosign.simplesigning.v1+json` whose blob is the payload. The
//!   manifest holding those layers is tagged `sha256-<hex>.sig` next to the image.
//! - [`verify`] checks the signature over the payload bytes as fetched (never
//!   re-serialized), then `critical.type`, then that `critical.image.docker-manifest-digest`
//!   equals the digest berth is about to run. The tag is never trusted.
//! - [`verify_signature_manifest`] re-hashes every payload blob against its descriptor,
//!   tries every layer with every trusted key, and either lists the pairs that verified
//!   or fails naming the digest, every key and why each failed. No transparency log is
//!   consulted (the equivalent of cosign's `--insecure-ignore-tlog`): edge nodes verify
//!   offline against keys their owner installed.
//! - Keys: public keys are PKIX PEM (`-----BEGIN PUBLIC KEY-----`), as cosign writes
//!   `cosign.pub`; private keys are unencrypted PKCS#8 PEM. cosign's encrypted private
//!   key format is refused with instructions. Only ECDSA P-256 is supported.
//! - Keyless (Sigstore) bundles are verified offline against a trusted root and the
//!   node's trusted identities ([`keyless`]); [`Trust`] is what every check takes
//!   (keys, root, identities).
//! - Signing returns data ([`SignatureArtifact`]: blobs, manifest, tag); the registry
//!   client pushes it.
//!
//! Everything here is pure except reading and writing key files ([`TrustedKey::load`],
//! [`SigningKey::load`], [`write_key_pair`]) and [`exchange`], which moves signatures
//! between the registry and the content store (`berth sign`, `berth image verify`);
//! blobs come through [`BlobSource`].

mod bundle;
mod error;
pub mod exchange;
pub mod keyless;
mod keys;
mod manifest;
mod payload;
pub mod referrers;
mod sign;
mod trust;
mod verify;
mod voucher;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod bundle_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod interop_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

pub use bundle::{
    BUNDLE_MEDIA_TYPE, BundleError, BundleVerified, COSIGN_SIGN_PREDICATE, MAX_BUNDLE_SIZE,
    read_bundle_file, sign_bundle, verify_bundle,
};
pub use error::{BoxError, Rejection, SignatureError};
pub use keys::{SigningKey, TrustedKey, write_key_pair};
pub use manifest::{ImageManifest, signature_tag};
pub use payload::{SimpleSigningPayload, build_payload};
pub use sign::sign_image;
pub use trust::{Trust, TrustError};
pub use verify::{VerifiedManifest, verify_signature_manifest};
pub use voucher::Voucher;
#[cfg(test)]
use {
    manifest::{
        OCI_CONFIG_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, SIGNATURE_ANNOTATION,
        SIMPLE_SIGNING_MEDIA_TYPE,
    },
    sign::{SignatureArtifact, build_signature_artifact},
    verify::verify,
};

use sha2::{Digest, Sha256};

/// `sha256:<lowercase hex>` of `bytes`.
fn sha256_digest(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash.iter() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Requires `sha256:<64 lowercase hex>`, the only digest form berth pins and re-hashes.
fn validate_digest(digest: &str) -> Result<(), SignatureError> {
    berth_spec::reference::validate_digest(digest).map_err(|_| SignatureError::InvalidDigest {
        digest: digest.to_string(),
    })
}
