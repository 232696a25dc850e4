//! Pushing: blobs through the two-step upload (`POST …/blobs/uploads/`, then `PUT` the
//! whole body to the returned location with `?digest=`), skipped when the registry
//! already has the blob, and manifests with `PUT …/manifests/<tag or digest>`. Used by
//! `berth sign` and the test fixtures. Pushes always go to the registry, never a mirror.

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};

use super::error::RegistryError;
use super::transport::Req;
use super::{Client, Repository};
use crate::image::digest::Digest;

impl Client {
    /// True when the registry has the blob (`HEAD`).
    pub async fn blob_exists(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let ep = self.upstream(repo)?;
        let target = repo.target(digest.as_str());
        let url = self
            .url(&ep, &format!("v2/{}/blobs/{digest}", repo.name))
            .await?;
        let resp = self
            .inner
            .execute(&ep, &target, true, Req::new(Method::HEAD, url))
            .await?;
        if resp.status() == 404 {
            return Ok(false);
        }
        self.ok(&ep, &target, resp).await.map(|_| true)
    }

    /// Uploads a blob unless the registry has it already; returns its digest.
    pub async fn push_blob(&self, repo: &Repository, data: Bytes) -> Result<Digest, RegistryError> {
        let digest = Digest::of(&data);
        if self.blob_exists(repo, &digest).await? {
            return Ok(digest);
        }
        let ep = self.upstream(repo)?;
        let target = repo.target(digest.as_str());
        let start = self
            .url(&ep, &format!("v2/{}/blobs/uploads/", repo.name))
            .await?;
        let resp = self
            .inner
            .execute(&ep, &target, true, Req::new(Method::POST, start.clone()))
            .await?;
        let resp = self.ok(&ep, &target, resp).await?;
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                registry: repo.registry.clone(),
                detail: "blob upload started without a Location header".into(),
            })?;
        let mut url = start.join(location).map_err(|e| RegistryError::Protocol {
            registry: repo.registry.clone(),
            detail: format!("bad upload location `{location}`: {e}"),
        })?;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let resp = self
            .inner
            .execute(
                &ep,
                &target,
                true,
                Req::new(Method::PUT, url).headers(headers).body(data),
            )
            .await?;
        self.ok(&ep, &target, resp).await?;
        Ok(digest)
    }

    /// Puts a manifest under `reference` (a tag, or its own digest); returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        data: Bytes,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(&data);
        let ep = self.upstream(repo)?;
        let target = repo.target(reference);
        let url = self
            .url(&ep, &format!("v2/{}/manifests/{reference}", repo.name))
            .await?;
        let mut headers = HeaderMap::new();
        let ct = HeaderValue::from_str(media_type).map_err(|e| RegistryError::Protocol {
            registry: repo.registry.clone(),
            detail: format!("media type `{media_type}`: {e}"),
        })?;
        headers.insert(CONTENT_TYPE, ct);
        let resp = self
            .inner
            .execute(
                &ep,
                &target,
                true,
                Req::new(Method::PUT, url).headers(headers).body(data),
            )
            .await?;
        let resp = self.ok(&ep, &target, resp).await?;
        let served = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !served.is_empty() && served != digest.as_str() {
            tracing::warn!(registry = %repo.registry, %digest, served, "registry reports another digest for the pushed manifest");
        }
        Ok(digest)
    }

    fn upstream(&self, repo: &Repository) -> Result<super::Endpoint, RegistryError> {
        self.endpoints(&repo.registry, false)?
            .pop()
            .ok_or_else(|| RegistryError::Settings {
                registry: repo.registry.clone(),
                detail: "no endpoint".into(),
            })
    }
}

#[cfg(test)]
#[path = "push_tests.rs"]
mod tests;
