//! STOMP over plain TCP: the socket's bytes are the frame stream.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::server::TlsStream;

use super::{Counted, Error, Progress, ReadEvent, Sink, Source};

/// Splits an accepted socket into its two halves.
pub fn split(stream: TcpStream) -> (Source, Sink) {
    let (r, w) = stream.into_split();
    let (half, progress) = Counted::new(w);
    (
        Source::Tcp(TcpSource(r)),
        Sink::Tcp(TcpSink {
            half,
            pieces: VecDeque::new(),
            small: BytesMut::new(),
            progress,
        }),
    )
}

/// Splits a TLS connection (STOMP over TLS) into its two halves.
pub fn split_tls(stream: TlsStream<TcpStream>) -> (Source, Sink) {
    let (r, w) = tokio::io::split(stream);
    let (half, progress) = Counted::new(w);
    (
        Source::Tls(TlsSource(r)),
        Sink::Tls(TcpSink {
            half,
            pieces: VecDeque::new(),
            small: BytesMut::new(),
            progress,
        }),
    )
}

/// TLS read half: decrypted bytes are read into the buffer (a TLS connection keeps
/// its 16 KiB read buffer while idle: rustls decrypts whole records).
pub struct TlsSource(ReadHalf<TlsStream<TcpStream>>);

impl TlsSource {
    pub(super) async fn read(&mut self, buf: &mut BytesMut) -> ReadEvent {
        buf.reserve(16 * 1024);
        match self.0.read_buf(buf).await {
            Ok(0) | Err(_) => ReadEvent::Closed,
            Ok(_) => ReadEvent::Data,
        }
    }
}

/// The write half of a STOMP-over-TLS connection.
pub type TlsSink = TcpSink<WriteHalf<TlsStream<TcpStream>>>;

/// TCP read half.
pub struct TcpSource(OwnedReadHalf);

impl TcpSource {
    pub(super) async fn read(&mut self, buf: &mut BytesMut) -> ReadEvent {
        loop {
            // Wait for readiness before growing the buffer: the session drops an empty
            // buffer between reads, so an idle connection holds none at all.
            if self.0.readable().await.is_err() {
                return ReadEvent::Closed;
            }
            buf.reserve(16 * 1024);
            match self.0.try_read_buf(buf) {
                Ok(0) => return ReadEvent::Closed,
                Ok(_) => return ReadEvent::Data,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Readiness was stale; don't hold the buffer while waiting again.
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                }
                Err(_) => return ReadEvent::Closed,
            }
        }
    }
}

/// TCP write half. A writer wake-up's frames go out together with vectored writes:
/// small pieces are gathered into one buffer, and large ones (message bodies, shared
/// encodings) are written from the shared `Bytes` they already are, so a message
/// fanned out to many TCP subscribers is never copied per subscriber — a slow one
/// holds a reference, not a copy.
pub struct TcpSink<W = OwnedWriteHalf> {
    half: Counted<W>,
    /// What the next flush writes, in order.
    pieces: VecDeque<Bytes>,
    /// Small pieces gathered since the last large one.
    small: BytesMut,
    pub(super) progress: Progress,
}

/// Pieces up to this size are copied into the gather buffer; larger ones are written
/// where they are.
const GATHER_BELOW: usize = 2048;

/// At most this many buffers per `writev` (Linux allows 1024).
const MAX_IOVECS: usize = 64;

impl<W: AsyncWrite + Unpin> TcpSink<W> {
    /// A MESSAGE's parts and its NUL: a small one is gathered with one reservation; a
    /// large body is queued as it is.
    pub(super) fn message(&mut self, head: &Bytes, tail: &Bytes, body: &Bytes) {
        if tail.len() + body.len() < GATHER_BELOW {
            self.small.reserve(head.len() + tail.len() + body.len() + 1);
            self.small.extend_from_slice(head);
            self.small.extend_from_slice(tail);
            self.small.extend_from_slice(body);
            self.small.extend_from_slice(b"\0");
        } else {
            self.push(head);
            self.push(tail);
            self.push(body);
            self.small.extend_from_slice(b"\0");
        }
    }

    pub(super) fn push(&mut self, piece: &Bytes) {
        if piece.len() < GATHER_BELOW {
            self.small.extend_from_slice(piece);
        } else {
            if !self.small.is_empty() {
                self.pieces.push_back(self.small.split().freeze());
            }
            self.pieces.push_back(piece.clone());
        }
    }

    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        if self.pieces.is_empty() {
            // Only small pieces (the common case): one write from the gather buffer,
            // whose storage is kept for the next batch.
            if !self.small.is_empty() {
                self.half.write_all(&self.small).await?;
                self.small.clear();
            }
            self.shrink();
            return Ok(());
        }
        if !self.small.is_empty() {
            self.pieces.push_back(self.small.split().freeze());
        }
        while !self.pieces.is_empty() {
            let n = {
                let slices: Vec<IoSlice<'_>> = self
                    .pieces
                    .iter()
                    .take(MAX_IOVECS)
                    .map(|p| IoSlice::new(p))
                    .collect();
                self.half.write_vectored(&slices).await?
            };
            if n == 0 {
                return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
            }
            let mut n = n;
            while n > 0 {
                let first = self.pieces.front_mut().expect("wrote only what was queued");
                if n >= first.len() {
                    n -= first.len();
                    self.pieces.pop_front();
                } else {
                    first.advance(n);
                    n = 0;
                }
            }
        }
        self.shrink();
        Ok(())
    }

    /// Gathered storage is reused while it is small; a burst's large buffer is freed.
    fn shrink(&mut self) {
        if self.small.capacity() > 64 * 1024 {
            self.small = BytesMut::new();
        }
    }

    pub(super) async fn close(&mut self) -> Result<(), Error> {
        self.flush().await?;
        self.half.shutdown().await?;
        Ok(())
    }
}
