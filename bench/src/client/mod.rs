//! Client connections: TCP or WebSocket, split into a [`Reader`] (a read buffer the
//! zero-allocation scanner works on) and a [`Writer`] (frames staged and written many
//! per syscall), both in [`io`]. The STOMP handshake, SUBSCRIBE and receipts during setup use
//! `stompbox::frame::Parser`; the measured phase uses [`crate::scan`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use stompbox::frame::{Command, Frame, Version};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod io;
mod ws;

use io::{ReadSrc, WriteSink};
pub use io::{Reader, Writer};
use rustls_pki_types::pem::PemObject;

/// Where the broker is.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `Some(url)` for WebSocket.
    pub ws_url: Option<String>,
    /// STOMP over TLS (`tls://`), trusting this PEM certificate (`--tls-ca`).
    pub tls_ca: Option<std::path::PathBuf>,
    /// The scheme was `tls://`.
    pub tls: bool,
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
            "tcp" | "stomp" => Ok(Endpoint {
                addr,
                ws_url: None,
                tls_ca: None,
                tls: false,
            }),
            "tls" => Ok(Endpoint {
                addr,
                ws_url: None,
                tls_ca: None,
                tls: true,
            }),
            "ws" => Ok(Endpoint {
                addr,
                ws_url: Some(url.to_string()),
                tls_ca: None,
                tls: false,
            }),
            other => bail!("--url {url:?}: unsupported scheme {other:?} (tcp, tls or ws)"),
        }
    }

    pub fn transport(&self) -> &'static str {
        if self.ws_url.is_some() {
            "ws"
        } else if self.tls {
            "tls"
        } else {
            "tcp"
        }
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
    /// Use tokio-tungstenite instead of the lean codec for WebSocket.
    pub tungstenite: bool,
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
    let write_cap = if opts.small { 64 } else { 64 * 1024 };
    let (mut reader, mut writer) = match &ep.ws_url {
        None if ep.tls => {
            let ca = ep
                .tls_ca
                .as_ref()
                .context("tls:// needs --tls-ca CERT.pem (the broker's certificate)")?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading {}", ca.display()))?
            {
                roots.add(cert?)?;
            }
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(rustls_pki_types::ServerName::try_from("localhost")?, stream)
                .await
                .context("TLS handshake")?;
            let (r, w) = tokio::io::split(tls);
            (
                Reader::new(ReadSrc::Tcp(Box::new(r)), read_cap),
                Writer::new(WriteSink::Tcp(Box::new(w)), write_cap),
            )
        }
        None => {
            let (r, w) = stream.into_split();
            (
                Reader::new(ReadSrc::Tcp(Box::new(r)), read_cap),
                Writer::new(WriteSink::Tcp(Box::new(w)), write_cap),
            )
        }
        Some(url) if !opts.tungstenite => {
            let mut stream = stream;
            let subprotocol = (!opts.raw).then_some("v12.stomp");
            let leftover = ws::handshake(&mut stream, url, subprotocol)
                .await
                .with_context(|| format!("WebSocket handshake with {url}"))?;
            let owed = ws::Owed::default();
            let seed =
                (stream.local_addr()?.port() as u64) << 32 ^ leftover.len() as u64 ^ 0x1234_5678;
            let (r, w) = stream.into_split();
            (
                Reader::new(
                    ReadSrc::WsLean(r, ws::Decoder::new(leftover, owed.clone(), read_cap)),
                    read_cap,
                ),
                Writer::new(
                    WriteSink::WsLean(w, ws::Encoder::new(seed), owed),
                    write_cap,
                ),
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
                Writer::new(WriteSink::Ws(sink), write_cap),
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
            r.set_version(Version::V1_2);
            Ok(())
        }
        _ => Err(frame_error("CONNECT", &reply)),
    }
}

fn frame_error(what: &str, f: &Frame) -> anyhow::Error {
    if f.command != Command::Error {
        return anyhow!(
            "{what}: unexpected {} frame from the peer (is this a STOMP broker? use --raw for the relay)",
            f.command.as_str()
        );
    }
    let msg = f.headers.get("message").unwrap_or("(no message header)");
    let body = String::from_utf8_lossy(&f.body);
    let body = body.trim();
    if body.is_empty() || body == msg {
        anyhow!("{what}: broker sent ERROR: {msg}")
    } else {
        anyhow!("{what}: broker sent ERROR: {msg} ({body})")
    }
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
