//! Settlement: transactions apply all or nothing, a SEND waiting for queue room does
//! not stop the connection's ACKs, acks still work after UNSUBSCRIBE, and a session
//! that dies abnormally leaves nothing registered.

mod common;

use std::time::Duration;

use common::*;
use stompbox::frame::{Command, Frame};

fn ack_of(m: &Frame) -> String {
    m.headers.get("ack").expect("ack header").to_owned()
}

/// Finding 2: an ACK of an unknown id in a transaction fails it, and the SEND before it
/// in the same transaction is never delivered.
#[tokio::test]
async fn transaction_with_a_bad_ack_applies_nothing() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("BEGIN\ntransaction:t\n\n").await;
    c.send("SEND\ndestination:/queue/txa\ntransaction:t\n\nnever")
        .await;
    c.send("ACK\nid:99-99\ntransaction:t\n\n").await;
    c.send("COMMIT\ntransaction:t\nreceipt:c\n\n").await;
    let e = c.expect_error_and_close().await;
    assert!(e.headers.get("message").unwrap().contains("99-99"), "{e:?}");
    let mut consumer = connected(&b).await;
    consumer.subscribe("0", "/queue/txa", "auto").await;
    consumer.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(b.handle.router().queue_depth("/queue/txa"), Some(0));
}

/// Finding 2: a queue that cannot take every SEND of a transaction fails the COMMIT,
/// and none of its SENDs is delivered.
#[tokio::test]
async fn transaction_into_a_full_queue_applies_nothing() {
    let mut cfg = config();
    cfg.queues.max_depth = 2;
    cfg.queues.send_timeout_ms = 200;
    let b = start_with(cfg).await;
    let mut c = connected(&b).await;
    c.send("BEGIN\ntransaction:t\n\n").await;
    for i in 0..3 {
        c.send(&format!(
            "SEND\ndestination:/queue/txf\ntransaction:t\n\nm{i}"
        ))
        .await;
    }
    c.send("COMMIT\ntransaction:t\nreceipt:c\n\n").await;
    let e = c.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("transaction \"t\" not committed: frame 3 (SEND): queue /queue/txf is full"),
        "{e:?}"
    );
    assert_eq!(e.headers.get("receipt-id"), Some("c"));
    let mut consumer = connected(&b).await;
    consumer.subscribe("0", "/queue/txf", "auto").await;
    consumer.expect_silence(Duration::from_millis(300)).await;
}

/// A committed transaction applies every frame, in order.
#[tokio::test]
async fn transaction_commit_applies_sends_and_acks_in_order() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/txin", "client-individual").await;
    c.publish("/queue/txin", "job").await;
    let job = c.expect(Command::Message).await;
    c.send("BEGIN\ntransaction:t\n\n").await;
    for i in 0..5 {
        c.send(&format!(
            "SEND\ndestination:/queue/txout\ntransaction:t\n\nr{i}"
        ))
        .await;
    }
    c.send(&format!("ACK\nid:{}\ntransaction:t\n\n", ack_of(&job)))
        .await;
    c.send("COMMIT\ntransaction:t\nreceipt:c\n\n").await;
    c.until_receipt("c").await;
    let mut out = connected(&b).await;
    out.subscribe("0", "/queue/txout", "auto").await;
    for i in 0..5 {
        let m = out.expect(Command::Message).await;
        assert_eq!(&m.body[..], format!("r{i}").as_bytes());
    }
    drop(c);
    // The job was acked by the commit: nothing comes back.
    let mut again = connected(&b).await;
    again.subscribe("0", "/queue/txin", "auto").await;
    again.expect_silence(Duration::from_millis(300)).await;
}

/// Finding 5: a worker holding unacked jobs enqueues a follow-up to its own full queue,
/// then ACKs a job: the ACK is read and handled while the SEND waits, which frees the
/// room the SEND was waiting for.
#[tokio::test]
async fn waiting_send_does_not_block_the_same_connections_acks() {
    let mut cfg = config();
    cfg.queues.max_depth = 2;
    cfg.queues.send_timeout_ms = 3000;
    let b = start_with(cfg).await;
    let mut worker = connected(&b).await;
    worker
        .subscribe("0", "/queue/jobs", "client-individual")
        .await;
    let mut p = connected(&b).await;
    p.publish("/queue/jobs", "job-1").await;
    p.publish("/queue/jobs", "job-2").await;
    let j1 = worker.expect(Command::Message).await;
    let j2 = worker.expect(Command::Message).await;
    worker
        .send("SEND\ndestination:/queue/jobs\nreceipt:follow\n\nfollow-up")
        .await;
    worker
        .send(&format!("ACK\nid:{}\nreceipt:a1\n\n", ack_of(&j1)))
        .await;
    // The follow-up was waiting; the ACK frees its room. Receipts come in frame order.
    let mut receipts = Vec::new();
    let mut follow = None;
    while receipts.len() < 2 {
        let f = worker.frame().await;
        match f.command {
            Command::Receipt => receipts.push(f.headers.get("receipt-id").unwrap().to_owned()),
            Command::Message => follow = Some(f),
            _ => panic!("unexpected {f:?}"),
        }
    }
    assert_eq!(receipts, ["follow", "a1"]);
    let follow = match follow {
        Some(f) => f,
        None => worker.expect(Command::Message).await,
    };
    assert_eq!(&follow.body[..], b"follow-up");
    worker.send(&format!("ACK\nid:{}\n\n", ack_of(&j2))).await;
    worker
        .send(&format!("ACK\nid:{}\nreceipt:a3\n\n", ack_of(&follow)))
        .await;
    worker.until_receipt("a3").await;
}

/// Finding 5: frames after a waiting SEND keep their order: a second SEND waits behind
/// the first, and DISCONNECT's RECEIPT comes after both.
#[tokio::test]
async fn frames_behind_a_waiting_send_keep_their_order() {
    let mut cfg = config();
    cfg.queues.max_depth = 1;
    cfg.queues.send_timeout_ms = 3000;
    let b = start_with(cfg).await;
    let mut c = connected(&b).await;
    c.publish("/queue/one", "0").await;
    c.send("SEND\ndestination:/queue/one\nreceipt:s1\n\n1")
        .await;
    c.send("SEND\ndestination:/queue/one\nreceipt:s2\n\n2")
        .await;
    c.send("DISCONNECT\nreceipt:bye\n\n").await;
    c.expect_silence(Duration::from_millis(300)).await;
    let mut consumer = connected(&b).await;
    consumer.subscribe("0", "/queue/one", "auto").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(consumer.expect(Command::Message).await.body);
    }
    assert_eq!(got, vec!["0", "1", "2"]);
    for id in ["s1", "s2", "bye"] {
        let r = c.expect(Command::Receipt).await;
        assert_eq!(r.headers.get("receipt-id"), Some(id));
    }
    c.expect_closed().await;
}

/// Finding 7: after UNSUBSCRIBE the subscription's unacked deliveries can still be
/// ACKed and NACKed; those left unacked go back to the queue when the connection ends.
#[tokio::test]
async fn ack_and_nack_after_unsubscribe() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/late", "client-individual").await;
    for body in ["a", "b", "c"] {
        c.publish("/queue/late", body).await;
    }
    let a = c.expect(Command::Message).await;
    let bm = c.expect(Command::Message).await;
    let _c = c.expect(Command::Message).await;
    c.send("UNSUBSCRIBE\nid:0\nreceipt:u\n\n").await;
    c.until_receipt("u").await;
    c.send(&format!("ACK\nid:{}\nreceipt:r1\n\n", ack_of(&a)))
        .await;
    c.until_receipt("r1").await;
    c.send(&format!("NACK\nid:{}\nreceipt:r2\n\n", ack_of(&bm)))
        .await;
    c.until_receipt("r2").await;
    let mut other = connected(&b).await;
    other.subscribe("0", "/queue/late", "auto").await;
    let m = other.expect(Command::Message).await;
    assert_eq!(&m.body[..], b"b", "the NACKed one comes back");
    other.expect_silence(Duration::from_millis(200)).await;
    drop(c);
    let m = other.expect(Command::Message).await;
    assert_eq!(&m.body[..], b"c", "the unacked one comes back at close");
    assert_eq!(m.headers.get("redelivered"), Some("true"));
    other.expect_silence(Duration::from_millis(200)).await;
}

/// Finding 6: `heart-beat:18446744073709551615,0` with a large `grace` is harmless, and
/// a session's subscriptions never outlive it: once the client goes, its unacked
/// messages go to the next consumer.
#[tokio::test]
async fn huge_heartbeat_with_large_grace_leaves_no_zombie() {
    let mut cfg = config();
    cfg.heartbeat.grace = 1e6;
    let b = start_with(cfg).await;
    let mut z = Client::tcp(b.tcp()).await;
    z.send_raw(
        b"CONNECT\naccept-version:1.2\nheart-beat:18446744073709551615,0\n\n\0\
          SUBSCRIBE\nid:0\ndestination:/queue/zombie\nack:client-individual\nreceipt:s\n\n\0",
    )
    .await;
    z.expect(Command::Connected).await;
    z.until_receipt("s").await;
    let mut p = connected(&b).await;
    for i in 0..4 {
        p.publish("/queue/zombie", &format!("m{i}")).await;
    }
    for _ in 0..4 {
        z.expect(Command::Message).await;
    }
    drop(z);
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/zombie", "auto").await;
    for i in 0..4 {
        let m = c.expect(Command::Message).await;
        assert_eq!(&m.body[..], format!("m{i}").as_bytes());
    }
}

/// A topic SEND of a transaction that must wait for room in a subscriber's outbox
/// keeps the transaction's later topic SENDs behind it: the subscriber gets them in
/// the order of the transaction, never a small later one before a large earlier one.
#[tokio::test]
async fn transaction_topic_sends_keep_their_order_when_one_waits_for_room() {
    const FILLER: usize = 16 * 1024;
    let mut cfg = config();
    cfg.outbox.max_bytes = 64 * 1024;
    cfg.topics.slow_consumer_grace_ms = 10_000;
    let b = start_with(cfg).await;
    let mut s = Client::tcp_small_buffer(b.tcp()).await;
    s.connect().await;
    s.subscribe("0", "/topic/txo", "auto").await;
    // Fill the kernel buffers and then the outbox, until a filler waits for room:
    // the outbox then holds three 16 KiB fillers and has about 15 KiB free.
    let mut p = connected(&b).await;
    let mut blocked = false;
    for i in 0..5_000 {
        p.send(&format!(
            "SEND\ndestination:/topic/txo\nreceipt:f{i}\n\n{}",
            "f".repeat(FILLER)
        ))
        .await;
        match p.next_frame_within(Duration::from_millis(300)).await {
            Some(r) => assert_eq!(r.command, Command::Receipt),
            None => {
                blocked = true;
                break;
            }
        }
    }
    assert!(blocked, "the subscriber's outbox never filled");
    // 20 KiB does not fit now, 2 bytes do.
    let mut q = connected(&b).await;
    q.send("BEGIN\ntransaction:t\n\n").await;
    q.send(&format!(
        "SEND\ndestination:/topic/txo\ntransaction:t\n\nM1{}",
        "1".repeat(20 * 1024)
    ))
    .await;
    q.send("SEND\ndestination:/topic/txo\ntransaction:t\n\nM2")
        .await;
    q.send("COMMIT\ntransaction:t\nreceipt:c\n\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Now the subscriber reads everything.
    let mut order = Vec::new();
    while order.len() < 2 {
        let m = s.expect(Command::Message).await;
        if m.body.starts_with(b"M") {
            order.push(m.body.slice(..2));
        }
    }
    assert_eq!(order, ["M1", "M2"]);
    q.until_receipt("c").await;
}
