//! Replays, on stable `cargo test`, every input the fuzzers found a bug with (kept in
//! `fuzz/regressions/<target>/`), through the very harnesses `cargo fuzz` runs
//! (`fuzz/harness/`), plus a few hand-written inputs so the harnesses themselves are
//! exercised even when no crash has been found.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[path = "../fuzz/harness/parser.rs"]
mod parser_harness;
#[path = "../fuzz/harness/session.rs"]
mod session_harness;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn parser_regressions() {
    let mut cases = inputs("parser");
    cases.push((
        "split frames".into(),
        b"\x05SEND\ndestination:/q\n\nhi\0\n".to_vec(),
    ));
    cases.push((
        "long garbage line".into(),
        [b"\x03".as_slice(), &[b'G'; 100], b"\n\n\0"].concat(),
    ));
    for (name, data) in cases {
        eprintln!("replaying {name}");
        parser_harness::check(&data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_regressions() {
    // A panic in any broker task (which tokio would otherwise swallow) fails the test.
    let panicked = Arc::new(AtomicBool::new(false));
    let default = std::panic::take_hook();
    {
        let panicked = panicked.clone();
        std::panic::set_hook(Box::new(move |info| {
            panicked.store(true, Ordering::SeqCst);
            default(info);
        }));
    }
    let broker = stompbox::Broker::start(session_harness::config())
        .await
        .expect("broker starts");
    let mut cases = inputs("session");
    // SUBSCRIBE, SEND to it, ACK, a transaction, a wildcard, garbage.
    cases.push((
        "a bit of everything".into(),
        vec![
            2, 0, 1, 0, 1, 1, 1, 1, 0, 7, 1, 0, 1, 0, 1, 0, 1, 9, 5, 1, 0, 1, 0, 1, 8, 1, 0, 1, 2,
            1, 6, 1, 1, 1, 1, 0, 10, 5, b'S', b'E', b'N', b'D', b'\n',
        ],
    ));
    for (name, data) in cases {
        eprintln!("replaying {name}");
        session_harness::run(broker.tcp_addr, &data).await;
        assert!(
            !panicked.load(Ordering::SeqCst),
            "the broker panicked on {name}"
        );
    }
    broker.shutdown().await;
}
