//! The signature manifest of cosign's legacy layout: an OCI image manifest tagged
//! `sha256-<hex>.sig` next to the image, with one simple-signing layer per signature.
//!
//! Parsing keeps descriptor fields it does not know (other cosign annotations, `urls`,
//! …) so that appending a signature to an existing manifest loses nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{SignatureError, validate_digest};

/// Media type of an OCI image manifest; berth writes signature manifests with it.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a cosign simple-signing layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding base64(DER ECDSA signature over the layer blob).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Upper bound on the layers read from one signature manifest. Each layer is one
/// signature; real images carry a handful. The bound keeps a hostile registry from
/// making a verification fetch without end (cosign bounds layers the same way).
pub const MAX_SIGNATURE_LAYERS: usize = 1000;
/// Upper bound on a payload blob's declared size. cosign payloads are ~250 bytes, a few
/// KiB with `optional` annotations; anything near this bound is not a signature.
pub const MAX_PAYLOAD_SIZE: u64 = 1024 * 1024;

/// The tag cosign stores the signatures of `digest` under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> Result<String, SignatureError> {
    validate_digest(digest)?;
    Ok(format!("{}.sig", digest.replacen(':', "-", 1)))
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields berth does not interpret, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// An OCI (or Docker schema 2) image manifest, as far as signatures need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// Fields berth does not interpret, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ImageManifest {
    /// Parses manifest bytes; requires `schemaVersion` 2 and at most
    /// [`MAX_SIGNATURE_LAYERS`] layers.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        let manifest: ImageManifest =
            serde_json::from_slice(bytes).map_err(SignatureError::ManifestJson)?;
        if manifest.schema_version != 2 {
            return Err(SignatureError::ManifestJson(serde::de::Error::custom(
                format_args!("schemaVersion is {}, not 2", manifest.schema_version),
            )));
        }
        if manifest.layers.len() > MAX_SIGNATURE_LAYERS {
            return Err(SignatureError::TooManyLayers {
                count: manifest.layers.len(),
                max: MAX_SIGNATURE_LAYERS,
            });
        }
        Ok(manifest)
    }

    /// The simple-signing layers, in manifest order; other layers are ignored.
    pub fn signature_layers(&self) -> impl Iterator<Item = &Descriptor> {
        self.layers
            .iter()
            .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tag_of_a_digest() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            signature_tag(&d).unwrap(),
            format!("sha256-{}.sig", "ab".repeat(32))
        );
        assert!(signature_tag("sha256:xyz").is_err());
        assert!(signature_tag("latest").is_err());
    }

    #[test]
    fn keeps_unknown_fields_and_filters_layers() {
        let text = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
          "config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:c"},
          "layers":[
            {"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":3,"digest":"sha256:a",
             "annotations":{"dev.cosignproject.cosign/signature":"MEU=","dev.sigstore.cosign/bundle":"{}"}},
            {"mediaType":"application/vnd.oci.image.layer.v1.tar","size":4,"digest":"sha256:b","urls":["x"]}],
          "annotations":{"k":"v"}}"#;
        let m = ImageManifest::parse(text.as_bytes()).unwrap();
        let sigs: Vec<_> = m.signature_layers().collect();
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].annotations[SIGNATURE_ANNOTATION], "MEU=");
        let again = ImageManifest::parse(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(again, m);
        assert_eq!(again.layers[1].extra["urls"][0], "x");
        assert_eq!(again.extra["annotations"]["k"], "v");
    }

    #[test]
    fn rejects_other_schema_versions_and_garbage() {
        let text =
            r#"{"schemaVersion":1,"config":{"mediaType":"x","size":0,"digest":"d"},"layers":[]}"#;
        assert!(ImageManifest::parse(text.as_bytes()).is_err());
        assert!(ImageManifest::parse(b"[]").is_err());
    }

    #[test]
    fn bounds_the_layer_count() {
        let layer = r#"{"mediaType":"m","size":1,"digest":"sha256:a"}"#;
        let layers = vec![layer; MAX_SIGNATURE_LAYERS + 1].join(",");
        let text = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","size":0,"digest":"d"}},"layers":[{layers}]}}"#
        );
        assert!(matches!(
            ImageManifest::parse(text.as_bytes()),
            Err(SignatureError::TooManyLayers { .. })
        ));
    }
}
