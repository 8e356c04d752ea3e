//! Transports: TCP and WebSocket, each reduced to the same pair — a [`Source`] that
//! appends raw STOMP bytes to the connection's read buffer, and a [`Sink`] that writes
//! encoded frames. Nothing above this module knows which socket it is on; both feed the
//! same [`crate::frame::Parser`].

pub mod tcp;
pub mod ws;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::outbox::CloseReason;

/// Which listener a connection came from (for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Plain TCP.
    Tcp,
    /// WebSocket.
    Ws,
}

impl Kind {
    /// Short name for log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Ws => "ws",
        }
    }
}

/// What a read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEvent {
    /// Bytes were appended to the buffer (possibly none, for a WS control message).
    Data,
    /// The peer closed (EOF, WS Close) or the socket failed.
    Closed,
    /// A transport-level violation (WS framing, oversize or bad UTF-8 text message):
    /// answer with ERROR and close with this reason.
    Violation(CloseReason, String),
}

/// Write-side failures. The connection is over; callers log at `debug`.
#[derive(Debug, Error)]
pub enum Error {
    /// Socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// WebSocket protocol error.
    #[error("websocket error: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
}

/// The read half of a connection.
pub enum Source {
    /// TCP.
    Tcp(tcp::TcpSource),
    /// STOMP over TLS.
    Tls(tcp::TlsSource),
    /// WebSocket.
    Ws(ws::WsSource),
}

impl Source {
    /// Reads what is available into `buf`. Cancel-safe: bytes are never half-taken.
    pub async fn read(&mut self, buf: &mut BytesMut) -> ReadEvent {
        match self {
            Source::Tcp(s) => s.read(buf).await,
            Source::Tls(s) => s.read(buf).await,
            Source::Ws(s) => s.read(buf).await,
        }
    }
}

/// The write half of a connection.
pub enum Sink {
    /// TCP.
    Tcp(tcp::TcpSink),
    /// STOMP over TLS.
    Tls(tcp::TlsSink),
    /// WebSocket.
    Ws(ws::WsSink),
}

impl Sink {
    /// Queues one whole encoded frame; may write if buffers fill.
    pub async fn frame(&mut self, frame: &Bytes) -> Result<(), Error> {
        match self {
            Sink::Tcp(s) => {
                s.push(frame);
                Ok(())
            }
            Sink::Tls(s) => {
                s.push(frame);
                Ok(())
            }
            Sink::Ws(s) => s.frame(frame).await,
        }
    }

    /// Queues a MESSAGE made of `head`, `tail`, `body` and a NUL. Over TCP the
    /// shared parts are written as they are (vectored writes), never copied per
    /// subscriber; over WebSocket they are joined into the one message payload.
    pub async fn message(&mut self, head: &Bytes, tail: &Bytes, body: &Bytes) -> Result<(), Error> {
        match self {
            Sink::Tcp(s) => {
                s.message(head, tail, body);
                Ok(())
            }
            Sink::Tls(s) => {
                s.message(head, tail, body);
                Ok(())
            }
            Sink::Ws(s) => s.message(head, tail, body).await,
        }
    }

    /// Queues a heart-beat EOL.
    pub async fn heartbeat(&mut self) -> Result<(), Error> {
        match self {
            Sink::Tcp(s) => {
                s.push(&Bytes::from_static(b"\n"));
                Ok(())
            }
            Sink::Tls(s) => {
                s.push(&Bytes::from_static(b"\n"));
                Ok(())
            }
            Sink::Ws(s) => s.heartbeat().await,
        }
    }

    /// The progress clock of this connection's writes.
    pub fn progress(&self) -> Progress {
        match self {
            Sink::Tcp(s) => s.progress.clone(),
            Sink::Tls(s) => s.progress.clone(),
            Sink::Ws(s) => s.progress.clone(),
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        match self {
            Sink::Tcp(s) => s.flush().await,
            Sink::Tls(s) => s.flush().await,
            Sink::Ws(s) => s.flush().await,
        }
    }

    /// Flushes, then closes our direction: TCP FIN, or a WS Close with the reason's
    /// code. The peer can still send until it closes too (see linger in `session`).
    pub async fn close(&mut self, reason: CloseReason) -> Result<(), Error> {
        match self {
            Sink::Tcp(s) => s.close().await,
            Sink::Tls(s) => s.close().await,
            Sink::Ws(s) => s.close(reason).await,
        }
    }
}

/// Progress of a connection's writes: how many bytes the socket has accepted. The
/// writer's timeout (`outbox.write_timeout_ms`) measures the time without any, not
/// per batch. A plain counter, so a write costs two relaxed memory operations and no
/// clock read; the writer samples it (see `session::conn`).
#[derive(Clone, Debug, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    fn moved(&self, n: usize) {
        // One writer task owns the stream: a load and a store need no atomic add.
        let total = self.0.load(Ordering::Relaxed);
        self.0
            .store(total.wrapping_add(n as u64), Ordering::Relaxed);
    }

    /// Bytes the socket has accepted so far.
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A stream whose successful writes are recorded in a [`Progress`] (and, for the HTTP
/// side's idle watch, its reads in another).
pub struct Counted<S> {
    inner: S,
    progress: Progress,
    reads: Option<Progress>,
}

impl<S> Counted<S> {
    /// Wraps `inner`; the returned progress counts the bytes written through it.
    pub(crate) fn new(inner: S) -> (Self, Progress) {
        let progress = Progress::default();
        (
            Counted {
                inner,
                progress: progress.clone(),
                reads: None,
            },
            progress,
        )
    }

    /// Wraps `inner`; the returned progress counts the bytes written and read.
    pub(crate) fn with_reads(inner: S) -> (Self, Progress, Progress) {
        let (mut counted, writes) = Counted::new(inner);
        let reads = Progress::default();
        counted.reads = Some(reads.clone());
        (counted, writes, reads)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(reads) = &self.reads {
            reads.moved(buf.filled().len() - before);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.progress.moved(*n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.progress.moved(*n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
