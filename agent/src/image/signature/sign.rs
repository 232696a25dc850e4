//! Making cosign-compatible legacy signatures, returned as data: the blobs and the
//! manifest to push, and the tag to push the manifest under. The registry client does
//! the push (config and payload blobs first, then the manifest at [`SignatureArtifact::tag`]).

use base64::Engine;
use p256::ecdsa::DerSignature;
use p256::ecdsa::signature::Signer;

use super::manifest::{
    Descriptor, ImageManifest, MAX_SIGNATURE_LAYERS, OCI_CONFIG_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, signature_tag,
};
use super::{SignatureError, SigningKey, SimpleSigningPayload, build_payload, sha256_digest};

/// Signs `payload` (the exact bytes to store as the layer blob): base64 (standard,
/// padded) of the DER ECDSA P-256 signature over SHA-256(payload), the value of the
/// `dev.cosignproject.cosign/signature` annotation.
pub fn sign(payload: &[u8], key: &SigningKey) -> Result<String, SignatureError> {
    let signature: DerSignature =
        key.ecdsa()
            .try_sign(payload)
            .map_err(|source| SignatureError::Sign {
                key: key.name().to_string(),
                source,
            })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signature.as_bytes()))
}

/// A blob to push, with its media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: &'static str,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Blob {
            media_type,
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.to_string(),
            size: self.bytes.len() as u64,
            digest: self.digest.clone(),
            annotations: Default::default(),
            extra: Default::default(),
        }
    }
}

/// Everything needed to publish one signature in cosign's legacy layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureArtifact {
    /// `sha256-<hex>.sig`: the tag to push [`Self::manifest`] under, in the image's repository.
    pub tag: String,
    /// The image config blob (`application/vnd.oci.image.config.v1+json`).
    pub config: Blob,
    /// The simple-signing payload blob (the new layer).
    pub payload: Blob,
    /// The signature manifest (`application/vnd.oci.image.manifest.v1+json`).
    pub manifest: Blob,
    /// The base64 signature stored in the layer annotation.
    pub signature: String,
}

/// Signs the image `manifest_digest` of repository `docker_reference` (without tag or
/// digest) with `key`: builds the payload, signs it, and builds the artifact. Pass the
/// current signature manifest as `existing` (if the tag exists) to keep its signatures.
pub fn sign_image(
    docker_reference: &str,
    manifest_digest: &str,
    key: &SigningKey,
    existing: Option<&[u8]>,
) -> Result<SignatureArtifact, SignatureError> {
    let payload = build_payload(docker_reference, manifest_digest)?;
    let signature = sign(&payload, key)?;
    build_signature_artifact(payload, signature, existing)
}

/// Builds the artifact for an already signed `payload`. The tag follows the payload's
/// digest claim. With `existing`, its layers are kept (as cosign appends) and the new
/// layer is added unless the same payload with the same signature is already there.
pub fn build_signature_artifact(
    payload: Vec<u8>,
    signature: String,
    existing: Option<&[u8]>,
) -> Result<SignatureArtifact, SignatureError> {
    let claims = SimpleSigningPayload::parse(&payload)?;
    let tag = signature_tag(claims.manifest_digest())?;
    let payload = Blob::new(SIMPLE_SIGNING_MEDIA_TYPE, payload);
    let mut layer = payload.descriptor();
    layer
        .annotations
        .insert(SIGNATURE_ANNOTATION.to_string(), signature.clone());

    let mut layers = match existing {
        Some(bytes) => ImageManifest::parse(bytes)?.layers,
        None => Vec::new(),
    };
    let present = layers.iter().any(|l| {
        l.digest == layer.digest && l.annotations.get(SIGNATURE_ANNOTATION) == Some(&signature)
    });
    if !present {
        if layers.len() >= MAX_SIGNATURE_LAYERS {
            return Err(SignatureError::TooManyLayers {
                count: layers.len() + 1,
                max: MAX_SIGNATURE_LAYERS,
            });
        }
        layers.push(layer);
    }

    let config = Blob::new(OCI_CONFIG_MEDIA_TYPE, config_json(&layers)?);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_string()),
        config: config.descriptor(),
        layers,
        extra: Default::default(),
    };
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|source| SignatureError::EncodeJson {
            what: "the signature manifest",
            source,
        })?;
    Ok(SignatureArtifact {
        tag,
        config,
        payload,
        manifest: Blob::new(OCI_MANIFEST_MEDIA_TYPE, manifest_bytes),
        signature,
    })
}

/// The smallest valid OCI image config for the layers: what cosign (go-containerregistry)
/// writes, without its zero timestamps. Simple-signing layers are not compressed, so
/// each diff ID is the layer digest.
fn config_json(layers: &[Descriptor]) -> Result<Vec<u8>, SignatureError> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let config = serde_json::json!({
        "architecture": "",
        "config": {},
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    serde_json::to_vec(&config).map_err(|source| SignatureError::EncodeJson {
        what: "the signature image config",
        source,
    })
}
