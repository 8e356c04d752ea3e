//! Connecting: version negotiation, CONNECTED, authentication, WebSocket subprotocols
//! (checklist C1–C8, F1, W1, W5).

mod common;

use std::time::Duration;

use common::*;
use stompbox::config::User;
use stompbox::frame::Command;

#[tokio::test]
async fn c1_stomp_frame_is_accepted_like_connect() {
    let b = start().await;
    let mut c = Client::tcp(b.tcp()).await;
    c.send("STOMP\naccept-version:1.2\nhost:h\n\n").await;
    let f = c.expect(Command::Connected).await;
    assert_eq!(f.headers.get("version"), Some("1.2"));
}

#[tokio::test]
async fn f1_crlf_line_endings_everywhere() {
    let b = start().await;
    let mut c = Client::tcp(b.tcp()).await;
    c.send("CONNECT\r\naccept-version:1.2\r\nhost:h\r\n\r\n")
        .await;
    c.expect(Command::Connected).await;
    c.send("SUBSCRIBE\r\nid:0\r\ndestination:/queue/crlf\r\nreceipt:r\r\n\r\n")
        .await;
    c.expect(Command::Receipt).await;
}

#[tokio::test]
async fn c2_highest_common_version_and_default_1_0() {
    let b = start().await;
    for (accept, expected) in [
        (Some("1.0,1.1,2.0"), "1.1"),
        (Some("1.2,1.0"), "1.2"),
        (Some("1.0"), "1.0"),
        (None, "1.0"),
    ] {
        let mut c = Client::tcp(b.tcp()).await;
        match accept {
            Some(list) => {
                c.send(&format!("CONNECT\naccept-version:{list}\nhost:h\n\n"))
                    .await
            }
            None => c.send("CONNECT\nhost:h\n\n").await,
        }
        let f = c.expect(Command::Connected).await;
        assert_eq!(
            f.headers.get("version"),
            Some(expected),
            "accept-version {accept:?}"
        );
    }
}

#[tokio::test]
async fn c3_no_common_version_gets_error_with_versions_then_close() {
    let b = start().await;
    let mut c = Client::tcp(b.tcp()).await;
    c.send("CONNECT\naccept-version:2.0,3.1\nhost:h\n\n").await;
    let e = c.expect_error_and_close().await;
    assert_eq!(e.headers.get("version"), Some("1.0,1.1,1.2"));
    assert_eq!(e.headers.get("content-type"), Some("text/plain"));
    assert!(e.headers.get("message").unwrap().contains("1.0,1.1,1.2"));
}

#[tokio::test]
async fn c4_connected_carries_version_heartbeat_session_server() {
    let b = start().await;
    let mut c = Client::tcp(b.tcp()).await;
    let f = c.connect().await;
    assert_eq!(f.headers.get("version"), Some("1.2"));
    assert_eq!(f.headers.get("heart-beat"), Some("10000,10000"));
    assert!(!f.headers.get("session").unwrap().is_empty());
    assert!(f.headers.get("server").unwrap().starts_with("stompbox/"));
    let mut d = Client::tcp(b.tcp()).await;
    let g = d.connect().await;
    assert_ne!(f.headers.get("session"), g.headers.get("session"));
}

#[tokio::test]
async fn c5_host_missing_or_unknown_is_accepted() {
    // Policy: one virtual host; `host` is not checked (stompjs sends none by default).
    let b = start().await;
    for connect in [
        "CONNECT\naccept-version:1.2\n\n",
        "CONNECT\naccept-version:1.2\nhost:no-such-vhost.example\n\n",
    ] {
        let mut c = Client::tcp(b.tcp()).await;
        c.send(connect).await;
        c.expect(Command::Connected).await;
    }
}

/// A passcode hash as `stompbox hash-password` makes it, at a test's cost.
fn hash(passcode: &str) -> String {
    stompbox::auth::hash_with(passcode, argon2::Params::new(8, 1, 1, None).unwrap())
}

fn with_users() -> stompbox::Config {
    let mut cfg = config();
    cfg.auth.allow_anonymous = false;
    cfg.auth.users = vec![
        User {
            login: "alice".into(),
            passcode_hash: Some(hash("secret")),
            passcode: None,
        },
        // F4: CONNECT headers are not unescaped, so this passcode is taken literally.
        User {
            login: "bob".into(),
            passcode_hash: Some(hash("p\\cw:x")),
            passcode: None,
        },
    ];
    cfg
}

#[tokio::test]
async fn c6_auth_good_and_bad_credentials() {
    let b = start_with(with_users()).await;
    let mut ok = Client::tcp(b.tcp()).await;
    ok.send("CONNECT\naccept-version:1.2\nlogin:alice\npasscode:secret\n\n")
        .await;
    ok.expect(Command::Connected).await;

    for bad in [
        "CONNECT\naccept-version:1.2\nlogin:alice\npasscode:wrong\n\n",
        "CONNECT\naccept-version:1.2\nlogin:mallory\npasscode:secret\n\n",
        "CONNECT\naccept-version:1.2\n\n",
    ] {
        let mut c = Client::tcp(b.tcp()).await;
        c.send(bad).await;
        let e = c.expect_error_and_close().await;
        assert!(
            e.headers
                .get("message")
                .unwrap()
                .contains("authentication failed")
        );
    }
}

#[tokio::test]
async fn f4_connect_passcode_is_taken_literally() {
    let b = start_with(with_users()).await;
    let mut c = Client::tcp(b.tcp()).await;
    c.send("CONNECT\naccept-version:1.2\nlogin:bob\npasscode:p\\cw:x\n\n")
        .await;
    c.expect(Command::Connected).await;
    let mut d = Client::tcp(b.tcp()).await;
    // Decoded, `p\cw:x` would be `p:w:x`; sending that must fail.
    d.send("CONNECT\naccept-version:1.2\nlogin:bob\npasscode:p:w:x\n\n")
        .await;
    d.expect_error_and_close().await;
}

#[tokio::test]
async fn c7_frames_before_connect_get_error_and_close() {
    let b = start().await;
    let mut c = Client::tcp(b.tcp()).await;
    c.send("SEND\ndestination:/queue/x\n\nhi").await;
    let e = c.expect_error_and_close().await;
    assert!(e.headers.get("message").unwrap().contains("not connected"));
}

#[tokio::test]
async fn c8_second_connect_gets_error_and_close() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("CONNECT\naccept-version:1.2\n\n").await;
    c.expect_error_and_close().await;
}

#[tokio::test]
async fn connect_deadline_closes_silent_connections() {
    let mut cfg = config();
    cfg.limits.connect_timeout_ms = 200;
    let b = start_with(cfg).await;
    let mut c = Client::tcp(b.tcp()).await;
    let e = c.expect_error_and_close().await;
    assert!(e.headers.get("message").unwrap().contains("CONNECT"));
}

#[tokio::test]
async fn w1_subprotocol_negotiation() {
    let b = start().await;
    let url = b.ws_url();
    for (offered, expected) in [
        (
            &["v10.stomp", "v11.stomp", "v12.stomp"][..],
            Some("v12.stomp"),
        ),
        (&["v11.stomp", "v10.stomp"][..], Some("v11.stomp")),
        (&["v10.stomp"][..], Some("v10.stomp")),
        (&[][..], None),
    ] {
        let (mut c, chosen) = Client::ws(&url, offered).await;
        assert_eq!(chosen.as_deref(), expected, "offered {offered:?}");
        // STOMP is spoken whatever was negotiated.
        c.send("CONNECT\naccept-version:1.0,1.1,1.2\nhost:h\n\n")
            .await;
        c.expect(Command::Connected).await;
    }
}

/// The server's answer to a hand-written upgrade request, up to the blank line.
async fn raw_handshake(addr: std::net::SocketAddr, protocols: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra = protocols
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(WAIT, s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

#[tokio::test]
async fn w1_no_stomp_subprotocol_offered_means_no_header() {
    // RFC 6455 4.2.2: the server must not answer with a subprotocol the client did not
    // offer, so offering only others (or none) gets a 101 without the header.
    let b = start().await;
    for offered in [Some("mqtt, wamp"), None] {
        let head = raw_handshake(b.handle.ws_addr, offered).await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(!head.contains("sec-websocket-protocol"), "{head}");
    }
    let head = raw_handshake(b.handle.ws_addr, Some("mqtt, v11.stomp")).await;
    assert!(
        head.contains("sec-websocket-protocol: v11.stomp\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn w5_version_capped_by_subprotocol() {
    let b = start().await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v11.stomp"]).await;
    c.send("CONNECT\naccept-version:1.0,1.1,1.2\nhost:h\n\n")
        .await;
    let f = c.expect(Command::Connected).await;
    assert_eq!(f.headers.get("version"), Some("1.1"));

    let (mut c, _) = Client::ws(&b.ws_url(), &["v10.stomp"]).await;
    c.send("CONNECT\naccept-version:1.2\nhost:h\n\n").await;
    let e = c.expect(Command::Error).await;
    assert_eq!(e.headers.get("version"), Some("1.0"));
    assert_eq!(close_code(c.expect_closed().await), 1002);
}

#[tokio::test]
async fn ws_wrong_path_is_refused() {
    let b = start().await;
    let url = format!("ws://{}/elsewhere", b.handle.ws_addr);
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn max_connections_holds_extra_clients_until_a_slot_frees() {
    let mut cfg = config();
    cfg.limits.max_connections = 1;
    let b = start_with(cfg).await;
    let mut first = connected(&b).await;
    let mut second = Client::tcp(b.tcp()).await;
    second.send("CONNECT\naccept-version:1.2\n\n").await;
    assert!(
        second
            .next_frame_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    first.send("DISCONNECT\nreceipt:bye\n\n").await;
    first.expect(Command::Receipt).await;
    drop(first);
    second.expect(Command::Connected).await;
}

/// Runs the real binary with `args`, `stdin` on its standard input.
fn run_binary(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stompbox"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn c6_hash_password_prints_a_hash_that_logs_in() {
    let out = run_binary(&["hash-password"], "s3cret:with spaces\n");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let printed = printed.trim();
    assert!(printed.starts_with("$argon2id$"), "{printed}");
    assert!(!printed.contains("s3cret"));
    let mut cfg = config();
    cfg.auth.allow_anonymous = false;
    cfg.auth.users = vec![User {
        login: "ops".into(),
        passcode_hash: Some(printed.to_owned()),
        passcode: None,
    }];
    let b = start_with(cfg).await;
    let mut ok = Client::tcp(b.tcp()).await;
    ok.send("CONNECT\naccept-version:1.2\nlogin:ops\npasscode:s3cret:with spaces\n\n")
        .await;
    ok.expect(Command::Connected).await;
    let mut bad = Client::tcp(b.tcp()).await;
    bad.send("CONNECT\naccept-version:1.2\nlogin:ops\npasscode:s3cret\n\n")
        .await;
    let e = bad.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("authentication failed: bad login or passcode")
    );
}

#[test]
fn c6_a_plain_text_passcode_in_the_config_stops_the_start_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("stompbox-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broker.toml");
    std::fs::write(
        &file,
        "[[auth.users]]\nlogin = \"guest\"\npasscode = \"hunter2\"\n",
    )
    .unwrap();
    let out = run_binary(&["--config", file.to_str().unwrap()], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auth.users.passcode"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the passcode is not echoed: {stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 18, finding 21: an ERROR refusing a STOMP 1.0 CONNECT escaped its header
/// (`message:authentication failed\c bad login or passcode`); 1.0 has no escapes, so
/// 1.0 clients showed `\c`. Read as raw bytes: the test client's parser would unescape.
#[tokio::test]
async fn an_error_refusing_a_1_0_connect_is_not_escaped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = start_with(with_users()).await;
    for (connect, want) in [
        (
            "CONNECT\nlogin:alice\npasscode:wrong\n\n\0",
            "message:authentication failed: bad login or passcode\n",
        ),
        (
            "CONNECT\naccept-version:1.2\nlogin:alice\npasscode:wrong\n\n\0",
            "message:authentication failed\\c bad login or passcode\n",
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(b.tcp()).await.unwrap();
        s.write_all(connect.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
            .await
            .expect("closed after the ERROR")
            .unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("ERROR\n"), "{text}");
        assert!(text.contains(want), "{connect:?} got {text:?}");
    }
}

/// Issue 18, finding 22: on a machine where another broker holds 61613, the binary
/// stopped with `cannot listen on 127.0.0.1:61613: Address already in use` and a
/// 30-frame backtrace under `RUST_BACKTRACE=1`, naming neither the listener nor the
/// flag that moves it. Now: one line, both named, exit status 1.
#[test]
fn a_port_in_use_is_one_line_naming_the_listener_and_its_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for (args, names) in [
        (
            vec!["--tcp".to_owned(), format!("127.0.0.1:{port}")],
            "STOMP over TCP (listeners.tcp; --tcp ADDR moves it)",
        ),
        (
            vec!["--ws".to_owned(), format!("127.0.0.1:{port}")],
            "WebSocket (listeners.ws; --ws ADDR moves it)",
        ),
        (
            vec!["--admin".to_owned(), format!("127.0.0.1:{port}")],
            "the admin API (admin.listen; --admin ADDR moves it",
        ),
    ] {
        let mut all = vec!["--data-dir", ""];
        for flag in ["--tcp", "--ws", "--admin"] {
            if args[0] != flag {
                all.extend([flag, "127.0.0.1:0"]);
            }
        }
        all.extend(args.iter().map(String::as_str));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stompbox"))
            .args(&all)
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "stompbox: cannot listen on 127.0.0.1:{port} for {names}"
            )),
            "{stderr}"
        );
        assert!(
            stderr
                .trim_end()
                .ends_with("Address already in use (os error 98)"),
            "{stderr}"
        );
    }
}

/// Issue 18, finding 11: the failed-login limit was check, then the argon2 await,
/// then count: 30 parallel wrong guesses with `max_failed_logins = 3` all got a real
/// check. Attempts are now reserved before their check: exactly 3 are checked.
#[tokio::test]
async fn parallel_wrong_guesses_get_only_max_failed_logins_checks() {
    let mut cfg = config();
    cfg.auth.allow_anonymous = false;
    cfg.auth.max_failed_logins = 3;
    // A real cost (argon2's defaults), so the checks overlap as they would in earnest.
    cfg.auth.users = vec![User {
        login: "alice".into(),
        passcode_hash: Some(stompbox::auth::hash_password("secret")),
        passcode: None,
    }];
    let b = start_with(cfg).await;
    let mut clients = Vec::new();
    for _ in 0..30 {
        let mut c = Client::tcp(b.tcp()).await;
        c.send("CONNECT\naccept-version:1.2\nlogin:alice\npasscode:guess\n\n")
            .await;
        clients.push(c);
    }
    let mut checked = 0;
    let mut refused = 0;
    for mut c in clients {
        let e = c.expect_error_and_close().await;
        match e.headers.get("message") {
            Some("authentication failed: bad login or passcode") => checked += 1,
            Some(m) if m.starts_with("too many failed logins") => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((checked, refused), (3, 27));
}
