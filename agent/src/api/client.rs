//! The CLI's side of the API: one HTTP/1.1 request a connection over the unix socket
//! (hyper's connection-level client; no pool, no TLS, no DNS).
//!
//! A socket that is missing, or that nothing answers on, is
//! [`ClientError::NoAgent`]: the read-only commands then fall back to the state
//! directory, and the controls exit 3 saying no agent answers. An answer other than
//! 2xx is [`ClientError::Refused`] with the agent's own sentence.

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

use super::wire::{ErrorDoc, OutcomeDoc, StatusDoc, SuspendedDoc};
use crate::reconcile::events::Event;

/// How long a read waits for the agent's answer. The controls that wait for the
/// controller (`reconcile`, `suspend`, `resume`) and the event stream do not time out.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    #[error("the agent on {} did not answer within {}", path.display(), humantime::format_duration(*after))]
    Timeout { path: PathBuf, after: Duration },
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
    /// Whether no agent answers (as opposed to one that answered badly).
    pub fn no_agent(&self) -> bool {
        matches!(self, ClientError::NoAgent { .. })
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

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusDoc, ClientError> {
        self.json(Method::GET, "/v1/status", Some(READ_TIMEOUT))
            .await
    }

    /// `GET /v1/events`: the recorded events (since `since`, RFC 3339), then with
    /// `follow` each new one until the agent stops.
    pub async fn events(&self, since: Option<&str>, follow: bool) -> Result<Events, ClientError> {
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
        let timeout = (!follow).then_some(READ_TIMEOUT);
        let body = self.send(Method::GET, &path, timeout).await?;
        Ok(Events {
            lines: Lines {
                body,
                buf: Vec::new(),
                done: false,
                socket: self.socket.clone(),
            },
        })
    }

    /// `POST /v1/reconcile`: waits for the pass.
    pub async fn reconcile(&self) -> Result<OutcomeDoc, ClientError> {
        self.json(Method::POST, "/v1/reconcile", None).await
    }

    /// `POST /v1/suspend`.
    pub async fn suspend(&self) -> Result<SuspendedDoc, ClientError> {
        self.json(Method::POST, "/v1/suspend", None).await
    }

    /// `POST /v1/resume`.
    pub async fn resume(&self) -> Result<SuspendedDoc, ClientError> {
        self.json(Method::POST, "/v1/resume", None).await
    }

    /// `method path`, its JSON answer read as `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        let read = async {
            let body = self.send(method, path, None).await?;
            collect(body, &self.socket).await
        };
        let bytes = within(timeout, &self.socket, read).await?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            path: self.socket.clone(),
            what,
            source,
        })
    }

    /// Sends `method path` (no body); the answer's body once it is 2xx.
    async fn send(
        &self,
        method: Method,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<Incoming, ClientError> {
        let what = format!("{method} {path}");
        let exchange = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| connect_error(&self.socket, e))?;
            let http = |source| ClientError::Http {
                path: self.socket.clone(),
                source,
            };
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await
                    .map_err(http)?;
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
            sender.send_request(req).await.map_err(http)
        };
        let resp = within(timeout, &self.socket, exchange).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.into_body());
        }
        let bytes = within(
            timeout,
            &self.socket,
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
            match self.body.frame().await {
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

/// `fut`, or [`ClientError::Timeout`] after `timeout` when one is given.
async fn within<T>(
    timeout: Option<Duration>,
    socket: &Path,
    fut: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match timeout {
        None => fut.await,
        Some(after) => tokio::time::timeout(after, fut).await.unwrap_or_else(|_| {
            Err(ClientError::Timeout {
                path: socket.to_path_buf(),
                after,
            })
        }),
    }
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
