//! The production configuration printed in SECURITY.md, loaded as written (only the
//! certificate paths, the listen addresses and the token secret swapped for ones made
//! at test time), refuses each thing it should, over real sockets: no credentials, a
//! wrong passcode, an expired or forged token, a forbidden destination, a foreign
//! Origin, and a plain-text client on the TLS port; and lets the right ones in.

mod common;

use std::path::PathBuf;

use bytes::BytesMut;
use common::{WAIT, start_with};
use jsonwebtoken::{EncodingKey, Header, encode};
use rustls_pki_types::CertificateDer;
use serde_json::json;
use stompbox::Config;
use stompbox::frame::{Command, Frame, Inbound, Limits, Parser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "replace-with-a-long-random-secret-from-your-identity-provider";

/// The ```toml block of SECURITY.md.
fn production_toml() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SECURITY.md")).unwrap();
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

struct Setup {
    dir: PathBuf,
    der: CertificateDer<'static>,
    config: Config,
}

fn setup() -> Setup {
    let dir = std::env::temp_dir().join(format!("stompbox-security-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
    let text = production_toml()
        .replace(
            "/etc/stompbox/fullchain.pem",
            dir.join("cert.pem").to_str().unwrap(),
        )
        .replace(
            "/etc/stompbox/privkey.pem",
            dir.join("key.pem").to_str().unwrap(),
        )
        .replace("\"0.0.0.0:61614\"", "\"127.0.0.1:0\"")
        .replace("\"0.0.0.0:15673\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:61613\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:15674\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:15680\"", "\"127.0.0.1:0\"");
    let mut config = Config::from_toml(&text).expect("SECURITY.md's configuration is valid");
    config.store.data_dir = String::new();
    Setup {
        dir,
        der: ck.cert.der().clone(),
        config,
    }
}

async fn tls(
    addr: std::net::SocketAddr,
    der: &CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    common::tls_connect(addr, der).await
}

/// Writes `frames`, returns the first frame back that is not a RECEIPT (nor, with
/// `errors_only`, a CONNECTED).
async fn exchange_until<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    frames: &str,
    errors_only: bool,
) -> Frame {
    s.write_all(frames.as_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    let mut parser = Parser::new(Limits {
        max_headers: 100,
        max_header_line_bytes: 8192,
        max_body_bytes: 1 << 20,
    });
    loop {
        if let Some(Inbound::Frame(f)) = parser.parse(&mut buf).unwrap() {
            let skip =
                f.command == Command::Receipt || (errors_only && f.command == Command::Connected);
            if !skip {
                return f;
            }
            continue;
        }
        let n = tokio::time::timeout(WAIT, s.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed without a frame");
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, frames: &str) -> Frame {
    exchange_until(s, frames, false).await
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(secret: &str, exp: u64) -> String {
    let claims = json!({"sub": "ann", "roles": ["customer"], "aud": "stompbox",
                        "iss": "https://id.example.com", "exp": exp});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Sends one HTTP request and returns the status code of the answer.
async fn http_status<S: AsyncRead + AsyncWrite + Unpin>(c: &mut S, request: &str) -> String {
    c.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 12];
    tokio::time::timeout(WAIT, c.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&head[9..12]).into_owned()
}

#[tokio::test]
async fn the_production_config_refuses_what_it_should() {
    let s = setup();
    let b = start_with(s.config.clone()).await;
    let stomp = b.handle.tcp_tls_addr.unwrap();
    let connect = |extra: &str| format!("CONNECT\naccept-version:1.2\nhost:x\n{extra}\n\0");
    let message = |f: &Frame| f.headers.get("message").unwrap_or("").to_owned();

    let cases = [
        (
            "no credentials",
            connect(""),
            "authentication failed: bad login or passcode",
        ),
        (
            "wrong passcode",
            connect("login:orders-service\npasscode:wrong\n"),
            "authentication failed: bad login or passcode",
        ),
        (
            "expired token",
            connect(&format!("passcode:{}\n", jwt(SECRET, now() - 120))),
            "token expired",
        ),
        (
            "forged token",
            connect(&format!(
                "passcode:{}\n",
                jwt("a-forger-s-own-secret-of-some-length", now() + 60)
            )),
            "token refused: InvalidSignature",
        ),
        (
            "forbidden destination",
            connect("login:orders-service\npasscode:change-me\n")
                + "SEND\ndestination:/queue/payroll\n\nx\0",
            "permission denied: write on /queue/payroll",
        ),
        (
            "token without the right role",
            connect(&format!("passcode:{}\n", jwt(SECRET, now() + 60)))
                + "SUBSCRIBE\nid:1\ndestination:/queue/orders.eu\n\n\0",
            "permission denied: read on /queue/orders.eu",
        ),
    ];
    for (what, frames, expected) in cases {
        let mut c = tls(stomp, &s.der).await;
        let f = exchange_until(&mut c, &frames, true).await;
        assert_eq!(
            (f.command, message(&f)),
            (Command::Error, expected.to_owned()),
            "{what}"
        );
    }

    // The right ones get in: the service with its passcode, a browser with its token.
    let mut svc = tls(stomp, &s.der).await;
    let f = exchange(
        &mut svc,
        &connect("login:orders-service\npasscode:change-me\n"),
    )
    .await;
    assert_eq!(f.command, Command::Connected);
    let mut page = tls(stomp, &s.der).await;
    let f = exchange(
        &mut page,
        &connect(&format!("passcode:{}\n", jwt(SECRET, now() + 60))),
    )
    .await;
    assert_eq!(f.command, Command::Connected);
    let f = exchange(
        &mut page,
        "SUBSCRIBE\nid:1\ndestination:/topic/events.orders.eu\nreceipt:s\n\n\0SEND\ndestination:/x\n\n\0",
    )
    .await;
    assert_eq!(
        message(&f),
        "permission denied: write on /x",
        "the SUBSCRIBE passed"
    );

    // The admin side: only the admin's credentials open the API, and only an admin
    // reads /sys/stats.
    let admin = b.handle.admin_addr.unwrap();
    for (user, status) in [
        (None, "401"),
        (Some("orders-service:change-me"), "401"),
        (Some("ops:wrong"), "401"),
        (Some("ops:ops-change-me"), "200"),
    ] {
        use base64::Engine as _;
        let mut c = TcpStream::connect(admin).await.unwrap();
        let auth = user.map_or(String::new(), |u| {
            format!(
                "authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(u)
            )
        });
        let request = format!("GET /api/overview HTTP/1.1\r\nhost: localhost\r\n{auth}\r\n");
        assert_eq!(http_status(&mut c, &request).await, status, "{user:?}");
    }
    let mut svc = tls(stomp, &s.der).await;
    let f = exchange_until(
        &mut svc,
        &(connect("login:orders-service\npasscode:change-me\n")
            + "SUBSCRIBE\nid:1\ndestination:/sys/stats\n\n\0"),
        true,
    )
    .await;
    assert_eq!(message(&f), "permission denied: read on /sys/stats");

    // Plain text on the TLS port.
    let mut plain = TcpStream::connect(stomp).await.unwrap();
    let f = exchange(&mut plain, &connect("")).await;
    assert_eq!(
        message(&f),
        "this port speaks STOMP over TLS: connect with TLS"
    );

    // A foreign Origin on wss: 403 at the handshake; the app's own origin upgrades.
    let wss = b.handle.wss_addr.unwrap();
    for (origin, status) in [
        ("https://evil.example", "403"),
        ("https://app.example.com", "101"),
    ] {
        let mut c = tls(wss, &s.der).await;
        let request = format!(
            "GET /ws HTTP/1.1\r\nhost: localhost\r\norigin: {origin}\r\nupgrade: websocket\r\n\
             connection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        assert_eq!(http_status(&mut c, &request).await, status, "{origin}");
    }
    b.handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&s.dir);
}
