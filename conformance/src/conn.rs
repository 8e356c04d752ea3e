//! One connection to the broker under test: raw bytes out, frames in, every read
//! bounded by a deadline so a broker that hangs fails the case instead of the run.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Fail;
use crate::wire::{self, Frame, Parsed};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum Io {
    Tcp(TcpStream),
    Ws(Box<Ws>),
}

/// How the connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// TCP FIN, or a WebSocket stream that ended without a Close frame.
    Eof,
    /// A read error such as a reset.
    Error(String),
    /// A WebSocket Close frame with this code (None: no code).
    WsClose(Option<u16>),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Eof => write!(f, "EOF"),
            Closed::Error(e) => write!(f, "error: {e}"),
            Closed::WsClose(Some(c)) => write!(f, "WebSocket Close {c}"),
            Closed::WsClose(None) => write!(f, "WebSocket Close without code"),
        }
    }
}

/// What came next.
#[derive(Debug)]
pub enum Event {
    Frame(Frame),
    Closed(Closed),
    Timeout,
}

/// The kind of a WebSocket message received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WsKind {
    Text,
    Binary,
}

pub struct Conn {
    io: Io,
    buf: Vec<u8>,
    stash: VecDeque<Frame>,
    /// How long one expectation may take.
    pub wait: Duration,
    /// Arrival times of heart-beat EOLs. EOLs that arrive together with the end of a
    /// frame are that frame's padding (F3), not heart-beats.
    pub heartbeats: Vec<Instant>,
    /// WebSocket messages received, by kind, and whether each was a lone EOL.
    pub ws_messages: Vec<(WsKind, bool)>,
    pub closed: Option<Closed>,
}

impl Conn {
    pub async fn tcp(addr: &str, wait: Duration) -> Result<Conn, Fail> {
        let stream = tokio::time::timeout(wait, TcpStream::connect(addr))
            .await
            .map_err(|_| Fail::new(format!("TCP connect to {addr} timed out")))?
            .map_err(|e| Fail::new(format!("TCP connect to {addr}: {e}")))?;
        stream.set_nodelay(true).ok();
        Ok(Conn::new(Io::Tcp(stream), wait))
    }

    /// Opens a WebSocket offering `protocols`; returns the subprotocol the server chose.
    pub async fn ws(
        url: &str,
        protocols: &[&str],
        wait: Duration,
    ) -> Result<(Conn, Option<String>), Fail> {
        let mut request = url
            .into_client_request()
            .map_err(|e| Fail::new(format!("bad WebSocket URL {url}: {e}")))?;
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&protocols.join(", ")).expect("protocol names are ASCII"),
            );
        }
        let (ws, response) = tokio::time::timeout(wait, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| Fail::new("WebSocket handshake timed out"))?
            .map_err(|e| Fail::new(format!("WebSocket handshake: {e}")))?;
        let chosen = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Ok((Conn::new(Io::Ws(Box::new(ws)), wait), chosen))
    }

    fn new(io: Io, wait: Duration) -> Conn {
        Conn {
            io,
            buf: Vec::new(),
            stash: VecDeque::new(),
            wait,
            heartbeats: Vec::new(),
            ws_messages: Vec::new(),
            closed: None,
        }
    }

    pub fn is_ws(&self) -> bool {
        matches!(self.io, Io::Ws(_))
    }

    /// Writes raw bytes: over WebSocket as one text message when they are UTF-8 (as
    /// browser clients send), else as one binary message.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) -> Result<(), Fail> {
        let bytes = bytes.as_ref();
        let message = match std::str::from_utf8(bytes) {
            Ok(text) => Message::text(text),
            Err(_) => Message::binary(bytes.to_vec()),
        };
        self.send_message(bytes, message).await
    }

    /// Writes one WebSocket message (over TCP: its payload).
    pub async fn send_ws(&mut self, message: Message) -> Result<(), Fail> {
        let payload = message.clone().into_data();
        self.send_message(&payload, message).await
    }

    async fn send_message(&mut self, bytes: &[u8], message: Message) -> Result<(), Fail> {
        let wait = self.wait;
        let result = match &mut self.io {
            Io::Tcp(s) => tokio::time::timeout(wait, s.write_all(bytes))
                .await
                .map_err(|_| "write timed out".to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Io::Ws(ws) => tokio::time::timeout(wait, ws.send(message))
                .await
                .map_err(|_| "write timed out".to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
        };
        result.map_err(|e| Fail::new(format!("could not write to the broker: {e}")))
    }

    /// Writes bytes under the WebSocket codec, straight onto the TCP stream: for
    /// WebSocket frames a well-behaved client library refuses to produce.
    pub async fn send_raw_ws_bytes(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        let Io::Ws(ws) = &mut self.io else {
            return Err(Fail::new("not a WebSocket connection"));
        };
        match ws.get_mut() {
            MaybeTlsStream::Plain(s) => s
                .write_all(bytes)
                .await
                .map_err(|e| Fail::new(format!("raw write: {e}"))),
            _ => Err(Fail::new(
                "raw WebSocket bytes need a plain ws:// connection",
            )),
        }
    }

    /// Closes our sending side (TCP) or sends a WebSocket Close.
    pub async fn shutdown(&mut self) {
        match &mut self.io {
            Io::Tcp(s) => {
                let _ = s.shutdown().await;
            }
            Io::Ws(ws) => {
                let _ = ws.send(Message::Close(None)).await;
            }
        }
    }

    /// The next frame or ending within `wait`; heart-beat EOLs are counted and skipped.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Event, Fail> {
        if let Some(f) = self.stash.pop_front() {
            return Ok(Event::Frame(f));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            loop {
                match wire::parse(&self.buf)
                    .map_err(|e| Fail::new(format!("broker sent bad bytes: {e}")))?
                {
                    Parsed::Incomplete => break,
                    Parsed::HeartBeat { len } => {
                        self.heartbeats.push(Instant::now());
                        self.buf.drain(..len);
                    }
                    Parsed::Frame { frame, len } => {
                        self.buf.drain(..len);
                        // EOLs already read with the frame's NUL pad it (RabbitMQ and
                        // ActiveMQ end every frame with `\0\n`): only EOLs that arrive
                        // later count as heart-beats.
                        let padding = wire::eols_at_front(&self.buf);
                        self.buf.drain(..padding);
                        return Ok(Event::Frame(frame));
                    }
                }
            }
            if let Some(c) = &self.closed {
                return Ok(Event::Closed(c.clone()));
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Err(_) => return Ok(Event::Timeout),
                Ok(Some(c)) => self.closed = Some(c),
                Ok(None) => {}
            }
        }
    }

    /// Reads once into the buffer; `Some` when the connection ended.
    async fn read_more(&mut self) -> Option<Closed> {
        match &mut self.io {
            Io::Tcp(s) => {
                let mut chunk = [0u8; 16 * 1024];
                match s.read(&mut chunk).await {
                    Ok(0) => Some(Closed::Eof),
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        None
                    }
                    Err(e) => Some(Closed::Error(e.to_string())),
                }
            }
            Io::Ws(ws) => match ws.next().await {
                None => Some(Closed::Eof),
                Some(Err(e)) => Some(Closed::Error(e.to_string())),
                Some(Ok(m)) => {
                    let kind = match &m {
                        Message::Text(_) => WsKind::Text,
                        Message::Binary(_) => WsKind::Binary,
                        Message::Close(c) => {
                            return Some(Closed::WsClose(c.as_ref().map(|c| u16::from(c.code))));
                        }
                        _ => return None,
                    };
                    let data = m.into_data();
                    let lone_eol = &data[..] == b"\n" || &data[..] == b"\r\n";
                    self.ws_messages.push((kind, lone_eol));
                    self.buf.extend_from_slice(&data);
                    None
                }
            },
        }
    }

    /// The next frame within the connection's wait; a timeout or close is a failure.
    pub async fn frame(&mut self) -> Result<Frame, Fail> {
        match self.next_within(self.wait).await? {
            Event::Frame(f) => Ok(f),
            Event::Closed(c) => Err(Fail::new(format!(
                "connection closed ({c}) while waiting for a frame"
            ))),
            Event::Timeout => Err(Fail::new(format!(
                "no frame within {} ms",
                self.wait.as_millis()
            ))),
        }
    }

    /// The next frame, which must be `command`.
    pub async fn expect(&mut self, command: &str) -> Result<Frame, Fail> {
        let f = self.frame().await?;
        if f.is(command) {
            Ok(f)
        } else {
            Err(Fail::new(format!(
                "expected {command}, got {}",
                f.summary()
            )))
        }
    }

    /// Waits for the connection to end; `None` if it is still open after `wait`.
    /// Frames that arrive meanwhile are discarded.
    pub async fn closed_within(&mut self, wait: Duration) -> Result<Option<Closed>, Fail> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await? {
                Event::Closed(c) => return Ok(Some(c)),
                Event::Timeout => return Ok(None),
                Event::Frame(_) => {}
            }
        }
    }

    /// An ERROR frame, then the end of the connection; returns the ERROR.
    pub async fn expect_error_and_close(&mut self) -> Result<(Frame, Closed), Fail> {
        let error = match self.next_within(self.wait).await? {
            Event::Frame(f) if f.is("ERROR") => f,
            Event::Frame(f) => {
                return Err(Fail::new(format!("expected ERROR, got {}", f.summary())));
            }
            Event::Closed(c) => {
                return Err(Fail::new(format!(
                    "connection closed ({c}) without an ERROR frame"
                )));
            }
            Event::Timeout => {
                return Err(Fail::new(format!(
                    "no ERROR within {} ms",
                    self.wait.as_millis()
                )));
            }
        };
        match self.closed_within(self.wait).await? {
            Some(c) => Ok((error, c)),
            None => Err(Fail::new(format!(
                "sent {} but kept the connection open for {} ms",
                error.summary(),
                self.wait.as_millis()
            ))),
        }
    }

    /// No frame within `wait` (heart-beats aside).
    pub async fn silence(&mut self, wait: Duration, what: &str) -> Result<(), Fail> {
        match self.next_within(wait).await? {
            Event::Timeout => Ok(()),
            Event::Frame(f) => Err(Fail::new(format!("{what}, but got {}", f.summary()))),
            Event::Closed(c) => Err(Fail::new(format!(
                "{what}, but the connection closed ({c})"
            ))),
        }
    }

    /// Frames up to the RECEIPT `id`; the frames before it are kept for `frame()` too.
    /// An ERROR on the way is a failure.
    pub async fn until_receipt(&mut self, id: &str) -> Result<Vec<Frame>, Fail> {
        let mut before = Vec::new();
        loop {
            let f = self
                .frame()
                .await
                .map_err(|e| e.context(&format!("waiting for RECEIPT {id}")))?;
            if f.is("RECEIPT") && f.header("receipt-id").as_deref() == Some(id) {
                self.stash.extend(before.iter().cloned());
                return Ok(before);
            }
            if f.is("ERROR") {
                return Err(Fail::new(format!(
                    "got {} while waiting for RECEIPT {id}",
                    f.summary()
                )));
            }
            before.push(f);
        }
    }

    /// SUBSCRIBE with a receipt, waiting for it.
    pub async fn subscribe(&mut self, id: &str, destination: &str, ack: &str) -> Result<(), Fail> {
        let receipt = format!("sub-{id}");
        self.send(format!(
            "SUBSCRIBE\nid:{id}\ndestination:{destination}\nack:{ack}\nreceipt:{receipt}\n\n\0"
        ))
        .await?;
        self.until_receipt(&receipt).await.map(|_| ())
    }

    /// SEND a text body with a receipt, waiting for it.
    pub async fn publish(&mut self, destination: &str, body: &str) -> Result<(), Fail> {
        self.publish_with(destination, "", body).await
    }

    /// SEND with extra raw header lines (each ending in `\n`) and a receipt.
    pub async fn publish_with(
        &mut self,
        destination: &str,
        headers: &str,
        body: &str,
    ) -> Result<(), Fail> {
        let receipt = format!("pub-{}", uuid::Uuid::new_v4().simple());
        self.send(format!(
            "SEND\ndestination:{destination}\n{headers}receipt:{receipt}\ncontent-type:text/plain\n\n{body}\0"
        ))
        .await?;
        self.until_receipt(&receipt).await.map(|_| ())
    }

    /// The next MESSAGE (a RECEIPT or ERROR first is a failure).
    pub async fn message(&mut self) -> Result<Frame, Fail> {
        self.expect("MESSAGE").await
    }

    /// `n` MESSAGE frames.
    pub async fn messages(&mut self, n: usize) -> Result<Vec<Frame>, Fail> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(
                self.message()
                    .await
                    .map_err(|e| e.context(&format!("message {} of {n}", i + 1)))?,
            );
        }
        Ok(out)
    }

    /// DISCONNECT with a receipt, then wait for the close (best effort).
    pub async fn disconnect(mut self) {
        if self.send("DISCONNECT\nreceipt:bye\n\n\0").await.is_ok() {
            let _ = self.until_receipt("bye").await;
        }
        self.shutdown().await;
    }
}
