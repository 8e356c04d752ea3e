//! CI gate: the real `stompbox-conformance` binary against stompbox started in-process
//! on port 0, over TCP and over WebSocket, diffed against `expected/stompbox.json`.
//! Every MUST and SHOULD is expected to pass; choices must match what is recorded.
//!
//! After an intended behaviour change, refresh the file with
//! `STOMPBOX_CONFORMANCE_UPDATE=1 cargo test -p stompbox-conformance --test stompbox`
//! and review the diff.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use stompbox::{Broker, Config};
use stompbox_conformance::Report;
use stompbox_conformance::report::Expected;
use tokio::process::Command;

fn expected_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("expected/stompbox.json")
}

async fn suite(url: String, expected: &str) -> (Report, std::process::Output) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stompbox-conformance"));
    cmd.args(["--url", &url, "--json"]).kill_on_drop(true);
    if !expected.is_empty() {
        cmd.args(["--expect", expected]);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("the suite finishes within 180 s")
        .expect("the suite starts");
    let report: Report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "suite printed no JSON report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompbox_matches_its_expected_conformance_report() {
    let mut config = Config::default();
    config.listeners.tcp = "127.0.0.1:0".parse().unwrap();
    config.listeners.ws = "127.0.0.1:0".parse().unwrap();
    config.store.data_dir = String::new();
    config.admin.listen = String::new();
    let broker = Broker::start(config).await.expect("broker starts");
    let tcp = format!("tcp://{}", broker.tcp_addr);
    let ws = format!("ws://{}/ws", broker.ws_addr);

    let update = std::env::var_os("STOMPBOX_CONFORMANCE_UPDATE").is_some();
    let expect = if update {
        String::new()
    } else {
        expected_path().display().to_string()
    };
    let ((tcp_report, tcp_out), (ws_report, ws_out)) =
        tokio::join!(suite(tcp, &expect), suite(ws, &expect));

    if update {
        let all: Expected = BTreeMap::from([
            ("tcp".to_string(), tcp_report.keys()),
            ("ws".to_string(), ws_report.keys()),
        ]);
        std::fs::write(
            expected_path(),
            serde_json::to_string_pretty(&all).unwrap() + "\n",
        )
        .unwrap();
    }
    for (report, out) in [(&tcp_report, &tcp_out), (&ws_report, &ws_out)] {
        assert!(
            out.status.success(),
            "{} run differs from expected/stompbox.json or failed a MUST:\n{}\n{}",
            report.transport,
            String::from_utf8_lossy(&out.stderr),
            report.table()
        );
        let s = &report.summary;
        assert_eq!(
            (s.must_failed, s.should_failed, s.choice_failed),
            (0, 0, 0),
            "{}",
            report.table()
        );
    }
    // Both transports ran every clause group; W only over WebSocket.
    for prefix in ["F", "B", "C", "S", "M", "E", "H", "D"] {
        assert!(
            tcp_report.cases.iter().any(|r| r.id.starts_with(prefix)),
            "no {prefix} case over TCP"
        );
    }
    assert!(ws_report.cases.iter().any(|r| r.id.starts_with('W')));
    assert!(!tcp_report.cases.iter().any(|r| r.id.starts_with('W')));
    broker.shutdown().await;
}
