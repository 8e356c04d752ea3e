//! The WebSocket port's HTTP side: `POST /api/publish` (off by default), 404s.

mod common;

use std::net::SocketAddr;

use common::*;
use stompbox::config::User;
use stompbox::frame::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 request over a fresh connection; returns (status, whole response).
async fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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

fn with_publish() -> stompbox::Config {
    let mut cfg = config();
    cfg.http.publish = true;
    cfg
}

#[tokio::test]
async fn publish_endpoint_is_off_by_default() {
    let b = start().await;
    let (status, _) = request(
        b.handle.ws_addr,
        "POST /api/publish?destination=/queue/x HTTP/1.1",
        b"hi",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn post_publishes_one_message() {
    let b = start_with(with_publish()).await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/from-http", "auto").await;
    let (status, resp) = request(
        b.handle.ws_addr,
        "POST /api/publish?destination=%2Fqueue%2Ffrom-http HTTP/1.1\r\nContent-Type: application/json",
        br#"{"n":1}"#,
    )
    .await;
    assert_eq!(status, 204, "{resp}");
    let m = c.expect(Command::Message).await;
    assert_eq!(&m.body[..], br#"{"n":1}"#);
    assert_eq!(m.headers.get("content-type"), Some("application/json"));
    let id = m.headers.get("message-id").unwrap();
    assert!(
        resp.to_ascii_lowercase()
            .contains(&format!("message-id: {id}")),
        "{resp}"
    );
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let mut cfg = with_publish();
    cfg.limits.max_body_bytes = 8;
    let b = start_with(cfg).await;
    let addr = b.handle.ws_addr;
    assert_eq!(
        request(addr, "POST /api/publish HTTP/1.1", b"x").await.0,
        400
    );
    assert_eq!(
        request(addr, "POST /api/publish?destination=nowhere HTTP/1.1", b"x")
            .await
            .0,
        400
    );
    assert_eq!(
        request(addr, "GET /api/publish?destination=/queue/a HTTP/1.1", b"")
            .await
            .0,
        405
    );
    assert_eq!(
        request(
            addr,
            "POST /api/publish?destination=/queue/a HTTP/1.1",
            b"123456789"
        )
        .await
        .0,
        413
    );
    assert_eq!(request(addr, "GET /elsewhere HTTP/1.1", b"").await.0, 404);
    // A plain GET on the WebSocket path without the upgrade headers.
    assert_eq!(request(addr, "GET /ws HTTP/1.1", b"").await.0, 400);
}

#[tokio::test]
async fn publish_takes_basic_auth_when_users_are_configured() {
    let mut cfg = with_publish();
    cfg.auth.allow_anonymous = false;
    cfg.auth.users = vec![User {
        login: "svc".into(),
        passcode: "pw".into(),
    }];
    let b = start_with(cfg).await;
    let addr = b.handle.ws_addr;
    let head = "POST /api/publish?destination=/queue/auth HTTP/1.1";
    assert_eq!(request(addr, head, b"x").await.0, 401);
    // base64("svc:bad") and base64("svc:pw")
    assert_eq!(
        request(
            addr,
            &format!("{head}\r\nAuthorization: Basic c3ZjOmJhZA=="),
            b"x"
        )
        .await
        .0,
        401
    );
    assert_eq!(
        request(
            addr,
            &format!("{head}\r\nAuthorization: Basic c3ZjOnB3"),
            b"x"
        )
        .await
        .0,
        204
    );
}

#[tokio::test]
async fn websocket_origins_can_be_restricted() {
    let mut cfg = config();
    cfg.listeners.ws_allowed_origins = vec!["https://app.example.com".into()];
    let b = start_with(cfg).await;
    let upgrade = |origin: Option<&str>| {
        let extra = origin
            .map(|o| format!("\r\nOrigin: {o}"))
            .unwrap_or_default();
        format!(
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13{extra}"
        )
    };
    let addr = b.handle.ws_addr;
    assert_eq!(
        status(addr, &upgrade(Some("https://evil.example"))).await,
        403
    );
    assert_eq!(
        status(addr, &upgrade(Some("https://app.example.com"))).await,
        101
    );
    // Non-browser clients send no Origin.
    assert_eq!(status(addr, &upgrade(None)).await, 101);
}

/// The status of a request whose connection may stay open (an upgrade).
async fn status(addr: SocketAddr, head: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(WAIT, s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap()
}
