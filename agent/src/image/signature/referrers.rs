//! Sigstore bundles as OCI 1.1 referrers, the layout cosign 3 writes by default
//! (security.md §3.2; the fixtures README, `cosign-bundle/`).
//!
//! A bundle is stored as an image manifest with `artifactType` [`BUNDLE_MEDIA_TYPE`],
//! the empty config `{}`, one layer holding the bundle JSON, and a `subject` naming
//! the signed manifest. It is found through the registry's referrers API, or (for
//! registries without it) through the image index tagged `sha256-<hex>`, which lists
//! the referrers (see [`crate::image::registry::referrers`]).
//!
//! Pure: [`check_referrer`] judges a referrer manifest berth fetched;
//! [`build_referrer`] makes the manifest `berth sign` pushes; [`merge_index`] adds it
//! to the tag's index without dropping the referrers already listed there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BUNDLE_MEDIA_TYPE, COSIGN_SIGN_PREDICATE, MAX_BUNDLE_SIZE};
use crate::image::digest::Digest;
use crate::image::manifest::{Descriptor, OCI_INDEX, OCI_MANIFEST};

/// Media type of the empty descriptor (OCI image-spec 1.1, "Guidance for an Empty
/// Descriptor"): the config of artifacts that have none.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config's content, `{}`.
pub const EMPTY_JSON: &[u8] = b"{}";
/// Annotation cosign sets on a bundle referrer: what the bundle holds.
pub const CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
/// Annotation cosign sets on a bundle referrer: the in-toto predicate type signed.
pub const PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// The OCI annotation for when the referrer was made (RFC 3339).
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
/// Most bundle referrers followed for one digest: every signer adds one; real images
/// carry a handful. A hostile registry listing thousands cannot make a pull fetch them.
pub const MAX_BUNDLE_REFERRERS: usize = 16;
/// The largest referrer manifest read (cosign's are about 1 KiB): skipped ones are
/// stored before they are judged, so their size bounds what a hostile registry leaves.
pub const MAX_REFERRER_BYTES: u64 = 64 << 10;

/// Why a referrer manifest or referrers index was refused, or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReferrersError {
    #[error("referrer manifest {manifest} is not valid JSON of an OCI image manifest")]
    Json {
        manifest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("referrer manifest {manifest} is not a sigstore bundle referrer: {why}")]
    NotABundle { manifest: String, why: Shape },
    #[error("referrer manifest {manifest} refers to {found}, not to {expected}")]
    Subject {
        manifest: String,
        expected: String,
        found: String,
    },
    #[error("the referrers index tag {tag} is not an OCI image index: {why}")]
    Index { tag: String, why: Shape },
    #[error("the referrers index tag {tag} is not valid JSON")]
    IndexJson {
        tag: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode {what} as JSON")]
    EncodeJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// What is wrong with the shape of a referrer manifest or index.
#[derive(Debug, thiserror::Error)]
pub enum Shape {
    #[error("schemaVersion is {0}, not 2")]
    SchemaVersion(String),
    #[error("its media type is `{found}`, not `{expected}`")]
    MediaType {
        found: String,
        expected: &'static str,
    },
    #[error("its artifact type is `{0}`, not `{BUNDLE_MEDIA_TYPE}`")]
    ArtifactType(String),
    #[error("it has {0} layers, not the one bundle layer")]
    Layers(usize),
    #[error("its layer has media type `{0}`, not `{BUNDLE_MEDIA_TYPE}`")]
    LayerType(String),
    #[error("its bundle layer declares {0} bytes, more than the {MAX_BUNDLE_SIZE} berth reads")]
    TooLarge(u64),
    #[error("it has no `manifests` list")]
    NoManifests,
}

/// A referrer manifest, as far as berth reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerManifest {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

/// Checks that `bytes` (the referrer manifest `manifest`, fetched by digest) is a
/// bundle referrer of `subject`: an OCI image manifest whose artifact type (its
/// `artifactType`, or for older writers its config's media type) is the bundle's, whose
/// `subject` is `subject`, with one layer of the bundle's media type and at most
/// [`MAX_BUNDLE_SIZE`] bytes. Returns that layer.
pub fn check_referrer(
    bytes: &[u8],
    manifest: &Digest,
    subject: &Digest,
) -> Result<Descriptor, ReferrersError> {
    let name = || manifest.as_str().to_string();
    let m: ReferrerManifest =
        serde_json::from_slice(bytes).map_err(|source| ReferrersError::Json {
            manifest: name(),
            source,
        })?;
    let shape = |why| ReferrersError::NotABundle {
        manifest: name(),
        why,
    };
    if m.schema_version != 2 {
        return Err(shape(Shape::SchemaVersion(m.schema_version.to_string())));
    }
    if let Some(t) = m.media_type.as_deref().filter(|t| *t != OCI_MANIFEST) {
        return Err(shape(Shape::MediaType {
            found: t.to_string(),
            expected: OCI_MANIFEST,
        }));
    }
    let artifact_type = m
        .artifact_type
        .as_deref()
        .unwrap_or(m.config.media_type.as_str());
    if artifact_type != BUNDLE_MEDIA_TYPE {
        return Err(shape(Shape::ArtifactType(artifact_type.to_string())));
    }
    match &m.subject {
        Some(s) if s.digest == *subject => {}
        other => {
            return Err(ReferrersError::Subject {
                manifest: name(),
                expected: subject.as_str().to_string(),
                found: other
                    .as_ref()
                    .map_or("no subject".to_string(), |s| s.digest.as_str().to_string()),
            });
        }
    }
    let [layer] = m.layers.as_slice() else {
        return Err(shape(Shape::Layers(m.layers.len())));
    };
    if layer.media_type != BUNDLE_MEDIA_TYPE {
        return Err(shape(Shape::LayerType(layer.media_type.clone())));
    }
    if layer.size > MAX_BUNDLE_SIZE as u64 {
        return Err(shape(Shape::TooLarge(layer.size)));
    }
    Ok(layer.clone())
}

/// What `berth sign` pushes for one bundle: the bundle blob, the empty config, then
/// the referrer manifest (by its digest), and — for registries without the referrers
/// API — [`Self::entry`] added to the `sha256-<hex>` index ([`merge_index`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerArtifact {
    /// The bundle JSON (the layer blob).
    pub bundle: Vec<u8>,
    /// The referrer manifest (`application/vnd.oci.image.manifest.v1+json`).
    pub manifest: Vec<u8>,
    /// `sha256:` of [`Self::manifest`].
    pub digest: Digest,
    /// The manifest's descriptor as a referrers index lists it: media type, digest,
    /// size, `artifactType` and the manifest's annotations.
    pub entry: Descriptor,
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        platform: None,
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

/// Builds the referrer manifest of `bundle` for the manifest `subject` (its media
/// type, digest and size), made at `created` (RFC 3339), with the annotations cosign
/// writes.
pub fn build_referrer(
    bundle: Vec<u8>,
    subject: &Descriptor,
    created: &str,
) -> Result<ReferrerArtifact, ReferrersError> {
    let annotations: BTreeMap<String, String> = [
        (CONTENT_ANNOTATION, "dsse-envelope"),
        (PREDICATE_ANNOTATION, COSIGN_SIGN_PREDICATE),
        (CREATED_ANNOTATION, created),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let manifest = ReferrerManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        artifact_type: Some(BUNDLE_MEDIA_TYPE.to_string()),
        config: descriptor(EMPTY_MEDIA_TYPE, EMPTY_JSON),
        layers: vec![descriptor(BUNDLE_MEDIA_TYPE, &bundle)],
        subject: Some(Descriptor {
            media_type: subject.media_type.clone(),
            digest: subject.digest.clone(),
            size: subject.size,
            platform: None,
            urls: None,
            annotations: None,
            artifact_type: None,
        }),
        annotations: Some(annotations.clone()),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|source| ReferrersError::EncodeJson {
        what: "the referrer manifest",
        source,
    })?;
    let mut entry = descriptor(OCI_MANIFEST, &bytes);
    entry.artifact_type = Some(BUNDLE_MEDIA_TYPE.to_string());
    entry.annotations = Some(annotations);
    Ok(ReferrerArtifact {
        bundle,
        digest: entry.digest.clone(),
        manifest: bytes,
        entry,
    })
}

/// The referrers index to push under `tag` (`sha256-<hex>`): `existing` (the index
/// there now, if any) with `entry` added. Nothing already listed is dropped or changed
/// (fields berth does not know included); an entry of the same digest is not added
/// twice. Refuses to overwrite anything that is not an OCI image index.
pub fn merge_index(
    tag: &str,
    existing: Option<&[u8]>,
    entry: &Descriptor,
) -> Result<Vec<u8>, ReferrersError> {
    use serde_json::Value;
    let bad = |why| ReferrersError::Index {
        tag: tag.to_string(),
        why,
    };
    let mut index = match existing {
        None => serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
        Some(bytes) => {
            serde_json::from_slice::<Value>(bytes).map_err(|source| ReferrersError::IndexJson {
                tag: tag.to_string(),
                source,
            })?
        }
    };
    match &index["schemaVersion"] {
        Value::Number(n) if n.as_u64() == Some(2) => {}
        other => return Err(bad(Shape::SchemaVersion(other.to_string()))),
    }
    match &index["mediaType"] {
        Value::Null => {}
        Value::String(t) if t == OCI_INDEX => {}
        other => {
            return Err(bad(Shape::MediaType {
                found: other.as_str().unwrap_or_default().to_string(),
                expected: OCI_INDEX,
            }));
        }
    }
    let Some(manifests) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
        return Err(bad(Shape::NoManifests));
    };
    let digest = entry.digest.as_str();
    if let (Some(bytes), true) = (existing, manifests.iter().any(|m| m["digest"] == digest)) {
        return Ok(bytes.to_vec());
    }
    let value = serde_json::to_value(entry).map_err(|source| ReferrersError::EncodeJson {
        what: "the referrers index entry",
        source,
    })?;
    manifests.push(value);
    serde_json::to_vec(&index).map_err(|source| ReferrersError::EncodeJson {
        what: "the referrers index",
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "referrers_tests.rs"]
mod tests;
