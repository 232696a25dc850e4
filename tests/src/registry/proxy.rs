//! A loopback HTTP proxy in front of a test registry, for failure paths a real
//! registry does not produce on demand. One request per connection (it forces
//! `Connection: close`); every request head is logged. Options:
//! - `cut`: the first response to a request whose path contains a string is cut off
//!   after N bytes (a dropped connection mid-blob);
//! - `fail`: the first K requests whose path contains a string get a status (503, or
//!   429 with `Retry-After`);
//! - `bearer`: the registry API demands `Authorization: Bearer`, with a Docker-style
//!   challenge pointing at the proxy's own `/token` endpoint, which checks Basic
//!   credentials and issues tokens bound to one repository scope.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::find;

/// What the proxy does besides forwarding.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Cut the first response for a path containing `.0` after `.1` bytes.
    pub cut: Option<(String, usize)>,
    /// Answer the first `.2` requests for a path containing `.0` with status `.1`
    /// (and `Retry-After: .3` seconds when set).
    pub fail: Option<(String, u16, usize, Option<u64>)>,
    /// Demand bearer tokens; the token endpoint accepts this user and password.
    pub bearer: Option<(String, String)>,
}

/// A running proxy; stops accepting on drop.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    upstream: Option<SocketAddr>,
    opts: ProxyOptions,
    log: Mutex<Vec<String>>,
    cut_done: AtomicBool,
    failed: AtomicUsize,
    token_requests: AtomicUsize,
    tokens: Mutex<HashMap<String, String>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on a free loopback port.
    pub fn start(upstream: SocketAddr, opts: ProxyOptions) -> Proxy {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy addr: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(State {
            upstream: Some(upstream),
            opts,
            ..State::default()
        });
        let (s, st) = (stop.clone(), state.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &st, addr);
                });
            }
        });
        Proxy { addr, stop, state }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Request heads seen so far, each `METHOD PATH` plus a `range=…` note.
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// How many token requests the token endpoint answered with a token.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

struct Request {
    head: String,
    method: String,
    path: String,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        // A TLS ClientHello (https probe): not for us.
        if buf.is_empty() && chunk[0] == 0x16 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut body = buf[end + 4..].to_vec();
            let mut parts = head.split(' ');
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let mut req = Request {
                head,
                method,
                path,
                body: Vec::new(),
            };
            let len: usize = req
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while body.len() < len {
                let n = conn.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            req.body = body;
            return Ok(Some(req));
        }
        if buf.len() > 1 << 16 {
            return Ok(None);
        }
    }
}

fn respond(
    conn: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    conn.write_all(out.as_bytes())?;
    conn.write_all(body)
}

/// The repository named by a registry API path (`/v2/<name>/manifests/…`).
fn repository(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| rest.rfind(m))
        .min()
        .map(|i| &rest[..i])
}

fn handle(mut conn: TcpStream, st: &State, me: SocketAddr) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let Some(req) = read_request(&mut conn)? else {
        return Ok(());
    };
    let range = req
        .header("range")
        .map(|r| format!(" range={r}"))
        .unwrap_or_default();
    if let Ok(mut log) = st.log.lock() {
        log.push(format!("{} {}{range}", req.method, req.path));
    }
    if let Some((user, password)) = &st.opts.bearer {
        if req.path.starts_with("/token") {
            let want = super::basic_header(user, password);
            if req.header("authorization") != Some(want.as_str()) {
                return respond(&mut conn, 401, &[], b"{\"details\":\"bad credentials\"}");
            }
            let scope = req
                .path
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("scope="))
                .unwrap_or("")
                .replace("%3A", ":")
                .replace("%2F", "/")
                .replace("%2C", ",");
            let n = st.token_requests.fetch_add(1, Ordering::SeqCst);
            let token = format!("token-{n}");
            if let Ok(mut t) = st.tokens.lock() {
                t.insert(token.clone(), scope);
            }
            let body = format!("{{\"token\":\"{token}\",\"expires_in\":300}}");
            return respond(
                &mut conn,
                200,
                &[("Content-Type", "application/json".into())],
                body.as_bytes(),
            );
        }
        let repo = repository(&req.path);
        let allowed = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|t| st.tokens.lock().ok()?.get(t).cloned())
            .is_some_and(|scope| match repo {
                Some(r) => scope.starts_with(&format!("repository:{r}:")) && scope.contains("pull"),
                None => true,
            });
        if !allowed {
            let scope = repo
                .map(|r| format!(",scope=\"repository:{r}:pull\""))
                .unwrap_or_default();
            let challenge =
                format!("Bearer realm=\"http://{me}/token\",service=\"berth-test\"{scope}");
            return respond(&mut conn, 401, &[("WWW-Authenticate", challenge)], b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}");
        }
    }
    if let Some((needle, status, count, retry_after)) = &st.opts.fail
        && req.path.contains(needle.as_str())
        && st.failed.fetch_add(1, Ordering::SeqCst) < *count
    {
        let headers: Vec<(&str, String)> = retry_after
            .iter()
            .map(|s| ("Retry-After", s.to_string()))
            .collect();
        return respond(
            &mut conn,
            *status,
            &headers,
            b"{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"slow down\"}]}",
        );
    }
    let Some(upstream) = st.upstream else {
        return Ok(());
    };
    let mut up = TcpStream::connect(upstream)?;
    // Forward the head with `Connection: close` so one response ends the exchange.
    let mut head = String::new();
    for (i, line) in req.head.split("\r\n").enumerate() {
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    let cut = st
        .opts
        .cut
        .as_ref()
        .filter(|(needle, _)| req.method == "GET" && req.path.contains(needle.as_str()))
        .filter(|_| !st.cut_done.swap(true, Ordering::SeqCst))
        .map(|(_, n)| *n);
    let mut sent = 0usize;
    let mut buf = [0u8; 16384];
    loop {
        let n = up.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let n = match cut {
            Some(limit) if sent + n >= limit => {
                conn.write_all(&buf[..limit - sent])?;
                conn.flush()?;
                let _ = conn.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => n,
        };
        conn.write_all(&buf[..n])?;
        sent += n;
    }
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_from_path() {
        assert_eq!(super::repository("/v2/a/b/manifests/v1"), Some("a/b"));
        assert_eq!(super::repository("/v2/x/blobs/sha256:00"), Some("x"));
        assert_eq!(super::repository("/v2/"), None);
    }
}
