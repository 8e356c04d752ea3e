//! Destinations over real sockets: queues, topics, wildcards, temp queues and
//! request/reply, prefetch, and slow consumers that must not slow anyone else.

mod common;

use std::time::Duration;

use common::*;
use stompbox::config::SlowConsumerPolicy;
use stompbox::frame::Command;

#[tokio::test]
async fn queue_gives_each_message_to_exactly_one_consumer() {
    let b = start().await;
    let mut a = connected(&b).await;
    let mut c = connected(&b).await;
    a.subscribe("0", "/queue/one", "auto").await;
    c.subscribe("0", "/queue/one", "auto").await;
    let mut p = connected(&b).await;
    for i in 0..20 {
        p.publish("/queue/one", &i.to_string()).await;
    }
    let mut seen = Vec::new();
    for client in [&mut a, &mut c] {
        while let Some(m) = client.next_frame_within(Duration::from_millis(300)).await {
            seen.push(String::from_utf8(m.body.to_vec()).unwrap());
        }
    }
    seen.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(seen, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn queue_keeps_order_per_producer_and_holds_messages_until_a_consumer_comes() {
    let b = start().await;
    let mut p = connected(&b).await;
    for i in 0..50 {
        p.send(&format!("SEND\ndestination:/queue/later\n\n{i}"))
            .await;
    }
    p.publish("/queue/later", "end").await;
    let mut c = connected(&b).await;
    c.send("SUBSCRIBE\nid:0\ndestination:/queue/later\n\n")
        .await;
    for i in 0..50 {
        assert_eq!(c.expect(Command::Message).await.body, i.to_string());
    }
    assert_eq!(&c.expect(Command::Message).await.body[..], b"end");
}

#[tokio::test]
async fn topic_gives_every_subscriber_every_message_and_keeps_nothing() {
    let b = start().await;
    let mut p = connected(&b).await;
    p.publish("/topic/news", "before anyone listened").await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut c = connected(&b).await;
        c.subscribe("0", "/topic/news", "auto").await;
        subs.push(c);
    }
    p.publish("/topic/news", "hello all").await;
    for c in &mut subs {
        assert_eq!(&c.expect(Command::Message).await.body[..], b"hello all");
        c.expect_silence(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn topic_wildcards() {
    let b = start().await;
    let mut star = connected(&b).await;
    star.subscribe("0", "/topic/stocks.*.nyse", "auto").await;
    let mut hash = connected(&b).await;
    hash.subscribe("0", "/topic/stocks.#", "auto").await;
    let mut p = connected(&b).await;
    p.publish("/topic/stocks.ibm.nyse", "1").await;
    p.publish("/topic/stocks.ibm.lse", "2").await;
    p.publish("/topic/stocks", "3").await;
    let m = star.expect(Command::Message).await;
    assert_eq!(&m.body[..], b"1");
    assert_eq!(m.headers.get("destination"), Some("/topic/stocks.ibm.nyse"));
    star.expect_silence(Duration::from_millis(100)).await;
    for body in ["1", "2", "3"] {
        assert_eq!(hash.expect(Command::Message).await.body, body);
    }
}

#[tokio::test]
async fn request_reply_through_a_temp_queue() {
    let b = start().await;
    let mut server = connected(&b).await;
    server.subscribe("0", "/queue/rpc", "auto").await;
    let mut client = connected(&b).await;
    client
        .subscribe("replies", "/temp-queue/replies", "auto")
        .await;
    client
        .send(
            "SEND\ndestination:/queue/rpc\nreply-to:/temp-queue/replies\ncorrelation-id:42\n\nping",
        )
        .await;
    let request = server.expect(Command::Message).await;
    let reply_to = request.headers.get("reply-to").unwrap().to_owned();
    assert!(
        reply_to.starts_with("/temp-queue/") && reply_to != "/temp-queue/replies",
        "{reply_to}"
    );
    server
        .send(&format!(
            "SEND\ndestination:{reply_to}\ncorrelation-id:42\n\npong"
        ))
        .await;
    let reply = client.expect(Command::Message).await;
    assert_eq!(&reply.body[..], b"pong");
    assert_eq!(reply.headers.get("subscription"), Some("replies"));
    assert_eq!(reply.headers.get("correlation-id"), Some("42"));

    // Private: another connection cannot subscribe to it.
    let mut thief = connected(&b).await;
    thief
        .send(&format!("SUBSCRIBE\nid:0\ndestination:{reply_to}\n\n"))
        .await;
    let e = thief.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .contains("another connection")
    );

    // Deleted with its owner.
    client.send("DISCONNECT\nreceipt:bye\n\n").await;
    client.expect(Command::Receipt).await;
    client.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.handle.router().queue_depth(&reply_to), None);
}

#[tokio::test]
async fn prefetch_count_limits_unacked_deliveries() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("SUBSCRIBE\nid:0\ndestination:/queue/pf\nack:client-individual\nprefetch-count:2\nreceipt:s\n\n")
        .await;
    c.until_receipt("s").await;
    let mut p = connected(&b).await;
    for i in 0..5 {
        p.publish("/queue/pf", &i.to_string()).await;
    }
    let first = c.expect(Command::Message).await;
    c.expect(Command::Message).await;
    c.expect_silence(Duration::from_millis(200)).await;
    c.send(&format!(
        "ACK\nid:{}\n\n",
        first.headers.get("ack").unwrap()
    ))
    .await;
    assert_eq!(&c.expect(Command::Message).await.body[..], b"2");
    c.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn bad_prefetch_count_is_an_error() {
    let b = start().await;
    let mut c = connected(&b).await;
    c.send("SUBSCRIBE\nid:0\ndestination:/queue/pf\nprefetch-count:0\n\n")
        .await;
    c.expect_error_and_close().await;
}

/// Counts MESSAGEs until one with body `done`, reporting the count after each.
async fn count_until_done(c: &mut Client, mut progress: impl FnMut(usize)) -> usize {
    let mut received = 0;
    loop {
        let m = c.expect(Command::Message).await;
        if &m.body[..] == b"done" {
            return received;
        }
        received += 1;
        progress(received);
    }
}

/// A subscriber whose socket is never read: its outbox fills, then its TCP buffers.
async fn never_reading_subscriber(b: &TestBroker, destination: &str, ack: &str) -> Client {
    let mut c = connected(b).await;
    c.subscribe("0", destination, ack).await;
    c
}

#[tokio::test]
async fn slow_topic_consumer_never_slows_the_others() {
    let b = start().await;
    let _stuck = never_reading_subscriber(&b, "/topic/firehose", "auto").await;
    let mut fast = connected(&b).await;
    fast.subscribe("0", "/topic/firehose", "auto").await;
    let mut p = connected(&b).await;
    let body = "x".repeat(16 * 1024);
    // 2,000 x 16 KiB = 32 MiB: far more than the stuck client's outbox (8 MiB) and
    // socket buffers hold. The publisher stays at most 100 messages (1.6 MiB) ahead of
    // the fast subscriber, so the fast one never overflows; if the broker ever waited
    // on the stuck client, the fast one would stop receiving and this would time out.
    let (progress, mut seen) = tokio::sync::watch::channel(0usize);
    let publisher = tokio::spawn(async move {
        for i in 0..2_000 {
            tokio::time::timeout(WAIT, seen.wait_for(|n| n + 100 >= i))
                .await
                .expect("the fast subscriber keeps receiving")
                .unwrap();
            p.send(&format!("SEND\ndestination:/topic/firehose\n\n{body}"))
                .await;
        }
        p.publish("/topic/firehose", "done").await;
    });
    let received = count_until_done(&mut fast, |n| {
        progress.send_replace(n);
    })
    .await;
    publisher.await.unwrap();
    assert_eq!(received, 2_000, "the fast subscriber lost nothing");
    assert!(stompbox::metrics::Metrics::get(&b.handle.metrics().slow_consumer_drops) > 0);
}

#[tokio::test]
async fn slow_topic_consumer_is_disconnected_when_configured() {
    let mut cfg = config();
    cfg.outbox.max_frames = 8;
    cfg.topics.slow_consumer = SlowConsumerPolicy::Disconnect;
    let b = start_with(cfg).await;
    let mut stuck = never_reading_subscriber(&b, "/topic/strict", "auto").await;
    let mut p = connected(&b).await;
    let body = "y".repeat(64 * 1024);
    for _ in 0..200 {
        p.send(&format!("SEND\ndestination:/topic/strict\n\n{body}"))
            .await;
    }
    p.publish("/topic/strict", "done").await;
    // Now read: the stuck client finds what fit, then ERROR, then the close.
    loop {
        let f = stuck.frame().await;
        if f.command == Command::Error {
            assert!(f.headers.get("message").unwrap().contains("slow consumer"));
            break;
        }
    }
    stuck.expect_closed().await;
}

#[tokio::test]
async fn slow_queue_consumer_loses_credit_and_others_get_the_messages() {
    let mut cfg = config();
    cfg.outbox.max_frames = 8;
    let b = start_with(cfg).await;
    let _stuck = never_reading_subscriber(&b, "/queue/work", "auto").await;
    let mut fast = connected(&b).await;
    fast.subscribe("0", "/queue/work", "auto").await;
    let mut p = connected(&b).await;
    let body = "z".repeat(64 * 1024);
    let publisher = tokio::spawn(async move {
        for _ in 0..500 {
            p.send(&format!("SEND\ndestination:/queue/work\n\n{body}"))
                .await;
        }
        p.publish("/queue/work", "done").await;
    });
    let received = count_until_done(&mut fast, |_| {}).await;
    publisher.await.unwrap();
    // The stuck consumer got at most what its socket and outbox could absorb.
    assert!(received >= 400, "fast consumer got only {received} of 500");
}
