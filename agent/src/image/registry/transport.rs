//! One registry request, done properly: the endpoint's scheme (https, or http only for
//! loopback and `insecure` registries, after an https probe as Docker does), the
//! cached `Authorization` for the host and scope, the 401 challenge answered once
//! (Basic, or a Bearer token from the realm), and retries with backoff on broken
//! connections and 5xx, honouring `Retry-After` on 429/503.
//!
//! Deadlines ([`Timeouts`], `runtime.pull_*_timeout`): a request must connect and
//! receive its response headers within `connect`; a blob body fails when less than
//! 1 KiB comes within one `idle` window ([`idle_guard`]); small documents (manifests, tokens) must arrive
//! whole within `idle`; error bodies are read for their first 64 KiB only, for at most
//! `connect`. A timeout is not retried here: the registry had its chance, and the
//! pass moves on (the error is transient, so the next pass tries again).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, Url};

use super::error::{RegistryError, Target};
use super::retry::{self, RetryPolicy};
use super::token::{self, Token};
use super::{RegistryConfig, Timeouts};
use crate::image::auth::{self, Challenge, Credential};

/// Shared client state: connection pools and the per-host caches.
#[derive(Debug)]
pub(super) struct Inner {
    pub http: reqwest::Client,
    /// For loopback and `insecure` registries served over https with a certificate
    /// that does not verify, as Docker allows for them.
    pub http_insecure: reqwest::Client,
    pub registries: RegistryConfig,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
    bases: Mutex<HashMap<String, Url>>,
    auth: Mutex<HashMap<String, HostAuth>>,
    tokens: Mutex<HashMap<(String, String), Token>>,
    creds: Mutex<HashMap<String, Option<Credential>>>,
}

/// One request to send (and re-send on retry).
#[derive(Debug, Clone)]
pub(super) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

impl Req {
    pub fn new(method: Method, url: Url) -> Req {
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
        }
    }

    pub fn headers(mut self, headers: HeaderMap) -> Req {
        self.headers = headers;
        self
    }

    pub fn body(mut self, body: Bytes) -> Req {
        self.body = Some(body);
        self
    }
}

/// What a host asked for the last time it challenged us.
#[derive(Debug, Clone)]
enum HostAuth {
    Basic(String),
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// One place to send requests for a registry: its mirror or the registry itself.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// The image's registry, as in the reference (names errors, selects settings).
    pub registry: String,
    /// The host (and port) actually spoken to.
    pub host: String,
    /// Set for mirrors, whose URL names the scheme.
    pub fixed_base: Option<Url>,
    pub insecure: bool,
    pub auth_file: Option<PathBuf>,
}

/// The host part of `host[:port]` (IPv6 literals keep no brackets).
pub(super) fn host_only(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Loopback registries may use plain http, as Docker allows (127.0.0.0/8, ::1, localhost).
pub fn is_loopback(host: &str) -> bool {
    let h = host_only(host);
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    pub fn new(
        registries: RegistryConfig,
        retry: RetryPolicy,
        timeouts: Timeouts,
    ) -> Result<Inner, RegistryError> {
        // reqwest is built without a default crypto provider: use ring (research/crates.md).
        // Installing twice fails harmlessly, so every constructor may try.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                // Only a guard: `execute` bounds connect + headers, and body reads
                // have their own deadlines (no client-wide `read_timeout`, which
                // would also cut a long upload).
                .connect_timeout(timeouts.connect)
                .danger_accept_invalid_certs(insecure)
                .redirect(redirect_policy())
                .build()
                .map_err(RegistryError::Client)
        };
        Ok(Inner {
            http: build(false)?,
            http_insecure: build(true)?,
            registries,
            retry,
            timeouts,
            bases: Mutex::default(),
            auth: Mutex::default(),
            tokens: Mutex::default(),
            creds: Mutex::default(),
        })
    }

    /// The base URL (`scheme://host/`) for an endpoint, probing https first for
    /// loopback and insecure registries and remembering the answer.
    pub async fn base(&self, ep: &Endpoint) -> Result<Url, RegistryError> {
        if let Some(base) = &ep.fixed_base {
            if base.scheme() == "http" && !ep.insecure && !is_loopback(&ep.host) {
                return Err(RegistryError::Insecure {
                    registry: ep.registry.clone(),
                    url: base.to_string(),
                });
            }
            return Ok(base.clone());
        }
        if let Some(base) = lock(&self.bases).get(&ep.host) {
            return Ok(base.clone());
        }
        let parse = |scheme: &str| {
            Url::parse(&format!("{scheme}://{}/", ep.host)).map_err(|e| RegistryError::Settings {
                registry: ep.registry.clone(),
                detail: format!("`{}` is not a valid host: {e}", ep.host),
            })
        };
        let mut base = parse("https")?;
        if ep.insecure || is_loopback(&ep.host) {
            let probe = self
                .http_insecure
                .get(base.join("v2/").map_err(|e| protocol(ep, e))?)
                .timeout(self.timeouts.connect.min(Duration::from_secs(5)))
                .send()
                .await;
            if probe.is_err() {
                tracing::debug!(host = %ep.host, "no https on this registry, using plain http");
                base = parse("http")?;
            }
        }
        lock(&self.bases).insert(ep.host.clone(), base.clone());
        Ok(base)
    }

    fn client(&self, ep: &Endpoint, url: &Url) -> &reqwest::Client {
        let host = url.host_str().unwrap_or("");
        if url.scheme() == "https" && (ep.insecure || is_loopback(host)) {
            &self.http_insecure
        } else {
            &self.http
        }
    }

    /// The credential for an endpoint's host, read once per client.
    pub fn credential(&self, ep: &Endpoint) -> Result<Option<Credential>, RegistryError> {
        if let Some(c) = lock(&self.creds).get(&ep.host) {
            return Ok(c.clone());
        }
        let c = auth::lookup(&ep.registry_key(), ep.auth_file.as_deref())?;
        lock(&self.creds).insert(ep.host.clone(), c.clone());
        Ok(c)
    }

    /// The `Authorization` value to send up front, if the host's scheme is known.
    async fn auth_header(
        &self,
        ep: &Endpoint,
        target: &Target,
        scope: &str,
    ) -> Result<Option<String>, RegistryError> {
        let known = lock(&self.auth).get(&ep.host).cloned();
        match known {
            None => Ok(None),
            Some(HostAuth::Basic(h)) => Ok(Some(h)),
            Some(HostAuth::Bearer { realm, service }) => {
                let key = (ep.host.clone(), scope.to_string());
                if let Some(t) = lock(&self.tokens).get(&key).filter(|t| !t.expired()) {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let t = token::fetch(self, ep, target, &realm, service.as_deref(), scope).await?;
                let header = format!("Bearer {}", t.value);
                lock(&self.tokens).insert(key, t);
                Ok(Some(header))
            }
        }
    }

    /// Answers a 401 challenge: remembers the host's scheme and gets a token if needed.
    async fn answer(
        &self,
        ep: &Endpoint,
        target: &Target,
        scope: &str,
        headers: &HeaderMap,
    ) -> Result<(), RegistryError> {
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(auth::parse_challenge);
        match challenge {
            Some(Challenge::Basic { .. }) => {
                match self.credential(ep)? {
                    Some(c) => {
                        let header = c.basic_header().ok_or_else(|| RegistryError::Unauthorized {
                        target: target.clone(),
                        detail: ": the registry wants a password, config.json has an identity token".into(),
                    })?;
                        lock(&self.auth).insert(ep.host.clone(), HostAuth::Basic(header));
                        Ok(())
                    }
                    None => Err(RegistryError::NoCredentials {
                        target: target.clone(),
                    }),
                }
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope: asked,
            }) => {
                lock(&self.auth).insert(
                    ep.host.clone(),
                    HostAuth::Bearer {
                        realm: realm.clone(),
                        service: service.clone(),
                    },
                );
                // Ask for what the server named, or what this operation needs.
                let want = asked.unwrap_or_else(|| scope.to_string());
                let t = token::fetch(self, ep, target, &realm, service.as_deref(), &want).await?;
                lock(&self.tokens).insert((ep.host.clone(), scope.to_string()), t);
                Ok(())
            }
            None => Err(RegistryError::Unauthorized {
                target: target.clone(),
                detail: ": no usable WWW-Authenticate challenge".into(),
            }),
        }
    }

    /// Sends a request with auth and retries. Returns the first response that is
    /// neither a 401 nor retryable; the caller maps other statuses to errors.
    pub async fn execute(
        &self,
        ep: &Endpoint,
        target: &Target,
        push: bool,
        req: Req,
    ) -> Result<Response, RegistryError> {
        let Req {
            method,
            url,
            headers,
            body,
        } = req;
        let scope = token::scope(&target.repository, push);
        let mut answered = false;
        let mut retry = 0u32;
        loop {
            let mut req = self
                .client(ep, &url)
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(h) = self.auth_header(ep, target, &scope).await? {
                let mut v = HeaderValue::from_str(&h).map_err(|e| protocol(ep, e))?;
                v.set_sensitive(true);
                req = req.header(AUTHORIZATION, v);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let outcome = match tokio::time::timeout(self.timeouts.connect, req.send()).await {
                Ok(Err(e)) if e.is_timeout() => return Err(self.no_headers(ep, target)),
                Ok(outcome) => outcome,
                Err(_) => return Err(self.no_headers(ep, target)),
            };
            let retry_after = match &outcome {
                Err(_) => None,
                Ok(resp) if resp.status() == 401 && !answered => {
                    answered = true;
                    self.answer(ep, target, &scope, resp.headers()).await?;
                    continue;
                }
                Ok(resp) if retry::is_transient_status(resp.status().as_u16()) => resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry::parse_retry_after(v, SystemTime::now())),
                Ok(_) => return outcome.map_err(|e| connect(target, &url, e)),
            };
            retry += 1;
            if retry >= self.retry.attempts {
                return match outcome {
                    Ok(resp) => Err(status_error(target, resp, self.timeouts.connect).await),
                    Err(e) => Err(connect(target, &url, e)),
                };
            }
            let delay = self
                .retry
                .delay(retry - 1, retry_after, retry::jitter_seed());
            match &outcome {
                Ok(resp) => {
                    tracing::warn!(registry = %target.registry, status = resp.status().as_u16(), ?delay, "registry busy, retrying")
                }
                Err(e) => {
                    tracing::warn!(registry = %target.registry, error = %e, ?delay, "registry request failed, retrying")
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn no_headers(&self, ep: &Endpoint, target: &Target) -> RegistryError {
        RegistryError::NoHeaders {
            target: target.clone(),
            host: ep.host.clone(),
            after: self.timeouts.connect,
        }
    }

    /// Forgets the scheme and tokens of a host whose credentials were rejected.
    pub fn forget(&self, ep: &Endpoint) {
        lock(&self.auth).remove(&ep.host);
        lock(&self.tokens).retain(|(h, _), _| h != &ep.host);
    }
}

impl Endpoint {
    /// The registry name that keys credentials: the mirror's host, or the registry.
    fn registry_key(&self) -> String {
        if self.fixed_base.is_some() {
            self.host.clone()
        } else {
            self.registry.clone()
        }
    }
}

/// Redirects are followed (blob storage often lives elsewhere) but never from https
/// down to plain http, except to loopback.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https")
            && !attempt.url().host_str().is_some_and(is_loopback);
        if downgrade || attempt.previous().len() >= 10 {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

fn protocol(ep: &Endpoint, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Protocol {
        registry: ep.registry.clone(),
        detail: e.to_string(),
    }
}

pub(super) fn connect(target: &Target, url: &Url, source: reqwest::Error) -> RegistryError {
    RegistryError::Connect {
        target: target.clone(),
        url: url.to_string(),
        source,
    }
}

/// How much of an error body is read for its message.
pub(super) const MAX_ERROR_BODY: usize = 64 << 10;

/// Maps an unsuccessful response to an error, with the registry's own error text:
/// from the first [`MAX_ERROR_BODY`] bytes of the body, read for at most `within`.
pub(super) async fn status_error(
    target: &Target,
    resp: Response,
    within: Duration,
) -> RegistryError {
    let status = resp.status().as_u16();
    let body = read_prefix(resp, MAX_ERROR_BODY, within).await;
    let detail = error_detail(&body);
    let target = target.clone();
    match status {
        401 => RegistryError::Unauthorized { target, detail },
        403 => RegistryError::Forbidden { target, detail },
        404 => RegistryError::NotFound { target, detail },
        _ => RegistryError::Status {
            target,
            status,
            detail,
        },
    }
}

/// The first bytes of an error's body (one home: `crate::util`).
pub(super) use crate::util::read_prefix;

/// Why [`read_small`] stopped.
#[derive(Debug)]
pub(super) enum SmallReadError {
    /// More than the limit: the size seen so far (or announced).
    TooLarge(u64),
    Broken(reqwest::Error),
    /// Not whole within the deadline.
    TooSlow,
}

/// Reads a small document (a manifest, a token response) into memory: at most
/// `limit` bytes, whole within `within`.
pub(super) async fn read_small(
    mut resp: Response,
    limit: u64,
    within: Duration,
) -> Result<Vec<u8>, SmallReadError> {
    if let Some(len) = resp.content_length().filter(|l| *l > limit) {
        return Err(SmallReadError::TooLarge(len));
    }
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => return Err(SmallReadError::TooSlow),
            Ok(Err(e)) => return Err(SmallReadError::Broken(e)),
            Ok(Ok(None)) => return Ok(out),
            Ok(Ok(Some(chunk))) => chunk,
        };
        let size = out.len() as u64 + chunk.len() as u64;
        if size > limit {
            return Err(SmallReadError::TooLarge(size));
        }
        out.extend_from_slice(&chunk);
    }
}

/// Fewer bytes than this within one `pull_idle_timeout` window is a stall: a server
/// trickling a byte every few seconds never goes quiet for a whole window, yet would
/// hold a pull for days.
pub(super) const MIN_PROGRESS: usize = 1024;

/// How many idle windows one download attempt of a blob may last: a server that feeds
/// just enough to pass every window still ends the attempt. What arrived is kept, and
/// the next pass resumes from there, so a slow but honest link still gets there.
pub(super) const ATTEMPT_WINDOWS: u32 = 10;

/// Why [`idle_guard`] ended a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stall {
    /// Less than [`MIN_PROGRESS`] within one window.
    Window,
    /// The attempt lasted [`ATTEMPT_WINDOWS`] windows.
    Attempt,
}

/// Ends `stream` with `stalled(Stall::Window)` when fewer than [`MIN_PROGRESS`] bytes
/// come within one window of `idle` (a blob download that makes real progress goes on;
/// one that stops or trickles fails), and with `stalled(Stall::Attempt)` once it has
/// lasted [`ATTEMPT_WINDOWS`] windows.
pub(super) fn idle_guard<S, T, F>(
    stream: S,
    idle: Duration,
    stalled: F,
) -> impl Stream<Item = Result<T, RegistryError>> + Send + 'static
where
    S: Stream<Item = Result<T, RegistryError>> + Send + Unpin + 'static,
    T: AsRef<[u8]> + Send + 'static,
    F: Fn(Stall) -> RegistryError + Send + Sync + 'static,
{
    struct Window<S, F> {
        stream: S,
        stalled: F,
        deadline: tokio::time::Instant,
        end: tokio::time::Instant,
        got: usize,
    }
    let start = tokio::time::Instant::now();
    let first = Window {
        stream,
        stalled,
        deadline: start + idle,
        end: start + idle * ATTEMPT_WINDOWS,
        got: 0,
    };
    futures_util::stream::unfold(Some(first), move |state| async move {
        let mut w = state?;
        loop {
            let next = tokio::time::timeout_at(w.deadline.min(w.end), w.stream.next()).await;
            let now = tokio::time::Instant::now();
            if now >= w.end && !matches!(next, Ok(None)) {
                return Some((Err((w.stalled)(Stall::Attempt)), None));
            }
            // A window ended: enough came in it, or the download is stalled.
            if now >= w.deadline {
                let got = w.got
                    + next.as_ref().map_or(0, |n| match n {
                        Some(Ok(chunk)) => chunk.as_ref().len(),
                        _ => 0,
                    });
                if got < MIN_PROGRESS && !matches!(next, Ok(None)) {
                    return Some((Err((w.stalled)(Stall::Window)), None));
                }
                w.deadline = now + idle;
                w.got = 0;
            }
            match next {
                Ok(Some(item)) => {
                    if let Ok(chunk) = &item {
                        w.got += chunk.as_ref().len();
                    }
                    return Some((item, Some(w)));
                }
                Ok(None) => return None,
                // The window ended with enough progress: wait on in a fresh one.
                Err(_) => continue,
            }
        }
    })
}

/// `: CODE message` from a distribution error body, or nothing.
pub(super) fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|i| format!("{} {}", i.code, i.message).trim().to_lowercase())
                .collect();
            format!(": {}", parts.join("; "))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "LOCALHOST",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.example.com",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.example.com",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn registry_error_details() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}}]}"#;
        assert_eq!(error_detail(body), ": manifest_unknown manifest unknown");
        assert_eq!(error_detail(b"<html>"), "");
        assert_eq!(error_detail(br#"{"errors":[]}"#), "");
    }
}
