//! The OCI distribution client: manifests and blobs from registries, and pushes.
//!
//! What it guarantees: every manifest fetched by digest is checked against that digest
//! and every manifest is size-capped ([`crate::image::manifest::MAX_MANIFEST_BYTES`]);
//! blob bodies are streamed to the caller (the content store verifies them); plain
//! http is used only for loopback and `insecure` registries; a registry's `mirror` is
//! tried first for reads and the registry itself after any mirror failure; pushes go
//! to the registry itself. Authentication (anonymous, Basic, Bearer tokens cached per
//! repository scope), credentials and retries live in [`transport`] and [`token`].
//! Every wait on a registry is bounded ([`Timeouts`]): connect and response headers,
//! a blob body that stops, a small document that trickles, an error body (read for
//! its first 64 KiB only).

pub mod error;
mod push;
pub mod referrers;
pub mod retry;
mod token;
mod transport;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, Response, Url};
use serde::{Deserialize, Serialize};

use berth_spec::reference::{DOCKER_HUB, Reference};

pub use error::{RegistryError, Target};
pub use retry::RetryPolicy;
use transport::{Endpoint, Inner, Req};

use super::digest::Digest;
use super::manifest::{MANIFEST_ACCEPT, ManifestError};

/// The API host of Docker Hub (references say `docker.io`).
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The node's settings for one registry (`[registries."host"]`, DESIGN.md §4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// A docker `config.json` with this registry's credentials.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
    /// A pull-through mirror URL (`https://mirror.local:5000`), tried first.
    #[serde(default)]
    pub mirror: Option<String>,
    /// Allow plain http (and unverified TLS) for this registry.
    #[serde(default)]
    pub insecure: bool,
}

/// Settings keyed by registry host, as in the references (`127.0.0.1:5000`, `docker.io`).
pub type RegistryConfig = BTreeMap<String, RegistrySettings>;

/// How long a registry may keep a pull waiting (`runtime.pull_connect_timeout`,
/// `runtime.pull_idle_timeout`, DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Per request: connect (TLS included) and receive the response headers.
    pub connect: Duration,
    /// A blob body with no byte for this long fails; a manifest, config, signature
    /// or token response must arrive whole within it.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: berth_spec::node::DEFAULT_PULL_CONNECT_TIMEOUT,
            idle: berth_spec::node::DEFAULT_PULL_IDLE_TIMEOUT,
        }
    }
}

/// A repository in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub registry: String,
    pub name: String,
}

impl Repository {
    pub fn of(reference: &Reference) -> Repository {
        Repository {
            registry: reference.registry.clone(),
            name: reference.repository.clone(),
        }
    }

    pub fn target(&self, reference: &str) -> Target {
        Target::new(&self.registry, &self.name, reference)
    }
}

/// A manifest as the registry served it, digest-checked.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    /// sha256 of `bytes`; equal to the requested digest when one was requested.
    pub digest: Digest,
    /// The response's `Content-Type`.
    pub content_type: Option<String>,
}

/// A blob body: the whole blob, or (`partial`) the bytes from the requested offset.
pub struct BlobBody {
    pub partial: bool,
    pub stream: BoxStream<'static, Result<Bytes, RegistryError>>,
}

impl std::fmt::Debug for BlobBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobBody")
            .field("partial", &self.partial)
            .finish()
    }
}

/// A registry client; cheap to clone, shares connections and token caches.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    pub fn new(registries: RegistryConfig) -> Result<Client, RegistryError> {
        Client::build(registries, RetryPolicy::default(), Timeouts::default())
    }

    /// A client with the node's pull deadlines.
    pub fn with_timeouts(
        registries: RegistryConfig,
        timeouts: Timeouts,
    ) -> Result<Client, RegistryError> {
        Client::build(registries, RetryPolicy::default(), timeouts)
    }

    pub fn build(
        registries: RegistryConfig,
        retry: RetryPolicy,
        timeouts: Timeouts,
    ) -> Result<Client, RegistryError> {
        Ok(Client {
            inner: Arc::new(Inner::new(registries, retry, timeouts)?),
        })
    }

    /// The retry policy, for callers that resume interrupted bodies themselves.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    /// Where to send requests for `registry`: its mirror (for reads), then itself.
    fn endpoints(&self, registry: &str, read: bool) -> Result<Vec<Endpoint>, RegistryError> {
        let settings = self
            .inner
            .registries
            .get(registry)
            .cloned()
            .unwrap_or_default();
        let host = if registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            registry
        };
        let mut out = Vec::new();
        if let (true, Some(mirror)) = (read, &settings.mirror) {
            let bad = |detail: String| RegistryError::Settings {
                registry: registry.to_string(),
                detail,
            };
            let mut base =
                Url::parse(mirror).map_err(|e| bad(format!("mirror `{mirror}`: {e}")))?;
            if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
                return Err(bad(format!("mirror `{mirror}` must be an http(s) URL")));
            }
            if !base.path().ends_with('/') {
                base.set_path(&format!("{}/", base.path()));
            }
            let mirror_host = match base.port() {
                Some(p) => format!("{}:{p}", base.host_str().unwrap_or("")),
                None => base.host_str().unwrap_or("").to_string(),
            };
            let own = self
                .inner
                .registries
                .get(&mirror_host)
                .cloned()
                .unwrap_or_default();
            out.push(Endpoint {
                registry: registry.to_string(),
                host: mirror_host,
                fixed_base: Some(base),
                insecure: settings.insecure || own.insecure,
                auth_file: own.auth_file.or(settings.auth_file.clone()),
            });
        }
        out.push(Endpoint {
            registry: registry.to_string(),
            host: host.to_string(),
            fixed_base: None,
            insecure: settings.insecure,
            auth_file: settings.auth_file,
        });
        Ok(out)
    }

    /// Runs `op` on the mirror, then on the registry if the mirror fails.
    async fn read<T, F, Fut>(&self, repo: &Repository, op: F) -> Result<T, RegistryError>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let endpoints = self.endpoints(&repo.registry, true)?;
        let count = endpoints.len();
        let mut last = None;
        for (i, ep) in endpoints.into_iter().enumerate() {
            let host = ep.host.clone();
            match op(ep).await {
                Ok(v) => return Ok(v),
                Err(e) if i + 1 < count => {
                    tracing::warn!(mirror = %host, error = %e, "mirror failed, trying the registry");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Settings {
            registry: repo.registry.clone(),
            detail: "no endpoint".into(),
        }))
    }

    async fn url(&self, ep: &Endpoint, path: &str) -> Result<Url, RegistryError> {
        self.inner
            .base(ep)
            .await?
            .join(path)
            .map_err(|e| RegistryError::Protocol {
                registry: ep.registry.clone(),
                detail: format!("bad url path `{path}`: {e}"),
            })
    }

    /// Passes a successful response through; maps anything else to an error.
    async fn ok(
        &self,
        ep: &Endpoint,
        target: &Target,
        resp: Response,
    ) -> Result<Response, RegistryError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        if resp.status() == 401 {
            self.inner.forget(ep);
            if self.inner.credential(ep)?.is_none() {
                return Err(RegistryError::NoCredentials {
                    target: target.clone(),
                });
            }
        }
        Err(transport::status_error(target, resp, self.inner.timeouts.connect).await)
    }

    /// Reads a small document (a manifest) into memory: at most `limit` bytes, whole
    /// within the idle timeout.
    async fn read_document(
        &self,
        resp: Response,
        ep: &Endpoint,
        target: &Target,
        what: &'static str,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let idle = self.inner.timeouts.idle;
        transport::read_small(resp, limit, idle)
            .await
            .map_err(|e| match e {
                transport::SmallReadError::TooLarge(size) => RegistryError::Manifest {
                    target: target.clone(),
                    source: ManifestError::TooLarge { what, size, limit },
                },
                transport::SmallReadError::Broken(source) => RegistryError::Body {
                    target: target.clone(),
                    source,
                },
                transport::SmallReadError::TooSlow => RegistryError::TooSlow {
                    target: target.clone(),
                    host: ep.host.clone(),
                    what,
                    after: idle,
                },
            })
    }

    /// Fetches a manifest or index by tag or digest, size-capped and digest-checked.
    pub async fn fetch_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let expected = if reference.starts_with("sha256:") {
            Some(
                Digest::parse(reference).map_err(|e| RegistryError::Protocol {
                    registry: repo.registry.clone(),
                    detail: e.to_string(),
                })?,
            )
        } else {
            None
        };
        self.read(repo, |ep| {
            let expected = expected.clone();
            async move {
                let target = repo.target(reference);
                let url = self
                    .url(&ep, &format!("v2/{}/manifests/{reference}", repo.name))
                    .await?;
                let mut headers = HeaderMap::new();
                headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
                let mut tries = 0;
                loop {
                    tries += 1;
                    let resp = self
                        .inner
                        .execute(
                            &ep,
                            &target,
                            false,
                            Req::new(Method::GET, url.clone()).headers(headers.clone()),
                        )
                        .await?;
                    let resp = self.ok(&ep, &target, resp).await?;
                    let content_type = resp
                        .headers()
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let bytes = match self
                        .read_document(
                            resp,
                            &ep,
                            &target,
                            "manifest",
                            super::manifest::MAX_MANIFEST_BYTES,
                        )
                        .await
                    {
                        Err(e)
                            if e.is_transient()
                                && !e.is_timeout()
                                && tries < self.inner.retry.attempts =>
                        {
                            continue;
                        }
                        other => other?,
                    };
                    let digest = Digest::of(&bytes);
                    if let Some(expected) = expected.filter(|e| *e != digest) {
                        return Err(RegistryError::DigestMismatch {
                            target,
                            expected,
                            actual: digest,
                        });
                    }
                    return Ok(FetchedManifest {
                        bytes,
                        digest,
                        content_type,
                    });
                }
            }
        })
        .await
    }

    /// Fetches a small blob (a config, a signature layer) into memory, size-capped
    /// and digest-checked.
    pub async fn fetch_blob_bytes(
        &self,
        repo: &Repository,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let target = repo.target(digest.as_str());
        let idle = self.inner.timeouts.idle;
        let mut tries = 0;
        loop {
            tries += 1;
            let (body, host) = self.open_blob_from(repo, digest, 0).await?;
            let deadline = tokio::time::Instant::now() + idle;
            let mut out = Vec::new();
            let mut stream = body.stream;
            let mut failed = None;
            loop {
                let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
                    return Err(RegistryError::TooSlow {
                        target,
                        host,
                        what: "blob",
                        after: idle,
                    });
                };
                let Some(chunk) = next else { break };
                match chunk {
                    Ok(c) => {
                        out.extend_from_slice(&c);
                        if out.len() as u64 > limit {
                            let source = ManifestError::TooLarge {
                                what: "blob",
                                size: out.len() as u64,
                                limit,
                            };
                            return Err(RegistryError::Manifest { target, source });
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                Some(e)
                    if e.is_transient() && !e.is_timeout() && tries < self.inner.retry.attempts =>
                {
                    continue;
                }
                Some(e) => return Err(e),
                None => {}
            }
            let actual = Digest::of(&out);
            if actual != *digest {
                return Err(RegistryError::DigestMismatch {
                    target,
                    expected: digest.clone(),
                    actual,
                });
            }
            return Ok(out);
        }
    }

    /// Opens a blob's body from `offset` on (`Range: bytes=offset-`). The reply says
    /// whether the server honoured the range (`partial`) or sent the whole blob. The
    /// body fails with [`RegistryError::Stalled`] when no byte comes for the idle
    /// timeout; a slow but steady one goes on.
    pub async fn open_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobBody, RegistryError> {
        Ok(self.open_blob_from(repo, digest, offset).await?.0)
    }

    /// [`Client::open_blob`], and the host serving the body.
    async fn open_blob_from(
        &self,
        repo: &Repository,
        digest: &Digest,
        offset: u64,
    ) -> Result<(BlobBody, String), RegistryError> {
        self.read(repo, |ep| async move {
            let target = repo.target(digest.as_str());
            let url = self
                .url(&ep, &format!("v2/{}/blobs/{digest}", repo.name))
                .await?;
            let mut offset = offset;
            loop {
                let mut headers = HeaderMap::new();
                if offset > 0 {
                    let range =
                        HeaderValue::from_str(&format!("bytes={offset}-")).map_err(|e| {
                            RegistryError::Protocol {
                                registry: repo.registry.clone(),
                                detail: e.to_string(),
                            }
                        })?;
                    headers.insert(RANGE, range);
                }
                let resp = self
                    .inner
                    .execute(
                        &ep,
                        &target,
                        false,
                        Req::new(Method::GET, url.clone()).headers(headers),
                    )
                    .await?;
                // 416: the partial copy is not a prefix the server knows; start over.
                if resp.status() == 416 && offset > 0 {
                    offset = 0;
                    continue;
                }
                let resp = self.ok(&ep, &target, resp).await?;
                let partial = resp.status() == 206;
                if partial {
                    let range = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !range.starts_with(&format!("bytes {offset}-")) {
                        return Err(RegistryError::Protocol {
                            registry: repo.registry.clone(),
                            detail: format!(
                                "asked for {digest} from byte {offset}, got Content-Range `{range}`"
                            ),
                        });
                    }
                }
                let t = target.clone();
                let stream = resp
                    .bytes_stream()
                    .map_err(move |source| RegistryError::Body {
                        target: t.clone(),
                        source,
                    });
                let (t, host, idle) = (target.clone(), ep.host.clone(), self.inner.timeouts.idle);
                let stalled = move |why: transport::Stall| match why {
                    transport::Stall::Window => RegistryError::Stalled {
                        target: t.clone(),
                        host: host.clone(),
                        what: "blob",
                        after: idle,
                    },
                    transport::Stall::Attempt => RegistryError::TooSlow {
                        target: t.clone(),
                        host: host.clone(),
                        what: "blob",
                        after: idle * transport::ATTEMPT_WINDOWS,
                    },
                };
                let stream = transport::idle_guard(stream, idle, stalled).boxed();
                return Ok((BlobBody { partial, stream }, ep.host.clone()));
            }
        })
        .await
    }
}

#[cfg(test)]
#[path = "timeout_tests.rs"]
mod timeout_tests;
