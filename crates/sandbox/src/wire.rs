//! The connection layer under the sandbox, there for one fault: `reset`. A handler cannot
//! drop its own connection, so every accepted socket carries a switch the handler reaches
//! through `ConnectInfo`; once it is thrown, the next write fails and the socket closes
//! with a TCP reset, before a single byte of the response has gone out.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections can be severed.
pub(super) struct Listener(pub(super) TcpListener);

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        // The plain listener's accept already retries and logs accept errors.
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let connection = Connection {
            stream,
            severed: Arc::default(),
        };
        (connection, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The switch of one connection, handed to handlers as `ConnectInfo<Sever>`.
#[derive(Clone)]
pub(super) struct Sever(Arc<AtomicBool>);

impl Sever {
    /// Makes the connection fail on its next write (the response), resetting it.
    pub(super) fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, Listener>> for Sever {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        Sever(stream.io().severed.clone())
    }
}

/// An accepted socket with its switch.
pub(super) struct Connection {
    stream: TcpStream,
    severed: Arc<AtomicBool>,
}

impl Connection {
    /// When the switch is thrown: a zero linger makes the close a reset (RST) rather than
    /// an orderly end, and the error makes hyper drop the connection unanswered.
    fn check(&self) -> io::Result<()> {
        if self.severed.load(Ordering::SeqCst) {
            // Without the zero linger the close is still an unanswered FIN: good enough.
            let _ = self.stream.set_zero_linger();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the sandbox's reset fault",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
