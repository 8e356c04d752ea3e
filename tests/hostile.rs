//! Anyone on the internet may connect: each way one hostile client could freeze the
//! broker, lock others out or grow its memory (issue 9's findings), played over real
//! sockets. The offender gets ERROR and close (or its limit); a well-behaved client on
//! the side keeps round-tripping meanwhile, loses nothing, and its median round trip
//! stays under 50 ms.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use stompbox::frame::{Command, Frame};
use stompbox::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A well-behaved client round-tripping on its own queue until stopped.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl Bystander {
    async fn start(b: &TestBroker, name: &str) -> Bystander {
        let mut c = connected(b).await;
        let queue = format!("/queue/bystander-{name}");
        c.subscribe("by", &queue, "auto").await;
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut rtts = Vec::new();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) || n < 3 {
                    let started = Instant::now();
                    c.send(&format!("SEND\ndestination:{queue}\n\n{n}")).await;
                    let f = c.expect(Command::Message).await;
                    assert_eq!(
                        std::str::from_utf8(&f.body).unwrap(),
                        n.to_string(),
                        "the bystander's messages arrive, in order, none lost"
                    );
                    rtts.push(started.elapsed());
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                rtts
            }
        });
        Bystander { stop, task }
    }

    /// Stops it and checks its round trips: median under 50 ms, none lost.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let mut rtts = self.task.await.expect("bystander ran");
        rtts.sort();
        let median = rtts[rtts.len() / 2];
        assert!(
            median < Duration::from_millis(50),
            "median round trip {median:?} (max {:?}) over {} trips",
            rtts.last().unwrap(),
            rtts.len()
        );
    }
}

/// Frames until RECEIPT `id` (which must come), failing on ERROR.
async fn until_receipt(c: &mut Client, id: &str) -> Vec<Frame> {
    let mut before = Vec::new();
    loop {
        let f = c.frame().await;
        assert_ne!(f.command, Command::Error, "unexpected ERROR: {f:?}");
        if f.command == Command::Receipt {
            assert_eq!(f.headers.get("receipt-id"), Some(id));
            return before;
        }
        before.push(f);
    }
}

fn error_message(f: &Frame) -> &str {
    assert_eq!(f.command, Command::Error, "{f:?}");
    f.headers.get("message").unwrap_or_default()
}

/// Finding 1: a pattern of 1,000 `#` words made one publish take 62.8 s with the
/// backtracking matcher, freezing every other client. Here the word cap is raised so
/// the pattern is accepted, and the publish is as quick as any.
#[tokio::test]
async fn a_thousand_hash_pattern_does_not_freeze_the_broker() {
    let mut cfg = config();
    cfg.limits.max_destination_words = 2_000;
    let b = start_with(cfg).await;
    let by = Bystander::start(&b, "hash").await;
    let mut attacker = connected(&b).await;
    // 2 KB: a name that does not match makes a backtracking matcher try every way of
    // spreading its words over the `#`s.
    let pattern = vec!["#"; 1000].join(".") + ".x";
    attacker
        .subscribe("evil", &format!("/topic/{pattern}"), "auto")
        .await;
    let mut publisher = connected(&b).await;
    for i in 0..20 {
        let name = if i % 2 == 0 { "a.b.c" } else { "a.b.c.x" };
        publisher
            .send(&format!(
                "SEND\ndestination:/topic/{name}\nreceipt:p{i}\n\n{i}"
            ))
            .await;
        until_receipt(&mut publisher, &format!("p{i}")).await;
    }
    for i in (1..20).step_by(2) {
        let f = attacker.expect(Command::Message).await;
        assert_eq!(&f.body[..], i.to_string().as_bytes());
    }
    attacker.expect_silence(Duration::from_millis(100)).await;
    by.finish().await;
}

/// The caps: words per destination (default 64) and wildcard subscriptions per
/// connection.
#[tokio::test]
async fn destination_words_and_wildcard_subscriptions_are_capped() {
    let mut cfg = config();
    cfg.limits.max_wildcard_subscriptions = 3;
    let b = start_with(cfg).await;
    let mut c = connected(&b).await;
    let long = vec!["#"; 65].join(".");
    c.send(&format!("SUBSCRIBE\nid:0\ndestination:/topic/{long}\n\n"))
        .await;
    let err = c.expect_error_and_close().await;
    assert!(
        error_message(&err).contains("too many words (limit 64)"),
        "{err:?}"
    );

    let mut c = connected(&b).await;
    c.send(&format!(
        "SEND\ndestination:/topic/{}\n\nx",
        vec!["w"; 65].join(".")
    ))
    .await;
    let err = c.expect_error_and_close().await;
    assert!(error_message(&err).contains("too many words"), "{err:?}");

    let mut c = connected(&b).await;
    for i in 0..3 {
        c.subscribe(&i.to_string(), &format!("/topic/w{i}.*"), "auto")
            .await;
    }
    c.subscribe("exact", "/topic/plain", "auto").await;
    c.send("SUBSCRIBE\nid:4\ndestination:/topic/x.#\n\n").await;
    let err = c.expect_error_and_close().await;
    assert!(
        error_message(&err).contains("too many wildcard subscriptions (limit 3)"),
        "{err:?}"
    );
}

/// Finding 2: one client created 100,000 queues in 0.5 s and every new queue was
/// refused until a restart. Now a connection has a quota, and idle queues go.
#[tokio::test]
async fn one_client_cannot_use_up_the_queues_and_idle_queues_are_deleted() {
    let mut cfg = config();
    cfg.limits.max_queues = 40;
    cfg.limits.max_queues_per_connection = 20;
    cfg.queues.idle_delete_ms = 200;
    let b = start_with(cfg).await;
    let mut attacker = connected(&b).await;
    for i in 0..20 {
        attacker
            .subscribe(&i.to_string(), &format!("/queue/junk-{i}"), "auto")
            .await;
    }
    attacker.send("SEND\ndestination:/queue/junk-20\n\n").await;
    let err = attacker.expect_error_and_close().await;
    assert!(
        error_message(&err).contains("this connection created too many queues (limit 20)"),
        "{err:?}"
    );
    // Everyone else still creates queues: consumers, temp queues, producers.
    let mut other = connected(&b).await;
    other.subscribe("0", "/queue/mine", "auto").await;
    other.subscribe("1", "/temp-queue/replies", "auto").await;
    other.publish("/queue/mine", "hello").await;
    assert_eq!(&other.expect(Command::Message).await.body[..], b"hello");
    // The junk queues, empty and unused once the attacker is gone, are deleted after
    // idle_delete_ms; queues in use and queues holding messages stay.
    let mut holder = connected(&b).await;
    holder.publish("/queue/kept", "wait for me").await;
    let deadline = Instant::now() + WAIT;
    while b.handle.router().queue_depth("/queue/junk-0").is_some() {
        assert!(Instant::now() < deadline, "idle queues never deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let router = b.handle.router();
    assert!((0..20).all(|i| router.queue_depth(&format!("/queue/junk-{i}")).is_none()));
    assert_eq!(router.queue_depth("/queue/kept"), Some(1));
    assert!(
        router.queue_depth("/queue/mine").is_some(),
        "it has a consumer"
    );
    assert!(Metrics::get(&b.handle.metrics().queues_deleted) >= 20);
    // A deleted queue comes back on next use, and a message sent to it is kept.
    holder.publish("/queue/junk-0", "again").await;
    assert_eq!(router.queue_depth("/queue/junk-0"), Some(1));
}

/// Finding 3a: one open transaction of 60 × 4 MB SENDs held 229 MiB.
#[tokio::test]
async fn a_transaction_is_bounded_in_bytes() {
    let mut cfg = config();
    cfg.limits.max_tx_bytes = 1 << 20;
    let b = start_with(cfg).await;
    let by = Bystander::start(&b, "tx").await;
    let mut c = connected(&b).await;
    c.send("BEGIN\ntransaction:t\n\n").await;
    let body = "x".repeat(400 * 1024);
    for i in 0..2 {
        c.send(&format!(
            "SEND\ndestination:/queue/tx\ntransaction:t\nreceipt:s{i}\n\n{body}"
        ))
        .await;
        until_receipt(&mut c, &format!("s{i}")).await;
    }
    c.send(&format!(
        "SEND\ndestination:/queue/tx\ntransaction:t\n\n{body}"
    ))
    .await;
    let err = c.expect_error_and_close().await;
    assert!(
        error_message(&err).contains(
            "transaction \"t\" holds too many bytes (limit 1048576 for all open transactions)"
        ),
        "{err:?}"
    );
    assert_eq!(
        b.handle.router().queue_depth("/queue/tx"),
        None,
        "nothing applied"
    );
    by.finish().await;
}

/// Finding 3b: `prefetch-count:18446744073709551615` let one subscriber hold every
/// message unacknowledged. It is lowered to `queues.max_prefetch`.
#[tokio::test]
async fn a_huge_prefetch_is_lowered_to_max_prefetch() {
    let mut cfg = config();
    cfg.queues.max_prefetch = 10;
    let b = start_with(cfg).await;
    let mut p = connected(&b).await;
    for i in 0..50 {
        p.send(&format!("SEND\ndestination:/queue/pf\n\n{i}")).await;
    }
    p.publish("/queue/pf", "last").await;
    let mut c = connected(&b).await;
    c.send(
        "SUBSCRIBE\nid:0\ndestination:/queue/pf\nack:client-individual\n\
         prefetch-count:18446744073709551615\n\n",
    )
    .await;
    let mut got = Vec::new();
    while let Some(f) = c.next_frame_within(Duration::from_millis(300)).await {
        got.push(f);
    }
    assert_eq!(got.len(), 10, "held unacknowledged at once");
    // Acking one lets exactly one more through: the window, not the end of the queue.
    let id = got[0].headers.get("ack").unwrap().to_owned();
    c.send(&format!("ACK\nid:{id}\n\n")).await;
    let next = c.expect(Command::Message).await;
    assert_eq!(&next.body[..], b"10");
    c.expect_silence(Duration::from_millis(200)).await;
}

/// Finding 3c: with `heart-beat:0,0`, a SEND declaring `content-length:4000000` and
/// never finishing was buffered forever.
#[tokio::test]
async fn a_half_sent_frame_is_cut_after_frame_timeout() {
    let mut cfg = config();
    cfg.limits.frame_timeout_ms = 300;
    let b = start_with(cfg).await;
    let by = Bystander::start(&b, "half").await;
    let mut c = Client::tcp(b.tcp()).await;
    c.send("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n")
        .await;
    c.expect(Command::Connected).await;
    let mut partial = b"SEND\ndestination:/queue/half\ncontent-length:4000000\n\n".to_vec();
    partial.extend(std::iter::repeat_n(b'x', 100_000));
    c.send_raw(&partial).await;
    let started = Instant::now();
    let err = c.expect_error_and_close().await;
    assert!(
        error_message(&err).contains("frame not completed within 300 ms"),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    by.finish().await;
}

/// A client that keeps sending whole frames, each arriving in pieces, is never cut:
/// the timeout is per frame, not per connection.
#[tokio::test]
async fn frames_that_keep_completing_are_never_cut() {
    let mut cfg = config();
    cfg.limits.frame_timeout_ms = 300;
    let b = start_with(cfg).await;
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/steady", "auto").await;
    for i in 0..8 {
        let frame = format!("SEND\ndestination:/queue/steady\n\n{i}\0");
        let (a, z) = frame.as_bytes().split_at(10);
        c.send_raw(a).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.send_raw(z).await;
        assert_eq!(
            &c.expect(Command::Message).await.body[..],
            i.to_string().as_bytes()
        );
    }
}

/// Finding 3d: queue depth counted messages only. `queues.max_bytes` bounds bytes,
/// with the overflow policy: reject (ERROR after send_timeout) ...
#[tokio::test]
async fn a_queue_is_bounded_in_bytes_reject() {
    let mut cfg = config();
    cfg.queues.max_bytes = 100 * 1024;
    cfg.queues.send_timeout_ms = 200;
    let b = start_with(cfg).await;
    let mut c = connected(&b).await;
    let body = "x".repeat(40 * 1024);
    for _ in 0..2 {
        c.publish("/queue/bytes", &body).await;
    }
    c.send(&format!("SEND\ndestination:/queue/bytes\n\n{body}"))
        .await;
    let err = c.expect_error_and_close().await;
    assert!(
        error_message(&err).contains("queue /queue/bytes is full"),
        "{err:?}"
    );
    assert_eq!(b.handle.router().queue_depth("/queue/bytes"), Some(2));
}

/// ... or drop-oldest (counted): the newest messages stay, in order.
#[tokio::test]
async fn a_queue_is_bounded_in_bytes_drop_oldest() {
    let mut cfg = config();
    cfg.queues.max_bytes = 100 * 1024;
    cfg.queues.overflow = stompbox::config::OverflowPolicy::DropOldest;
    let b = start_with(cfg).await;
    let mut c = connected(&b).await;
    let pad = "x".repeat(40 * 1024);
    for i in 0..5 {
        c.publish("/queue/drop", &format!("{i}{pad}")).await;
    }
    c.subscribe("0", "/queue/drop", "auto").await;
    let got: Vec<u8> = [
        c.expect(Command::Message).await,
        c.expect(Command::Message).await,
    ]
    .iter()
    .map(|f| f.body[0])
    .collect();
    assert_eq!(got, b"34");
    c.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(Metrics::get(&b.handle.metrics().overflow_drops), 3);
}

/// Finding 3e: nothing bounded the broker's memory as a whole. Above
/// `memory.high_watermark_bytes` publishers wait, then get ERROR; consumers carry on
/// and, once memory is freed, the waiting publishers go through.
#[tokio::test]
async fn the_memory_high_watermark_paces_then_refuses_publishers() {
    let mut cfg = config();
    cfg.memory.high_watermark_bytes = 1 << 20;
    cfg.limits.max_body_bytes = 512 * 1024;
    cfg.queues.send_timeout_ms = 300;
    let b = start_with(cfg).await;
    let memory = b.handle.router().memory().clone();
    let mut p = connected(&b).await;
    let body = "m".repeat(300 * 1024);
    for i in 0..5 {
        p.send(&format!(
            "SEND\ndestination:/queue/mem\nreceipt:m{i}\n\n{body}"
        ))
        .await;
    }
    let deadline = Instant::now() + WAIT;
    while !memory.is_high() {
        assert!(Instant::now() < deadline, "the alarm never rose");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Paced: the SENDs over the watermark wait while a consumer frees memory.
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/mem", "auto").await;
    for _ in 0..5 {
        assert_eq!(c.expect(Command::Message).await.body.len(), body.len());
    }
    for i in 0..5 {
        let f = p.expect(Command::Receipt).await;
        assert_eq!(f.headers.get("receipt-id"), Some(format!("m{i}").as_str()));
    }
    assert!(Metrics::get(&b.handle.metrics().memory_alarms) >= 1);
    assert_eq!(Metrics::get(&b.handle.metrics().memory_refusals), 0);
    // Refused: nobody frees memory within send_timeout_ms.
    c.send("UNSUBSCRIBE\nid:0\nreceipt:u\n\n").await;
    c.until_receipt("u").await;
    for i in 0..6 {
        p.send(&format!(
            "SEND\ndestination:/queue/mem\nreceipt:n{i}\n\n{body}"
        ))
        .await;
    }
    let err = loop {
        let f = p.frame().await;
        if f.command == Command::Error {
            break f;
        }
    };
    assert!(error_message(&err).contains("memory"), "{err:?}");
    p.expect_closed().await;
    assert!(Metrics::get(&b.handle.metrics().memory_refusals) >= 1);
    // Accepted messages were kept: the consumer side still gets them.
    let depth = b.handle.router().queue_depth("/queue/mem").unwrap();
    assert!((3..6).contains(&depth), "{depth}");
}

/// A message fanned out to many subscribers is held once, and the memory gauge counts
/// it once: subscribers that barely read cannot raise the alarm for everyone by
/// holding references to the same bodies (found in review).
#[tokio::test]
async fn a_fan_out_is_charged_to_memory_once() {
    let mut cfg = config();
    cfg.memory.high_watermark_bytes = 64 << 20;
    cfg.queues.send_timeout_ms = 200;
    let b = start_with(cfg).await;
    let mut slow = Vec::new();
    for i in 0..30 {
        let mut c = Client::tcp_small_buffer(b.tcp()).await;
        c.connect().await;
        c.subscribe(&format!("s{i}"), "/topic/fan", "auto").await;
        slow.push(c);
    }
    let mut p = connected(&b).await;
    // More than the kernel's socket buffers take: most stays in the outboxes.
    let body = "f".repeat(2 << 20);
    for _ in 0..6 {
        p.publish("/topic/fan", &body).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let used = b.handle.router().memory().used();
    assert!(
        used < 32 << 20,
        "gauge at {used} bytes for 12 MiB of messages"
    );
    // ... and it does count them while outboxes still hold them, though the router
    // keeps nothing of a topic message once it is fanned out.
    assert!(
        used >= 4 << 20,
        "gauge at {used} bytes while outboxes hold the bodies"
    );
    assert!(!b.handle.router().memory().is_high());
    p.publish("/queue/after", "not paced").await;
    assert_eq!(Metrics::get(&b.handle.metrics().memory_refusals), 0);
}

/// drop-oldest drops waiting messages only when that makes room: room held by
/// unacknowledged deliveries is not theirs to free (found in review).
#[tokio::test]
async fn drop_oldest_drops_nothing_when_it_cannot_make_room() {
    let mut cfg = config();
    cfg.queues.max_bytes = 100 * 1024;
    cfg.queues.overflow = stompbox::config::OverflowPolicy::DropOldest;
    cfg.queues.send_timeout_ms = 200;
    let b = start_with(cfg).await;
    let mut consumer = connected(&b).await;
    consumer
        .send("SUBSCRIBE\nid:0\ndestination:/queue/held\nack:client-individual\nprefetch-count:2\nreceipt:s\n\n")
        .await;
    consumer.until_receipt("s").await;
    let mut p = connected(&b).await;
    let big = "x".repeat(40 * 1024);
    p.publish("/queue/held", &big).await;
    p.publish("/queue/held", &big).await;
    consumer.expect(Command::Message).await;
    consumer.expect(Command::Message).await;
    p.publish("/queue/held", &"s".repeat(10 * 1024)).await;
    assert_eq!(b.handle.router().queue_depth("/queue/held"), Some(1));
    // 20 KiB free and 10 KiB waiting cannot make room for 40 KiB: refused, and the
    // waiting message is still there.
    p.send(&format!("SEND\ndestination:/queue/held\n\n{big}"))
        .await;
    let err = p.expect_error_and_close().await;
    assert!(error_message(&err).contains("is full"), "{err:?}");
    assert_eq!(b.handle.router().queue_depth("/queue/held"), Some(1));
    assert_eq!(Metrics::get(&b.handle.metrics().overflow_drops), 0);
}

/// Finding 5: three stalled POST bodies took every connection permit, so STOMP
/// clients were locked out; and a stalled body was never given up on.
#[tokio::test]
async fn stalled_http_requests_neither_lock_out_stomp_nor_last_forever() {
    let mut cfg = config();
    cfg.limits.max_connections = 3;
    cfg.http.publish = true;
    cfg.http.body_timeout_ms = 300;
    let b = start_with(cfg).await;
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(b.handle.ws_addr).await.unwrap();
        s.write_all(
            b"POST /api/publish?destination=/queue/h HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly a little",
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // STOMP clients over TCP and over WebSocket still get in.
    let mut c = connected(&b).await;
    c.publish("/queue/ok", "in").await;
    let (mut ws, _) = Client::ws(&b.ws_url(), &["v12.stomp"]).await;
    ws.connect().await;
    // Each stalled request is answered 408 once its body is late.
    for mut s in stalled {
        let mut response = Vec::new();
        let read = tokio::time::timeout(WAIT, s.read_to_end(&mut response)).await;
        assert!(read.is_ok(), "the stalled request was never ended");
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert_eq!(b.handle.router().queue_depth("/queue/h"), None);
}

/// `http.max_connections`: HTTP connections beyond it wait for a slot (in the accept
/// backlog) until one ends; STOMP is not affected.
#[tokio::test]
async fn http_connections_are_bounded_by_max_connections() {
    let mut cfg = config();
    cfg.http.publish = true;
    cfg.http.max_connections = 2;
    cfg.http.body_timeout_ms = 400;
    let b = start_with(cfg).await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(b.handle.ws_addr).await.unwrap();
        s.write_all(
            b"POST /api/publish?destination=/queue/h HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab",
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let mut third = TcpStream::connect(b.handle.ws_addr).await.unwrap();
    third
        .write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Meanwhile STOMP clients get in.
    let mut c = connected(&b).await;
    c.publish("/queue/ok", "in").await;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, third.read_to_end(&mut response))
        .await
        .expect("served once a slot freed")
        .unwrap();
    let waited = started.elapsed();
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 404"));
    assert!(
        waited >= Duration::from_millis(300),
        "served after {waited:?}, before a slot was free"
    );
}

/// Issue 18, finding 1: patterns of 62 words from {`a`, `*`, `#`} ending in `zzz`
/// kept a trie node alive per `#` for every later word, so one 64-word publish cost
/// words × live nodes (625 ms for 10 connections × 128 such patterns). A pattern now
/// holds at most one `#`, and the index at most `limits.max_wildcard_words` words;
/// each refusal is an ERROR naming the rule, and a subscriber sharing a pattern's
/// words costs the index nothing.
#[tokio::test]
async fn wildcard_patterns_that_could_blow_up_a_publish_are_refused() {
    let mut cfg = config();
    cfg.limits.max_wildcard_words = 10;
    let b = start_with(cfg).await;
    let mut seed = 11u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut attacker = connected(&b).await;
    let words: Vec<&str> = (0..59)
        .map(|_| ["a", "*", "#"][(random() % 3) as usize])
        .chain(["#", "a", "#", "zzz"])
        .collect();
    let pattern = words.join(".");
    attacker
        .send(&format!(
            "SUBSCRIBE\nid:0\ndestination:/topic/{pattern}\n\n"
        ))
        .await;
    let err = attacker.expect_error_and_close().await;
    assert!(
        error_message(&err).contains("has more than one # (at most one per pattern)"),
        "{err:?}"
    );

    // One `#` is fine, within the index's words: a.#.b.c is 4, x.*.y is 3.
    let mut c = connected(&b).await;
    c.subscribe("0", "/topic/a.#.b.c", "auto").await;
    c.subscribe("1", "/topic/x.*.y", "auto").await;
    let mut sharer = connected(&b).await;
    sharer.subscribe("0", "/topic/a.#.b.c", "auto").await;
    sharer.subscribe("1", "/topic/a.#.b.d", "auto").await;
    sharer
        .send("SUBSCRIBE\nid:2\ndestination:/topic/q.r.*\n\n")
        .await;
    let err = sharer.expect_error_and_close().await;
    assert!(
        error_message(&err)
            .contains("too many wildcard subscription words in the broker (limit 10)"),
        "{err:?}"
    );
    // The refused sharer's subscriptions went with it; the others match as before.
    let mut publisher = connected(&b).await;
    for (i, name) in ["a.b.c", "a.q.b.c", "x.1.y", "a.b.d"].iter().enumerate() {
        publisher
            .send(&format!(
                "SEND\ndestination:/topic/{name}\nreceipt:p{i}\n\n{name}"
            ))
            .await;
        until_receipt(&mut publisher, &format!("p{i}")).await;
    }
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let f = c.expect(Command::Message).await;
        bodies.push(String::from_utf8(f.body.to_vec()).unwrap());
    }
    assert_eq!(bodies, ["a.b.c", "a.q.b.c", "x.1.y"]);
    c.expect_silence(Duration::from_millis(100)).await;
}

/// Issue 18, finding 5: with a 4 MiB watermark one connection held 60 transactional
/// ~1 MiB SENDs (gauge 63 MB) while every other client's plain SEND was refused.
/// Now a transactional SEND above the watermark waits and is refused like any other,
/// and all of a connection's open transactions together hold at most
/// `limits.max_tx_bytes`.
#[tokio::test]
async fn transactions_obey_the_memory_watermark_and_a_per_connection_share() {
    let mut cfg = config();
    cfg.memory.high_watermark_bytes = 4 << 20;
    cfg.limits.max_body_bytes = 2 << 20;
    cfg.limits.max_tx_bytes = 3 << 20;
    cfg.queues.send_timeout_ms = 300;
    let b = start_with(cfg).await;
    let memory = b.handle.router().memory().clone();
    let body = "t".repeat(1 << 20);
    // One connection's transactions, all together, stop at max_tx_bytes.
    let mut hoarder = connected(&b).await;
    hoarder.send("BEGIN\ntransaction:a\n\n").await;
    hoarder.send("BEGIN\ntransaction:b\n\n").await;
    for i in 0..3 {
        let tx = if i % 2 == 0 { "a" } else { "b" };
        hoarder
            .send(&format!(
                "SEND\ndestination:/queue/tx\ntransaction:{tx}\nreceipt:h{i}\n\n{body}"
            ))
            .await;
    }
    let err = loop {
        let f = hoarder.frame().await;
        if f.command == Command::Error {
            break f;
        }
    };
    assert!(
        error_message(&err)
            .contains("holds too many bytes (limit 3145728 for all open transactions)"),
        "{err:?}"
    );
    hoarder.expect_closed().await;
    // Two connections' transactions, within their shares, raise the alarm; then a
    // transactional SEND waits and is refused, holding nothing.
    let mut holders = Vec::new();
    for h in 0..2 {
        let mut c = connected(&b).await;
        c.send("BEGIN\ntransaction:t\n\n").await;
        for i in 0..2 {
            c.send(&format!(
                "SEND\ndestination:/queue/tx\ntransaction:t\nreceipt:{h}{i}\n\n{body}"
            ))
            .await;
            until_receipt(&mut c, &format!("{h}{i}")).await;
        }
        holders.push(c);
    }
    assert!(memory.is_high(), "gauge {}", memory.used());
    let mut tx = connected(&b).await;
    tx.send("BEGIN\ntransaction:t\n\n").await;
    let before = memory.used();
    tx.send(&format!(
        "SEND\ndestination:/queue/tx\ntransaction:t\nreceipt:t1\n\n{body}"
    ))
    .await;
    let err = tx.expect_error_and_close().await;
    assert!(
        error_message(&err).contains("memory is above its high watermark"),
        "{err:?}"
    );
    assert!(
        memory.used() <= before + 64 * 1024,
        "{} > {before}",
        memory.used()
    );
}

/// Issue 18, finding 16: with `drop-oldest` the eviction happened before the memory
/// wait; on timeout the SEND was refused and the evicted message was gone. Now
/// nothing is dropped for a SEND until its wait is over: both messages stay.
#[tokio::test]
async fn drop_oldest_drops_nothing_for_a_send_the_memory_alarm_refuses() {
    let mut cfg = config();
    cfg.memory.high_watermark_bytes = 5000;
    cfg.queues.max_depth = 2;
    cfg.queues.overflow = stompbox::config::OverflowPolicy::DropOldest;
    cfg.queues.send_timeout_ms = 200;
    let b = start_with(cfg).await;
    let memory = b.handle.router().memory().clone();
    let mut p = connected(&b).await;
    // Just under the watermark: two small messages in the drop-oldest queue, and
    // 3.5 KB elsewhere.
    let sends = [
        ("/queue/dq", "a".repeat(500)),
        ("/queue/dq", "b".repeat(500)),
        ("/queue/other", "o".repeat(3500)),
    ];
    for (i, (queue, body)) in sends.iter().enumerate() {
        p.send(&format!("SEND\ndestination:{queue}\nreceipt:{i}\n\n{body}"))
            .await;
        until_receipt(&mut p, &i.to_string()).await;
    }
    assert!(!memory.is_high(), "gauge {}", memory.used());
    // A bigger one to the full queue raises the alarm: dropping `a` could not clear it.
    p.send(&format!(
        "SEND\ndestination:/queue/dq\nreceipt:c\n\n{}",
        "c".repeat(2000)
    ))
    .await;
    let err = p.expect_error_and_close().await;
    assert!(
        error_message(&err).contains("memory is above its high watermark"),
        "{err:?}"
    );
    let mut c = connected(&b).await;
    c.subscribe("0", "/queue/dq", "auto").await;
    for want in &sends[..2] {
        assert_eq!(c.expect(Command::Message).await.body, want.1.as_bytes());
    }
    c.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(Metrics::get(&b.handle.metrics().overflow_drops), 0);
}

/// A keep-alive HTTP client that got one answer and now sends a byte every 200 ms
/// (never a whole request): the trickle of issue 18, finding 4.
async fn trickler(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 404"));
    tokio::spawn(async move {
        for b in b"GET /x HTTP/1.1\r\nX-Slow: ".iter().cycle().take(300) {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Issue 18, finding 4: one `http.max_requests` pool served the public WebSocket
/// listeners and the admin listener, and a keep-alive connection held its permit
/// while it trickled bytes: 4 such clients made `/healthz` and new WebSocket
/// handshakes go unanswered. Now the admin listener has its own pool, an HTTP
/// connection that has not upgraded closes after `http.max_connection_ms` whatever it
/// trickles, and one address holds at most `http.max_connections_per_address`.
#[tokio::test]
async fn trickling_http_clients_cannot_starve_websocket_or_the_admin_listener() {
    let mut cfg = config();
    cfg.admin.listen = "127.0.0.1:0".into();
    cfg.http.max_connections = 4;
    cfg.http.max_connections_per_address = 0;
    cfg.http.body_timeout_ms = 1000;
    cfg.http.max_connection_ms = 1500;
    cfg.limits.handshake_timeout_ms = 60_000;
    let b = start_with(cfg).await;
    let mut trickling = Vec::new();
    for _ in 0..4 {
        trickling.push(trickler(b.handle.ws_addr).await);
    }
    // The admin listener answers at once: its pool is its own.
    let admin = b.handle.admin_addr.unwrap();
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(2),
        http_request(admin, "GET /healthz HTTP/1.1", b""),
    )
    .await
    .expect("/healthz answered while the public pool is full");
    assert_eq!(status, 200);
    // A WebSocket handshake gets in once the tricklers' time is up.
    let (mut ws, _) = tokio::time::timeout(WAIT, Client::ws(&b.ws_url(), &["v12.stomp"]))
        .await
        .expect("a WebSocket handshake is answered");
    ws.connect().await;
    for t in trickling {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("the broker closed the trickler")
            .unwrap();
    }
}

/// Issue 18, finding 4: `max_connections_per_address` did not count HTTP
/// connections. `http.max_connections_per_address` does: a further one from the same
/// address is closed at once, and others still get in.
#[tokio::test]
async fn http_connections_per_address_are_capped() {
    let mut cfg = config();
    cfg.http.max_connections_per_address = 2;
    let b = start_with(cfg).await;
    let _held: Vec<TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..2 {
            v.push(TcpStream::connect(b.handle.ws_addr).await.unwrap());
        }
        v
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(b.handle.ws_addr).await.unwrap();
    let _ = third
        .write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, third.read_to_end(&mut out))
        .await
        .expect("closed at once");
    assert!(
        read.is_err() || out.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    // From another address (127.0.0.2 is loopback too) it still works.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(b.handle.ws_addr).await.unwrap();
    other
        .write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, other.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 404"));
}

/// Issue 18, finding 13: partly read frames were not stopped by the watermark: 10
/// connections each parked part of a large SEND, gauge 42 MB against an 8 MB
/// watermark, and no ERROR. Now a SEND still arriving above the watermark is not read
/// further, and after `queues.send_timeout_ms` its sender gets ERROR and is closed,
/// giving its bytes back; a client sending small frames carries on.
#[tokio::test]
async fn partial_sends_above_the_watermark_are_paused_then_refused() {
    let mut cfg = config();
    cfg.memory.high_watermark_bytes = 1 << 20;
    cfg.limits.max_body_bytes = 8 << 20;
    cfg.queues.send_timeout_ms = 300;
    let b = start_with(cfg).await;
    let memory = b.handle.router().memory().clone();
    let mut parked = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(b.tcp()).await.unwrap();
        s.write_all(b"CONNECT\naccept-version:1.2\nhost:h\n\n\0")
            .await
            .unwrap();
        parked.push(tokio::spawn(async move {
            let (mut r, mut w) = s.into_split();
            // Half of an 8 MB body, then nothing: the writes stall once the broker
            // stops reading, and fail once it closes.
            let writer = tokio::spawn(async move {
                let head = "SEND\ndestination:/queue/parked\ncontent-length:8000000\n\n";
                if w.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..64 {
                    if w.write_all(&[b'p'; 64 * 1024]).await.is_err() {
                        return;
                    }
                }
                std::future::pending::<()>().await;
            });
            let mut got = Vec::new();
            let _ = r.read_to_end(&mut got).await;
            writer.abort();
            String::from_utf8_lossy(&got).into_owned()
        }));
    }
    let mut by = connected(&b).await;
    by.subscribe("0", "/queue/side", "auto").await;
    for (i, task) in parked.into_iter().enumerate() {
        let got = tokio::time::timeout(WAIT, task)
            .await
            .unwrap_or_else(|_| panic!("parked sender {i} never refused; gauge {}", memory.used()))
            .unwrap();
        assert!(
            got.contains("ERROR\nmessage:broker memory is above its high watermark"),
            "{got:?}"
        );
    }
    // Their bytes are given back; small frames went on meanwhile and still do.
    let deadline = Instant::now() + WAIT;
    while memory.is_high() {
        assert!(
            Instant::now() < deadline,
            "gauge stays at {}",
            memory.used()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    by.publish("/queue/side", "still here").await;
    assert_eq!(&by.expect(Command::Message).await.body[..], b"still here");
}
