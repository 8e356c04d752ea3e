//! What the broker holds in memory for what clients do (issue 9, finding 4), measured
//! as the process's resident set over real sockets. One test in this binary, so that
//! nothing else runs beside it and moves the numbers. The goals themselves (4 MB to
//! 100 slow subscribers ≤ 8 MiB + one copy; under 512 B per small queued message) are
//! measured on a release build by `benches/memory.sh` (BENCHMARKS.md); these bounds
//! are loose, but an order of magnitude under what the old code took.

mod common;

use std::time::Duration;

use common::*;
use stompbox::frame::Command;

/// Resident set size of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

const MIB: usize = 1 << 20;

#[tokio::test]
async fn copies_do_not_multiply_memory() {
    let b = start().await;

    // First, before anything large was allocated and freed (freed pages would be
    // reused without growing the resident set).
    // 10,000 ten-byte messages, each sent in its own read: a body that was a slice of
    // the 16 KiB read buffer kept all of it alive (≈17 KB per message).
    let mut p = connected(&b).await;
    for i in 0..200 {
        p.send(&format!(
            "SEND\ndestination:/queue/warm\nreceipt:w{i}\n\n0123456789"
        ))
        .await;
        p.until_receipt(&format!("w{i}")).await;
    }
    let before = rss();
    let n = 10_000;
    for i in 0..n {
        p.send(&format!(
            "SEND\ndestination:/queue/small\nreceipt:r{i}\n\n0123456789"
        ))
        .await;
        p.until_receipt(&format!("r{i}")).await;
    }
    let per_message = rss().saturating_sub(before) / n;
    eprintln!("10-byte messages sent one per read: {per_message} B of RSS each");
    assert_eq!(b.handle.router().queue_depth("/queue/small"), Some(n));
    assert!(per_message < 2048, "{per_message} bytes per queued message");
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/small", "auto").await;
    for _ in 0..n {
        assert_eq!(&c.expect(Command::Message).await.body[..], b"0123456789");
    }

    // A 4 MB publish to 100 TCP subscribers that do not read: the old writer copied
    // the frame into each one's buffer (+385 MiB). Now each holds a reference.
    let mut slow = Vec::new();
    for i in 0..100 {
        let mut c = Client::tcp_small_buffer(b.tcp()).await;
        c.connect().await;
        c.subscribe(&format!("s{i}"), "/topic/big", "auto").await;
        slow.push(c);
    }
    let mut p = connected(&b).await;
    p.publish("/topic/warm", "x").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss();
    let body = "b".repeat(4_000_000);
    p.publish("/topic/big", &body).await;
    // Let every writer take its batch and block on its full socket.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss().saturating_sub(before);
    eprintln!(
        "4 MB to 100 slow TCP subscribers: RSS +{:.1} MiB",
        grown as f64 / MIB as f64
    );
    assert!(grown < 64 * MIB, "RSS grew {grown} bytes");
}
