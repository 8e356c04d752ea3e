//! Client connections: TCP or WebSocket, split into a [`Reader`] (a read buffer the
//! zero-allocation scanner works on) and a [`Writer`] (frames staged and written many
//! per syscall). The STOMP handshake, SUBSCRIBE and receipts during setup use
//! `stompbox::frame::Parser`; the measured phase uses [`crate::scan`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use stompbox::frame::{Command, Frame, Inbound, Limits, Parser, Version, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::scan::{self, Cmd, Item};

type Ws = WebSocketStream<TcpStream>;

/// Where the broker is.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `Some(url)` for WebSocket.
    pub ws_url: Option<String>,
}

impl Endpoint {
    /// Parses `tcp://HOST:PORT` or `ws://HOST:PORT/PATH`; HOST must be loopback.
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let (scheme, rest) = url.split_once("://").with_context(|| {
            format!("--url {url:?}: expected tcp://HOST:PORT or ws://HOST:PORT/PATH")
        })?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = authority
            .rsplit_once(':')
            .with_context(|| format!("--url {url:?}: missing :PORT"))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("--url {url:?}: bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse().with_context(|| {
                format!("--url {url:?}: host must be a loopback IP or localhost")
            })?
        };
        if !ip.is_loopback() {
            bail!("--url {url:?}: this tool only talks to loopback addresses");
        }
        let addr = SocketAddr::new(ip, port);
        match scheme {
            "tcp" | "stomp" => Ok(Endpoint { addr, ws_url: None }),
            "ws" => Ok(Endpoint {
                addr,
                ws_url: Some(url.to_string()),
            }),
            other => bail!("--url {url:?}: unsupported scheme {other:?} (tcp or ws)"),
        }
    }

    pub fn transport(&self) -> &'static str {
        if self.ws_url.is_some() { "ws" } else { "tcp" }
    }
}

/// How to open and greet a connection.
#[derive(Clone, Debug)]
pub struct ConnectOpts {
    pub login: Option<String>,
    pub passcode: Option<String>,
    pub host: String,
    /// CONNECT `heart-beat` (0,0 = none).
    pub heartbeat_ms: u64,
    /// No STOMP at all (relay baseline); WebSocket without a subprotocol.
    pub raw: bool,
    /// Small buffers (idle connections).
    pub small: bool,
    /// Bind this local address before connecting (idle, many connections).
    pub source_ip: Option<Ipv4Addr>,
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens a connection and, unless raw, performs CONNECT/CONNECTED.
pub async fn open(ep: &Endpoint, opts: &ConnectOpts) -> anyhow::Result<(Reader, Writer)> {
    tokio::time::timeout(SETUP_TIMEOUT, open_inner(ep, opts))
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", ep.addr))?
}

async fn open_inner(ep: &Endpoint, opts: &ConnectOpts) -> anyhow::Result<(Reader, Writer)> {
    let socket = if ep.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = opts.source_ip {
        bind_no_port(&socket);
        socket
            .bind(SocketAddr::new(IpAddr::V4(ip), 0))
            .with_context(|| format!("binding local address {ip}"))?;
    }
    let stream = socket
        .connect(ep.addr)
        .await
        .with_context(|| format!("connecting to {}", ep.addr))?;
    stream.set_nodelay(true)?;
    let read_cap = if opts.small { 512 } else { 64 * 1024 };
    let (mut reader, mut writer) = match &ep.ws_url {
        None => {
            let (r, w) = stream.into_split();
            (
                Reader::new(ReadSrc::Tcp(r), read_cap),
                Writer::new(WriteSink::Tcp(w), if opts.small { 64 } else { 64 * 1024 }),
            )
        }
        Some(url) => {
            let mut request = url.as_str().into_client_request()?;
            if !opts.raw {
                request.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static("v12.stomp"),
                );
            }
            let config = if opts.small {
                WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(0)
            } else {
                WebSocketConfig::default()
            };
            let (ws, _resp) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                    .await
                    .with_context(|| format!("WebSocket handshake with {url}"))?;
            let (sink, stream) = ws.split();
            (
                Reader::new(ReadSrc::Ws(stream), read_cap),
                Writer::new(WriteSink::Ws(sink), if opts.small { 64 } else { 64 * 1024 }),
            )
        }
    };
    if !opts.raw {
        stomp_connect(&mut reader, &mut writer, opts).await?;
    }
    Ok((reader, writer))
}

/// IP_BIND_ADDRESS_NO_PORT: let connect() pick the port per 4-tuple, so a bound source
/// address does not reserve an ephemeral port by itself.
fn bind_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: valid fd, pointer to a c_int of the given size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn stomp_connect(r: &mut Reader, w: &mut Writer, opts: &ConnectOpts) -> anyhow::Result<()> {
    let mut f = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("host", opts.host.clone());
    if let Some(l) = &opts.login {
        f = f.header("login", l.clone());
    }
    if let Some(p) = &opts.passcode {
        f = f.header("passcode", p.clone());
    }
    f = f.header(
        "heart-beat",
        format!("{},{}", opts.heartbeat_ms, opts.heartbeat_ms),
    );
    w.push_frame(&f);
    w.flush().await?;
    let reply = r.next_frame().await?;
    match reply.command {
        Command::Connected => {
            r.parser.set_version(Version::V1_2);
            Ok(())
        }
        _ => Err(frame_error("CONNECT", &reply)),
    }
}

fn frame_error(what: &str, f: &Frame) -> anyhow::Error {
    let msg = f.headers.get("message").unwrap_or("(no message header)");
    let body = String::from_utf8_lossy(&f.body);
    anyhow!(
        "{what}: broker answered {} {msg}{}",
        f.command.as_str(),
        if body.trim().is_empty() {
            String::new()
        } else {
            format!(" ({})", body.trim())
        }
    )
}

/// SUBSCRIBE with a receipt, and wait for the RECEIPT.
pub async fn subscribe(
    r: &mut Reader,
    w: &mut Writer,
    destination: &str,
    id: &str,
    extra: &[(&str, String)],
) -> anyhow::Result<()> {
    let receipt = format!("sub-{id}");
    let mut f = Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", destination);
    for (k, v) in extra {
        f = f.header(*k, v.clone());
    }
    f = f.header("receipt", receipt.clone());
    w.push_frame(&f);
    w.flush().await?;
    tokio::time::timeout(SETUP_TIMEOUT, async {
        loop {
            let reply = r.next_frame().await?;
            match reply.command {
                Command::Receipt if reply.headers.get("receipt-id") == Some(&receipt) => {
                    return Ok(());
                }
                Command::Receipt | Command::Message => {}
                _ => return Err(frame_error("SUBSCRIBE", &reply)),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no RECEIPT for SUBSCRIBE to {destination}"))?
}

enum ReadSrc {
    Tcp(OwnedReadHalf),
    Ws(SplitStream<Ws>),
}

/// The read half and its buffer.
pub struct Reader {
    src: ReadSrc,
    pub buf: BytesMut,
    chunk: usize,
    parser: Parser,
}

impl Reader {
    fn new(src: ReadSrc, chunk: usize) -> Reader {
        Reader {
            src,
            buf: BytesMut::with_capacity(chunk),
            chunk,
            parser: Parser::new(Limits::default()),
        }
    }

    /// Appends whatever arrives next to `buf`. `Ok(false)`: the peer closed.
    pub async fn fill(&mut self) -> anyhow::Result<bool> {
        match &mut self.src {
            ReadSrc::Tcp(r) => {
                if self.buf.capacity() - self.buf.len() < self.chunk / 4 {
                    self.buf.reserve(self.chunk);
                }
                Ok(r.read_buf(&mut self.buf).await? > 0)
            }
            ReadSrc::Ws(s) => loop {
                match s.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        self.buf.extend_from_slice(&b);
                        return Ok(true);
                    }
                    Some(Ok(Message::Text(t))) => {
                        self.buf.extend_from_slice(t.as_bytes());
                        return Ok(true);
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(false),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                }
            },
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

enum WriteSink {
    Tcp(OwnedWriteHalf),
    Ws(SplitSink<Ws, Message>),
}

/// The write half. Frames are staged and written by [`Writer::flush`]: over TCP one
/// `write_all` of the concatenated frames; over WebSocket one binary message per frame,
/// all fed, then one flush.
pub struct Writer {
    sink: WriteSink,
    stage: BytesMut,
    pending: Vec<Message>,
    initial: usize,
}

impl Writer {
    fn new(sink: WriteSink, cap: usize) -> Writer {
        Writer {
            sink,
            stage: BytesMut::with_capacity(cap),
            pending: Vec::new(),
            initial: cap,
        }
    }

    fn is_ws(&self) -> bool {
        matches!(self.sink, WriteSink::Ws(_))
    }

    /// WebSocket: the staged bytes become one message.
    #[inline]
    fn end_frame(&mut self) {
        if self.is_ws() {
            let b = self.stage.split().freeze();
            self.pending.push(Message::Binary(b));
            if self.stage.capacity() < 256 {
                self.stage.reserve(self.initial);
            }
        }
    }

    /// Stages a pre-encoded frame (shared, not copied, over WebSocket).
    #[inline]
    pub fn push_shared(&mut self, frame: &Bytes) {
        if self.is_ws() {
            self.pending.push(Message::Binary(frame.clone()));
        } else {
            self.stage.extend_from_slice(frame);
        }
    }

    /// Stages one frame given as consecutive parts.
    #[inline]
    pub fn push_parts(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.stage.extend_from_slice(p);
        }
        self.end_frame();
    }

    /// Stages a copy of `template` with `patch` written at offset `at`.
    #[inline]
    pub fn push_patched(&mut self, template: &[u8], at: usize, patch: &[u8]) {
        let start = self.stage.len();
        self.stage.extend_from_slice(template);
        self.stage[start + at..start + at + patch.len()].copy_from_slice(patch);
        self.end_frame();
    }

    /// Stages one frame written by `f` into the staging buffer (no allocation over TCP).
    #[inline]
    pub fn frame(&mut self, f: impl FnOnce(&mut BytesMut)) {
        f(&mut self.stage);
        self.end_frame();
    }

    /// Stages a frame encoded by the broker's encoder (setup path).
    pub fn push_frame(&mut self, f: &Frame) {
        encode(f, Version::V1_2, &mut self.stage);
        self.end_frame();
    }

    /// Stages a heart-beat EOL.
    pub fn push_heartbeat(&mut self) {
        self.stage.put_u8(b'\n');
        self.end_frame();
    }

    pub fn is_empty(&self) -> bool {
        self.stage.is_empty() && self.pending.is_empty()
    }

    /// Writes everything staged.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        match &mut self.sink {
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
