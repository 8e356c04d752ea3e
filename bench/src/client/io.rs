//! The two halves of a connection: [`Reader`] (a read buffer the zero-allocation
//! scanner works on) and [`Writer`] (frames staged and written many per syscall).

use anyhow::{anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use stompbox::frame::{Frame, Inbound, Limits, Parser, Version, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::scan::{self, Cmd, Item};

type Ws = WebSocketStream<TcpStream>;

/// A byte stream's read half: plain TCP, or TLS.
pub(super) type ByteRead = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
/// A byte stream's write half: plain TCP, or TLS.
pub(super) type ByteWrite = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

pub(super) enum ReadSrc {
    Tcp(ByteRead),
    WsLean(OwnedReadHalf, super::ws::Decoder),
    Ws(SplitStream<Ws>),
}

/// The read half and its buffer.
pub struct Reader {
    src: ReadSrc,
    pub buf: BytesMut,
    chunk: usize,
    parser: Parser,
    /// The peer closed; reported by the next `fill` so buffered frames are seen first.
    closed: bool,
}

impl Reader {
    pub(super) fn new(src: ReadSrc, chunk: usize) -> Reader {
        Reader {
            src,
            buf: BytesMut::with_capacity(chunk),
            chunk,
            parser: Parser::new(Limits::default()),
            closed: false,
        }
    }

    /// Appends whatever arrives next to `buf`. `Ok(false)`: the peer closed (after
    /// everything it sent before closing was returned).
    pub async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        let before = self.buf.len();
        match &mut self.src {
            ReadSrc::Tcp(r) => {
                if self.buf.capacity() - self.buf.len() < self.chunk / 4 {
                    self.buf.reserve(self.chunk);
                }
                Ok(r.read_buf(&mut self.buf).await? > 0)
            }
            ReadSrc::WsLean(r, dec) => loop {
                if dec.raw.capacity() - dec.raw.len() < self.chunk / 4 {
                    dec.raw.reserve(self.chunk);
                }
                let n = r.read_buf(&mut dec.raw).await?;
                if n == 0 || !dec.decode(&mut self.buf)? {
                    self.closed = true;
                }
                if self.buf.len() > before {
                    return Ok(true);
                }
                if self.closed {
                    return Ok(false);
                }
            },
            ReadSrc::Ws(s) => {
                // Block for one message, then take every message already available.
                let mut first = true;
                loop {
                    let next = if first {
                        first = false;
                        s.next().await
                    } else {
                        match futures_util::FutureExt::now_or_never(s.next()) {
                            Some(m) => m,
                            None => return Ok(true),
                        }
                    };
                    match next {
                        Some(Ok(Message::Binary(b))) => self.buf.extend_from_slice(&b),
                        Some(Ok(Message::Text(t))) => self.buf.extend_from_slice(t.as_bytes()),
                        Some(Ok(Message::Close(_))) | None => {
                            self.closed = true;
                            return Ok(self.buf.len() > before);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.into()),
                    }
                    if self.buf.len() - before >= self.chunk {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Scans every complete frame in the buffer, calling `on_frame(frame, buf)` for each,
    /// and consumes them. Stops early (leaving the rest buffered) when `on_frame` returns
    /// false. An ERROR frame is returned as an error.
    #[inline]
    pub fn drain(
        &mut self,
        want_ack: bool,
        mut on_frame: impl FnMut(&scan::FrameInfo, &[u8]) -> bool,
    ) -> anyhow::Result<()> {
        let mut off = 0;
        let result = loop {
            let buf = &self.buf[off..];
            match scan::scan(buf, want_ack) {
                Ok(Item::Incomplete) => break Ok(()),
                Ok(Item::Heartbeats(n)) => off += n,
                Ok(Item::Frame(f)) => {
                    if f.cmd == Cmd::Error {
                        break Err(anyhow!(scan::describe_error(buf, &f)));
                    }
                    off += f.len;
                    if !on_frame(&f, buf) {
                        break Ok(());
                    }
                }
                Err(e) => break Err(anyhow!("unparseable data from broker: {e}")),
            }
        };
        bytes::Buf::advance(&mut self.buf, off);
        result
    }

    /// Setup path: decode later frames with `version`'s escaping rules.
    pub(super) fn set_version(&mut self, version: Version) {
        self.parser.set_version(version);
    }

    /// Setup path: the next frame, decoded by the broker's own parser.
    pub async fn next_frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            match self.parser.parse(&mut self.buf) {
                Ok(Some(Inbound::Frame(f))) => return Ok(f),
                Ok(Some(Inbound::Heartbeat)) => continue,
                Ok(None) => {}
                Err(e) => bail!("malformed frame from broker: {e}"),
            }
            if !self.fill().await? {
                bail!("broker closed the connection");
            }
        }
    }
}

pub(super) enum WriteSink {
    Tcp(ByteWrite),
    WsLean(OwnedWriteHalf, super::ws::Encoder, super::ws::Owed),
    Ws(SplitSink<Ws, Message>),
}

/// The write half. Frames are staged and written by [`Writer::flush`]: over TCP and the
/// lean WebSocket codec one `write_all` of the concatenated (WebSocket-framed) frames;
/// over tokio-tungstenite one binary message per frame, all fed, then one flush.
pub struct Writer {
    sink: WriteSink,
    /// Bytes to write (TCP, lean WS); the frame being built (tungstenite).
    stage: BytesMut,
    /// Lean WS: the frame being built, before framing and masking.
    scratch: BytesMut,
    pending: Vec<Message>,
    initial: usize,
}

impl Writer {
    pub(super) fn new(sink: WriteSink, cap: usize) -> Writer {
        Writer {
            sink,
            stage: BytesMut::with_capacity(cap),
            scratch: BytesMut::new(),
            pending: Vec::new(),
            initial: cap,
        }
    }

    /// Where a frame under construction goes.
    #[inline]
    fn target(&mut self) -> &mut BytesMut {
        match self.sink {
            WriteSink::WsLean(..) => &mut self.scratch,
            _ => &mut self.stage,
        }
    }

    /// The frame under construction is complete.
    #[inline]
    fn end_frame(&mut self) {
        match &mut self.sink {
            WriteSink::Tcp(_) => {}
            WriteSink::WsLean(_, enc, _) => {
                enc.binary(&mut self.stage, &self.scratch);
                self.scratch.clear();
            }
            WriteSink::Ws(_) => {
                let b = self.stage.split().freeze();
                self.pending.push(Message::Binary(b));
                if self.stage.capacity() < 256 {
                    self.stage.reserve(self.initial);
                }
            }
        }
    }

    /// Stages a pre-encoded frame (shared, not copied, with tungstenite).
    #[inline]
    pub fn push_shared(&mut self, frame: &Bytes) {
        match &mut self.sink {
            WriteSink::Tcp(_) => self.stage.extend_from_slice(frame),
            WriteSink::WsLean(_, enc, _) => enc.binary(&mut self.stage, frame),
            WriteSink::Ws(_) => self.pending.push(Message::Binary(frame.clone())),
        }
    }

    /// Stages one frame given as consecutive parts.
    #[inline]
    pub fn push_parts(&mut self, parts: &[&[u8]]) {
        let t = self.target();
        for p in parts {
            t.extend_from_slice(p);
        }
        self.end_frame();
    }

    /// Stages a copy of `template` with `patch` written at offset `at`.
    #[inline]
    pub fn push_patched(&mut self, template: &[u8], at: usize, patch: &[u8]) {
        let t = self.target();
        let start = t.len();
        t.extend_from_slice(template);
        t[start + at..start + at + patch.len()].copy_from_slice(patch);
        self.end_frame();
    }

    /// Stages one frame written by `f` (no allocation over TCP or lean WS).
    #[inline]
    pub fn frame(&mut self, f: impl FnOnce(&mut BytesMut)) {
        f(self.target());
        self.end_frame();
    }

    /// Stages a frame encoded by the broker's encoder (setup path).
    pub fn push_frame(&mut self, f: &Frame) {
        encode(f, Version::V1_2, self.target());
        self.end_frame();
    }

    /// Stages a heart-beat EOL.
    pub fn push_heartbeat(&mut self) {
        self.target().put_u8(b'\n');
        self.end_frame();
    }

    pub fn is_empty(&self) -> bool {
        self.stage.is_empty() && self.pending.is_empty()
    }

    /// Writes everything staged.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        match &mut self.sink {
            WriteSink::WsLean(w, _, owed) => {
                {
                    let mut owed = owed.lock().unwrap();
                    if !owed.is_empty() {
                        self.stage.extend_from_slice(&owed);
                        owed.clear();
                    }
                }
                if !self.stage.is_empty() {
                    w.write_all(&self.stage).await?;
                    self.stage.clear();
                }
            }
            WriteSink::Tcp(w) => {
                if !self.stage.is_empty() {
                    w.write_all(&self.stage).await?;
                    self.stage.clear();
                }
            }
            WriteSink::Ws(s) => {
                for m in self.pending.drain(..) {
                    s.feed(m).await?;
                }
                s.flush().await?;
            }
        }
        Ok(())
    }
}
