//! Flow control and delivery under load: a burst never costs a healthy subscriber a
//! message, a reader that is slow but moving is never cut, a message larger than the
//! outbox budget still goes through, and a cut consumer's queue messages come back in
//! their original order.

mod common;

use std::time::Duration;

use common::*;
use stompbox::frame::{Command, Frame};
use stompbox::metrics::Metrics;

/// The index a test wrote into the first 6 bytes of a body.
fn index(f: &Frame) -> usize {
    std::str::from_utf8(&f.body[..6]).unwrap().parse().unwrap()
}

/// A body of `len` bytes starting with the 6-digit index `i`.
fn body(i: usize, len: usize) -> String {
    format!("{i:06}{}", ".".repeat(len - 6))
}

/// 50,000 x 1 KiB SENDs to a topic as fast as the socket takes them, one subscriber
/// reading at full speed and one never reading. The reader gets every message, in
/// order; the publisher is held for one grace (the never-reader is then the slow
/// consumer and the configured policy drops its copies). `outbox_frames` sets
/// `outbox.max_frames`: the smaller, the more often a healthy reader's outbox is
/// momentarily full.
async fn burst(outbox_frames: usize, make: impl AsyncFn(&TestBroker) -> Client) {
    const N: usize = 50_000;
    let mut cfg = config();
    cfg.outbox.max_frames = outbox_frames;
    let b = start_with(cfg).await;
    let mut never = make(&b).await;
    never.subscribe("0", "/topic/burst", "auto").await;
    let mut reader = make(&b).await;
    reader.subscribe("0", "/topic/burst", "auto").await;
    let mut publisher = make(&b).await;
    let sender = tokio::spawn(async move {
        // 100 frames per write: as fast as the transport takes them.
        for chunk in 0..N / 100 {
            let mut bytes = Vec::with_capacity(100 * 1100);
            for i in chunk * 100..(chunk + 1) * 100 {
                bytes.extend_from_slice(b"SEND\ndestination:/topic/burst\n\n");
                bytes.extend_from_slice(body(i, 1024).as_bytes());
                bytes.push(0);
            }
            publisher.send_raw(&bytes).await;
        }
        publisher.publish("/topic/burst", "done").await;
        publisher
    });
    let mut got = Vec::with_capacity(N);
    loop {
        let m = reader.expect(Command::Message).await;
        if &m.body[..] == b"done" {
            break;
        }
        got.push(index(&m));
    }
    sender.await.unwrap();
    assert_eq!(got.len(), N, "the reading subscriber lost messages");
    assert!(
        got.iter().copied().eq(0..N),
        "the reading subscriber got them out of order"
    );
    let m = b.handle.metrics();
    assert_eq!(
        Metrics::get(&m.slow_consumer_graces),
        1,
        "the publisher waited one grace for the never-reading subscriber, once"
    );
    assert!(Metrics::get(&m.slow_consumer_drops) > 0);
    drop(never);
}

#[tokio::test]
async fn burst_to_topic_over_tcp_healthy_subscriber_loses_nothing() {
    burst(1024, async |b: &TestBroker| connected(b).await).await;
}

#[tokio::test]
async fn burst_to_topic_over_ws_healthy_subscriber_loses_nothing() {
    // Over WebSocket the test's own client is the slower side; a 64-frame outbox
    // makes the reader's outbox fill during the burst (on d32359b: messages lost).
    burst(64, async |b: &TestBroker| {
        let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
        c.connect().await;
        c
    })
    .await;
}

/// Finding 11: with `limits.max_body_bytes` above `outbox.max_bytes`, a message larger
/// than the whole outbox budget is still delivered to an idle subscriber.
#[tokio::test]
async fn message_larger_than_outbox_budget_is_delivered() {
    let mut cfg = config();
    cfg.limits.max_body_bytes = 32 << 20;
    let b = start_with(cfg).await;
    for ws in [false, true] {
        let mut sub = if ws {
            let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
            c.connect().await;
            c
        } else {
            connected(&b).await
        };
        sub.subscribe("0", "/topic/big", "auto").await;
        let mut p = connected(&b).await;
        let big = body(7, 9 << 20);
        p.publish("/topic/big", &big).await;
        let m = sub.expect(Command::Message).await;
        assert_eq!(m.body.len(), 9 << 20, "ws: {ws}");
        assert_eq!(index(&m), 7);
    }
}

/// Finding 4: `outbox.write_timeout_ms` measures time without progress. A client that
/// reads steadily, if slowly, while 1 MiB messages pile up is never cut, though each
/// batch the writer takes (up to the 8 MiB outbox) takes seconds to write.
#[tokio::test]
async fn write_timeout_counts_time_without_progress_not_per_batch() {
    const N: usize = 12;
    let mut cfg = config();
    cfg.outbox.write_timeout_ms = 1000;
    let b = start_with(cfg).await;
    let mut slow = connected(&b).await;
    slow.subscribe("0", "/queue/steady", "auto").await;
    let mut p = connected(&b).await;
    for i in 0..N {
        p.publish("/queue/steady", &body(i, 1 << 20)).await;
    }
    // About 3 MB/s: 64 KiB every 20 ms; a batch takes seconds, but keeps moving.
    let mut got = Vec::new();
    while got.len() < N {
        match slow
            .next_frame_paced(64 * 1024, Duration::from_millis(20))
            .await
        {
            Some(f) => {
                assert_eq!(f.command, Command::Message, "{f:?}");
                got.push(index(&f));
            }
            None => panic!("cut after {} messages: {:?}", got.len(), slow.ending),
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert_eq!(
        Metrics::get(&b.handle.metrics().slow_consumer_disconnects),
        0
    );
}

/// Finding 3: a consumer cut by the write timeout gives its unwritten messages back in
/// their original order, and the ones it may have seen come back `redelivered:true`.
#[tokio::test]
async fn cut_consumer_messages_come_back_in_order_marked_when_maybe_seen() {
    const N: usize = 200;
    const BODY: usize = 64 * 1024;
    let mut cfg = config();
    cfg.outbox.write_timeout_ms = 300;
    let b = start_with(cfg).await;
    let mut stalled = connected(&b).await;
    stalled.subscribe("0", "/queue/order", "auto").await;
    let mut p = connected(&b).await;
    for i in 0..N {
        p.send(&format!(
            "SEND\ndestination:/queue/order\n\n{}",
            body(i, BODY)
        ))
        .await;
    }
    p.publish("/queue/order", &body(N, BODY)).await;
    let m = b.handle.metrics();
    for _ in 0..100 {
        if Metrics::get(&m.slow_consumer_disconnects) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(Metrics::get(&m.slow_consumer_disconnects), 1);
    // What reached the stalled socket is still readable.
    let mut seen = Vec::new();
    while let Some(f) = stalled.next_frame_within(WAIT).await {
        assert_eq!(f.command, Command::Message, "{f:?}");
        if f.body.len() == BODY {
            seen.push(index(&f));
        }
    }
    assert!(seen.len() < N, "the stalled reader got everything");

    let mut next = connected(&b).await;
    next.subscribe("0", "/queue/order", "auto").await;
    let mut rest = Vec::new();
    while rest.last() != Some(&N) {
        let f = next.expect(Command::Message).await;
        let i = index(&f);
        if seen.contains(&i) {
            assert_eq!(
                f.headers.get("redelivered"),
                Some("true"),
                "message {i} was written to the stalled reader and must be marked"
            );
        }
        rest.push(i);
    }
    let first = rest[0];
    assert!(first <= seen.len(), "messages were lost before {first}");
    assert_eq!(
        rest,
        (first..=N).collect::<Vec<_>>(),
        "the next consumer must get the rest as a sequence"
    );
}
