//! The connections a gRPC listener hands to its server: plain TCP, or TLS
//! done here with a certificate that can change while the server runs
//! ([`crate::tls_reload`]).
//!
//! With TLS, an accept loop takes each connection and does its handshake on
//! a task of its own, under [`HANDSHAKE_TIMEOUT`], so that a slow or silent
//! client holds up no one else; at most [`MAX_HANDSHAKES`] run at once,
//! and connections past that are closed at once. Finished handshakes go to
//! the server through a channel; when the server stops taking connections
//! (it drained) and drops the channel, the loop ends and the listening
//! socket closes, as it does without TLS.
//!
//! Either way the server sees the client's address as tonic's
//! [`TcpConnectInfo`], so that `Request::remote_addr` (which the rate limits
//! key on) works over TLS as it does over plain TCP.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

use crate::tls_reload::ServerTls;

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many handshakes may run at once.
pub const MAX_HANDSHAKES: usize = 512;
/// How many finished handshakes may wait for the server to take them.
const ACCEPTED_QUEUE: usize = 64;
/// How long the accept loop pauses after `accept` failed (out of file
/// descriptors, say), instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// One client connection, over TLS or not.
pub enum Connection {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Connection::Plain"),
            Self::Tls(_) => f.write_str("Connection::Tls"),
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Self::Plain(stream) => stream.connect_info(),
            Self::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of one listener, as the server takes them.
pub struct Incoming(Source);

enum Source {
    Plain(TcpIncoming),
    Tls(mpsc::Receiver<Connection>),
}

impl Incoming {
    /// `listener`'s connections, with TLS when `tls` is given (the accept
    /// loop then runs on a task of its own).
    pub fn new(listener: TcpListener, tls: Option<ServerTls>) -> Self {
        match tls {
            // TCP_NODELAY: a unary response is small, and Nagle's algorithm
            // would hold it back waiting for the client's delayed ACK.
            None => Self(Source::Plain(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
            )),
            Some(tls) => {
                let (accepted, incoming) = mpsc::channel(ACCEPTED_QUEUE);
                tokio::spawn(accept_tls(listener, tls, accepted));
                Self(Source::Tls(incoming))
            }
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.get_mut().0 {
            Source::Plain(incoming) => Pin::new(incoming)
                .poll_next(cx)
                .map(|accepted| accepted.map(|stream| stream.map(Connection::Plain))),
            Source::Tls(incoming) => incoming.poll_recv(cx).map(|accepted| accepted.map(Ok)),
        }
    }
}

/// Accepts connections on `listener` and hands each to `accepted` once its
/// handshake is done, until `accepted`'s receiver is dropped.
async fn accept_tls(listener: TcpListener, tls: ServerTls, accepted: mpsc::Sender<Connection>) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = tokio::select! {
            result = listener.accept() => match result {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = accepted.closed() => return,
        };
        let Ok(slot) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many TLS handshakes at once; connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tls.acceptor();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(connection)) => {
                    let _ = accepted.send(Connection::Tls(Box::new(connection))).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_elapsed) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
            drop(slot);
        });
    }
}
