//! TLS: STOMP over TLS and wss:// with a certificate generated at test time (rcgen),
//! real TLS clients (rustls, `openssl s_client`), a plain-text client refused on the
//! TLS port, and a certificate renewed on disk served to new connections while old
//! ones stay up.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::{WAIT, start_with};
use rustls_pki_types::{CertificateDer, ServerName};
use stompbox::frame::{Command, Frame, Inbound, Limits, Parser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("stompbox-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Certs { dir }
    }

    /// Generates a new self-signed certificate for localhost into the two files;
    /// returns its DER.
    fn issue(&self) -> CertificateDer<'static> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        std::fs::write(self.cert(), ck.cert.pem()).unwrap();
        std::fs::write(self.key(), ck.key_pair.serialize_pem()).unwrap();
        ck.cert.der().clone()
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn config(&self) -> stompbox::Config {
        let mut c = common::config();
        c.listeners.tcp_tls = "127.0.0.1:0".into();
        c.listeners.wss = "127.0.0.1:0".into();
        c.tls.cert_chain = self.cert().to_string_lossy().into_owned();
        c.tls.key = self.key().to_string_lossy().into_owned();
        c.tls.reload_check_ms = 50;
        c
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

use common::tls_connector as connector;

/// Reads one frame from any stream.
async fn frame<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> Frame {
    let mut parser = Parser::new(Limits {
        max_headers: 100,
        max_header_line_bytes: 8192,
        max_body_bytes: 1 << 20,
    });
    loop {
        if let Some(Inbound::Frame(f)) = parser.parse(buf).unwrap() {
            return f;
        }
        let n = tokio::time::timeout(WAIT, s.read_buf(buf))
            .await
            .expect("a frame in time")
            .unwrap();
        assert!(n > 0, "connection closed");
    }
}

async fn stomp<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    text: &str,
) -> Frame {
    s.write_all(format!("{text}\0").as_bytes()).await.unwrap();
    frame(s, buf).await
}

async fn tls_client(
    addr: std::net::SocketAddr,
    trust: &CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    common::tls_connect(addr, trust).await
}

#[tokio::test]
async fn stomp_over_tls_and_a_plain_client_refused() {
    let certs = Certs::new("stomp");
    let der = certs.issue();
    let b = start_with(certs.config()).await;
    let addr = b.handle.tcp_tls_addr.unwrap();
    let mut s = tls_client(addr, &der).await;
    let mut buf = BytesMut::new();
    let f = stomp(
        &mut s,
        &mut buf,
        "CONNECT\naccept-version:1.2\nhost:localhost\n\n",
    )
    .await;
    assert_eq!(f.command, Command::Connected);
    let f = stomp(
        &mut s,
        &mut buf,
        "SUBSCRIBE\nid:1\ndestination:/queue/tls\nreceipt:r\n\n",
    )
    .await;
    assert_eq!(f.command, Command::Receipt);
    s.write_all(b"SEND\ndestination:/queue/tls\n\nsecret payload\0")
        .await
        .unwrap();
    let f = frame(&mut s, &mut buf).await;
    assert_eq!(
        (f.command, &f.body[..]),
        (Command::Message, &b"secret payload"[..])
    );

    // Plain text on the TLS port gets a STOMP ERROR saying so.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    let mut buf = BytesMut::new();
    let f = stomp(&mut plain, &mut buf, "CONNECT\naccept-version:1.2\n\n").await;
    assert_eq!(f.command, Command::Error);
    assert_eq!(
        f.headers.get("message"),
        Some("this port speaks STOMP over TLS: connect with TLS")
    );
    b.handle.shutdown().await;
}

#[tokio::test]
async fn wss_with_a_real_websocket_client() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let certs = Certs::new("wss");
    let der = certs.issue();
    let b = start_with(certs.config()).await;
    let addr = b.handle.wss_addr.unwrap();
    let tls = tls_client(addr, &der).await;
    let mut req = format!("wss://localhost:{}/ws", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v12.stomp".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::binary(
        &b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0"[..],
    ))
    .await
    .unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(reply.into_data().starts_with(b"CONNECTED\n"));

    // Plain HTTP on the wss port gets a 400 saying so.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    plain.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("wss://"), "{out}");
    b.handle.shutdown().await;
}

#[tokio::test]
async fn openssl_s_client_speaks_stomp_over_tls() {
    let certs = Certs::new("openssl");
    certs.issue();
    let b = start_with(certs.config()).await;
    let addr = b.handle.tcp_tls_addr.unwrap();
    let cafile = certs.cert();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-servername",
                "localhost",
            ])
            .arg("-CAfile")
            .arg(&cafile)
            .arg("-connect")
            .arg(addr.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl installed");
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(
                b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0DISCONNECT\nreceipt:bye\n\n\0",
            )
            .unwrap();
        // Kept open until the broker closes after the DISCONNECT receipt.
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        out
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("CONNECTED\n"),
        "{stdout} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("RECEIPT\nreceipt-id:bye"), "{stdout}");
    b.handle.shutdown().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_while_old_ones_stay_up() {
    let certs = Certs::new("renew");
    let first = certs.issue();
    let b = start_with(certs.config()).await;
    let addr = b.handle.tcp_tls_addr.unwrap();
    let mut old = tls_client(addr, &first).await;
    let mut old_buf = BytesMut::new();
    let f = stomp(
        &mut old,
        &mut old_buf,
        "CONNECT\naccept-version:1.2\nhost:localhost\n\n",
    )
    .await;
    assert_eq!(f.command, Command::Connected);

    // Renewed on disk: a new key and certificate.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = certs.issue();
    assert_ne!(first, second);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let tcp = TcpStream::connect(addr).await.unwrap();
        if let Ok(s) = connector(&second)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
        {
            let served = s.get_ref().1.peer_certificates().unwrap()[0].clone();
            assert_eq!(served, second);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection made with the first certificate still works.
    let f = stomp(
        &mut old,
        &mut old_buf,
        "SEND\ndestination:/queue/x\nreceipt:still\n\nx",
    )
    .await;
    assert_eq!(f.headers.get("receipt-id"), Some("still"));
    b.handle.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_logs_in_as_its_common_name() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let certs = Certs::new("mtls");
    let server = certs.issue();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test client CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(certs.dir.join("ca.pem"), ca.pem()).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "svc-a");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = params.signed_by(&client_key, &ca, &ca_key).unwrap();

    let mut cfg = certs.config();
    cfg.tls.client_ca = certs.dir.join("ca.pem").to_string_lossy().into_owned();
    cfg.auth.allow_anonymous = false;
    cfg.auth.acls = vec![stompbox::config::AclRule {
        users: vec!["svc-a".into()],
        write: vec!["/queue/a".into()],
        create: vec!["/queue/a".into()],
        ..Default::default()
    }];
    let b = start_with(cfg).await;
    let addr = b.handle.tcp_tls_addr.unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.clone()).unwrap();
    let with_cert = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![client.der().clone()],
        rustls_pki_types::PrivatePkcs8KeyDer::from(client_key.serialize_der()).into(),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = TlsConnector::from(Arc::new(with_cert))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let f = stomp(&mut s, &mut buf, "CONNECT\naccept-version:1.2\nhost:x\n\n").await;
    assert_eq!(f.command, Command::Connected, "{f:?}");
    // The ACL sees the certificate's user.
    let f = stomp(
        &mut s,
        &mut buf,
        "SEND\ndestination:/queue/a\nreceipt:r\n\nx",
    )
    .await;
    assert_eq!(f.headers.get("receipt-id"), Some("r"));

    // Without a certificate: an ordinary login, refused here.
    let mut plain = tls_client(addr, &server).await;
    let mut buf = BytesMut::new();
    let f = stomp(
        &mut plain,
        &mut buf,
        "CONNECT\naccept-version:1.2\nhost:x\n\n",
    )
    .await;
    assert_eq!(
        f.headers.get("message"),
        Some("authentication failed: bad login or passcode")
    );
    b.handle.shutdown().await;
}
