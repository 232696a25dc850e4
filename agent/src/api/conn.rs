//! The API's connections, bounded: at most [`MAX_CONNECTIONS`] at once (the next wait
//! in the kernel's backlog until one closes), and a connection that sends nothing for
//! [`FIRST_BYTE`] after it is accepted is closed. A client of the socket can then hold
//! only so many descriptors and so much memory of the agent, and never the ones its
//! passes need.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// API connections served at once.
pub(super) const MAX_CONNECTIONS: usize = 64;
/// How long a new connection may stay silent before it is closed.
pub(super) const FIRST_BYTE: Duration = Duration::from_secs(10);

/// A listener that accepts while fewer than [`MAX_CONNECTIONS`] are open.
#[derive(Debug)]
pub(super) struct Bounded {
    inner: UnixListener,
    slots: Arc<Semaphore>,
    first_byte: Duration,
}

impl Bounded {
    pub(super) fn new(inner: UnixListener, max: usize, first_byte: Duration) -> Self {
        Bounded {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            first_byte,
        }
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Conn;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Conn, Self::Addr) {
        // The semaphore is never closed: a permit always comes.
        let permit = match self.slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => std::future::pending().await,
        };
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (
            Conn {
                io,
                _slot: permit,
                silent: Some(Box::pin(tokio::time::sleep(self.first_byte))),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One connection: holds its place until it is dropped.
#[derive(Debug)]
pub(super) struct Conn {
    io: UnixStream,
    _slot: OwnedSemaphorePermit,
    /// Until the first byte arrives: when it fires, the connection is closed.
    silent: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.silent = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let timed_out = this
                    .silent
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if timed_out {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing",
                    )))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::AsyncReadExt;

    #[test]
    fn a_silent_connection_is_closed_and_a_full_listener_waits_for_a_place() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("api.sock");
            let mut l = Bounded::new(
                UnixListener::bind(&path).expect("bind"),
                1,
                Duration::from_millis(200),
            );
            let _a = UnixStream::connect(&path).await.expect("connect");
            let (mut first, _) = l.accept().await;
            // The second client waits in the backlog while the first holds the place.
            let _b = UnixStream::connect(&path).await.expect("connect");
            let waiting = tokio::time::timeout(Duration::from_millis(300), l.accept()).await;
            assert!(waiting.is_err(), "a second connection was accepted");
            // The first sends nothing: closed after its grace.
            let mut buf = [0u8; 8];
            let e = first.read(&mut buf).await.expect_err("timed out");
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            drop(first);
            let next = tokio::time::timeout(Duration::from_secs(5), l.accept()).await;
            assert!(next.is_ok(), "the freed place was not taken");
        });
    }
}
