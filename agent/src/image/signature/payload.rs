//! The cosign "simple signing" payload: the exact bytes that a legacy cosign signature
//! signs, stored as the layer blob of the `sha256-<hex>.sig` manifest.
//!
//! ```json
//! {"critical":{"identity":{"docker-reference":"registry/repo"},
//!              "image":{"docker-manifest-digest":"sha256:<hex>"},
//!              "type":"cosign container image signature"},
//!  "optional":null}
//! ```
//!
//! Parsing reads the raw bytes and never re-serializes them: the signature is checked
//! over the bytes as fetched. Keys are lowercase, as cosign writes them; duplicate keys
//! are rejected so no two readers can see different claims in one payload.

use serde::{Deserialize, Serialize};

use super::SignatureError;
use super::validate_digest;

/// The only `critical.type` cosign writes and accepts.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

/// A parsed simple-signing payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleSigningPayload {
    manifest_digest: String,
    docker_reference: String,
    optional: Option<serde_json::Map<String, serde_json::Value>>,
}

impl SimpleSigningPayload {
    /// Parses payload bytes and checks `critical.type`. The digest claim is returned as
    /// written; comparing it with the expected digest is the verifier's job.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(SignatureError::PayloadJson)?;
        if raw.critical.kind != SIMPLE_SIGNING_TYPE {
            return Err(SignatureError::PayloadType {
                found: raw.critical.kind,
            });
        }
        Ok(SimpleSigningPayload {
            manifest_digest: raw.critical.image.docker_manifest_digest,
            docker_reference: raw.critical.identity.docker_reference,
            optional: raw.optional,
        })
    }

    /// `critical.image.docker-manifest-digest`: the manifest (or index) digest signed.
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
    }

    /// `critical.identity.docker-reference`: the repository the signer named. cosign
    /// does not check it; callers may.
    pub fn docker_reference(&self) -> &str {
        &self.docker_reference
    }

    /// The `optional` annotations, if any.
    #[cfg(test)]
    pub fn optional(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.optional.as_ref()
    }
}

/// Builds the payload cosign would sign for `docker_reference` (the repository without
/// tag or digest, e.g. `registry.example.com/shop/web`) at `manifest_digest`, with
/// `"optional": null`. Byte-for-byte what cosign's Go encoder produces.
pub fn build_payload(
    docker_reference: &str,
    manifest_digest: &str,
) -> Result<Vec<u8>, SignatureError> {
    validate_digest(manifest_digest)?;
    let payload = Raw {
        critical: Critical {
            identity: Identity {
                docker_reference: docker_reference.to_string(),
            },
            image: Image {
                docker_manifest_digest: manifest_digest.to_string(),
            },
            kind: SIMPLE_SIGNING_TYPE.to_string(),
        },
        optional: None,
    };
    serde_json::to_vec(&payload).map_err(|source| SignatureError::EncodeJson {
        what: "the simple-signing payload",
        source,
    })
}

// Field order matters for `build_payload`: it is cosign's (Go struct order).
#[derive(Debug, Serialize, Deserialize)]
struct Raw {
    critical: Critical,
    #[serde(default)]
    optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";
    // The payload of the shared fixture (cosign output), inlined to pin the encoding.
    const COSIGN_PAYLOAD: &str = r#"{"critical":{"identity":{"docker-reference":"registry-testing.svc.lan/busybox"},"image":{"docker-manifest-digest":"sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"},"type":"cosign container image signature"},"optional":null}"#;

    #[test]
    fn builds_the_bytes_cosign_writes() {
        let built = build_payload("registry-testing.svc.lan/busybox", DIGEST).unwrap();
        assert_eq!(String::from_utf8(built).unwrap(), COSIGN_PAYLOAD);
    }

    #[test]
    fn parses_the_claims() {
        let p = SimpleSigningPayload::parse(COSIGN_PAYLOAD.as_bytes()).unwrap();
        assert_eq!(p.manifest_digest(), DIGEST);
        assert_eq!(p.docker_reference(), "registry-testing.svc.lan/busybox");
        assert!(p.optional().is_none());
    }

    #[test]
    fn keeps_optional_annotations() {
        let text = COSIGN_PAYLOAD.replace(r#""optional":null"#, r#""optional":{"env":"prod"}"#);
        let p = SimpleSigningPayload::parse(text.as_bytes()).unwrap();
        assert_eq!(p.optional().unwrap()["env"], "prod");
    }

    #[test]
    fn rejects_another_type() {
        let text = COSIGN_PAYLOAD.replace(SIMPLE_SIGNING_TYPE, "atomic container signature");
        let err = SimpleSigningPayload::parse(text.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, SignatureError::PayloadType { found } if found == "atomic container signature"),
            "{err}"
        );
    }

    #[test]
    fn rejects_capitalised_keys_and_duplicates() {
        let capital = COSIGN_PAYLOAD.replace("docker-manifest-digest", "Docker-manifest-digest");
        assert!(SimpleSigningPayload::parse(capital.as_bytes()).is_err());
        let dup = COSIGN_PAYLOAD.replace(
            r#""type":"#,
            r#""image":{"docker-manifest-digest":"sha256:00"},"type":"#,
        );
        assert!(matches!(
            SimpleSigningPayload::parse(dup.as_bytes()),
            Err(SignatureError::PayloadJson(_))
        ));
    }

    #[test]
    fn rejects_a_missing_digest_and_non_json() {
        let missing = COSIGN_PAYLOAD.replace("docker-manifest-digest", "digest");
        assert!(SimpleSigningPayload::parse(missing.as_bytes()).is_err());
        assert!(SimpleSigningPayload::parse(b"\x00not json").is_err());
    }

    #[test]
    fn build_rejects_a_bad_digest() {
        assert!(matches!(
            build_payload("r/x", "sha256:ABC"),
            Err(SignatureError::InvalidDigest { .. })
        ));
    }
}
