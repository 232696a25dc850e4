//! Verification of legacy keyed cosign signatures (security.md §3.1, §3.4). A keyless
//! legacy signature (cosign 2 `.sig` with a `dev.sigstore.cosign/certificate`) is not
//! verified: it is named as such ([`SignatureError::LegacyKeyless`]); keyless
//! signatures are read only from Sigstore bundles.
//!
//! Order per signature: base64-decode the annotation, parse DER, check ECDSA P-256 over
//! SHA-256 of the payload bytes as fetched; only then parse the (now authenticated)
//! payload, check its type, and require its digest claim to equal the digest berth is
//! about to run. `docker-reference` is reported, not checked, as cosign does.

use base64::Engine;
use p256::ecdsa::DerSignature;
use p256::ecdsa::signature::Verifier;

use super::manifest::{Descriptor, ImageManifest, MAX_PAYLOAD_SIZE, SIGNATURE_ANNOTATION};
use super::{
    BoxError, Rejection, SignatureError, SimpleSigningPayload, TrustedKey, sha256_digest,
    validate_digest,
};

/// A signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The trusted key's name (its file path).
    pub key: String,
    /// `sha256:<hex>` of the key's SubjectPublicKeyInfo.
    pub key_fingerprint: String,
    /// The digest the payload signs (equal to the expected digest).
    pub manifest_digest: String,
    /// `critical.identity.docker-reference` of the payload.
    pub docker_reference: String,
    /// The simple-signing layer it came from, when verified from a manifest.
    pub layer: Option<String>,
}

/// Verifies one signature: `signature_b64` (the layer annotation) over `payload` (the
/// layer blob, exactly as fetched) with `key`, then requires the payload to claim
/// `expected_digest`.
pub fn verify(
    payload: &[u8],
    signature_b64: &str,
    key: &TrustedKey,
    expected_digest: &str,
) -> Result<Verified, SignatureError> {
    validate_digest(expected_digest)?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(SignatureError::SignatureBase64)?;
    let signature = DerSignature::try_from(der.as_slice()).map_err(SignatureError::SignatureDer)?;
    key.verifying_key()
        .verify(payload, &signature)
        .map_err(|_| SignatureError::BadSignature {
            key: key.name().to_string(),
        })?;
    let claims = SimpleSigningPayload::parse(payload)?;
    if claims.manifest_digest() != expected_digest {
        return Err(SignatureError::DigestMismatch {
            key: key.name().to_string(),
            expected: expected_digest.to_string(),
            found: claims.manifest_digest().to_string(),
        });
    }
    Ok(Verified {
        key: key.name().to_string(),
        key_fingerprint: key.fingerprint().to_string(),
        manifest_digest: claims.manifest_digest().to_string(),
        docker_reference: claims.docker_reference().to_string(),
        layer: None,
    })
}

/// Where layer blobs come from: the registry client, the content store, or (in tests)
/// a map. Implemented for any `Fn(&str) -> Result<Vec<u8>, BoxError>`; an async client
/// fetches the digests of [`ImageManifest::signature_layers`] first and passes a lookup.
pub trait BlobSource {
    /// The bytes of the blob `digest`. The verifier re-hashes them.
    fn fetch_blob(&self, digest: &str) -> Result<Vec<u8>, BoxError>;
}

impl<F> BlobSource for F
where
    F: Fn(&str) -> Result<Vec<u8>, BoxError>,
{
    fn fetch_blob(&self, digest: &str) -> Result<Vec<u8>, BoxError> {
        self(digest)
    }
}

/// The outcome of a signature manifest that verified: every (layer, key) pair that
/// verified (and, for the tests, every one that did not).
#[derive(Debug)]
pub struct VerifiedManifest {
    pub verified: Vec<Verified>,
    #[cfg(test)]
    pub rejected: Vec<Rejection>,
}

#[cfg(test)]
impl VerifiedManifest {
    /// The distinct trusted keys with at least one valid signature.
    pub fn keys(&self) -> std::collections::BTreeSet<&str> {
        self.verified.iter().map(|v| v.key.as_str()).collect()
    }
}

/// Verifies the signature manifest (`sha256-<hex>.sig`) of `expected_digest`: every
/// simple-signing layer is fetched from `blobs`, re-hashed against its descriptor, and
/// tried with every trusted key. Succeeds when at least one pair verifies; otherwise
/// the error names the digest, every key tried, and why each layer and key failed.
pub fn verify_signature_manifest(
    manifest: &[u8],
    expected_digest: &str,
    keys: &[TrustedKey],
    blobs: &dyn BlobSource,
) -> Result<VerifiedManifest, SignatureError> {
    validate_digest(expected_digest)?;
    let keyless = |m: &ImageManifest| m.signature_layers().any(is_keyless);
    if keys.is_empty() {
        let digest = expected_digest.to_string();
        return Err(match ImageManifest::parse(manifest) {
            Ok(m) if keyless(&m) => SignatureError::LegacyKeyless { digest },
            _ => SignatureError::NoTrustedKeys { digest },
        });
    }
    let manifest = ImageManifest::parse(manifest)?;
    let mut verified = Vec::new();
    let mut rejected = Vec::new();
    let mut layers = 0;
    for layer in manifest.signature_layers() {
        layers += 1;
        let reject = |error| Rejection {
            layer: layer.digest.clone(),
            key: None,
            error,
        };
        let (payload, signature) = match fetch_layer(layer, blobs) {
            Ok(fetched) => fetched,
            Err(e) => {
                rejected.push(reject(e));
                continue;
            }
        };
        for key in keys {
            match verify(&payload, signature, key, expected_digest) {
                Ok(v) => verified.push(Verified {
                    layer: Some(layer.digest.clone()),
                    ..v
                }),
                Err(error) => rejected.push(Rejection {
                    layer: layer.digest.clone(),
                    key: Some(key.name().to_string()),
                    error,
                }),
            }
        }
    }
    if layers == 0 {
        return Err(SignatureError::NoSignatures {
            digest: expected_digest.to_string(),
        });
    }
    if verified.is_empty() {
        // A keyless layer cannot verify with a key: say what it is.
        if let Some(layer) = manifest.signature_layers().find(|l| is_keyless(l)) {
            rejected.push(Rejection {
                layer: layer.digest.clone(),
                key: None,
                error: SignatureError::LegacyKeyless {
                    digest: expected_digest.to_string(),
                },
            });
        }
        return Err(SignatureError::NotVerified {
            digest: expected_digest.to_string(),
            keys: keys.iter().map(|k| k.name().to_string()).collect(),
            rejections: rejected,
        });
    }
    Ok(VerifiedManifest {
        verified,
        #[cfg(test)]
        rejected,
    })
}

/// The annotation with which cosign 2 stores a keyless `.sig` signature's certificate.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";

/// Whether a `.sig` layer is a keyless signature (it carries its certificate).
fn is_keyless(layer: &Descriptor) -> bool {
    layer.annotations.contains_key(CERTIFICATE_ANNOTATION)
}

/// Checks the descriptor, fetches the blob and checks it against the descriptor.
/// Returns the blob and the layer's signature annotation.
fn fetch_layer<'a>(
    layer: &'a Descriptor,
    blobs: &dyn BlobSource,
) -> Result<(Vec<u8>, &'a str), SignatureError> {
    let name = || layer.digest.clone();
    let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
        return Err(SignatureError::MissingAnnotation { layer: name() });
    };
    validate_digest(&layer.digest)?;
    if layer.size > MAX_PAYLOAD_SIZE {
        return Err(SignatureError::LayerTooLarge {
            layer: name(),
            size: layer.size,
            max: MAX_PAYLOAD_SIZE,
        });
    }
    let blob = blobs
        .fetch_blob(&layer.digest)
        .map_err(|source| SignatureError::FetchBlob {
            layer: name(),
            source,
        })?;
    let actual = sha256_digest(&blob);
    if actual != layer.digest || blob.len() as u64 != layer.size {
        return Err(SignatureError::BlobMismatch {
            layer: name(),
            actual,
            size: blob.len(),
        });
    }
    Ok((blob, signature))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod legacy_keyless_tests {
    use super::*;
    use crate::image::signature::SigningKey;

    /// A cosign 2 keyless `.sig` is named as one, with keys or without.
    #[test]
    fn a_keyless_legacy_signature_is_named() {
        let digest = format!("sha256:{}", "c".repeat(64));
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","size":0,"digest":"sha256:c"}},
               "layers":[{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":3,"digest":"{digest}",
               "annotations":{{"{SIGNATURE_ANNOTATION}":"MEU=","{CERTIFICATE_ANNOTATION}":"-----BEGIN CERTIFICATE-----"}}}}]}}"#
        );
        let none = |_: &str| -> Result<Vec<u8>, BoxError> { Err("unused".into()) };
        let err = verify_signature_manifest(manifest.as_bytes(), &digest, &[], &none).unwrap_err();
        assert!(matches!(err, SignatureError::LegacyKeyless { .. }), "{err}");
        assert!(err.to_string().contains("cosign 3"), "{err}");
        let key = SigningKey::generate("k").unwrap().public_key().unwrap();
        let err =
            verify_signature_manifest(manifest.as_bytes(), &digest, &[key], &none).unwrap_err();
        assert!(err.to_string().contains("is keyless"), "{err}");
    }
}
