//! `telemetry.metrics_listen`: the metrics on a TCP address of their own, for a
//! Prometheus server that cannot reach the API socket. It answers `GET /metrics` and
//! nothing else (404 another path, 405 another method), one request a connection.
//!
//! What it serves holds no secret and no name (counts by result, state, rule), but the
//! address is open to whoever reaches it: the connections are bounded like the webhook
//! receiver's ([`MAX_CONNECTIONS`] at once, [`MAX_CONNECTIONS_PER_PEER`] of them from
//! one peer (the next is closed unanswered), headers within [`HEADER_WITHIN`], a
//! connection ended after [`CONNECTION_WITHIN`]), so a client can hold only so much of
//! the agent and one peer holding connections open never delays another's scrape by
//! more than [`HEADER_WITHIN`]. Each scrape reads the state directory on a blocking
//! thread.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::reconcile::controller::Handle;
use crate::util::peers::{PeerConnections, accept_slot};

/// Connections served at once; the next ones wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// Connections served at once from one peer (an IPv4 address, an IPv6 /64); the next
/// one is closed at once, so that a peer holding connections open leaves the others
/// three quarters of [`MAX_CONNECTIONS`].
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// How long a connection may take to send its request's headers: well within
/// Prometheus' default scrape timeout (10 s), since a scraper sends them at once.
pub const HEADER_WITHIN: Duration = Duration::from_secs(2);
/// How long a connection lives at most, whatever it does.
pub const CONNECTION_WITHIN: Duration = Duration::from_secs(30);
/// hyper's read buffer, which bounds the request's headers.
const READ_BUFFER: usize = 16 * 1024;
/// The one path served.
pub const PATH: &str = "/metrics";

/// Why the metrics cannot be served on their address.
#[derive(Debug, thiserror::Error)]
pub enum MetricsHttpError {
    #[error("`telemetry.metrics_listen` `{listen}` is not an address:port")]
    Address { listen: String },
    #[error("cannot listen for metrics scrapes on {addr} (`telemetry.metrics_listen`)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The metrics being served on their address; dropping it stops accepting.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen, for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `listen` and serves the metrics of `handle` on `rt` until the returned server
/// is dropped.
pub fn start(
    rt: &tokio::runtime::Handle,
    handle: Handle,
    listen: &str,
) -> Result<MetricsServer, MetricsHttpError> {
    let addr: SocketAddr = listen.parse().map_err(|_| MetricsHttpError::Address {
        listen: listen.to_string(),
    })?;
    let bind_err = |source| MetricsHttpError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = std_listener.local_addr().map_err(bind_err)?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?
    };
    let task = rt.spawn(accept_loop(listener, Arc::new(handle)));
    tracing::info!(target: "agent", %addr, path = PATH, "serving metrics");
    Ok(MetricsServer { addr, task })
}

/// A connection counted in the peers' connections, until it is dropped.
struct Counted {
    connections: Arc<Mutex<PeerConnections>>,
    peer: std::net::IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        locked(&self.connections).close(self.peer);
    }
}

/// The value behind `m`, even if a thread panicked holding it (each update is one
/// assignment).
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(listener: tokio::net::TcpListener, handle: Arc<Handle>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = Arc::new(Mutex::new(PeerConnections::new(MAX_CONNECTIONS_PER_PEER)));
    // The semaphore is never closed: a permit always comes.
    while let Some((permit, stream, peer)) = accept_slot(&listener, &slots, "metrics").await {
        if !locked(&connections).open(peer.ip()) {
            // Closed unanswered; not a warning, which a peer could make a flood of.
            tracing::debug!(target: "agent", %peer, "metrics: over {MAX_CONNECTIONS_PER_PEER} connections open from this address; closed");
            continue;
        }
        let counted = Counted {
            connections: connections.clone(),
            peer: peer.ip(),
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _slot = permit;
            let _counted = counted;
            let service = hyper::service::service_fn(move |req| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(respond(&req, &handle).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_WITHIN)
                .keep_alive(false)
                .max_buf_size(READ_BUFFER)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_WITHIN, conn).await {
                tracing::debug!(target: "agent", error = %e, "metrics connection ended");
            }
        });
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn respond<B>(req: &Request<B>, handle: &Handle) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {PATH} is the only one here\n"),
        );
    }
    if req.method() != Method::GET {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{PATH} takes GET\n"),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET"),
        );
        return r;
    }
    let accept = req.headers().get(hyper::header::ACCEPT);
    let format = super::metrics::Format::of(accept.and_then(|a| a.to_str().ok()));
    match scrape_as(handle, format).await {
        Some(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(format.content_type()),
            );
            r
        }
        None => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be gathered\n".into(),
        ),
    }
}

/// The exposition of `handle`'s metrics, the host looked at on a blocking thread; none
/// when that thread failed.
pub async fn scrape(handle: &Handle) -> Option<String> {
    scrape_as(handle, super::metrics::Format::OpenMetrics).await
}

/// [`scrape`] in `format`.
pub async fn scrape_as(handle: &Handle, format: super::metrics::Format) -> Option<String> {
    let metrics = handle.metrics().clone();
    let dir = handle.state_dir().to_path_buf();
    let backoff = handle.backoff();
    tokio::task::spawn_blocking(move || metrics.scrape_as(&dir, backoff, format))
        .await
        .ok()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// The answer to `request` on `addr`: its status line, headers and body as text.
    fn ask(addr: SocketAddr, request: &str) -> String {
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        c.write_all(request.as_bytes()).expect("write");
        let mut out = String::new();
        c.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn metrics_are_served_on_their_address_and_nothing_else_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (handle, _rx) = crate::reconcile::controller::channel(dir.path(), Default::default());
        handle
            .metrics()
            .fetch(super::super::metrics::FetchEnd::Refused);
        let server = start(rt.handle(), handle, "127.0.0.1:0").expect("start");
        let addr = server.local_addr();

        let got = ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(
            got.contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{got}"
        );
        assert!(
            got.contains("berth_source_fetches_total{result=\"refused\"} 1\n"),
            "{got}"
        );
        assert!(got.ends_with("# EOF\n"), "{got}");

        let got = ask(addr, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 404 "), "{got}");
        let got = ask(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(got.starts_with("HTTP/1.1 405 "), "{got}");
        assert!(got.contains("allow: GET\r\n"), "{got}");

        // An address already taken is an error naming it.
        let taken = start(rt.handle(), server_handle(dir.path()), &addr.to_string())
            .expect_err("taken")
            .to_string();
        assert!(taken.contains(&addr.to_string()), "{taken}");
        let bad = start(rt.handle(), server_handle(dir.path()), "localhost")
            .expect_err("not an address")
            .to_string();
        assert!(bad.contains("`localhost`"), "{bad}");
        drop(server);
    }

    #[test]
    fn one_peer_holding_connections_open_does_not_delay_another_scrape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = start(rt.handle(), server_handle(dir.path()), "127.0.0.1:0").expect("start");
        let addr = server.local_addr();
        let connect_from = |from: std::net::Ipv4Addr| {
            let stream = rt.block_on(async {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket
                    .bind(SocketAddr::new(from.into(), 0))
                    .expect("bind the source address");
                socket.connect(addr).await.expect("connect")
            });
            let c = stream.into_std().expect("std stream");
            c.set_nonblocking(false).expect("blocking");
            c
        };
        // One peer opens every slot and sends nothing.
        let holder = std::net::Ipv4Addr::new(127, 0, 0, 3);
        let held: Vec<std::net::TcpStream> =
            (0..MAX_CONNECTIONS).map(|_| connect_from(holder)).collect();
        // Those beyond its share are closed at once, unanswered.
        let mut extra = held.last().expect("held").try_clone().expect("clone");
        extra
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let read = extra.read(&mut [0u8; 16]);
        assert!(matches!(read, Ok(0)), "{read:?}");
        // Another peer's scrape is answered at once, not after the holder's timeouts.
        let asked = std::time::Instant::now();
        let got = ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(asked.elapsed() < HEADER_WITHIN / 2, "{:?}", asked.elapsed());
        drop(held);
        drop(server);
    }

    fn server_handle(dir: &std::path::Path) -> Handle {
        crate::reconcile::controller::channel(dir, Default::default()).0
    }
}
