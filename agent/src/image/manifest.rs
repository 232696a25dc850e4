//! Image manifests, indexes and configs: the four manifest media types berth pulls
//! (OCI image manifest and index, Docker schema 2 manifest and manifest list), parsed
//! with size caps and checked for the fields each kind must have.
//!
//! Pure: bytes in, typed values out. Digests are verified by the caller (the registry
//! client compares every manifest with the digest it was asked for; the content store
//! hashes every blob). Docker schema 1 is refused, as current Docker does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::platform::Platform;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header for manifest requests: every kind berth can read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted: the distribution spec's recommended minimum
/// that registries must accept is 4 MiB, and real manifests are a few KiB.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config accepted. Configs carry history and env; 8 MiB leaves room
/// for images with thousands of history entries without letting a hostile registry
/// make berth hold an arbitrary blob in memory.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DescriptorPlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// The `platform` object of an index entry, as written by the image's builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl DescriptorPlatform {
    pub fn normalized(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A parsed manifest of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(Box<ImageManifest>),
    Index(ImageIndex),
}

/// Why a manifest or config is refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what} is {size} bytes, more than the {limit} bytes berth accepts")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{what} is not valid JSON")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "docker schema 1 manifests are not supported; push the image again with a current tool"
    )]
    SchemaOne,
    #[error("unsupported manifest media type `{0}`")]
    UnsupportedType(String),
    #[error("manifest has schemaVersion {0}, expected 2")]
    SchemaVersion(u32),
    #[error("image config lists {diff_ids} diff_ids for {layers} layers")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error(
        "config media type `{0}` is not an image config: this is an artifact, not a container image"
    )]
    NotAnImage(String),
    #[error("layer {digest} has unsupported media type `{media_type}`")]
    UnsupportedLayer { digest: Digest, media_type: String },
}

/// Minimal view used to tell the kinds apart before the full parse.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    config: Option<serde::de::IgnoredAny>,
}

/// Checks `size` against `limit` for the object named `what`.
pub fn check_size(what: &'static str, size: u64, limit: u64) -> Result<(), ManifestError> {
    if size > limit {
        Err(ManifestError::TooLarge { what, size, limit })
    } else {
        Ok(())
    }
}

/// Parses a manifest. `content_type` is the response's `Content-Type`, used only when
/// the body does not name its own media type. Returns the manifest and its media type.
pub fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<(Manifest, String), ManifestError> {
    check_size("manifest", bytes.len() as u64, MAX_MANIFEST_BYTES)?;
    let json = |source| ManifestError::Json {
        what: "manifest",
        source,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(json)?;
    if probe.schema_version == Some(1) {
        return Err(ManifestError::SchemaOne);
    }
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
    let media_type = match (probe.media_type, header) {
        (Some(m), _) => m,
        (None, Some(h)) => h,
        // OCI allows omitting mediaType: tell the kinds apart by their fields.
        (None, None) if probe.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) if probe.config.is_some() => OCI_MANIFEST.to_string(),
        (None, None) => return Err(ManifestError::UnsupportedType(String::new())),
    };
    if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        return Err(ManifestError::SchemaOne);
    }
    let version = probe.schema_version.unwrap_or(0);
    if version != 2 {
        return Err(ManifestError::SchemaVersion(version));
    }
    let manifest = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            Manifest::Image(serde_json::from_slice(bytes).map_err(json)?)
        }
        OCI_INDEX | DOCKER_LIST => Manifest::Index(serde_json::from_slice(bytes).map_err(json)?),
        other => return Err(ManifestError::UnsupportedType(other.to_string())),
    };
    Ok((manifest, media_type))
}

/// True for the config media types of container images.
pub fn is_image_config(media_type: &str) -> bool {
    media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}

/// True for layer media types the unpacker reads (tar, gzip, zstd; OCI and Docker).
pub fn is_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

impl ImageManifest {
    /// Checks that this manifest describes a runnable container image.
    pub fn check_image(&self) -> Result<(), ManifestError> {
        if !is_image_config(&self.config.media_type) {
            return Err(ManifestError::NotAnImage(self.config.media_type.clone()));
        }
        check_size("image config", self.config.size, MAX_CONFIG_BYTES)?;
        for layer in &self.layers {
            if !is_layer(&layer.media_type) || layer.urls.is_some() {
                return Err(ManifestError::UnsupportedLayer {
                    digest: layer.digest.clone(),
                    media_type: layer.media_type.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The parts of an image config berth reads. Everything else is kept in `config`
/// (the runtime defaults: `User`, `Env`, `Entrypoint`, `Cmd`, …) as JSON for display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<History>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// One history entry; `empty_layer` entries have no layer of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// Parses a config blob (size-capped) and checks it against its manifest's layers.
    pub fn parse(bytes: &[u8], layers: usize) -> Result<ImageConfig, ManifestError> {
        check_size("image config", bytes.len() as u64, MAX_CONFIG_BYTES)?;
        let config: ImageConfig =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
                what: "image config",
                source,
            })?;
        if config.rootfs.diff_ids.len() != layers {
            return Err(ManifestError::LayerCount {
                layers,
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        Ok(config)
    }

    /// The platform the config declares, if it declares one.
    pub fn platform(&self) -> Option<Platform> {
        (!self.os.is_empty() && !self.architecture.is_empty())
            .then(|| Platform::new(&self.os, &self.architecture, self.variant.as_deref()))
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
