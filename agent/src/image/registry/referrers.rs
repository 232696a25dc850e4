//! OCI 1.1 referrers: the artifacts (signatures, SBOMs, attestations) whose manifest
//! names another manifest as its `subject` (distribution-spec "Listing Referrers").
//!
//! Contract:
//! - The referrers API (`GET /v2/<name>/referrers/<digest>`) counts as supported only
//!   when it answers 200 with an OCI image index (by the body's `mediaType`, or by the
//!   `Content-Type` when the body names none). Any other answer — 404, another status,
//!   another body — means "unsupported", and the client falls back to the referrers tag
//!   schema: the image index tagged `sha256-<hex>` (no tag there: no referrers).
//! - The `artifactType` filter is sent, but never trusted: registries may ignore it,
//!   so [`of_type`] filters again. At most `max` referrers are returned, one per digest.
//! - The index is size-capped as manifests are ([`MAX_MANIFEST_BYTES`]); the tag's
//!   index is fetched as any manifest. The referrer manifests themselves are the
//!   caller's to fetch (by digest, digest-checked).

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use super::transport::Req;
use super::{Client, Repository};
use crate::image::digest::Digest;
use crate::image::manifest::{
    self, Descriptor, ImageIndex, MAX_MANIFEST_BYTES, Manifest, OCI_INDEX,
};
use crate::image::signature::COSIGN_SIGN_PREDICATE;

/// Where a manifest's referrers were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferrersSource {
    /// The registry's referrers API.
    Referrers,
    /// The `sha256-<hex>` index tag (registries without the API).
    Tag,
}

impl ReferrersSource {
    /// `referrers` or `tag`, as records name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReferrersSource::Referrers => "referrers",
            ReferrersSource::Tag => "tag",
        }
    }
}

/// The referrers of one manifest, of one artifact type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrers {
    pub source: ReferrersSource,
    /// Descriptors of the referrer manifests, in the index's order.
    pub descriptors: Vec<Descriptor>,
}

/// The referrers tag schema for `digest`: `sha256-<hex>`.
pub fn referrers_tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

/// The index a referrers API answered with, if the answer counts as "supported": a
/// 200 whose body is an OCI image index (its `mediaType`, or the `Content-Type` when
/// the body names none). `None` means the client falls back to the tag.
pub fn api_index(status: u16, content_type: Option<&str>, body: &[u8]) -> Option<ImageIndex> {
    if status != 200 {
        return None;
    }
    let index = lenient_index(body)?;
    let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim());
    let media_type = index.media_type.as_deref().or(header);
    (index.schema_version == 2 && media_type == Some(OCI_INDEX)).then_some(index)
}

/// An index whose `manifests` are read one by one: an entry berth cannot read
/// (another tool's artifact, with a digest algorithm berth does not know, say) is
/// dropped with a warning, never the whole list with it.
fn lenient_index(body: &[u8]) -> Option<ImageIndex> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        schema_version: u32,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body).ok()?;
    let listed = raw.manifests.len();
    let manifests: Vec<Descriptor> = raw
        .manifests
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    if manifests.len() < listed {
        tracing::warn!(
            skipped = listed - manifests.len(),
            "referrers index entries berth cannot read are skipped"
        );
    }
    Some(ImageIndex {
        schema_version: raw.schema_version,
        media_type: raw.media_type,
        manifests,
    })
}

/// The entries of `index` whose `artifactType` is `artifact_type`, one per digest, at
/// most `max`: signatures before attestations (cosign's `predicateType` annotation),
/// then the newest first: by their `org.opencontainers.image.created`
/// annotation (RFC 3339 in UTC sorts as text), then the later in the index (signers
/// append). The rest are dropped with a warning: a hostile registry cannot make a pull
/// follow referrers without end, and a key rotated in after many signatures is still
/// read.
pub fn of_type(index: &ImageIndex, artifact_type: &str, max: usize) -> Vec<Descriptor> {
    let mut out: Vec<(usize, &Descriptor)> = Vec::new();
    for (at, d) in index.manifests.iter().enumerate() {
        if d.artifact_type.as_deref() != Some(artifact_type) {
            continue;
        }
        // The later entry of a digest listed twice stands for it.
        out.retain(|(_, o)| o.digest != d.digest);
        out.push((at, d));
    }
    let created = |d: &Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(CREATED_ANNOTATION))
            .cloned()
    };
    // A bundle naming another predicate (an attestation) is no signature: last.
    let other_predicate = |d: &Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(PREDICATE_ANNOTATION))
            .is_some_and(|p| p != COSIGN_SIGN_PREDICATE)
    };
    out.sort_by(|(a_at, a), (b_at, b)| {
        other_predicate(a)
            .cmp(&other_predicate(b))
            .then(created(b).cmp(&created(a)))
            .then(b_at.cmp(a_at))
    });
    if out.len() > max {
        tracing::warn!(
            artifact_type,
            max,
            listed = out.len(),
            "more referrers than berth follows; the oldest are ignored"
        );
        out.truncate(max);
    }
    out.into_iter().map(|(_, d)| d.clone()).collect()
}

/// The annotation a referrer's creation time is in.
const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
/// The annotation cosign names a bundle's predicate type in.
const PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";

impl Client {
    /// Asks the referrers API of `repo` for the referrers of `digest` (filtered by
    /// `artifact_type` if the registry filters). `None` when the registry does not
    /// support the API (see [`api_index`]); errors only for requests that failed.
    pub async fn referrers_api(
        &self,
        repo: &Repository,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<ImageIndex>, RegistryError> {
        self.read(repo, |ep| async move {
            let target = repo.target(digest.as_str());
            let mut url: Url = self
                .url(&ep, &format!("v2/{}/referrers/{digest}", repo.name))
                .await?;
            if let Some(t) = artifact_type {
                url.query_pairs_mut().append_pair("artifactType", t);
            }
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_static(OCI_INDEX));
            let resp = self
                .inner
                .execute(
                    &ep,
                    &target,
                    false,
                    Req::new(Method::GET, url).headers(headers),
                )
                .await?;
            let status = resp.status().as_u16();
            if status == 401 || status == 429 || status >= 500 {
                // Credentials refused, or a registry that cannot answer now: an error
                // (retried as any request is), not "unsupported".
                self.ok(&ep, &target, resp).await?;
                return Ok(None);
            }
            if status != 200 {
                return Ok(None);
            }
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = self
                .read_document(resp, &ep, &target, "referrers index", MAX_MANIFEST_BYTES)
                .await?;
            Ok(api_index(status, content_type.as_deref(), &body))
        })
        .await
    }

    /// The referrers of `digest` of type `artifact_type` (at most `max`): from the
    /// referrers API when the registry supports it, else from the `sha256-<hex>` index
    /// tag. No tag: none. A tag holding anything but an index is an error.
    pub async fn referrers(
        &self,
        repo: &Repository,
        digest: &Digest,
        artifact_type: &str,
        max: usize,
    ) -> Result<Referrers, RegistryError> {
        if let Some(index) = self
            .referrers_api(repo, digest, Some(artifact_type))
            .await?
        {
            return Ok(Referrers {
                source: ReferrersSource::Referrers,
                descriptors: of_type(&index, artifact_type, max),
            });
        }
        let tag = referrers_tag(digest);
        let fetched = match self.fetch_manifest(repo, &tag).await {
            Ok(f) => f,
            Err(e) if e.is_not_found() => {
                return Ok(Referrers {
                    source: ReferrersSource::Tag,
                    descriptors: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        match manifest::parse_manifest(&fetched.bytes, fetched.content_type.as_deref()) {
            Ok((Manifest::Index(index), _)) => Ok(Referrers {
                source: ReferrersSource::Tag,
                descriptors: of_type(&index, artifact_type, max),
            }),
            Ok((Manifest::Image(_), media_type)) => Err(RegistryError::Protocol {
                registry: repo.registry.clone(),
                detail: format!(
                    "the referrers tag {tag} in repository {} is a `{media_type}`, not an image index",
                    repo.name
                ),
            }),
            // An index with an entry berth cannot read: the others still count.
            Err(source) => match lenient_index(&fetched.bytes)
                .filter(|i| i.schema_version == 2 && i.media_type.as_deref() == Some(OCI_INDEX))
            {
                Some(index) => Ok(Referrers {
                    source: ReferrersSource::Tag,
                    descriptors: of_type(&index, artifact_type, max),
                }),
                None => Err(RegistryError::Manifest {
                    target: repo.target(&tag),
                    source,
                }),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
    const SBOM: &str = "application/spdx+json";

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn an_entry_berth_cannot_read_does_not_hide_the_others_and_attestations_come_last() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha512:{0}","size":1,"artifactType":"application/spdx+json"}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{1}","size":1,"artifactType":"{BUNDLE}","annotations":{{"dev.sigstore.bundle.predicateType":"https://slsa.dev/provenance/v1","org.opencontainers.image.created":"2026-12-04T10:00:00Z"}}}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{2}","size":1,"artifactType":"{BUNDLE}","annotations":{{"dev.sigstore.bundle.predicateType":"https://sigstore.dev/cosign/sign/v1","org.opencontainers.image.created":"2026-12-01T10:00:00Z"}}}}]}}"#,
            "e".repeat(128),
            d('a'),
            d('b')
        );
        let index = api_index(200, None, body.as_bytes()).expect("the readable entries");
        let kept: Vec<String> = of_type(&index, BUNDLE, 1)
            .iter()
            .map(|d| d.digest.as_str().to_string())
            .collect();
        assert_eq!(
            kept,
            [d('b')],
            "the signature, though older than the attestation"
        );
    }

    #[test]
    fn the_newest_referrers_are_kept_when_there_are_too_many() {
        let entry = |c: char, created: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"artifactType":"{BUNDLE}","annotations":{{"org.opencontainers.image.created":"{created}"}}}}"#,
                d(c)
            )
        };
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{},{}]}}"#,
            entry('c', "2026-12-03T10:00:00Z"),
            entry('a', "2026-12-04T10:00:00Z"),
            entry('b', "2026-12-01T10:00:00Z"),
        );
        let index = api_index(200, None, body.as_bytes()).unwrap();
        let kept: Vec<String> = of_type(&index, BUNDLE, 2)
            .iter()
            .map(|d| d.digest.as_str().to_string())
            .collect();
        assert_eq!(kept, [d('a'), d('c')]);
    }

    /// An index as a registry with the referrers API serves it (zot, Harbor, ghcr):
    /// a cosign bundle and an SBOM attached to the same image.
    fn recorded_index() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
            "manifests":[
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1093,
                "artifactType":"{BUNDLE}",
                "annotations":{{"dev.sigstore.bundle.content":"dsse-envelope",
                  "dev.sigstore.bundle.predicateType":"https://sigstore.dev/cosign/sign/v1",
                  "org.opencontainers.image.created":"2026-11-30T10:00:00Z"}}}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":788,
                "artifactType":"{SBOM}"}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1093,
                "artifactType":"{BUNDLE}"}}
            ]}}"#,
            d('a'),
            d('b'),
            d('c')
        )
    }

    #[test]
    fn a_supported_api_lists_the_bundles_only() {
        let body = recorded_index();
        // The registry ignored `?artifactType=`: the SBOM is in the answer, and dropped.
        let index = api_index(200, Some(OCI_INDEX), body.as_bytes()).unwrap();
        let bundles = of_type(&index, BUNDLE, 16);
        let digests: Vec<&str> = bundles.iter().map(|b| b.digest.as_str()).collect();
        assert_eq!(digests, [d('a'), d('c')]);
        assert_eq!(
            bundles[0].annotations.as_ref().unwrap()["dev.sigstore.bundle.content"],
            "dsse-envelope"
        );
        // The body names its type: a generic content type does not matter.
        assert!(api_index(200, Some("application/json"), body.as_bytes()).is_some());
        assert!(api_index(200, None, body.as_bytes()).is_some());
    }

    #[test]
    fn filtered_answers_duplicates_and_the_cap() {
        // A registry that filtered (OCI-Filters-Applied: artifactType) and names the
        // index type only in its Content-Type.
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{0}","size":1,"artifactType":"{BUNDLE}"}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{0}","size":1,"artifactType":"{BUNDLE}"}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{1}","size":1,"artifactType":"{BUNDLE}"}}]}}"#,
            d('a'),
            d('b')
        );
        let index = api_index(
            200,
            Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(of_type(&index, BUNDLE, 16).len(), 2, "one per digest");
        assert_eq!(of_type(&index, BUNDLE, 1).len(), 1, "capped");
        assert_eq!(
            of_type(&index, BUNDLE, 1)[0].digest.as_str(),
            d('b'),
            "the newest (the last listed) kept"
        );
        assert!(of_type(&index, "other/type", 16).is_empty());
        // No type in the body nor the header: not an index answer.
        assert!(api_index(200, Some("application/json"), body.as_bytes()).is_none());
    }

    #[test]
    fn anything_but_a_200_index_means_fall_back_to_the_tag() {
        let body = recorded_index();
        // 404: the registry has no referrers API (docker-registry 2.8).
        assert!(
            api_index(
                404,
                Some("application/json"),
                br#"{"errors":[{"code":"NOT_FOUND"}]}"#
            )
            .is_none()
        );
        assert!(api_index(404, Some(OCI_INDEX), body.as_bytes()).is_none());
        assert!(api_index(500, Some(OCI_INDEX), body.as_bytes()).is_none());
        // 200, but a registry's UI page, an image manifest, or an error document.
        assert!(api_index(200, Some("text/html"), b"<html>registry</html>").is_none());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
               "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
            d('e')
        );
        assert!(api_index(200, Some(OCI_INDEX), manifest.as_bytes()).is_none());
        assert!(api_index(200, Some(OCI_INDEX), br#"{"errors":[]}"#).is_none());
        // A Docker manifest list is an index, but not the OCI index the API serves.
        let list = body.replace(
            OCI_INDEX,
            "application/vnd.docker.distribution.manifest.list.v2+json",
        );
        assert!(api_index(200, None, list.as_bytes()).is_none());
    }

    /// Answers `line` (a request line) with a canned response.
    fn respond(conn: &mut std::net::TcpStream, status: &str, content_type: &str, body: &str) {
        use std::io::Write;
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    /// The client against a loopback registry whose referrers API answers `api` and
    /// whose `sha256-<hex>` tag holds `tag` (404 when `None`).
    async fn discover(
        api: (&'static str, &'static str, String),
        tag: Option<String>,
    ) -> (Result<Referrers, RegistryError>, Vec<String>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let addr = crate::image::registry::timeout_tests::serve(move |line, mut conn| {
            log.lock().unwrap().push(line.clone());
            if line.contains("/referrers/") {
                respond(&mut conn, api.0, api.1, &api.2);
            } else if let (true, Some(t)) = (line.contains("/manifests/sha256-"), &tag) {
                respond(&mut conn, "200 OK", OCI_INDEX, t);
            } else {
                respond(
                    &mut conn,
                    "404 Not Found",
                    "application/json",
                    r#"{"errors":[]}"#,
                );
            }
        });
        let client = crate::image::registry::timeout_tests::client(5, 5);
        let repo = crate::image::registry::timeout_tests::repo(&addr);
        let digest = Digest::parse(&d('1')).unwrap();
        let found = client.referrers(&repo, &digest, BUNDLE, 16).await;
        let lines = seen.lock().unwrap().clone();
        (found, lines)
    }

    #[tokio::test]
    async fn the_client_asks_the_api_then_falls_back_to_the_tag() {
        // Supported: the registry ignored the filter; the tag is never asked.
        let (found, lines) = discover(("200 OK", OCI_INDEX, recorded_index()), None).await;
        let found = found.unwrap();
        assert_eq!(found.source, ReferrersSource::Referrers);
        assert_eq!(found.descriptors.len(), 2);
        assert!(
            lines[0].starts_with(&format!(
                "GET /v2/hostile/app/referrers/{}?artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson ",
                d('1')
            )),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 1, "{lines:?}");

        // 404: the tag's index, filtered too.
        let (found, lines) = discover(
            ("404 Not Found", "application/json", String::new()),
            Some(recorded_index()),
        )
        .await;
        let found = found.unwrap();
        assert_eq!(found.source, ReferrersSource::Tag);
        assert_eq!(found.descriptors.len(), 2);
        assert!(
            lines[1].contains(&format!("/manifests/sha256-{} ", "1".repeat(64))),
            "{lines:?}"
        );

        // A 200 that is not an index, and no tag: none, from the tag.
        let (found, _) = discover(("200 OK", "text/html", "<html></html>".into()), None).await;
        let found = found.unwrap();
        assert_eq!(found.source, ReferrersSource::Tag);
        assert!(found.descriptors.is_empty());

        // A tag holding something else than an index is an error, naming it.
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
               "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
            d('e')
        );
        let (found, _) = discover(
            ("404 Not Found", "text/plain", String::new()),
            Some(manifest),
        )
        .await;
        let e = found.unwrap_err().to_string();
        assert!(
            e.contains(&format!("sha256-{}", "1".repeat(64))) && e.contains("not an image index"),
            "{e}"
        );
    }

    #[test]
    fn the_tag_schema() {
        let digest = Digest::parse(&d('f')).unwrap();
        assert_eq!(referrers_tag(&digest), format!("sha256-{}", "f".repeat(64)));
        assert_eq!(ReferrersSource::Tag.as_str(), "tag");
        assert_eq!(
            serde_json::to_value(ReferrersSource::Referrers).unwrap(),
            "referrers"
        );
    }
}
