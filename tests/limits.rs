//! Every observable `[limits]`, `[queues]` and `[outbox]` key, at the limit (accepted)
//! and just over it (ERROR that really arrives, then close), while a connection opened
//! earlier keeps working (checklist F9, E1, E2, W4).

mod common;

use std::time::Duration;

use common::*;
use stompbox::frame::{Command, Frame};
use stompbox::metrics::Metrics;
use tokio::time::Instant;

/// A connection opened before the offending one, subscribed to its own queue.
async fn bystander(b: &TestBroker) -> Client {
    let mut c = connected(b).await;
    c.subscribe("by", "/queue/bystander", "auto").await;
    c
}

/// Frames up to and including the RECEIPT with `id`; returns the frames before it.
async fn frames_until_receipt(c: &mut Client, id: &str) -> Vec<Frame> {
    let mut before = Vec::new();
    loop {
        let f = c.frame().await;
        assert_ne!(f.command, Command::Error, "unexpected ERROR: {f:?}");
        if f.command == Command::Receipt && f.headers.get("receipt-id") == Some(id) {
            return before;
        }
        before.push(f);
    }
}

/// SUBSCRIBE (with a receipt) to a destination that may already hold messages, and
/// take `n` MESSAGEs: they may arrive before the RECEIPT, since S13 puts it after
/// everything the SUBSCRIBE caused.
async fn subscribe_and_take(c: &mut Client, dest: &str, ack: &str, n: usize) -> Vec<Frame> {
    c.send(&format!(
        "SUBSCRIBE\nid:0\ndestination:{dest}\nack:{ack}\nreceipt:sub\n\n"
    ))
    .await;
    let mut got = frames_until_receipt(c, "sub").await;
    while got.len() < n {
        got.push(c.expect(Command::Message).await);
    }
    assert!(got.iter().all(|f| f.command == Command::Message), "{got:?}");
    assert_eq!(got.len(), n, "{got:?}");
    got
}

/// The bystander can still publish and receive, with receipts.
async fn assert_still_works(c: &mut Client) {
    c.send("SEND\ndestination:/queue/bystander\nreceipt:still\n\nstill here")
        .await;
    let mut got = frames_until_receipt(c, "still").await;
    if got.is_empty() {
        got.push(c.frame().await);
    }
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].command, Command::Message);
    assert_eq!(&got[0].body[..], b"still here");
    c.send("UNSUBSCRIBE\nid:by\nreceipt:unsub\n\n").await;
    frames_until_receipt(c, "unsub").await;
}

/// ERROR then close; the ERROR's `message` must contain `needle`.
async fn expect_fatal(c: &mut Client, needle: &str) -> Frame {
    let e = c.expect_error_and_close().await;
    let message = e.headers.get("message").unwrap_or_default();
    assert!(
        message.contains(needle),
        "ERROR {message:?}, wanted {needle:?}"
    );
    e
}

/// Sends an offending frame, then keeps sending junk for ~100 ms as a client that has
/// not noticed yet would: the broker must still deliver the ERROR rather than reset the
/// connection over unread input (E2, `limits.linger_ms`).
async fn send_offending(c: &mut Client, frame: &[u8]) {
    c.send_raw(frame).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.send_raw(&[b'x'; 16 * 1024]).await;
    }
}

/// Polls a broker counter (in-process, only to know when to look at the wire).
async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn f9_max_headers() {
    let mut cfg = config();
    cfg.limits.max_headers = 4;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut c = connected(&b).await;

    // destination, receipt and two more: exactly 4.
    c.send("SEND\ndestination:/queue/h\nreceipt:at\na:1\nb:2\n\nok")
        .await;
    frames_until_receipt(&mut c, "at").await;
    // Repeats count too: a fifth line, even a repeated name, is one too many.
    let over = "SEND\ndestination:/queue/h\nreceipt:over\na:1\nb:2\nb:3\n\nno\0";
    send_offending(&mut c, over.as_bytes()).await;
    expect_fatal(&mut c, "too many headers").await;

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn f9_max_header_line_bytes() {
    const MAX: usize = 64;
    let mut cfg = config();
    cfg.limits.max_header_line_bytes = MAX;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut c = connected(&b).await;

    let line = |len: usize| format!("k:{}", "v".repeat(len - 2));
    // Exactly MAX bytes, once with LF and once with CRLF: the EOL is not counted.
    c.send(&format!(
        "SEND\ndestination:/queue/l\n{}\n{}\r\nreceipt:at\n\nok",
        line(MAX),
        line(MAX)
    ))
    .await;
    frames_until_receipt(&mut c, "at").await;
    let over = format!(
        "SEND\ndestination:/queue/l\n{}\nreceipt:over\n\nno\0",
        line(MAX + 1)
    );
    send_offending(&mut c, over.as_bytes()).await;
    expect_fatal(&mut c, "header line too long").await;

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn f9_header_line_growing_without_eol_is_refused_early() {
    const MAX: usize = 64;
    let mut cfg = config();
    cfg.limits.max_header_line_bytes = MAX;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut c = connected(&b).await;

    // A line that never ends: refused once it is too long, without waiting for its EOL.
    c.send_raw(format!("SEND\ndestination:/queue/l\nk:{}", "v".repeat(4 * MAX)).as_bytes())
        .await;
    expect_fatal(&mut c, "header line too long").await;
    // A first line longer than any command is an unknown command, whatever its
    // length and however it arrives (the parser fuzzer found the error depending on
    // how the bytes were split).
    let mut d = connected(&b).await;
    d.send_raw("S".repeat(MAX + 10).as_bytes()).await;
    expect_fatal(&mut d, "unknown command").await;

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn f9_max_body_bytes_declared_content_length() {
    const MAX: usize = 1024;
    let mut cfg = config();
    cfg.limits.max_body_bytes = MAX;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut c = connected(&b).await;
    c.subscribe("big", "/queue/big", "auto").await;

    let frame = |len: usize, receipt: &str| {
        let mut f =
            format!("SEND\ndestination:/queue/big\ncontent-length:{len}\nreceipt:{receipt}\n\n")
                .into_bytes();
        // NULs in the body: only content-length can frame it.
        f.extend(std::iter::repeat_n(0u8, len));
        f.push(0);
        f
    };
    c.send_raw(&frame(MAX, "at")).await;
    let got = frames_until_receipt(&mut c, "at").await;
    let got = if got.is_empty() {
        vec![c.frame().await]
    } else {
        got
    };
    assert_eq!(got[0].command, Command::Message);
    assert_eq!(got[0].body.len(), MAX);

    send_offending(&mut c, &frame(MAX + 1, "over")).await;
    expect_fatal(&mut c, "body too large").await;

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn f9_max_body_bytes_unterminated_body() {
    const MAX: usize = 1024;
    let mut cfg = config();
    cfg.limits.max_body_bytes = MAX;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut c = connected(&b).await;

    // Exactly MAX body bytes buffered with no NUL yet is still acceptable...
    c.send_raw(b"SEND\ndestination:/queue/big\nreceipt:at\n\n")
        .await;
    c.send_raw(&vec![b'a'; MAX]).await;
    c.expect_silence(Duration::from_millis(200)).await;
    // ...and the NUL completes the frame.
    c.send_raw(b"\0").await;
    frames_until_receipt(&mut c, "at").await;

    // A body that grows past MAX without a NUL is refused without waiting for the NUL.
    c.send_raw(b"SEND\ndestination:/queue/big\nreceipt:over\n\n")
        .await;
    send_offending(&mut c, &[b'a'; MAX + 1]).await;
    expect_fatal(&mut c, "body too large").await;

    // The accepted message is whole.
    let mut consumer = connected(&b).await;
    let m = subscribe_and_take(&mut consumer, "/queue/big", "auto", 1).await;
    assert_eq!(&m[0].body[..], &vec![b'a'; MAX][..]);
    consumer.expect_silence(Duration::from_millis(200)).await;

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn w4_ws_frame_over_body_limit_gets_error_then_close_1009() {
    const MAX: usize = 1024;
    let mut cfg = config();
    cfg.limits.max_body_bytes = MAX;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    c.connect().await;

    let frame = |len: usize, receipt: &str| {
        format!(
            "SEND\ndestination:/queue/ws\nreceipt:{receipt}\n\n{}",
            "w".repeat(len)
        )
    };
    c.send(&frame(MAX, "at")).await;
    frames_until_receipt(&mut c, "at").await;
    c.send(&frame(MAX + 1, "over")).await;
    let e = c.expect(Command::Error).await;
    let message = e.headers.get("message").unwrap_or_default();
    assert!(message.contains("body too large"), "ERROR {message:?}");
    assert_eq!(close_code(c.expect_closed().await), 1009);

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn w4_ws_message_over_size_limit_gets_error_then_close_1009() {
    // Small limits make the WebSocket message cap small too (a whole frame at its
    // limits plus headroom: a few KiB here).
    let mut cfg = config();
    cfg.limits.max_body_bytes = 1024;
    cfg.limits.max_headers = 4;
    cfg.limits.max_header_line_bytes = 64;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let (mut c, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    c.connect().await;

    let body = "w".repeat(64 * 1024);
    c.send(&format!("SEND\ndestination:/queue/ws\n\n{body}"))
        .await;
    let e = c.expect(Command::Error).await;
    let message = e.headers.get("message").unwrap_or_default();
    assert!(message.contains("too large"), "ERROR {message:?}");
    assert_eq!(close_code(c.expect_closed().await), 1009);

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn limits_max_subscriptions() {
    let mut cfg = config();
    cfg.limits.max_subscriptions = 3;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut c = connected(&b).await;

    for id in ["a", "b", "c"] {
        c.subscribe(id, &format!("/queue/s-{id}"), "auto").await;
    }
    // UNSUBSCRIBE frees a slot.
    c.send("UNSUBSCRIBE\nid:a\nreceipt:u\n\n").await;
    frames_until_receipt(&mut c, "u").await;
    c.subscribe("d", "/queue/s-d", "auto").await;
    send_offending(
        &mut c,
        b"SUBSCRIBE\nid:e\ndestination:/queue/s-e\nreceipt:over\n\n\0",
    )
    .await;
    let e = expect_fatal(&mut c, "too many subscriptions").await;
    assert_eq!(e.headers.get("receipt-id"), Some("over"));

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn limits_max_transactions() {
    let mut cfg = config();
    cfg.limits.max_transactions = 2;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut c = connected(&b).await;

    for tx in ["t1", "t2"] {
        c.send(&format!("BEGIN\ntransaction:{tx}\nreceipt:{tx}\n\n"))
            .await;
        frames_until_receipt(&mut c, tx).await;
    }
    // COMMIT and ABORT free a slot.
    c.send("COMMIT\ntransaction:t1\nreceipt:c1\n\n").await;
    frames_until_receipt(&mut c, "c1").await;
    c.send("BEGIN\ntransaction:t3\nreceipt:t3\n\n").await;
    frames_until_receipt(&mut c, "t3").await;
    c.send("ABORT\ntransaction:t2\nreceipt:a2\n\n").await;
    frames_until_receipt(&mut c, "a2").await;
    c.send("BEGIN\ntransaction:t4\nreceipt:t4\n\n").await;
    frames_until_receipt(&mut c, "t4").await;
    send_offending(&mut c, b"BEGIN\ntransaction:t5\nreceipt:over\n\n\0").await;
    expect_fatal(&mut c, "too many open transactions").await;

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn limits_max_tx_frames() {
    let mut cfg = config();
    cfg.limits.max_tx_frames = 3;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut consumer = connected(&b).await;
    consumer.subscribe("0", "/queue/tx", "auto").await;
    let mut c = connected(&b).await;

    let send = |tx: &str, n: usize| {
        format!("SEND\ndestination:/queue/tx\ntransaction:{tx}\nreceipt:{tx}-{n}\n\n{tx}-{n}")
    };
    // Exactly 3 frames: committed and delivered.
    c.send("BEGIN\ntransaction:ok\n\n").await;
    for n in 1..=3 {
        c.send(&send("ok", n)).await;
        frames_until_receipt(&mut c, &format!("ok-{n}")).await;
    }
    c.send("COMMIT\ntransaction:ok\nreceipt:commit\n\n").await;
    frames_until_receipt(&mut c, "commit").await;
    for n in 1..=3 {
        let m = consumer.expect(Command::Message).await;
        assert_eq!(m.body, format!("ok-{n}").as_bytes());
    }

    // A fourth frame in one transaction is refused, and the transaction dies with the
    // connection: none of its frames is delivered.
    c.send("BEGIN\ntransaction:big\n\n").await;
    for n in 1..=3 {
        c.send(&send("big", n)).await;
        frames_until_receipt(&mut c, &format!("big-{n}")).await;
    }
    send_offending(&mut c, format!("{}\0", send("big", 4)).as_bytes()).await;
    expect_fatal(&mut c, "too many frames").await;
    consumer.expect_silence(Duration::from_millis(200)).await;

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn queues_max_depth_and_send_timeout_ms() {
    let mut cfg = config();
    cfg.queues.max_depth = 3;
    cfg.queues.send_timeout_ms = 300;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut producer = connected(&b).await;

    for n in 1..=3 {
        producer
            .send(&format!(
                "SEND\ndestination:/queue/full\nreceipt:m{n}\n\nm{n}"
            ))
            .await;
        frames_until_receipt(&mut producer, &format!("m{n}")).await;
    }
    let since = Instant::now();
    producer
        .send("SEND\ndestination:/queue/full\nreceipt:m4\n\nm4")
        .await;
    let e = expect_fatal(&mut producer, "queue /queue/full is full").await;
    let waited = since.elapsed();
    assert_eq!(e.headers.get("receipt-id"), Some("m4"));
    assert!(
        waited >= Duration::from_millis(300),
        "refused after {waited:?}, before send_timeout_ms"
    );

    // Everything accepted is still there, in order; the refused message is not.
    let mut consumer = connected(&b).await;
    let got = subscribe_and_take(&mut consumer, "/queue/full", "auto", 3).await;
    for (n, m) in (1..=3).zip(&got) {
        assert_eq!(m.body, format!("m{n}").as_bytes());
    }
    consumer.expect_silence(Duration::from_millis(200)).await;

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn queues_full_queue_producer_proceeds_when_room_appears() {
    let mut cfg = config();
    cfg.queues.max_depth = 1;
    cfg.queues.send_timeout_ms = 5_000;
    let b = start_with(cfg).await;
    let mut producer = connected(&b).await;
    producer.publish("/queue/room", "first").await;
    // The second SEND waits for room...
    producer
        .send("SEND\ndestination:/queue/room\nreceipt:second\n\nsecond")
        .await;
    producer.expect_silence(Duration::from_millis(200)).await;
    // ...which a consumer makes by taking the first.
    let mut consumer = connected(&b).await;
    let m = subscribe_and_take(&mut consumer, "/queue/room", "client-individual", 1).await;
    let m = &m[0];
    assert_eq!(&m.body[..], b"first");
    let ack = m.headers.get("ack").unwrap().to_owned();
    consumer.send(&format!("ACK\nid:{ack}\n\n")).await;
    frames_until_receipt(&mut producer, "second").await;
    let m = consumer.expect(Command::Message).await;
    assert_eq!(&m.body[..], b"second");
}

#[tokio::test]
async fn queues_prefetch() {
    let mut cfg = config();
    cfg.queues.prefetch = 2;
    let b = start_with(cfg).await;
    let mut producer = connected(&b).await;
    for n in 1..=5 {
        producer.publish("/queue/pf", &format!("p{n}")).await;
    }
    let mut consumer = connected(&b).await;
    let got = subscribe_and_take(&mut consumer, "/queue/pf", "client-individual", 2).await;
    let first = &got[0];
    // Two unacknowledged in flight: nothing more until one is acked.
    consumer.expect_silence(Duration::from_millis(200)).await;
    let ack = first.headers.get("ack").unwrap().to_owned();
    consumer.send(&format!("ACK\nid:{ack}\n\n")).await;
    let third = consumer.expect(Command::Message).await;
    assert_eq!(&third.body[..], b"p3");
    consumer.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn limits_handshake_timeout_ms() {
    let mut cfg = config();
    cfg.limits.handshake_timeout_ms = 200;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    // A TCP connection to the WebSocket port that never sends its HTTP upgrade.
    let since = Instant::now();
    let mut c = Client::tcp(b.handle.ws_addr).await;
    assert_eq!(c.expect_closed().await, &Ending::Eof);
    assert!(since.elapsed() >= Duration::from_millis(200));
    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn outbox_write_timeout_ms_cuts_a_stalled_reader_and_requeues() {
    use std::collections::BTreeSet;

    const N: usize = 64;
    const BODY: usize = 256 * 1024;
    let mut cfg = config();
    cfg.outbox.write_timeout_ms = 300;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    // Subscribes, then stops reading: 16 MiB is more than its socket buffers hold.
    let mut stalled = connected(&b).await;
    stalled.subscribe("0", "/queue/stall", "auto").await;
    let mut producer = connected(&b).await;
    for n in 0..N {
        let body = format!("{n:04}{}", ".".repeat(BODY - 4));
        producer
            .send(&format!(
                "SEND\ndestination:/queue/stall\nreceipt:p{n}\n\n{body}"
            ))
            .await;
        frames_until_receipt(&mut producer, &format!("p{n}")).await;
    }
    let m = b.handle.metrics();
    wait_for("the stalled reader to be cut", || {
        Metrics::get(&m.slow_consumer_disconnects) >= 1
    })
    .await;

    // What reached the stalled reader's socket is still readable, then the connection
    // ends; a frame cut short by the close is simply never completed.
    let index = |f: &Frame| {
        std::str::from_utf8(&f.body[..4])
            .unwrap()
            .parse::<usize>()
            .unwrap()
    };
    let mut seen = BTreeSet::new();
    let mut got_first = 0;
    while let Some(f) = stalled.next_frame_within(WAIT).await {
        assert_eq!(f.command, Command::Message, "{f:?}");
        assert_eq!(f.body.len(), BODY);
        seen.insert(index(&f));
        got_first += 1;
    }
    assert_eq!(stalled.ending, Some(Ending::Eof));
    assert!(
        got_first < N,
        "the stalled reader got everything: never cut?"
    );

    // Everything it never got goes to the next consumer: nothing is lost.
    let mut next = connected(&b).await;
    next.send("SUBSCRIBE\nid:0\ndestination:/queue/stall\nreceipt:sub\n\n")
        .await;
    while seen.len() < N {
        let f = next.frame().await;
        if f.command == Command::Receipt {
            continue;
        }
        assert_eq!(f.command, Command::Message, "{f:?}");
        seen.insert(index(&f));
    }

    assert_still_works(&mut by).await;
}

/// A topic subscriber that stops reading while 10 MiB is published: once its outbox
/// (limited by `cfg`) is full, its messages are dropped; the publisher and a reading
/// subscriber never wait, and the slow one, once it reads again, is still connected
/// and gets new messages. (With the default outbox, 10 MiB would all fit.)
async fn topic_subscriber_outbox_overflows(cfg: stompbox::Config) {
    use stompbox::metrics::Metrics;

    const N: usize = 40;
    const BODY: usize = 256 * 1024;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut slow = connected(&b).await;
    slow.subscribe("0", "/topic/firehose", "auto").await;
    let mut fast = connected(&b).await;
    fast.subscribe("0", "/topic/firehose", "auto").await;
    let mut producer = connected(&b).await;
    let index = |f: &Frame| std::str::from_utf8(&f.body[..4]).unwrap().to_owned();
    for n in 0..N {
        let body = format!("{n:04}{}", ".".repeat(BODY - 4));
        producer
            .send(&format!(
                "SEND\ndestination:/topic/firehose\nreceipt:p{n}\n\n{body}"
            ))
            .await;
        frames_until_receipt(&mut producer, &format!("p{n}")).await;
        let m = fast.expect(Command::Message).await;
        assert_eq!(index(&m), format!("{n:04}"));
    }
    assert!(Metrics::get(&b.handle.metrics().slow_consumer_drops) > 0);

    // The slow subscriber catches up: some messages, in order, with gaps.
    let mut got = Vec::new();
    while let Some(f) = slow.next_frame_within(Duration::from_secs(1)).await {
        assert_eq!(f.command, Command::Message, "{f:?}");
        got.push(index(&f));
    }
    producer.publish("/topic/firehose", "tail").await;
    loop {
        let f = slow.expect(Command::Message).await;
        if &f.body[..] == b"tail" {
            break;
        }
        got.push(index(&f));
    }
    assert!(
        !got.is_empty() && got.len() < N,
        "slow got {} of {N}",
        got.len()
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");

    assert_still_works(&mut by).await;
}

#[tokio::test]
async fn outbox_max_frames() {
    let mut cfg = config();
    cfg.outbox.max_frames = 4;
    topic_subscriber_outbox_overflows(cfg).await;
}

#[tokio::test]
async fn outbox_max_bytes() {
    let mut cfg = config();
    cfg.outbox.max_bytes = 1024 * 1024;
    topic_subscriber_outbox_overflows(cfg).await;
}

#[tokio::test]
async fn queues_max_redeliveries_and_dead_letter_prefix() {
    let mut cfg = config();
    cfg.queues.max_redeliveries = 1;
    cfg.queues.dead_letter_prefix = "dead.".into();
    let b = start_with(cfg).await;
    let mut producer = connected(&b).await;
    producer.publish("/queue/r", "poison").await;
    let mut consumer = connected(&b).await;
    let mut m = subscribe_and_take(&mut consumer, "/queue/r", "client-individual", 1)
        .await
        .remove(0);
    // The first delivery plus `max_redeliveries` more; each NACK's redelivery may come
    // before or after its RECEIPT.
    for round in 0..2 {
        assert_eq!(&m.body[..], b"poison");
        let ack = m.headers.get("ack").unwrap().to_owned();
        consumer
            .send(&format!("NACK\nid:{ack}\nreceipt:n{round}\n\n"))
            .await;
        let mut early = frames_until_receipt(&mut consumer, &format!("n{round}")).await;
        if round == 0 {
            m = match early.pop() {
                Some(f) => f,
                None => consumer.expect(Command::Message).await,
            };
            assert_eq!(m.command, Command::Message);
        } else {
            assert!(early.is_empty(), "redelivered past the limit: {early:?}");
        }
    }
    consumer.expect_silence(Duration::from_millis(200)).await;

    let mut dead = connected(&b).await;
    let d = subscribe_and_take(&mut dead, "/queue/dead.r", "auto", 1).await;
    assert_eq!(&d[0].body[..], b"poison");
    assert_eq!(d[0].headers.get("original-destination"), Some("/queue/r"));
}

#[tokio::test]
async fn limits_max_queues() {
    let mut cfg = config();
    // The bystander's own queue is the first.
    cfg.limits.max_queues = 3;
    let b = start_with(cfg).await;
    let mut by = bystander(&b).await;
    let mut c = connected(&b).await;
    c.publish("/queue/one", "a").await;
    c.publish("/queue/two", "b").await;
    // Topics are not queues and stay unlimited here.
    c.publish("/topic/anything", "c").await;
    c.send("SEND\ndestination:/queue/three\nreceipt:over\n\nno")
        .await;
    let e = expect_fatal(&mut c, "too many queues").await;
    assert_eq!(e.headers.get("receipt-id"), Some("over"));
    // Existing queues still take messages.
    let mut d = connected(&b).await;
    d.publish("/queue/one", "still fine").await;
    assert_still_works(&mut by).await;
}

/// `limits.max_held_frames`: frames held behind a waiting SEND. At the limit reading
/// pauses, so an ACK behind the held frames is not read and cannot free the room; one
/// more allowed frame and the same ACK gets through.
#[tokio::test]
async fn limits_max_held_frames() {
    for held in [1, 2] {
        let mut cfg = config();
        cfg.queues.max_depth = 1;
        cfg.queues.send_timeout_ms = 1000;
        cfg.limits.max_held_frames = held;
        let b = start_with(cfg).await;
        let mut w = connected(&b).await;
        w.subscribe("0", "/queue/held", "client-individual").await;
        w.publish("/queue/held", "job").await;
        let job = w.expect(Command::Message).await;
        let ack = |m: &Frame| format!("ACK\nid:{}\n\n", m.headers.get("ack").unwrap());
        // f1 waits for room; f2 is held behind it; then the ACK that frees the room.
        let mut bytes = Vec::new();
        for f in [
            "SEND\ndestination:/queue/held\nreceipt:f1\n\nf1".to_owned(),
            "SEND\ndestination:/queue/held\nreceipt:f2\n\nf2".to_owned(),
            ack(&job),
        ] {
            bytes.extend_from_slice(f.as_bytes());
            bytes.push(0);
        }
        w.send_raw(&bytes).await;
        if held == 1 {
            let e = expect_fatal(&mut w, "queue /queue/held is full").await;
            assert_eq!(e.headers.get("receipt-id"), Some("f1"));
            continue;
        }
        // The ACK was read: f1 goes in, and once it is acked, f2.
        let mut receipts = Vec::new();
        while receipts.len() < 2 {
            let f = w.frame().await;
            match f.command {
                Command::Receipt => receipts.push(f.headers.get("receipt-id").unwrap().to_owned()),
                Command::Message => w.send(&ack(&f)).await,
                _ => panic!("{f:?}"),
            }
        }
        assert_eq!(receipts, ["f1", "f2"]);
    }
}

const OTHER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test]
async fn limits_max_connections_per_address() {
    let mut cfg = config();
    cfg.limits.max_connections_per_address = 2;
    let b = start_with(cfg).await;
    let first = connected(&b).await;
    let _second = connected(&b).await;
    let mut third = Client::tcp(b.tcp()).await;
    let e = third.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("too many connections from your address (limit 2)")
    );
    // Another address carries on.
    let mut other = Client::tcp_from(b.tcp(), OTHER).await;
    other.connect().await;
    // A slot given back is usable again.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    connected(&b).await;
}

#[tokio::test]
async fn auth_max_failed_logins_locks_out_only_that_address() {
    let mut cfg = config();
    cfg.auth.allow_anonymous = false;
    cfg.auth.max_failed_logins = 3;
    cfg.auth.users = vec![stompbox::config::User {
        login: "alice".into(),
        passcode_hash: Some(stompbox::auth::hash_with(
            "secret",
            argon2::Params::new(8, 1, 1, None).unwrap(),
        )),
        passcode: None,
    }];
    let b = start_with(cfg).await;
    let login = |pw: &str| format!("CONNECT\naccept-version:1.2\nlogin:alice\npasscode:{pw}\n\n");
    for _ in 0..3 {
        let mut c = Client::tcp(b.tcp()).await;
        c.send(&login("guess")).await;
        let e = c.expect_error_and_close().await;
        assert_eq!(
            e.headers.get("message"),
            Some("authentication failed: bad login or passcode")
        );
    }
    // Even the right passcode is refused from this address for the window.
    let mut c = Client::tcp(b.tcp()).await;
    c.send(&login("secret")).await;
    let e = c.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("too many failed logins from your address: try again later")
    );
    let mut other = Client::tcp_from(b.tcp(), OTHER).await;
    other.send(&login("secret")).await;
    other.expect(Command::Connected).await;
}

#[tokio::test]
async fn limits_max_frames_per_second() {
    let mut cfg = config();
    cfg.limits.max_frames_per_second = 50;
    let b = start_with(cfg).await;
    // At 20 frames a second: fine.
    let mut calm = connected(&b).await;
    for i in 0..10 {
        calm.send(&format!("SEND\ndestination:/queue/calm\nreceipt:{i}\n\nx"))
            .await;
        calm.until_receipt(&i.to_string()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 200 at once: over the second's worth.
    let mut flood = connected(&b).await;
    let frames = "SEND\ndestination:/queue/flood\n\nx\0".repeat(200);
    flood.send_raw(frames.as_bytes()).await;
    let e = flood.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("too many frames per second (limit 50)")
    );
    calm.send("SEND\ndestination:/queue/calm\nreceipt:after\n\nx")
        .await;
    calm.until_receipt("after").await;
}

/// Issue 18, finding 12 (in part): a dead letter was discarded when its dead-letter
/// queue could not be created because `limits.max_queues` queues existed, and
/// anyone can fill that table by naming queues. Dead-letter queues are no longer held
/// to it (one per queue at most, so still bounded): the dead letter arrives.
#[tokio::test]
async fn a_full_queue_table_does_not_discard_dead_letters() {
    let mut cfg = config();
    cfg.queues.max_redeliveries = 0;
    cfg.limits.max_queues = 3;
    cfg.queues.idle_delete_ms = 0;
    let b = start_with(cfg).await;
    let mut c = connected(&b).await;
    c.subscribe("w", "/queue/work", "client-individual").await;
    // Someone fills the queue table.
    let mut filler = connected(&b).await;
    filler.publish("/queue/junk-1", "x").await;
    filler.publish("/queue/junk-2", "x").await;
    filler.send("SEND\ndestination:/queue/junk-3\n\nx").await;
    let e = filler.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .starts_with("too many queues"),
        "{e:?}"
    );
    c.publish("/queue/work", "poison").await;
    let m = c.expect(Command::Message).await;
    let ack = m.headers.get("ack").unwrap().to_owned();
    c.send(&format!("NACK\nid:{ack}\nreceipt:n\n\n")).await;
    c.until_receipt("n").await;
    assert_eq!(b.handle.router().queue_depth("/queue/DLQ.work"), Some(1));
    assert_eq!(Metrics::get(&b.handle.metrics().discarded), 0);
}
