//! Interop smoke tests with real clients nobody here wrote: `stomp.py` over TCP (and
//! over TLS, verifying a certificate made at test time) and
//! `@stomp/stompjs` (in Node, with the `ws` package as its WebSocket) over WebSocket,
//! both with their default settings, against the broker started in-process.
//!
//! The clients are installed by `scripts/install-interop.sh` (pinned versions, into
//! `.interop/python` and `tests/interop/node_modules`); the README's test command runs it first.
//! A missing client is a failure, not a skip.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use tokio::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require(path: &Path) {
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/install-interop.sh` first",
        path.display()
    );
}

/// Runs a client script with a hard deadline; fails with its output if it fails.
async fn run(mut cmd: Command) {
    cmd.current_dir(root()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("client script finished within 60 s")
        .expect("client script started");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    println!("{stdout}");
}

#[tokio::test]
async fn stomp_py_over_tcp() {
    let python = root().join(".interop/python");
    require(&python.join("stomp"));
    let b = start().await;
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", &python)
        .arg("tests/interop/stomp_py_smoke.py")
        .arg(b.tcp().ip().to_string())
        .arg(b.tcp().port().to_string());
    run(cmd).await;
}

#[tokio::test]
async fn stompjs_over_websocket() {
    require(&root().join("tests/interop/node_modules/@stomp/stompjs"));
    let b = start().await;
    let mut cmd = Command::new("node");
    cmd.arg("tests/interop/stompjs_smoke.mjs").arg(b.ws_url());
    run(cmd).await;
}

#[tokio::test]
async fn stomp_py_over_tls() {
    let python = root().join(".interop/python");
    require(&python.join("stomp"));
    let dir = std::env::temp_dir().join(format!("stompbox-interop-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let mut cfg = config();
    cfg.listeners.tcp_tls = "127.0.0.1:0".into();
    cfg.tls.cert_chain = cert.to_string_lossy().into_owned();
    cfg.tls.key = key.to_string_lossy().into_owned();
    let b = start_with(cfg).await;
    let addr = b.handle.tcp_tls_addr.unwrap();
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", &python)
        .arg("tests/interop/stomp_py_tls.py")
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(&cert);
    run(cmd).await;
    let _ = std::fs::remove_dir_all(&dir);
}
