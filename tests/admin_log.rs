//! The admin API's runtime switches: the log level, changed without a restart, and
//! one connection's frames traced on and off. This test process installs a
//! subscriber with a reloadable filter, as the `stompbox` binary does, and reads what
//! it logs (a process has one global subscriber: hence a file of its own).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{Value, json};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, reload};

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> Captured {
    let out = Captured::default();
    let (filter, handle) = reload::Layer::new(EnvFilter::new("info"));
    let writer = out.clone();
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        )
        .init();
    stompbox::admin::install_log_level(Box::new(stompbox::admin::ReloadableFilter(handle)));
    out
}

/// One request over a fresh connection, as `ops`; returns (status, JSON body).
async fn api(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("ops:secret");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json"
    );
    let (status, text) = http_request(addr, &head, body.as_bytes()).await;
    let json = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null))
        .unwrap();
    (status, json)
}

#[tokio::test]
async fn log_level_and_frame_tracing_change_while_the_broker_runs() {
    let logs = capture();
    let mut cfg = config();
    cfg.admin.listen = "127.0.0.1:0".into();
    cfg.admin.users = vec!["ops".into()];
    cfg.admin.trace_body_bytes = 8;
    cfg.auth.users = vec![user("ops", "secret")];
    let broker = start_with(cfg).await;
    let admin = broker.handle.admin_addr.unwrap();

    // The level: info at start; debug lines appear only after the switch.
    assert_eq!(
        api(admin, "GET", "/api/log-level", "").await,
        (200, json!({"level": "info"}))
    );
    let mut c = Client::tcp(broker.tcp()).await;
    let id = c.connect().await.headers.get("session").unwrap().to_owned();
    assert!(!logs.text().contains("DEBUG"), "{}", logs.text());
    assert_eq!(
        api(admin, "PUT", "/api/log-level", r#"{"level":"debug"}"#).await,
        (200, json!({"level": "debug"}))
    );
    let _c2 = connected(&broker).await;
    assert!(
        logs.text().contains("DEBUG"),
        "no debug line after the switch"
    );
    let (status, _) = api(admin, "PUT", "/api/log-level", r#"{"level":"[nonsense"}"#).await;
    assert_eq!(status, 400);
    assert_eq!(
        api(admin, "PUT", "/api/log-level", r#"{"level":"info"}"#).await,
        (200, json!({"level": "info"}))
    );

    // Tracing one connection: its frames both ways, bodies cut to 8 bytes.
    let traced = |s: &str| s.lines().filter(|l| l.contains("stompbox::trace")).count();
    c.publish("/queue/untraced", "before-the-switch").await;
    assert_eq!(traced(&logs.text()), 0);
    let path = format!("/api/connections/{id}/trace");
    let (status, _) = api(admin, "PUT", &path, r#"{"enabled":true}"#).await;
    assert_eq!(status, 200);
    c.publish("/queue/traced", "0123456789abcdef").await;
    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("stompbox::trace"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("direction=\"in\"") || l.contains("direction=in")),
        "{lines:?}"
    );
    let send = lines
        .iter()
        .find(|l| l.contains("SEND"))
        .expect("the SEND is traced");
    assert!(send.contains("body=01234567 body_len=16"), "{send}");
    assert!(!send.contains("89abcdef"), "the body is cut: {send}");
    assert!(
        lines.iter().any(|l| l.contains("RECEIPT")),
        "the RECEIPT going out is traced: {lines:?}"
    );
    let before = lines.len();
    let (status, _) = api(admin, "PUT", &path, r#"{"enabled":false}"#).await;
    assert_eq!(status, 200);
    c.publish("/queue/traced", "after").await;
    assert_eq!(traced(&logs.text()), before, "tracing is off again");

    // A token refresh is traced without its token.
    let (status, _) = api(admin, "PUT", &path, r#"{"enabled":true}"#).await;
    assert_eq!(status, 200);
    c.send("SEND\ndestination:/sys/auth\n\neyJhbGciOiJIUzI1NiJ9.secret-token.sig")
        .await;
    c.expect_error_and_close().await;
    let text = logs.text();
    let refresh = text
        .lines()
        .find(|l| l.contains("stompbox::trace") && l.contains("/sys/auth"))
        .expect("the refresh is traced");
    assert!(refresh.contains("body=<redacted>"), "{refresh}");
    assert!(!text.contains("secret-token"), "the token reached the log");
}
