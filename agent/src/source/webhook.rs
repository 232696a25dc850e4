//! The webhook receiver (`source.webhook`, DESIGN.md §4): a push to the followed ref,
//! announced by the Git server, makes the agent fetch at once instead of at its next
//! poll.
//!
//! `POST /v1/webhook` on `source.webhook.listen`, plain HTTP/1.1 (put a TLS proxy in
//! front when it leaves a private network). A request is acted on only when it proves
//! it knows the secret (`source.webhook.secret_file`):
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`, event in
//!   `X-GitHub-Event`;
//! - Gitea and Forgejo: `X-Gitea-Signature` or `X-Forgejo-Signature: <hex HMAC-SHA256>`,
//!   event in `X-Gitea-Event` or `X-Forgejo-Event`;
//! - GitLab: `X-Gitlab-Token: <secret>`, event in `X-Gitlab-Event`.
//!
//! Signatures and the token are compared in constant time. The body is the event's
//! JSON (content type `application/json`) or a form (`application/x-www-form-urlencoded`,
//! GitHub's default) whose `payload` field is that JSON; a form's signature holds over
//! the body as sent (GitHub) or over its `payload` (Gitea, Forgejo). Only a push
//! (`push`, `Push Hook`, `Tag Push Hook`) whose `ref` is the followed branch or tag
//! sends [`Trigger::SourceChanged`]; a ping, another event, another ref, or a node
//! pinned to a commit is answered 200 "ignored". Refusals: 401 (no or a wrong signature
//! or token), 413 (a body over [`MAX_BODY`]), 429, 404, 405, 408 and 400; each is one
//! warning (target `agent`) naming the peer and the reason, never the secret or the
//! signature (refusals for the rate: one line a second at most, counting the others),
//! and none fetches.
//!
//! 429 is per peer, counted before any check: each address (IPv4, or IPv6 /64) has
//! [`REQUESTS_BURST`] requests at once, then [`REQUESTS_PER_SECOND`] a second, and a
//! request that authenticates gives its token back, so only a peer's unauthenticated
//! requests count against it and another peer's flood never refuses a signed push.
//! [`MAX_PEERS`] peers are tracked (at most about 130 KiB); a new one beyond them replaces the
//! one seen least recently, which starts afresh if it comes back. Valid pushes fetch at
//! most once per [`FETCH_SPACING`]: one that comes sooner is answered 202 and its fetch
//! runs when the spacing is up (never dropped). Connections are bounded like the API's:
//! [`MAX_CONNECTIONS`] at once, [`MAX_CONNECTIONS_PER_PEER`] of them from one peer (the
//! next is closed unanswered), headers within [`HEADER_WITHIN`], the body within
//! [`BODY_WITHIN`], one request per connection, which closes after
//! [`CONNECTION_WITHIN`] at most.
//!
//! It runs on the agent's async runtime in `berth-agentd` and links no Git code. The
//! checks themselves are pure, in `check`; this file serves them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_spec::node::{GitRef, NodeConfig, Webhook};
use berth_spec::{Diagnostic, Location};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::reconcile::controller::{Handle, Trigger};

mod check;
use check::{LogPacer, Pace, Pacer, PeerBuckets, PeerConnections, Verdict, judge};

/// The one path the receiver answers on.
pub const PATH: &str = "/v1/webhook";
/// The largest body read. A push event is a few KiB (GitHub lists at most 20 commits);
/// 1 MiB leaves room for a large one and bounds what a client can make the agent hold.
pub const MAX_BODY: u64 = 1024 * 1024;
/// Unauthenticated requests a peer may send at once before the rate applies.
pub const REQUESTS_BURST: u32 = 10;
/// Unauthenticated requests a second a peer may send, on average, after the burst (a
/// signed request is not counted).
pub const REQUESTS_PER_SECOND: u32 = 1;
/// The peers whose requests are counted at once (the least recently seen is forgotten
/// first).
pub const MAX_PEERS: usize = 1024;
/// The least time between two fetches that valid pushes start.
pub const FETCH_SPACING: Duration = Duration::from_secs(1);
/// Connections served at once; the next ones wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections served at once from one peer (an IPv4 address, an IPv6 /64); the next
/// one is closed at once, so that a peer holding connections open leaves the others
/// three quarters of [`MAX_CONNECTIONS`].
pub const MAX_CONNECTIONS_PER_PEER: usize = 8;
/// How long a connection may take to send its request's headers.
pub const HEADER_WITHIN: Duration = Duration::from_secs(10);
/// How long the body may take once the headers arrived.
pub const BODY_WITHIN: Duration = Duration::from_secs(10);
/// How long a connection lives at most, whatever it does.
pub const CONNECTION_WITHIN: Duration = Duration::from_secs(30);
/// hyper's read buffer, which bounds the request's headers.
const READ_BUFFER: usize = 64 * 1024;

/// Why the receiver cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot read the webhook secret {} (`source.webhook.secret_file`)", .path.display())]
    ReadSecret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook secret {} (`source.webhook.secret_file`) is empty", .path.display())]
    EmptySecret { path: PathBuf },
    #[error("`source.webhook.listen` `{listen}` is not an address:port")]
    Address { listen: String },
    #[error("cannot listen for webhooks on {addr} (`source.webhook.listen`)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The shared secret, kept out of logs and wiped when dropped.
pub struct Secret(zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    #[cfg(test)]
    pub fn new(bytes: &[u8]) -> Secret {
        Secret(zeroize::Zeroizing::new(bytes.to_vec()))
    }

    /// The file's content, less one trailing newline (`\n` or `\r\n`); an empty secret
    /// is refused.
    pub fn load(path: &Path) -> Result<Secret, WebhookError> {
        let mut bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| {
            WebhookError::ReadSecret {
                path: path.to_path_buf(),
                source,
            }
        })?);
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(WebhookError::EmptySecret {
                path: path.to_path_buf(),
            });
        }
        Ok(Secret(bytes))
    }
}

/// `berth agent --check`: the webhook secret loaded as the receiver loads it, and why
/// the agent would refuse to start with it (unreadable, not a file, empty), located at
/// `source.webhook.secret_file` (`shown` names the configuration when the key has no
/// place). Never its content.
pub fn check_secret(config: &NodeConfig, shown: &str) -> Option<Diagnostic> {
    let webhook = config.source.as_ref()?.webhook.as_ref()?;
    let path = &webhook.secret_file;
    let why = match std::fs::metadata(path) {
        // Not opened: reading a FIFO would block.
        Ok(m) if !m.is_file() => format!(
            "the webhook secret {} (`source.webhook.secret_file`) is not a regular file",
            path.display()
        ),
        _ => crate::util::error_chain(&Secret::load(path).err()?),
    };
    let key = "source.webhook.secret_file";
    let at = config.keys.get(key).cloned().unwrap_or_else(|| Location {
        file: shown.to_string(),
        line: 1,
        column: 1,
    });
    Some(
        Diagnostic::new(
            &at,
            format!("{why}; the agent refuses to start without its webhook secret"),
        )
        .key(key),
    )
}

/// What every connection shares.
struct Shared {
    secret: Secret,
    git_ref: GitRef,
    handle: Handle,
    /// Each peer's requests.
    requests: Mutex<PeerBuckets>,
    /// The warnings of refusals for the rate.
    flood_log: Mutex<LogPacer>,
    /// Each peer's open connections.
    connections: Mutex<PeerConnections>,
    /// The warnings of connections closed for their peer's count.
    connections_log: Mutex<LogPacer>,
    /// Refusals of a connection (no headers in time, not HTTP/1, too long): one line a
    /// second at most, so that a peer sending garbage cannot flood the log.
    malformed_log: Mutex<LogPacer>,
    pacer: Mutex<Pacer>,
}

/// The receiver being served; dropping it stops accepting.
#[derive(Debug)]
pub struct WebhookServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookServer {
    /// The address it listens on (the port chosen, for `:0`).
    #[cfg(test)]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.task.abort();
        tracing::debug!(target: "agent", addr = %self.addr, "the webhook receiver stopped");
    }
}

/// Reads the secret, binds `webhook.listen` and serves on `rt` until the returned
/// server is dropped; pushes to `git_ref` are sent to `handle`.
pub fn start(
    rt: &tokio::runtime::Handle,
    handle: Handle,
    webhook: &Webhook,
    git_ref: &GitRef,
) -> Result<WebhookServer, WebhookError> {
    let secret = Secret::load(&webhook.secret_file)?;
    let addr: SocketAddr = webhook.listen.parse().map_err(|_| WebhookError::Address {
        listen: webhook.listen.clone(),
    })?;
    let bind_err = |source| WebhookError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = std_listener.local_addr().map_err(bind_err)?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?
    };
    let shared = Arc::new(Shared {
        secret,
        git_ref: git_ref.clone(),
        handle,
        requests: Mutex::new(PeerBuckets::new(
            MAX_PEERS,
            REQUESTS_BURST,
            REQUESTS_PER_SECOND,
        )),
        flood_log: Mutex::new(LogPacer::default()),
        connections: Mutex::new(PeerConnections::new(MAX_CONNECTIONS_PER_PEER)),
        connections_log: Mutex::new(LogPacer::default()),
        malformed_log: Mutex::new(LogPacer::default()),
        pacer: Mutex::new(Pacer::default()),
    });
    let task = rt.spawn(accept_loop(listener, shared));
    tracing::info!(target: "agent", %addr, path = PATH, "receiving webhooks");
    Ok(WebhookServer { addr, task })
}

/// Accepts while fewer than [`MAX_CONNECTIONS`] are open, each served by hyper with
/// its header timeout, one request, and an end after [`CONNECTION_WITHIN`].
async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // The semaphore is never closed: a permit always comes.
    while let Some((permit, stream, peer)) =
        crate::util::peers::accept_slot(&listener, &slots, "webhook receiver").await
    {
        if !locked(&shared.connections).open(peer.ip()) {
            // Counted as the rate's refusals are, though it is answered nothing.
            shared.handle.metrics().webhook(429);
            if let Some(held) = locked(&shared.connections_log).admit(Instant::now()) {
                tracing::warn!(target: "agent", %peer, "webhook refused: over {MAX_CONNECTIONS_PER_PEER} connections open from this address; closed ({held} more so since the last such line)");
            }
            continue;
        }
        let shared = shared.clone();
        let logs = shared.clone();
        tokio::spawn(async move {
            let _slot = permit;
            let _counted = Counted {
                shared: shared.clone(),
                peer,
            };
            // Whether the request came to an answer, counted then; a connection that
            // ends without one is counted below, as refused.
            let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let answered_in = answered.clone();
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let answered = answered_in.clone();
                async move {
                    let answer = respond(req, peer, &shared).await;
                    answered.store(true, std::sync::atomic::Ordering::Relaxed);
                    shared.handle.metrics().webhook(answer.status().as_u16());
                    Ok::<_, Infallible>(answer)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_WITHIN)
                .keep_alive(false)
                .max_buf_size(READ_BUFFER)
                .serve_connection(TokioIo::new(stream), service);
            let paced = || {
                if !answered.load(std::sync::atomic::Ordering::Relaxed) {
                    logs.handle.metrics().webhook(400);
                }
                locked(&logs.malformed_log).admit(Instant::now())
            };
            match tokio::time::timeout(CONNECTION_WITHIN, conn).await {
                Err(_) => {
                    if let Some(held) = paced() {
                        tracing::warn!(target: "agent", %peer, held_back = held, "webhook refused: the connection outlived {CONNECTION_WITHIN:?}; closed");
                    }
                }
                Ok(Err(e)) if e.is_timeout() => {
                    if let Some(held) = paced() {
                        tracing::warn!(target: "agent", %peer, held_back = held, "webhook refused: no request headers within {HEADER_WITHIN:?}");
                    }
                }
                Ok(Err(e)) if e.is_parse() || e.is_parse_too_large() => {
                    if let Some(held) = paced() {
                        tracing::warn!(target: "agent", %peer, held_back = held, error = %e, "webhook refused: not an HTTP/1 request");
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(target: "agent", %peer, error = %e, "webhook connection ended");
                }
                Ok(Ok(())) => {}
            }
        });
    }
}

/// A connection counted in [`Shared::connections`], until it is dropped.
struct Counted {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        locked(&self.shared.connections).close(self.peer.ip());
    }
}

/// A JSON answer.
fn answer(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A refusal's answer.
fn refusal(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    answer(
        status,
        &serde_json::json!({"result": "refused", "reason": reason}),
    )
}

/// A refusal: one warning, and its answer.
fn refuse(peer: SocketAddr, status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    tracing::warn!(target: "agent", %peer, status = status.as_u16(), "webhook refused: {reason}");
    refusal(status, reason)
}

/// 429, logged with what to add to the reason when `log` is given.
fn too_many(log: Option<(SocketAddr, String)>) -> Response<Full<Bytes>> {
    let reason = format!(
        "too many unauthenticated requests from this address (at most {REQUESTS_BURST} at once, then {REQUESTS_PER_SECOND} a second)"
    );
    let status = StatusCode::TOO_MANY_REQUESTS;
    if let Some((peer, more)) = log {
        tracing::warn!(target: "agent", %peer, status = status.as_u16(), "webhook refused: {reason}{more}");
    }
    let mut r = refusal(status, &reason);
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    r
}

/// The value behind `m`, even if a thread panicked holding it (the limits stay
/// consistent: each update is one assignment).
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The answer to one request; see the module docs for the order of the checks.
async fn respond(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let now = Instant::now();
    if !locked(&shared.requests).take(peer.ip(), now) {
        // A flood writes one line a second, with the count of those it stands for.
        let Some(held) = locked(&shared.flood_log).admit(now) else {
            return too_many(None);
        };
        let more = if held > 0 {
            format!("; {held} more refused so since the last such line")
        } else {
            String::new()
        };
        return too_many(Some((peer, more)));
    }
    if req.uri().path() != PATH {
        return refuse(
            peer,
            StatusCode::NOT_FOUND,
            &format!("no such path (webhooks go to POST {PATH})"),
        );
    }
    if req.method() != Method::POST {
        return refuse(peer, StatusCode::METHOD_NOT_ALLOWED, "only POST is taken");
    }
    let too_large = || format!("the body is larger than {} KiB", MAX_BODY / 1024);
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return refuse(peer, StatusCode::PAYLOAD_TOO_LARGE, &too_large());
    }
    let (parts, body) = req.into_parts();
    let cap = usize::try_from(MAX_BODY).unwrap_or(usize::MAX);
    let body = match tokio::time::timeout(BODY_WITHIN, Limited::new(body, cap).collect()).await {
        Err(_) => {
            return refuse(
                peer,
                StatusCode::REQUEST_TIMEOUT,
                &format!("the body did not arrive within {BODY_WITHIN:?}"),
            );
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse(peer, StatusCode::PAYLOAD_TOO_LARGE, &too_large());
        }
        Ok(Err(e)) => {
            return refuse(
                peer,
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            );
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    let verdict = judge(&parts.headers, &body, &shared.secret, &shared.git_ref);
    if matches!(verdict, Verdict::Push { .. } | Verdict::Ignored(_)) {
        locked(&shared.requests).refund(peer.ip());
    }
    match verdict {
        Verdict::Refused { status, reason } => refuse(peer, status, &reason),
        Verdict::Ignored(why) => {
            tracing::info!(target: "agent", %peer, "webhook ignored: {why}");
            answer(
                StatusCode::OK,
                &serde_json::json!({"result": "ignored", "reason": why}),
            )
        }
        Verdict::Push { forge, git_ref } => {
            let why = format!("webhook: push to {git_ref} ({})", forge.name());
            let pace = locked(&shared.pacer).admit(Instant::now());
            let fetch = match pace {
                Pace::Now => {
                    shared.handle.send(Trigger::SourceChanged(why));
                    "now".to_string()
                }
                Pace::After(delay) => {
                    let handle = shared.handle.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        handle.send(Trigger::SourceChanged(why));
                    });
                    tracing::info!(target: "agent", %peer, "webhook: push to {git_ref} ({}); fetching in {delay:?} (one fetch a second at most)", forge.name());
                    format!("in {} ms", delay.as_millis())
                }
                Pace::Pending => {
                    tracing::info!(target: "agent", %peer, "webhook: push to {git_ref} ({}); the fetch already due covers it", forge.name());
                    "already due".to_string()
                }
            };
            answer(
                StatusCode::ACCEPTED,
                &serde_json::json!({"result": "accepted", "ref": git_ref, "fetch": fetch}),
            )
        }
    }
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
