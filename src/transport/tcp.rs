//! STOMP over plain TCP: the socket's bytes are the frame stream.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{Counted, Error, Progress, ReadEvent, Sink, Source};

/// Splits an accepted socket into its two halves.
pub fn split(stream: TcpStream) -> (Source, Sink) {
    let (r, w) = stream.into_split();
    let (half, progress) = Counted::new(w);
    (
        Source::Tcp(TcpSource(r)),
        Sink::Tcp(TcpSink {
            half,
            buf: BytesMut::new(),
            progress,
        }),
    )
}

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

/// TCP write half with a batch buffer: every frame queued in one writer wake-up goes
/// out in one write.
pub struct TcpSink {
    half: Counted<OwnedWriteHalf>,
    buf: BytesMut,
    pub(super) progress: Progress,
}

impl TcpSink {
    pub(super) fn frame(&mut self, head: &[u8], tail: &[u8]) {
        self.buf.extend_from_slice(head);
        self.buf.extend_from_slice(tail);
    }

    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            self.half.write_all(&self.buf).await?;
            self.buf.clear();
            // Give back the memory a burst needed.
            if self.buf.capacity() > 64 * 1024 {
                self.buf = BytesMut::new();
            }
        }
        Ok(())
    }

    pub(super) async fn close(&mut self) -> Result<(), Error> {
        self.flush().await?;
        self.half.shutdown().await?;
        Ok(())
    }
}
