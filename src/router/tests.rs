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

/// Drains an outbox into parsed MESSAGE frames, marking auto-ack deliveries written.
fn drain(rx: &mut OutboxRx) -> Vec<crate::frame::Frame> {
    let mut out = Vec::new();
    let mut batch = std::collections::VecDeque::new();
    if futures_util::FutureExt::now_or_never(rx.recv_batch(&mut batch)).is_none() {
        return out;
    }
    for item in batch {
        if let Outgoing::Message { head, tail, auto } = item {
            let mut buf = bytes::BytesMut::new();
            buf.extend_from_slice(&head);
            buf.extend_from_slice(&tail);
            if let Some(Inbound::Frame(f)) = Parser::new(Limits::default()).parse(&mut buf).unwrap()
            {
                out.push(f);
            }
            if let Some(a) = auto {
                a.written();
            }
        }
    }
    out
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
    let (a, mut ra) = sub(1, AckMode::Auto, 100, 100);
    let (b, mut rb) = sub(2, AckMode::Auto, 100, 100);
    r.subscribe("/queue/q", a).unwrap();
    r.subscribe("/queue/q", b).unwrap();
    for body in ["1", "2", "3", "4"] {
        send(&r, "/queue/q", body).await.unwrap();
    }
    let got_a: Vec<_> = drain(&mut ra).iter().map(|f| f.body.clone()).collect();
    let got_b: Vec<_> = drain(&mut rb).iter().map(|f| f.body.clone()).collect();
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
    let (a, mut ra) = sub(1, AckMode::Auto, 100, 100);
    r.subscribe("/queue/later", a).unwrap();
    let got = drain(&mut ra);
    assert_eq!(got.len(), 10);
    assert_eq!(&got[0].body[..], b"first");
    // Written auto-ack deliveries free their depth permits.
    send(&r, "/queue/later", "fits").await.unwrap();
}

#[tokio::test]
async fn prefetch_window_limits_unacked_and_ack_frees_credit() {
    let r = router(SlowConsumerPolicy::Drop);
    let (a, mut ra) = sub(1, AckMode::ClientIndividual, 2, 100);
    let Target::Queue(q) = r.subscribe("/queue/w", a.clone()).unwrap() else {
        panic!("queue target")
    };
    for _ in 0..5 {
        send(&r, "/queue/w", "m").await.unwrap();
    }
    let first = drain(&mut ra);
    assert_eq!(first.len(), 2);
    let ack = first[0].headers.get("ack").unwrap();
    let (_, seq) = Subscription::parse_ack_id(ack).unwrap();
    assert_eq!(a.settle(seq).unwrap().len(), 1);
    assert!(a.settle(seq).is_none(), "settling twice is unknown");
    assert!(
        drain(&mut ra).is_empty(),
        "no delivery until the queue is poked"
    );
    // The session pokes the queue after an ACK.
    q.dispatch();
    assert_eq!(drain(&mut ra).len(), 1);
}

#[tokio::test]
async fn client_mode_ack_is_cumulative() {
    let r = router(SlowConsumerPolicy::Drop);
    let (a, mut ra) = sub(1, AckMode::Client, 100, 100);
    r.subscribe("/queue/c", a.clone()).unwrap();
    for _ in 0..3 {
        send(&r, "/queue/c", "m").await.unwrap();
    }
    let got = drain(&mut ra);
    let (_, seq) = Subscription::parse_ack_id(got[1].headers.get("ack").unwrap()).unwrap();
    assert_eq!(a.settle(seq).unwrap().len(), 2);
    assert_eq!(a.take_all_pending().len(), 1);
}

#[tokio::test]
async fn nack_redelivers_then_dead_letters() {
    let r = router(SlowConsumerPolicy::Drop);
    let (a, mut ra) = sub(1, AckMode::ClientIndividual, 100, 100);
    let Target::Queue(q) = r.subscribe("/queue/n", a.clone()).unwrap() else {
        panic!()
    };
    send(&r, "/queue/n", "poison").await.unwrap();
    let first = drain(&mut ra);
    assert_eq!(first[0].headers.get("redelivered"), None);
    let (_, seq) = Subscription::parse_ack_id(first[0].headers.get("ack").unwrap()).unwrap();
    q.requeue(a.settle(seq).unwrap(), true);
    let second = drain(&mut ra);
    assert_eq!(second[0].headers.get("redelivered"), Some("true"));
    assert_eq!(second[0].headers.get("redelivery-count"), Some("1"));
    assert_eq!(
        second[0].headers.get("message-id"),
        first[0].headers.get("message-id")
    );
    let (_, seq) = Subscription::parse_ack_id(second[0].headers.get("ack").unwrap()).unwrap();
    q.requeue(a.settle(seq).unwrap(), true);
    assert!(drain(&mut ra).is_empty(), "max_redeliveries = 1 exhausted");
    assert_eq!(r.queue_depth("/queue/DLQ.n"), Some(1));
    let (d, mut rd) = sub(2, AckMode::Auto, 100, 100);
    r.subscribe("/queue/DLQ.n", d).unwrap();
    let dead = drain(&mut rd);
    assert_eq!(
        dead[0].headers.get("original-destination"),
        Some("/queue/n")
    );
    assert_eq!(&dead[0].body[..], b"poison");
}

#[tokio::test]
async fn topic_fans_out_and_wildcards_match() {
    let r = router(SlowConsumerPolicy::Drop);
    let (a, mut ra) = sub(1, AckMode::Auto, 100, 100);
    let (b, mut rb) = sub(2, AckMode::Auto, 100, 100);
    let (star, mut rs) = sub(3, AckMode::Auto, 100, 100);
    let (hash, mut rh) = sub(4, AckMode::Auto, 100, 100);
    r.subscribe("/topic/a.b", a).unwrap();
    r.subscribe("/topic/a.b", b).unwrap();
    r.subscribe("/topic/a.*", star).unwrap();
    r.subscribe("/topic/#", hash).unwrap();
    send(&r, "/topic/a.b", "ab").await.unwrap();
    send(&r, "/topic/a.b.c", "abc").await.unwrap();
    send(&r, "/topic/nobody", "lost").await.unwrap();
    assert_eq!(drain(&mut ra).len(), 1);
    assert_eq!(drain(&mut rb).len(), 1);
    let s = drain(&mut rs);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].headers.get("destination"), Some("/topic/a.b"));
    assert_eq!(drain(&mut rh).len(), 3);
}

#[tokio::test]
async fn slow_topic_consumer_is_dropped_or_disconnected_without_blocking_others() {
    for policy in [SlowConsumerPolicy::Drop, SlowConsumerPolicy::Disconnect] {
        let r = router(policy);
        let (slow, _never_read) = sub(1, AckMode::Auto, 100, 2);
        let (fast, mut rf) = sub(2, AckMode::Auto, 100, 100);
        r.subscribe("/topic/t", slow.clone()).unwrap();
        r.subscribe("/topic/t", fast).unwrap();
        for _ in 0..10 {
            send(&r, "/topic/t", "m").await.unwrap();
        }
        assert_eq!(drain(&mut rf).len(), 10);
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
    let (a, mut ra) = sub(1, AckMode::ClientIndividual, 100, 2);
    r.subscribe("/queue/o", a).unwrap();
    for _ in 0..5 {
        send(&r, "/queue/o", "m").await.unwrap();
    }
    assert_eq!(drain(&mut ra).len(), 2);
    assert_eq!(r.queue_depth("/queue/o"), Some(3));
    ra.wake_if_drained();
    assert_eq!(drain(&mut ra).len(), 2);
}

#[tokio::test]
async fn temp_queues_are_private_and_removed_with_their_owner() {
    let r = router(SlowConsumerPolicy::Drop);
    let (mine, _rx) = sub(1, AckMode::Auto, 100, 100);
    assert!(r.subscribe("/temp-queue/s1/replies", mine).is_ok());
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
    assert_eq!(
        r.subscribe("/temp-queue/s1/replies", other).unwrap_err(),
        RouteError::NotOwner("/temp-queue/s1/replies".into())
    );
    r.remove_temp_queues("s1");
    assert_eq!(r.queue_depth("/temp-queue/s1/replies"), None);
    send(&r, "/temp-queue/s1/replies", "late").await.unwrap();
    assert_eq!(Metrics::get(&r.metrics().discarded), 1);
}

#[test]
fn destinations_need_a_known_prefix_and_a_name() {
    let r = router(SlowConsumerPolicy::Drop);
    for bad in ["foo", "/queue/", "/topic/", "/exchange/x", ""] {
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
    for s in [a, b, c] {
        r.subscribe("/topic/same", s).unwrap();
    }
    send(&r, "/topic/same", "payload").await.unwrap();
    let first = |rx: &mut OutboxRx| {
        let mut batch = std::collections::VecDeque::new();
        futures_util::FutureExt::now_or_never(rx.recv_batch(&mut batch)).unwrap();
        match batch.pop_front() {
            Some(Outgoing::Message { head, tail, .. }) => (head, tail),
            other => panic!("{other:?}"),
        }
    };
    let (ha, ta) = first(&mut ra);
    let (hb, tb) = first(&mut rb);
    let (hc, tc) = first(&mut rc);
    // Same subscription id: one shared allocation holding the whole frame.
    assert!(ta.is_empty() && tb.is_empty());
    assert_eq!(ha.as_ptr(), hb.as_ptr());
    // A different id: its own head before the shared tail, same bytes on the wire.
    assert!(!tc.is_empty());
    assert!(ha.ends_with(&tc));
    assert!(hc.ends_with(b"subscription:other\n"));
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
