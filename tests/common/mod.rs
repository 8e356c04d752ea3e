//! Test harness: the real broker in-process on port 0, and a raw STOMP client over a
//! real TCP socket or a real WebSocket (tokio-tungstenite). Frames are written as raw
//! bytes; replies are read with a deadline so a broker that hangs fails the test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use stompbox::frame::{Command, Frame, Inbound, Limits, Parser};
use stompbox::{Broker, BrokerHandle, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expectation may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A broker on ephemeral ports.
pub struct TestBroker {
    pub handle: BrokerHandle,
}

impl TestBroker {
    pub fn tcp(&self) -> SocketAddr {
        self.handle.tcp_addr
    }
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.handle.ws_addr)
    }
}

/// The default configuration on port 0.
pub fn config() -> Config {
    let mut c = Config::default();
    c.listeners.tcp = "127.0.0.1:0".parse().unwrap();
    c.listeners.ws = "127.0.0.1:0".parse().unwrap();
    // In memory: tests that need a store give it a directory of their own.
    c.store.data_dir = String::new();
    c.admin.listen = String::new();
    c
}

pub async fn start() -> TestBroker {
    start_with(config()).await
}

pub async fn start_with(config: Config) -> TestBroker {
    TestBroker {
        handle: Broker::start(config).await.expect("broker starts"),
    }
}

enum Io {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
}

/// What the connection did instead of producing a frame.
#[derive(Debug, PartialEq)]
pub enum Ending {
    /// EOF / WebSocket stream ended without a Close frame.
    Eof,
    /// WebSocket Close with this code.
    WsClose(u16),
}

/// A raw STOMP client.
pub struct Client {
    io: Io,
    buf: BytesMut,
    parser: Parser,
    /// WebSocket message types received (true = binary), in order.
    pub ws_binary: Vec<bool>,
    /// Heart-beat EOLs received.
    pub heartbeats: usize,
    /// Set once the connection ended.
    pub ending: Option<Ending>,
    /// Frames read while waiting for a receipt, handed out by the next reads.
    stash: std::collections::VecDeque<Frame>,
}

impl Client {
    fn new(io: Io) -> Self {
        let limits = Limits {
            max_headers: 10_000,
            max_header_line_bytes: 1 << 20,
            max_body_bytes: 64 << 20,
        };
        Client {
            io,
            buf: BytesMut::new(),
            parser: Parser::new(limits),
            ws_binary: Vec::new(),
            heartbeats: 0,
            ending: None,
            stash: Default::default(),
        }
    }

    /// A TCP client whose socket is bound to `local` first (another loopback address,
    /// such as 127.0.0.2, to be a different source address).
    pub async fn tcp_from(addr: SocketAddr, local: std::net::IpAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(local, 0))
            .expect("bind the client address");
        Client::new(Io::Tcp(socket.connect(addr).await.expect("tcp connect")))
    }

    pub async fn tcp(addr: SocketAddr) -> Client {
        Client::new(Io::Tcp(
            TcpStream::connect(addr).await.expect("tcp connect"),
        ))
    }

    /// A TCP client whose socket receive buffer is small, so that a client that does
    /// not read makes the broker's outbox fill after little data.
    pub async fn tcp_small_buffer(addr: SocketAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        Client::new(Io::Tcp(socket.connect(addr).await.expect("tcp connect")))
    }

    /// A WebSocket offering `protocols`; returns the subprotocol the server chose.
    pub async fn ws(url: &str, protocols: &[&str]) -> (Client, Option<String>) {
        let mut req = url.into_client_request().unwrap();
        if !protocols.is_empty() {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&protocols.join(", ")).unwrap(),
            );
        }
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect");
        let chosen = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        (Client::new(Io::Ws(Box::new(ws))), chosen)
    }

    /// Writes raw bytes (one WebSocket binary message on WS).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.io {
            Io::Tcp(s) => s.write_all(bytes).await.expect("tcp write"),
            Io::Ws(ws) => ws
                .send(Message::binary(bytes.to_vec()))
                .await
                .expect("ws send"),
        }
    }

    /// Writes raw bytes as a WebSocket text message.
    pub async fn send_text(&mut self, text: &str) {
        match &mut self.io {
            Io::Ws(ws) => ws
                .send(Message::Text(Utf8Bytes::from(text)))
                .await
                .expect("ws send"),
            Io::Tcp(_) => panic!("text messages are a WebSocket thing"),
        }
    }

    /// Sends a WebSocket message as is (for non-STOMP payloads).
    pub async fn send_ws(&mut self, message: Message) {
        match &mut self.io {
            Io::Ws(ws) => ws.send(message).await.expect("ws send"),
            Io::Tcp(_) => panic!("not a WebSocket"),
        }
    }

    /// Sends a frame written as text with `\0` appended.
    pub async fn send(&mut self, frame: &str) {
        let mut bytes = frame.as_bytes().to_vec();
        bytes.push(0);
        self.send_raw(&bytes).await;
    }

    /// Closes our side abruptly.
    pub async fn shutdown_write(&mut self) {
        if let Io::Tcp(s) = &mut self.io {
            let _ = s.shutdown().await;
        }
    }

    /// Reads more input; false once the connection has ended.
    async fn fill(&mut self) -> bool {
        if self.ending.is_some() {
            return false;
        }
        match &mut self.io {
            Io::Tcp(s) => {
                self.buf.reserve(8192);
                match s.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => {
                        self.ending = Some(Ending::Eof);
                        false
                    }
                    Ok(_) => true,
                }
            }
            Io::Ws(ws) => match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    self.ws_binary.push(true);
                    self.buf.extend_from_slice(&b);
                    true
                }
                Some(Ok(Message::Text(t))) => {
                    self.ws_binary.push(false);
                    self.buf.extend_from_slice(t.as_bytes());
                    true
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    self.ending = Some(Ending::WsClose(code));
                    false
                }
                Some(Ok(_)) => true,
                Some(Err(_)) | None => {
                    self.ending = Some(Ending::Eof);
                    false
                }
            },
        }
    }

    /// The next frame already in the read buffer, counting heart-beats before it.
    fn buffered_frame(&mut self) -> Option<Frame> {
        loop {
            match self
                .parser
                .parse(&mut self.buf)
                .expect("broker sent valid STOMP")
            {
                Some(Inbound::Frame(f)) => return Some(f),
                Some(Inbound::Heartbeat) => self.heartbeats += 1,
                None => return None,
            }
        }
    }

    /// The next frame, or `None` if the connection ended or `wait` passed first.
    pub async fn next_frame_within(&mut self, wait: Duration) -> Option<Frame> {
        if let Some(f) = self.stash.pop_front() {
            return Some(f);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(f) = self.buffered_frame() {
                return Some(f);
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return None,
            }
        }
    }

    /// The next frame, reading at most `chunk` bytes per `every` (a slow but steady
    /// TCP reader); `None` if the connection ended or nothing moved for [`WAIT`].
    pub async fn next_frame_paced(&mut self, chunk: usize, every: Duration) -> Option<Frame> {
        let Io::Tcp(_) = &self.io else {
            panic!("paced reads are for TCP");
        };
        loop {
            if let Some(f) = self.buffered_frame() {
                return Some(f);
            }
            let Io::Tcp(s) = &mut self.io else {
                unreachable!()
            };
            let mut tmp = vec![0u8; chunk];
            match tokio::time::timeout(WAIT, s.read(&mut tmp)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&tmp[..n]),
                _ => {
                    self.ending = Some(Ending::Eof);
                    return None;
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The next frame; fails the test after [`WAIT`].
    pub async fn frame(&mut self) -> Frame {
        match self.next_frame_within(WAIT).await {
            Some(f) => f,
            None => panic!("expected a frame; connection ending: {:?}", self.ending),
        }
    }

    /// The next frame, which must have this command.
    pub async fn expect(&mut self, command: Command) -> Frame {
        let f = self.frame().await;
        assert_eq!(f.command, command, "unexpected frame: {f:?}");
        f
    }

    /// Expects ERROR, then the connection closing; returns the ERROR.
    pub async fn expect_error_and_close(&mut self) -> Frame {
        let err = self.expect(Command::Error).await;
        self.expect_closed().await;
        err
    }

    /// Waits for the connection to end (no further frames allowed).
    pub async fn expect_closed(&mut self) -> &Ending {
        if let Some(f) = self.next_frame_within(WAIT).await {
            panic!("expected close, got frame {f:?}");
        }
        self.ending
            .as_ref()
            .expect("connection should close within the deadline")
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(f) = self.next_frame_within(wait).await {
            panic!("expected no frame, got {f:?}");
        }
        assert!(self.ending.is_none(), "connection ended: {:?}", self.ending);
    }

    /// CONNECT as a STOMP 1.2 client with no heart-beats; returns CONNECTED.
    pub async fn connect(&mut self) -> Frame {
        self.send("CONNECT\naccept-version:1.2\nhost:localhost\n\n")
            .await;
        self.expect(Command::Connected).await
    }

    /// SUBSCRIBE with a receipt, waiting for it so the subscription is live.
    pub async fn subscribe(&mut self, id: &str, destination: &str, ack: &str) {
        self.send(&format!(
            "SUBSCRIBE\nid:{id}\ndestination:{destination}\nack:{ack}\nreceipt:sub-{id}\n\n"
        ))
        .await;
        self.until_receipt(&format!("sub-{id}")).await;
    }

    /// SEND with a receipt, waiting for it.
    pub async fn publish(&mut self, destination: &str, body: &str) {
        self.send(&format!(
            "SEND\ndestination:{destination}\nreceipt:pub\n\n{body}"
        ))
        .await;
        self.until_receipt("pub").await;
    }

    /// Waits for RECEIPT `id`. MESSAGE frames that come first (S13: those the frame
    /// caused come before its receipt) are kept for the next reads.
    pub async fn until_receipt(&mut self, id: &str) {
        let mut early = Vec::new();
        loop {
            let f = self.frame().await;
            match f.command {
                Command::Receipt => {
                    assert_eq!(f.headers.get("receipt-id"), Some(id));
                    break;
                }
                Command::Message => early.push(f),
                _ => panic!("unexpected frame while waiting for a receipt: {f:?}"),
            }
        }
        self.stash.extend(early);
    }
}

/// A connected TCP client.
pub async fn connected(broker: &TestBroker) -> Client {
    let mut c = Client::tcp(broker.tcp()).await;
    c.connect().await;
    c
}

/// The close code for a WebSocket ending.
pub fn close_code(ending: &Ending) -> u16 {
    match ending {
        Ending::WsClose(code) => *code,
        Ending::Eof => 0,
    }
}

/// A TLS client connection to `addr` (a broker's TLS listener) trusting only `trust`,
/// its certificate for `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    trust: &rustls_pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tls_connector(trust)
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

/// A rustls connector trusting only `trust`.
pub fn tls_connector(
    trust: &rustls_pki_types::CertificateDer<'static>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// A user whose passcode hash is made at a test's cost (argon2 with tiny parameters):
/// what `stompbox hash-password` makes, minus the seconds.
pub fn user(login: &str, passcode: &str) -> stompbox::config::User {
    stompbox::config::User {
        login: login.into(),
        passcode_hash: Some(stompbox::auth::hash_with(
            passcode,
            argon2::Params::new(8, 1, 1, None).unwrap(),
        )),
        passcode: None,
    }
}

/// One HTTP/1.1 request over a fresh connection: `head` is the request line plus any
/// header lines (CRLF-separated); returns the status and the whole response.
pub async fn http_request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, text)
}
