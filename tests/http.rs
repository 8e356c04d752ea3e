//! The WebSocket port's HTTP side: `POST /api/publish` and static files (both off by
//! default), 404s.

mod common;

use std::net::SocketAddr;

use common::*;
use stompbox::frame::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn with_publish() -> stompbox::Config {
    let mut cfg = config();
    cfg.http.publish = true;
    cfg
}

#[tokio::test]
async fn publish_endpoint_is_off_by_default() {
    let b = start().await;
    let (status, _) = http_request(
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
    let (status, resp) = http_request(
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
        http_request(addr, "POST /api/publish HTTP/1.1", b"x")
            .await
            .0,
        400
    );
    assert_eq!(
        http_request(addr, "POST /api/publish?destination=nowhere HTTP/1.1", b"x")
            .await
            .0,
        400
    );
    assert_eq!(
        http_request(addr, "GET /api/publish?destination=/queue/a HTTP/1.1", b"")
            .await
            .0,
        405
    );
    assert_eq!(
        http_request(
            addr,
            "POST /api/publish?destination=/queue/a HTTP/1.1",
            b"123456789"
        )
        .await
        .0,
        413
    );
    assert_eq!(
        http_request(addr, "GET /elsewhere HTTP/1.1", b"").await.0,
        404
    );
    // A plain GET on the WebSocket path without the upgrade headers.
    assert_eq!(http_request(addr, "GET /ws HTTP/1.1", b"").await.0, 400);
}

#[tokio::test]
async fn publish_takes_basic_auth_when_users_are_configured() {
    let mut cfg = with_publish();
    cfg.auth.allow_anonymous = false;
    cfg.auth.users = vec![user("svc", "pw")];
    let b = start_with(cfg).await;
    let addr = b.handle.ws_addr;
    let head = "POST /api/publish?destination=/queue/auth HTTP/1.1";
    assert_eq!(http_request(addr, head, b"x").await.0, 401);
    // base64("svc:bad") and base64("svc:pw")
    assert_eq!(
        http_request(
            addr,
            &format!("{head}\r\nAuthorization: Basic c3ZjOmJhZA=="),
            b"x"
        )
        .await
        .0,
        401
    );
    assert_eq!(
        http_request(
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

/// A fresh static directory holding `index.html` and `app.js`, next to a `secret.txt`
/// that must stay out of reach.
fn site(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("site");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><p>hello from index</p>",
    )
    .unwrap();
    std::fs::write(dir.join("app.js"), "console.log('app');").unwrap();
    std::fs::write(dir.join("sub/page.html"), "<p>sub page</p>").unwrap();
    std::fs::write(root.join("secret.txt"), "top secret").unwrap();
    dir
}

fn with_static(dir: &std::path::Path) -> stompbox::Config {
    let mut cfg = config();
    cfg.http.static_dir = dir.to_owned();
    cfg
}

/// The value of header `name` in a raw response, lowercased name match.
fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.split("\r\n\r\n")
        .next()?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[tokio::test]
async fn static_files_are_off_by_default() {
    let b = start().await;
    let addr = b.handle.ws_addr;
    assert_eq!(http_request(addr, "GET / HTTP/1.1", b"").await.0, 404);
    assert_eq!(
        http_request(addr, "GET /index.html HTTP/1.1", b"").await.0,
        404
    );
}

#[tokio::test]
async fn static_dir_serves_index_and_scripts_with_their_content_types() {
    let b = start_with(with_static(&site("static-serves"))).await;
    let addr = b.handle.ws_addr;

    let (status, resp) = http_request(addr, "GET / HTTP/1.1", b"").await;
    assert_eq!(status, 200, "{resp}");
    assert!(
        resp.ends_with("<!doctype html><p>hello from index</p>"),
        "{resp}"
    );
    assert_eq!(header(&resp, "content-type"), Some("text/html"), "{resp}");

    let (status, resp) = http_request(addr, "GET /app.js HTTP/1.1", b"").await;
    assert_eq!(status, 200, "{resp}");
    assert!(resp.ends_with("console.log('app');"), "{resp}");
    let ct = header(&resp, "content-type").unwrap();
    assert!(ct.contains("javascript"), "{resp}");

    let (status, resp) = http_request(addr, "GET /sub/page.html HTTP/1.1", b"").await;
    assert_eq!(status, 200, "{resp}");
    assert!(resp.ends_with("<p>sub page</p>"), "{resp}");

    // HEAD: the headers of GET, no body.
    let (status, resp) = http_request(addr, "HEAD /app.js HTTP/1.1", b"").await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(header(&resp, "content-length"), Some("19"), "{resp}");
    assert!(resp.ends_with("\r\n\r\n"), "{resp}");

    // Conditional requests come with ServeDir.
    let (_, resp) = http_request(addr, "GET /app.js HTTP/1.1", b"").await;
    let modified = header(&resp, "last-modified").expect("last-modified");
    let (status, _) = http_request(
        addr,
        &format!("GET /app.js HTTP/1.1\r\nIf-Modified-Since: {modified}"),
        b"",
    )
    .await;
    assert_eq!(status, 304);

    let (status, resp) = http_request(addr, "GET /missing.js HTTP/1.1", b"").await;
    assert_eq!(status, 404);
    assert!(resp.contains("STOMP over WebSocket is at /ws"), "{resp}");
    // Publishing stays off, and its path is never looked up on disk.
    assert_eq!(
        http_request(
            addr,
            "POST /api/publish?destination=/queue/a HTTP/1.1",
            b"x"
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn static_dir_refuses_paths_that_leave_it() {
    let b = start_with(with_static(&site("static-traversal"))).await;
    let addr = b.handle.ws_addr;
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
    ] {
        let (status, resp) = http_request(addr, &format!("GET {path} HTTP/1.1"), b"").await;
        assert!(
            status == 404 || status == 400,
            "{path}: expected a refusal, got {resp}"
        );
        assert!(!resp.contains("top secret"), "{path}: leaked {resp}");
    }
}

/// Issue 18, finding 17: `http.static_dir` served everything under it, and the chat
/// example served its own `broker.toml` (where hashes and JWT secrets would go).
/// Dotfiles, dot-directories and `*.toml` are never served, however spelled; the
/// chat example's page moved to `examples/chat/public/`, away from its config.
#[tokio::test]
async fn static_dir_never_serves_configs_or_dotfiles() {
    let dir = site("static-private");
    std::fs::write(dir.join("broker.toml"), "hs256_secrets = [\"s3cret\"]").unwrap();
    std::fs::write(dir.join(".env"), "TOKEN=s3cret").unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git/config"), "s3cret").unwrap();
    let b = start_with(with_static(&dir)).await;
    let addr = b.handle.ws_addr;
    for path in [
        "/broker.toml",
        "/Broker.TOML",
        "/broker%2etoml",
        "/.env",
        "/%2eenv",
        "/.git/config",
        "/sub/../broker.toml",
    ] {
        let (status, resp) = http_request(addr, &format!("GET {path} HTTP/1.1"), b"").await;
        assert!(
            status == 404 || status == 400,
            "{path}: expected a refusal, got {resp}"
        );
        assert!(!resp.contains("s3cret"), "{path}: leaked {resp}");
    }
    assert_eq!(http_request(addr, "GET /app.js HTTP/1.1", b"").await.0, 200);
    // The chat example serves its page, and its config is not in the folder served.
    let chat = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/chat");
    let served = stompbox::Config::load(&chat.join("broker.toml"))
        .unwrap()
        .http
        .static_dir;
    assert_eq!(served, std::path::Path::new("examples/chat/public"));
    assert!(chat.join("public/index.html").is_file());
    assert!(!chat.join("public/broker.toml").exists());
}

#[tokio::test]
async fn websocket_still_upgrades_when_static_files_are_served() {
    let b = start_with(with_static(&site("static-ws"))).await;
    let (mut c, protocol) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    assert_eq!(protocol.as_deref(), Some("v12.stomp"));
    c.connect().await;
    c.subscribe("0", "/topic/static", "auto").await;
    c.publish("/topic/static", "still STOMP").await;
    let m = c.expect(Command::Message).await;
    assert_eq!(&m.body[..], b"still STOMP");
}

#[tokio::test]
async fn missing_static_dir_is_a_start_error_naming_the_key() {
    let mut cfg = config();
    cfg.http.static_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-dir");
    let err = stompbox::Broker::start(cfg).await.unwrap_err().to_string();
    assert!(err.contains("http.static_dir"), "{err}");
    assert!(err.contains("no-such-dir"), "{err}");

    let site = site("static-file-not-dir");
    let mut cfg = config();
    cfg.http.static_dir = site.join("index.html");
    let err = stompbox::Broker::start(cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("http.static_dir") && err.contains("not a directory"),
        "{err}"
    );
}

/// Browsers keep page-load connections open; shutdown must close them rather than
/// wait out `shutdown.drain_ms` for them.
#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections() {
    let b = start_with(with_static(&site("static-keepalive"))).await;
    let mut s = TcpStream::connect(b.handle.ws_addr).await.unwrap();
    s.write_all(b"GET /app.js HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"console.log('app');") {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let started = std::time::Instant::now();
    b.handle.shutdown().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "shutdown waited {:?} for an idle HTTP connection",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn failed_basic_logins_count_per_address_like_connect() {
    let mut cfg = with_publish();
    cfg.auth.allow_anonymous = false;
    cfg.auth.max_failed_logins = 2;
    cfg.auth.users = vec![user("svc", "pw")];
    let b = start_with(cfg).await;
    let addr = b.handle.ws_addr;
    let head = "POST /api/publish?destination=/queue/auth HTTP/1.1";
    let with = |b64: &str| format!("{head}\r\nAuthorization: Basic {b64}");
    // Challenges without credentials do not count.
    for _ in 0..3 {
        assert_eq!(http_request(addr, head, b"x").await.0, 401);
    }
    // base64("svc:bad"), twice: then even base64("svc:pw") is refused for the window.
    for _ in 0..2 {
        assert_eq!(http_request(addr, &with("c3ZjOmJhZA=="), b"x").await.0, 401);
    }
    assert_eq!(http_request(addr, &with("c3ZjOnB3"), b"x").await.0, 429);
}

#[tokio::test]
async fn nobody_publishes_on_system_topics_over_http() {
    let b = start_with(with_publish()).await;
    // A watcher of the chat room's presence must not see a forged event.
    let mut watcher = connected(&b).await;
    watcher
        .subscribe("p", "/sys/presence/topic/chat", "auto")
        .await;
    let snapshot = watcher.expect(Command::Message).await;
    assert!(String::from_utf8_lossy(&snapshot.body).contains("snapshot"));
    for destination in [
        "/sys/presence/topic/chat",
        "/sys/stats",
        "/sys/a",
        "/sys/x\u{e9}",
    ] {
        let (status, text) = http_request(
            b.handle.ws_addr,
            &format!("POST /api/publish?destination={destination} HTTP/1.1"),
            br#"{"event":"unsubscribed"}"#,
        )
        .await;
        assert_eq!(status, 400, "{destination}: {text}");
        assert!(text.contains("system destination"), "{text}");
    }
    watcher
        .expect_silence(std::time::Duration::from_millis(200))
        .await;
}

/// One request on an open keep-alive connection; returns the status line.
async fn post_on(s: &mut TcpStream, destination: &str, extra: &str, body: &str) -> String {
    s.write_all(
        format!(
            "POST /api/publish?destination={destination} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // 204s have no body; errors a short one: the whole answer comes in one read.
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap().to_owned()
}

/// Issue 18, finding 8: with `queues.persistent_by_default = true` a STOMP SEND
/// survived a restart but `POST /api/publish` (answered 204) did not. HTTP publish
/// now takes the one publish path: answered once the message is on disk.
#[tokio::test]
async fn http_publish_is_persistent_as_a_send_is() {
    let dir = std::env::temp_dir().join(format!("stompbox-http-persist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = with_publish();
    cfg.store.data_dir = dir.to_string_lossy().into_owned();
    cfg.queues.persistent_by_default = true;
    let b = start_with(cfg.clone()).await;
    let (status, resp) = http_request(
        b.handle.ws_addr,
        "POST /api/publish?destination=/queue/kept HTTP/1.1",
        b"over http",
    )
    .await;
    assert_eq!(status, 204, "{resp}");
    b.handle.shutdown().await;
    let b = start_with(cfg).await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/kept", "auto").await;
    assert_eq!(&c.expect(Command::Message).await.body[..], b"over http");
    b.handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 18, finding 20: HTTP publish skipped `queues.message_ttl_ms` and policies,
/// expiry and delay headers, and the per-connection queue quota. Now: a TTL expires
/// it, its `expires` header too, `delay` holds it, and one keep-alive connection
/// creates at most `limits.max_queues_per_connection` queues.
#[tokio::test]
async fn http_publish_takes_ttl_expiry_delay_and_the_queue_quota() {
    let mut cfg = with_publish();
    cfg.queues.message_ttl_ms = 60_000;
    cfg.queues.policies = vec![stompbox::config::QueuePolicy {
        pattern: "short".into(),
        message_ttl_ms: Some(100),
        persistent_by_default: None,
    }];
    cfg.limits.max_queues_per_connection = 3;
    let b = start_with(cfg).await;
    let mut s = TcpStream::connect(b.handle.ws_addr).await.unwrap();
    assert_eq!(
        post_on(&mut s, "/queue/short", "", "ttl").await,
        "HTTP/1.1 204 No Content"
    );
    assert_eq!(
        post_on(&mut s, "/queue/hdr", "Expires: 1\r\n", "old").await,
        "HTTP/1.1 204 No Content"
    );
    assert_eq!(
        post_on(&mut s, "/queue/later", "Delay: 400\r\n", "later").await,
        "HTTP/1.1 204 No Content"
    );
    let refused = post_on(&mut s, "/queue/fourth", "", "x").await;
    assert!(refused.starts_with("HTTP/1.1 4"), "{refused}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut c = connected(&b).await;
    c.subscribe("s", "/queue/short", "auto").await;
    c.subscribe("h", "/queue/hdr", "auto").await;
    c.subscribe("l", "/queue/later", "auto").await;
    // The two expired ones never arrive; the delayed one does, later.
    let m = c.expect(Command::Message).await;
    assert_eq!(&m.body[..], b"later");
    c.subscribe("d1", "/queue/DLQ.short", "auto").await;
    c.subscribe("d2", "/queue/DLQ.hdr", "auto").await;
    let mut dead: Vec<String> = Vec::new();
    for _ in 0..2 {
        let m = c.expect(Command::Message).await;
        assert_eq!(m.headers.get("dead-letter-reason"), Some("expired"));
        dead.push(String::from_utf8_lossy(&m.body).into_owned());
    }
    dead.sort();
    assert_eq!(dead, ["old", "ttl"]);
}
