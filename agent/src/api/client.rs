//! The CLI's side of the API: one HTTP/1.1 request a connection over the unix socket
//! (hyper's connection-level client; no pool, no TLS, no DNS).
//!
//! A socket that is missing, or that nothing listens on, is [`ClientError::NoAgent`];
//! one that accepts and then resets, closes or says nothing within the request's time
//! is an agent that does not answer (a connection, HTTP or timeout error). The read-only
//! commands then fall back to the state directory, and the controls exit 3 saying so.
//! An answer other than 2xx is [`ClientError::Refused`] with the agent's own sentence.
//!
//! Every request has a deadline, so that a wedged agent never hangs the CLI: the
//! connection [`CONNECT_TIMEOUT`], `status` [`STATUS_TIMEOUT`], the other reads
//! [`READ_TIMEOUT`], `suspend`/`resume` [`CONTROL_TIMEOUT`], `reconcile` (which waits
//! for the pass) [`PASS_TIMEOUT`]. Only a followed event stream waits as long as the
//! agent runs, once its answer began.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::http::{Method, Request, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::wire::{ErrorDoc, OutcomeDoc, StatusDoc, SuspendedDoc};
use crate::reconcile::events::Event;

/// How long connecting to the socket may take (a unix socket connects at once, or
/// its backlog is full because nothing accepts).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `berth status` waits for the agent before it shows the state directory.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read waits for the agent's answer: a recorded event stream, a plan, a
/// container.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `suspend` and `resume` wait: the controller answers them between passes.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `reconcile` waits: the pass in flight, a fetch and a whole pass.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(600);

/// What a timed-out `suspend` or `resume` may still do, said with the timeout.
const CONTROL_HINT: &str = "; the agent does it after the pass in flight, if one runs \
     (`berth status` shows whether passes are suspended)";

/// The longest line of an event stream read.
const MAX_LINE: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket, or nothing listening on it.
    #[error("no agent answers on {}", path.display())]
    NoAgent {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to the agent on {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the agent on {} did not answer", path.display())]
    Http {
        path: PathBuf,
        #[source]
        source: hyper::Error,
    },
    #[error("cannot make the request {what}")]
    Request {
        what: String,
        #[source]
        source: hyper::http::Error,
    },
    /// Nothing came within the request's time: a wedged or very busy agent.
    #[error("the agent on {} did not answer {what} within {}{hint}", path.display(), humantime::format_duration(*after))]
    Timeout {
        path: PathBuf,
        /// `POST /v1/suspend`, or `the connection`.
        what: String,
        after: Duration,
        /// What the operator should know (empty when nothing).
        hint: &'static str,
    },
    /// The agent answered with an error: its status and its sentence.
    #[error("{}", doc.error)]
    Refused { status: u16, doc: ErrorDoc },
    #[error("the agent on {} answered {what} with what is not its JSON", path.display())]
    Decode {
        path: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the agent on {} sent a line longer than {MAX_LINE} bytes", path.display())]
    LineTooLong { path: PathBuf },
}

impl ClientError {
    /// Whether no agent runs: no socket, or nothing listens on it.
    pub fn no_agent(&self) -> bool {
        matches!(self, ClientError::NoAgent { .. })
    }
}

/// How long one request may take, and what to say when it took longer.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub after: Duration,
    pub hint: &'static str,
}

impl Deadline {
    pub const fn new(after: Duration) -> Self {
        Deadline { after, hint: "" }
    }
}

/// A client of the agent on one socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// `GET /v1/status`, within [`STATUS_TIMEOUT`].
    pub async fn status(&self) -> Result<StatusDoc, ClientError> {
        self.json_by(Method::GET, "/v1/status", Deadline::new(STATUS_TIMEOUT))
            .await
    }

    /// `GET /v1/events`: the recorded events (since `since`, RFC 3339), then with
    /// `follow` each new one until the agent stops. The answer must begin within
    /// [`READ_TIMEOUT`]; without `follow` it must also end within it.
    pub async fn events(&self, since: Option<&str>, follow: bool) -> Result<Events, ClientError> {
        self.events_by(since, follow, Deadline::new(READ_TIMEOUT))
            .await
    }

    /// [`Client::events`] within `deadline`.
    async fn events_by(
        &self,
        since: Option<&str>,
        follow: bool,
        deadline: Deadline,
    ) -> Result<Events, ClientError> {
        let mut query = Vec::new();
        if let Some(s) = since {
            query.push(format!("since={}", encode(s)));
        }
        if follow {
            query.push("follow=true".to_string());
        }
        let path = if query.is_empty() {
            "/v1/events".to_string()
        } else {
            format!("/v1/events?{}", query.join("&"))
        };
        let end = Instant::now() + deadline.after;
        let body = self.send(Method::GET, &path, end, deadline).await?;
        Ok(Events {
            lines: Lines {
                body,
                buf: Vec::new(),
                done: false,
                socket: self.socket.clone(),
                end: (!follow).then(|| (end, format!("GET {path}"), deadline)),
            },
        })
    }

    /// `GET /v1/audit`: the agent's live audit report (`berth audit --format json`'s
    /// document, as the agent wrote it after its last pass), within [`READ_TIMEOUT`].
    pub async fn audit(&self) -> Result<String, ClientError> {
        let path = "/v1/audit";
        let deadline = Deadline::new(READ_TIMEOUT);
        let what = format!("GET {path}");
        let end = Instant::now() + deadline.after;
        let body = self.send(Method::GET, path, end, deadline).await?;
        let bytes = self
            .by(end, &what, deadline, collect(body, &self.socket))
            .await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| ClientError::Decode {
            path: self.socket.clone(),
            what,
            source: serde::de::Error::custom(e),
        })
    }

    /// `POST /v1/reconcile`: waits for the pass, within [`PASS_TIMEOUT`].
    pub async fn reconcile(&self) -> Result<OutcomeDoc, ClientError> {
        self.json_by(Method::POST, "/v1/reconcile", Deadline::new(PASS_TIMEOUT))
            .await
    }

    /// `POST /v1/suspend`, within [`CONTROL_TIMEOUT`].
    pub async fn suspend(&self) -> Result<SuspendedDoc, ClientError> {
        self.json_by(Method::POST, "/v1/suspend", control_deadline())
            .await
    }

    /// `POST /v1/resume`, within [`CONTROL_TIMEOUT`].
    pub async fn resume(&self) -> Result<SuspendedDoc, ClientError> {
        self.json_by(Method::POST, "/v1/resume", control_deadline())
            .await
    }

    /// `method path`, its JSON answer read as `T`, the whole exchange within
    /// `timeout` ([`READ_TIMEOUT`] when none is given): any endpoint, for the tests.
    #[cfg(test)]
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let deadline = Deadline::new(timeout.unwrap_or(READ_TIMEOUT));
        self.json_by(method, path, deadline).await
    }

    /// [`Client::json`] with what a timeout says.
    async fn json_by<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        deadline: Deadline,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        let end = Instant::now() + deadline.after;
        let body = self.send(method, path, end, deadline).await?;
        let bytes = self
            .by(end, &what, deadline, collect(body, &self.socket))
            .await?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            path: self.socket.clone(),
            what,
            source,
        })
    }

    /// Sends `method path` (no body); the answer's body once it is 2xx. Connecting
    /// takes [`CONNECT_TIMEOUT`] at most, and the answer's head comes by `end`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        end: Instant,
        deadline: Deadline,
    ) -> Result<Incoming, ClientError> {
        let what = format!("{method} {path}");
        let connect = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| connect_error(&self.socket, e))?;
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|source| ClientError::Http {
                    path: self.socket.clone(),
                    source,
                })
        };
        let connect_by = end.min(Instant::now() + CONNECT_TIMEOUT);
        let (mut sender, conn) = self
            .by(
                connect_by,
                "the connection",
                Deadline::new(CONNECT_TIMEOUT.min(deadline.after)),
                connect,
            )
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|source| ClientError::Request {
                what: what.clone(),
                source,
            })?;
        let answer = async {
            sender
                .send_request(req)
                .await
                .map_err(|source| ClientError::Http {
                    path: self.socket.clone(),
                    source,
                })
        };
        let resp = self.by(end, &what, deadline, answer).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.into_body());
        }
        let bytes = self
            .by(
                end,
                &what,
                deadline,
                collect(resp.into_body(), &self.socket),
            )
            .await?;
        let doc = serde_json::from_slice::<ErrorDoc>(&bytes).unwrap_or_else(|_| ErrorDoc {
            error: format!(
                "the agent answered {what} with {status}: {}",
                String::from_utf8_lossy(&bytes).trim()
            ),
            errors: Vec::new(),
        });
        Err(ClientError::Refused {
            status: status.as_u16(),
            doc,
        })
    }

    /// `fut`, or [`ClientError::Timeout`] for `what` when `end` comes first.
    async fn by<T>(
        &self,
        end: Instant,
        what: &str,
        deadline: Deadline,
        fut: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        by(end, &self.socket, what, deadline, fut).await
    }
}

fn control_deadline() -> Deadline {
    Deadline {
        after: CONTROL_TIMEOUT,
        hint: CONTROL_HINT,
    }
}

/// The events of `GET /v1/events`, one at a time.
#[derive(Debug)]
pub struct Events {
    lines: Lines,
}

impl Events {
    /// The next event; none once the agent ends the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        let Some(line) = self.lines.next_line().await? else {
            return Ok(None);
        };
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|source| ClientError::Decode {
                path: self.lines.socket.clone(),
                what: "an event".to_string(),
                source,
            })
    }
}

/// The lines of a streamed answer.
#[derive(Debug)]
struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    done: bool,
    socket: PathBuf,
    /// When the whole answer must have come (not for a followed stream): by when,
    /// for which request, and its deadline.
    end: Option<(Instant, String, Deadline)>,
}

impl Lines {
    async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let last = std::mem::take(&mut self.buf);
                return Ok(Some(String::from_utf8_lossy(&last).into_owned()));
            }
            if self.buf.len() > MAX_LINE {
                return Err(ClientError::LineTooLong {
                    path: self.socket.clone(),
                });
            }
            let frame = match &self.end {
                None => self.body.frame().await,
                Some((end, what, deadline)) => {
                    let next = async { Ok(self.body.frame().await) };
                    by(*end, &self.socket, what, *deadline, next).await?
                }
            };
            match frame {
                None => self.done = true,
                Some(Err(source)) => {
                    return Err(ClientError::Http {
                        path: self.socket.clone(),
                        source,
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

async fn collect(body: Incoming, socket: &Path) -> Result<Bytes, ClientError> {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|source| ClientError::Http {
            path: socket.to_path_buf(),
            source,
        })
}

/// `fut`, or [`ClientError::Timeout`] for `what` on `socket` when `end` comes first.
async fn by<T>(
    end: Instant,
    socket: &Path,
    what: &str,
    deadline: Deadline,
    fut: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout_at(end, fut).await.unwrap_or_else(|_| {
        Err(ClientError::Timeout {
            path: socket.to_path_buf(),
            what: what.to_string(),
            after: deadline.after,
            hint: deadline.hint,
        })
    })
}

/// A missing socket, or one nothing listens on, is "no agent"; anything else (a
/// socket the user may not open) is a connection error with its cause.
fn connect_error(socket: &Path, source: io::Error) -> ClientError {
    match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NoAgent {
            path: socket.to_path_buf(),
            source,
        },
        _ => ClientError::Connect {
            path: socket.to_path_buf(),
            source,
        },
    }
}

/// Percent-encodes a query value or a path segment (RFC 3986 unreserved characters
/// pass as they are).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::time::Instant as StdInstant;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn suspend_and_resume_give_up_on_a_wedged_agent_and_say_where() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        // Connections wait in the backlog: nothing accepts, nothing answers.
        let _listener = UnixListener::bind(&socket).expect("bind");
        let rt = runtime();
        let began = StdInstant::now();
        let e = rt
            .block_on(Client::new(&socket).suspend())
            .expect_err("a wedged agent");
        let took = began.elapsed();
        assert!(
            took >= CONTROL_TIMEOUT && took < CONTROL_TIMEOUT + Duration::from_secs(5),
            "{took:?}"
        );
        assert!(!e.no_agent());
        assert_eq!(
            e.to_string(),
            format!(
                "the agent on {} did not answer POST /v1/suspend within 10s{CONTROL_HINT}",
                socket.display()
            )
        );
    }

    #[test]
    fn every_control_has_a_deadline() {
        assert_eq!(control_deadline().after, CONTROL_TIMEOUT);
        assert!(CONTROL_TIMEOUT <= Duration::from_secs(30));
        assert!(PASS_TIMEOUT <= Duration::from_secs(3600));
        assert!(STATUS_TIMEOUT <= Duration::from_secs(5));
    }

    /// A server that sends an answer's head and part of its body, then nothing.
    fn stalls_mid_answer(socket: &Path) -> UnixListener {
        let l = UnixListener::bind(socket).expect("bind");
        let server = l.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in server.incoming() {
                let Ok(mut c) = c else { return };
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":",
                );
                held.push(c);
            }
        });
        l
    }

    #[test]
    fn an_answer_that_stops_midway_times_out_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        let _l = stalls_mid_answer(&socket);
        let rt = runtime();
        let c = Client::new(&socket);
        let got = rt.block_on(c.json::<serde_json::Value>(
            Method::GET,
            "/v1/status",
            Some(Duration::from_millis(500)),
        ));
        assert!(
            matches!(&got, Err(ClientError::Timeout { what, .. }) if what == "GET /v1/status"),
            "{got:?}"
        );
    }

    #[test]
    fn a_recorded_event_stream_that_stops_midway_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        let _l = stalls_mid_answer(&socket);
        let rt = runtime();
        let c = Client::new(&socket);
        let got = rt.block_on(async {
            let short = Deadline::new(Duration::from_millis(500));
            let mut events = c.events_by(None, false, short).await?;
            events.next().await
        });
        assert!(
            matches!(&got, Err(ClientError::Timeout { what, .. }) if what == "GET /v1/events"),
            "{got:?}"
        );
    }
}
