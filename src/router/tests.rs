//! Router decisions, without sockets: outboxes are read directly.

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::Queues;
use crate::frame::{Inbound, Limits, Parser, Version};
use crate::outbox::{OutboxRx, Outgoing, outbox};

fn router(policy: SlowConsumerPolicy) -> Router {
    let mut config = Config {
        queues: Queues {
            max_depth: 10,
            send_timeout_ms: 50,
            max_redeliveries: 1,
            ..Queues::default()
        },
        ..Config::default()
    };
    config.topics.slow_consumer = policy;
    config.topics.slow_consumer_grace_ms = 20;
    config.limits.max_queues = 8;
    Router::new(RouterConfig::new(&config), Arc::new(Metrics::default()))
}

fn sub(key: u64, ack: AckMode, prefetch: usize, frames: usize) -> (Arc<Subscription>, OutboxRx) {
    let (tx, rx) = outbox(frames, 1 << 20);
    let s = Subscription::new(
        "s1".into(),
        key,
        format!("sub{key}"),
        ack,
        prefetch,
        Version::V1_2,
        tx,
        CancellationToken::new(),
    );
    (Arc::new(s), rx)
}

fn link(r: &Router) -> LinkGuard {
    Link::open(r.clone())
}

/// Drains an outbox into parsed MESSAGE frames, reporting them written to `link` as
/// the writer does.
fn drain(rx: &mut OutboxRx, link: &Link) -> Vec<crate::frame::Frame> {
    let mut out = Vec::new();
    let mut batch = std::collections::VecDeque::new();
    if futures_util::FutureExt::now_or_never(rx.recv_batch(&mut batch)).is_none() {
        return out;
    }
    let mut tickets = Vec::new();
    for item in batch {
        if let Outgoing::Delivery(whole, _) = &item {
            let mut buf = bytes::BytesMut::from(&whole[..]);
            if let Some(Inbound::Frame(f)) = Parser::new(Limits::default()).parse(&mut buf).unwrap()
            {
                out.push(f);
            }
        }
        if let Outgoing::Message {
            head,
            tail,
            body,
            ticket,
            ..
        } = item
        {
            let mut buf = bytes::BytesMut::new();
            buf.extend_from_slice(&head);
            buf.extend_from_slice(&tail);
            buf.extend_from_slice(&body);
            buf.extend_from_slice(b"\0");
            if let Some(Inbound::Frame(f)) = Parser::new(Limits::default()).parse(&mut buf).unwrap()
            {
                out.push(f);
            }
            tickets.extend(ticket);
        }
    }
    link.written(&tickets);
    out
}

fn ack_ref(link: &Link, f: &crate::frame::Frame) -> AckRef {
    let (key, seq) = Subscription::parse_ack_id(f.headers.get("ack").unwrap()).unwrap();
    link.find(key, seq).expect("pending")
}

async fn send(r: &Router, dest: &str, body: &'static str) -> Result<(), RouteError> {
    r.send(r.message(
        dest.into(),
        Headers::new(),
        Bytes::from_static(body.as_bytes()),
    ))
    .await
}

#[tokio::test]
async fn queue_round_robin_one_consumer_per_message() {
    let r = router(SlowConsumerPolicy::Drop);
    let l = link(&r);
    let (a, mut ra) = sub(1, AckMode::Auto, 100, 100);
    let (b, mut rb) = sub(2, AckMode::Auto, 100, 100);
    l.subscribe("/queue/q", a).unwrap();
    l.subscribe("/queue/q", b).unwrap();
    for body in ["1", "2", "3", "4"] {
        send(&r, "/queue/q", body).await.unwrap();
    }
    let got_a: Vec<_> = drain(&mut ra, &l).iter().map(|f| f.body.clone()).collect();
    let got_b: Vec<_> = drain(&mut rb, &l).iter().map(|f| f.body.clone()).collect();
    assert_eq!(got_a, vec![Bytes::from("1"), Bytes::from("3")]);
    assert_eq!(got_b, vec![Bytes::from("2"), Bytes::from("4")]);
}

#[tokio::test]
async fn queue_keeps_messages_until_a_consumer_comes_and_bounds_depth() {
    let r = router(SlowConsumerPolicy::Drop);
    for i in 0..10 {
        send(&r, "/queue/later", if i == 0 { "first" } else { "x" })
            .await
            .unwrap();
    }
    assert_eq!(
        send(&r, "/queue/later", "over").await,
        Err(RouteError::QueueFull("/queue/later".into()))
    );
    let l = link(&r);
    let (a, mut ra) = sub(1, AckMode::Auto, 100, 100);
    l.subscribe("/queue/later", a).unwrap();
    let got = drain(&mut ra, &l);
    assert_eq!(got.len(), 10);
    assert_eq!(&got[0].body[..], b"first");
    // Written auto-ack deliveries free their depth permits.
    send(&r, "/queue/later", "fits").await.unwrap();
}

#[tokio::test]
async fn prefetch_window_limits_unacked_and_ack_frees_credit() {
    let r = router(SlowConsumerPolicy::Drop);
    let l = link(&r);
    let (a, mut ra) = sub(1, AckMode::ClientIndividual, 2, 100);
    l.subscribe("/queue/w", a).unwrap();
    for _ in 0..5 {
        send(&r, "/queue/w", "m").await.unwrap();
    }
    let first = drain(&mut ra, &l);
    assert_eq!(first.len(), 2);
    let found = ack_ref(&l, &first[0]);
    assert!(l.settle(&found, false));
    assert!(!l.settle(&found, false), "settling twice is unknown");
    // The ACK freed credit: the queue delivers the next one.
    assert_eq!(drain(&mut ra, &l).len(), 1);
}

#[tokio::test]
async fn client_mode_ack_is_cumulative() {
    let r = router(SlowConsumerPolicy::Drop);
    let l = link(&r);
    let (a, mut ra) = sub(1, AckMode::Client, 100, 100);
    l.subscribe("/queue/c", a).unwrap();
    for _ in 0..3 {
        send(&r, "/queue/c", "m").await.unwrap();
    }
    let got = drain(&mut ra, &l);
    assert!(l.settle(&ack_ref(&l, &got[1]), false));
    assert!(l.find(1, 0).is_none(), "settled with the later one");
    assert!(l.find(1, 2).is_some());
}

#[tokio::test]
async fn nack_redelivers_then_dead_letters() {
    let r = router(SlowConsumerPolicy::Drop);
    let l = link(&r);
    let (a, mut ra) = sub(1, AckMode::ClientIndividual, 100, 100);
    l.subscribe("/queue/n", a).unwrap();
    send(&r, "/queue/n", "poison").await.unwrap();
    let first = drain(&mut ra, &l);
    assert_eq!(first[0].headers.get("redelivered"), None);
    assert!(l.settle(&ack_ref(&l, &first[0]), true));
    let second = drain(&mut ra, &l);
    assert_eq!(second[0].headers.get("redelivered"), Some("true"));
    assert_eq!(second[0].headers.get("redelivery-count"), Some("1"));
    assert_eq!(
        second[0].headers.get("message-id"),
        first[0].headers.get("message-id")
    );
    assert!(l.settle(&ack_ref(&l, &second[0]), true));
    assert!(
        drain(&mut ra, &l).is_empty(),
        "max_redeliveries = 1 exhausted"
    );
    assert_eq!(r.queue_depth("/queue/DLQ.n"), Some(1));
    let (d, mut rd) = sub(2, AckMode::Auto, 100, 100);
    l.subscribe("/queue/DLQ.n", d).unwrap();
    let dead = drain(&mut rd, &l);
    assert_eq!(
        dead[0].headers.get("original-destination"),
        Some("/queue/n")
    );
    assert_eq!(&dead[0].body[..], b"poison");
}

#[tokio::test]
async fn returned_deliveries_keep_queue_order_and_mark_only_what_was_seen() {
    let r = router(SlowConsumerPolicy::Drop);
    let l = link(&r);
    let (a, mut ra) = sub(1, AckMode::Auto, 100, 100);
    let (b, mut rb) = sub(2, AckMode::Auto, 100, 100);
    l.subscribe("/queue/o", a).unwrap();
    l.subscribe("/queue/o", b).unwrap();
    for i in 0..6 {
        send(&r, "/queue/o", ["0", "1", "2", "3", "4", "5"][i])
            .await
            .unwrap();
    }
    // a holds 0, 2, 4 and b holds 1, 3, 5; a's first is in a write that failed.
    let mut batch = std::collections::VecDeque::new();
    futures_util::FutureExt::now_or_never(ra.recv_batch(&mut batch)).unwrap();
    let Some(Outgoing::Message { ticket, .. }) = batch.front() else {
        panic!()
    };
    l.maybe_written(&[ticket.unwrap()]);
    drop(rb.close_and_drain());
    l.close();
    let l2 = link(&r);
    let (c, mut rc) = sub(3, AckMode::Auto, 100, 100);
    l2.subscribe("/queue/o", c).unwrap();
    let got = drain(&mut rc, &l2);
    let bodies: Vec<_> = got.iter().map(|f| f.body.clone()).collect();
    assert_eq!(bodies, ["0", "1", "2", "3", "4", "5"]);
    assert_eq!(got[0].headers.get("redelivered"), Some("true"));
    assert!(
        got[1..]
            .iter()
            .all(|f| f.headers.get("redelivered").is_none())
    );
}

#[tokio::test]
async fn an_unsubscribed_subscription_is_forgotten_once_its_last_delivery_is_written() {
    let r = router(SlowConsumerPolicy::Drop);
    let l = link(&r);
    let (a, mut ra) = sub(1, AckMode::Auto, 100, 100);
    l.subscribe("/queue/f", a.clone()).unwrap();
    send(&r, "/queue/f", "m").await.unwrap();
    // The writer holds the delivery in its batch when UNSUBSCRIBE comes.
    let mut batch = std::collections::VecDeque::new();
    futures_util::FutureExt::now_or_never(ra.recv_batch(&mut batch)).unwrap();
    l.unsubscribe(&a);
    assert_eq!(l.len(), 1, "its delivery is still unsettled");
    let Some(Outgoing::Message { ticket, .. }) = batch.front() else {
        panic!()
    };
    l.written(&[ticket.unwrap()]);
    assert_eq!(l.len(), 0);
}

#[tokio::test]
async fn what_a_publisher_waits_for_is_at_least_the_delivery() {
    let r = router(SlowConsumerPolicy::Drop);
    let l = link(&r);
    let long_id = "sub-".to_owned() + &"f".repeat(200);
    let (tx, mut rx) = outbox(10, 1 << 20);
    let s = Arc::new(Subscription::new(
        "s1".into(),
        u64::MAX,
        long_id,
        AckMode::ClientIndividual,
        10,
        Version::V1_2,
        tx,
        CancellationToken::new(),
    ));
    l.subscribe("/topic/len", s.clone()).unwrap();
    let message = r.message(
        "/topic/len".into(),
        Headers::new(),
        Bytes::from_static(b"x"),
    );
    let bound = s.delivery_len(&message);
    send(&r, "/topic/len", "x").await.unwrap();
    let mut batch = std::collections::VecDeque::new();
    futures_util::FutureExt::now_or_never(rx.recv_batch(&mut batch)).unwrap();
    let wire = batch.front().unwrap().wire_len();
    assert!(wire <= bound, "{wire} > {bound}");
}

#[test]
fn a_link_dropped_by_a_panic_leaves_nothing_registered() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let r = router(SlowConsumerPolicy::Drop);
    let (a, _ra) = sub(1, AckMode::ClientIndividual, 100, 100);
    let panicking = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let l = link(&r);
        l.subscribe("/queue/z", a).unwrap();
        rt.block_on(send(&r, "/queue/z", "held")).unwrap();
        panic!("a session task panics");
    }));
    assert!(panicking.is_err());
    // The message comes back, and the next consumer is the only one.
    let l = link(&r);
    let (b, mut rb) = sub(2, AckMode::Auto, 100, 100);
    l.subscribe("/queue/z", b).unwrap();
    let got = drain(&mut rb, &l);
    assert_eq!(got.len(), 1);
    rt.block_on(send(&r, "/queue/z", "next")).unwrap();
    assert_eq!(drain(&mut rb, &l).len(), 1, "no zombie consumer took it");
}

#[tokio::test]
async fn topic_fans_out_and_wildcards_match() {
    let r = router(SlowConsumerPolicy::Drop);
    let l = link(&r);
    let (a, mut ra) = sub(1, AckMode::Auto, 100, 100);
    let (b, mut rb) = sub(2, AckMode::Auto, 100, 100);
    let (star, mut rs) = sub(3, AckMode::Auto, 100, 100);
    let (hash, mut rh) = sub(4, AckMode::Auto, 100, 100);
    l.subscribe("/topic/a.b", a).unwrap();
    l.subscribe("/topic/a.b", b).unwrap();
    l.subscribe("/topic/a.*", star).unwrap();
    l.subscribe("/topic/#", hash).unwrap();
    send(&r, "/topic/a.b", "ab").await.unwrap();
    send(&r, "/topic/a.b.c", "abc").await.unwrap();
    send(&r, "/topic/nobody", "lost").await.unwrap();
    assert_eq!(drain(&mut ra, &l).len(), 1);
    assert_eq!(drain(&mut rb, &l).len(), 1);
    let s = drain(&mut rs, &l);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].headers.get("destination"), Some("/topic/a.b"));
    assert_eq!(drain(&mut rh, &l).len(), 3);
}

#[tokio::test]
async fn slow_topic_consumer_is_dropped_or_disconnected_without_blocking_others() {
    for policy in [SlowConsumerPolicy::Drop, SlowConsumerPolicy::Disconnect] {
        let r = router(policy);
        let l = link(&r);
        let (slow, _never_read) = sub(1, AckMode::Auto, 100, 2);
        let (fast, mut rf) = sub(2, AckMode::Auto, 100, 100);
        l.subscribe("/topic/t", slow.clone()).unwrap();
        l.subscribe("/topic/t", fast).unwrap();
        for _ in 0..10 {
            send(&r, "/topic/t", "m").await.unwrap();
        }
        assert_eq!(drain(&mut rf, &l).len(), 10);
        // The publisher waited one grace for it, once: then it was the slow consumer.
        assert_eq!(Metrics::get(&r.metrics().slow_consumer_graces), 1);
        match policy {
            SlowConsumerPolicy::Drop => {
                assert_eq!(Metrics::get(&r.metrics().slow_consumer_drops), 8);
                assert!(!slow.kill.is_cancelled());
            }
            SlowConsumerPolicy::Disconnect => assert!(slow.kill.is_cancelled()),
        }
    }
}

#[tokio::test]
async fn full_outbox_stops_queue_credit_and_wakes_when_drained() {
    let r = router(SlowConsumerPolicy::Drop);
    let l = link(&r);
    let (a, mut ra) = sub(1, AckMode::ClientIndividual, 100, 2);
    l.subscribe("/queue/o", a).unwrap();
    for _ in 0..5 {
        send(&r, "/queue/o", "m").await.unwrap();
    }
    assert_eq!(drain(&mut ra, &l).len(), 2);
    assert_eq!(r.queue_depth("/queue/o"), Some(3));
    ra.wake_if_drained();
    assert_eq!(drain(&mut ra, &l).len(), 2);
}

#[tokio::test]
async fn temp_queues_are_private_and_removed_with_their_owner() {
    let r = router(SlowConsumerPolicy::Drop);
    let l = link(&r);
    let (mine, _rx) = sub(1, AckMode::Auto, 100, 100);
    assert!(l.subscribe("/temp-queue/s1/replies", mine).is_ok());
    let (tx, _rx2) = outbox(4, 1024);
    let other = Arc::new(Subscription::new(
        "s2".into(),
        1,
        "x".into(),
        AckMode::Auto,
        10,
        Version::V1_2,
        tx,
        CancellationToken::new(),
    ));
    let l2 = Link::open(r.clone());
    assert_eq!(
        l2.subscribe("/temp-queue/s1/replies", other).unwrap_err(),
        RouteError::NotOwner("/temp-queue/s1/replies".into())
    );
    drop(l);
    assert_eq!(r.queue_depth("/temp-queue/s1/replies"), None);
    send(&r, "/temp-queue/s1/replies", "late").await.unwrap();
    assert_eq!(Metrics::get(&r.metrics().discarded), 1);
}

#[test]
fn destinations_need_a_known_prefix_and_a_name() {
    let r = router(SlowConsumerPolicy::Drop);
    for bad in [
        "foo",
        "/queue/",
        "/topic/",
        "/exchange/x",
        "",
        "/queue/a\nb",
    ] {
        assert!(r.check_destination(bad).is_err(), "{bad}");
    }
    for good in ["/queue/a", "/topic/a.b", "/temp-queue/x"] {
        assert!(r.check_destination(good).is_ok(), "{good}");
    }
}

#[tokio::test]
async fn topic_subscribers_sharing_an_id_get_the_same_frame_bytes() {
    let r = router(SlowConsumerPolicy::Drop);
    let mk = |key: u64, id: &str| {
        let (tx, rx) = outbox(10, 1 << 20);
        let s = Subscription::new(
            "s".into(),
            key,
            id.into(),
            AckMode::Auto,
            10,
            Version::V1_2,
            tx,
            CancellationToken::new(),
        );
        (Arc::new(s), rx)
    };
    let (a, mut ra) = mk(1, "sub-0");
    let (b, mut rb) = mk(2, "sub-0");
    let (c, mut rc) = mk(3, "other");
    let l = link(&r);
    for s in [a, b, c] {
        l.subscribe("/topic/same", s).unwrap();
    }
    send(&r, "/topic/same", "payload").await.unwrap();
    let first = |rx: &mut OutboxRx| {
        let mut batch = std::collections::VecDeque::new();
        futures_util::FutureExt::now_or_never(rx.recv_batch(&mut batch)).unwrap();
        batch.pop_front().expect("one delivery")
    };
    let (Outgoing::Delivery(wa, _), Outgoing::Delivery(wb, _)) = (first(&mut ra), first(&mut rb))
    else {
        panic!("auto-ack deliveries sharing a subscription id are whole frames");
    };
    // Same subscription id: one shared allocation holding the whole frame.
    assert_eq!(wa.as_ptr(), wb.as_ptr());
    // A different id: its own head before the shared tail and body, same bytes.
    let Outgoing::Message {
        head, tail, body, ..
    } = first(&mut rc)
    else {
        panic!("a different id gets its own head");
    };
    assert!(wa.ends_with(&[&tail[..], &body[..], b"\0"].concat()));
    assert!(head.ends_with(b"subscription:other\n"));
}

#[tokio::test]
async fn queues_are_bounded_in_number() {
    let r = router(SlowConsumerPolicy::Drop);
    for i in 0..8 {
        send(&r, &format!("/queue/q{i}"), "m").await.unwrap();
    }
    assert_eq!(
        send(&r, "/queue/one-too-many", "m").await,
        Err(RouteError::TooManyQueues(8))
    );
    // Existing queues keep working; topics are not queues.
    send(&r, "/queue/q0", "again").await.unwrap();
    send(&r, "/topic/t", "fine").await.unwrap();
}
