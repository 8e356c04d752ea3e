//! Transports: TCP and WebSocket, each reduced to the same pair — a [`Source`] that
//! appends raw STOMP bytes to the connection's read buffer, and a [`Sink`] that writes
//! encoded frames. Nothing above this module knows which socket it is on; both feed the
//! same [`crate::frame::Parser`].

pub mod tcp;
pub mod ws;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

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
    /// WebSocket.
    Ws(ws::WsSource),
}

impl Source {
    /// Reads what is available into `buf`. Cancel-safe: bytes are never half-taken.
    pub async fn read(&mut self, buf: &mut BytesMut) -> ReadEvent {
        match self {
            Source::Tcp(s) => s.read(buf).await,
            Source::Ws(s) => s.read(buf).await,
        }
    }
}

/// The write half of a connection.
pub enum Sink {
    /// TCP.
    Tcp(tcp::TcpSink),
    /// WebSocket.
    Ws(ws::WsSink),
}

impl Sink {
    /// Queues one frame made of `head` then `tail`; may write if buffers fill.
    pub async fn frame(&mut self, head: &Bytes, tail: &Bytes) -> Result<(), Error> {
        match self {
            Sink::Tcp(s) => {
                s.frame(head, tail);
                Ok(())
            }
            Sink::Ws(s) => s.frame(head, tail).await,
        }
    }

    /// Queues a heart-beat EOL.
    pub async fn heartbeat(&mut self) -> Result<(), Error> {
        match self {
            Sink::Tcp(s) => {
                s.frame(b"\n", b"");
                Ok(())
            }
            Sink::Ws(s) => s.heartbeat().await,
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        match self {
            Sink::Tcp(s) => s.flush().await,
            Sink::Ws(s) => s.flush().await,
        }
    }

    /// Flushes, then closes our direction: TCP FIN, or a WS Close with the reason's
    /// code. The peer can still send until it closes too (see linger in `session`).
    pub async fn close(&mut self, reason: CloseReason) -> Result<(), Error> {
        match self {
            Sink::Tcp(s) => s.close().await,
            Sink::Ws(s) => s.close(reason).await,
        }
    }
}
