//! Serving connections. `axum::serve` sets no timeouts, so a client that sends its request
//! head a byte at a time (or opens a connection and sends nothing) would hold it forever.
//! Here hyper reads every request head, and waits on every idle keep-alive connection, for
//! at most the client timeout; the request body has the same bound (see [`super::app`]).
//!
//! HTTP/1.1 only: hyper's HTTP/2 server has no such timeout for a connection that never
//! sends its preface, and tidemark's clients speak HTTP/1.1 (behind a proxy that
//! terminates TLS they do either way).
//!
//! Answered connections close gracefully ("lingering close"): when the server answers
//! before it has read the whole request (a `413` for a body over the limit, a `401` before the
//! body), it shuts its side down and then reads and discards what the client still
//! sends, bounded in bytes and time, before closing. Closing a socket with unread data
//! makes the kernel reset the connection, and a client that sends its whole body before
//! it reads (Python's `http.client`, `urllib`, `requests`) would get a broken pipe or a
//! reset instead of the answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The most a closing connection reads and discards, and for how long at most.
const LINGER_BYTES: u64 = 64 * 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets the
/// requests in flight finish and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    client_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: it passes once connections
                    // close, so wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A long-poll's answer is one small write that must not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY");
        }
        let connection = builder
            .serve_connection(
                TokioIo::new(Lingering::new(stream)),
                TowerToHyperService::new(app.clone()),
            )
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// A connection's socket that, once dropped, still drains what the client sends (see the
/// module's documentation). Dropping the write half sends the FIN; the read half reads on
/// in a task of its own until the client closes, or [`LINGER_BYTES`], or [`LINGER_TIME`].
/// Only a connection that was answered lingers: one cut off for sending its request head
/// too slowly (or nothing) is closed at once.
struct Lingering {
    read: Option<OwnedReadHalf>,
    write: OwnedWriteHalf,
    answered: bool,
}

impl Lingering {
    fn new(stream: tokio::net::TcpStream) -> Self {
        let (read, write) = stream.into_split();
        Lingering {
            read: Some(read),
            write,
            answered: false,
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(read) = self.read.take().filter(|_| self.answered) else {
            return;
        };
        // Outside a runtime (it is shutting down) there is nothing to drain into.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let (mut rest, mut sink) = (read.take(LINGER_BYTES), tokio::io::sink());
                let drained = tokio::io::copy(&mut rest, &mut sink);
                let _ = tokio::time::timeout(LINGER_TIME, drained).await;
            });
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.read.as_mut() {
            Some(read) => Pin::new(read).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.write).poll_write(cx, buf);
        self.answered |= matches!(written, Poll::Ready(Ok(n)) if n > 0);
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.write).poll_write_vectored(cx, bufs);
        self.answered |= matches!(written, Poll::Ready(Ok(n)) if n > 0);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.write.is_write_vectored()
    }
}
