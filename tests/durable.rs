//! Durable queues, in process: persistent messages survive a broker restart on the same
//! data directory, acknowledged ones do not come back, redelivery counts and
//! dead-lettering survive, and non-persistent messages never touch the disk. (The
//! crash tests, with a real SIGKILL, are in `crash.rs`.)

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Client, TestBroker, WAIT, start_with};
use stompbox::frame::{Command, Frame};
use stompbox::{Broker, Config};

struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let d =
            std::env::temp_dir().join(format!("stompbox-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        DataDir(d)
    }

    fn config(&self) -> Config {
        let mut c = common::config();
        c.store.data_dir = self.0.to_string_lossy().into_owned();
        c
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn connected(broker: &TestBroker) -> Client {
    common::connected(broker).await
}

/// SENDs `bodies` to `destination` with `extra` headers, each with a receipt, all
/// written before the first receipt is read (pipelined, as a fast producer does), and
/// waits for every receipt in order.
async fn send_all(c: &mut Client, destination: &str, extra: &str, bodies: &[String]) {
    let mut out = String::new();
    for (i, body) in bodies.iter().enumerate() {
        out.push_str(&format!(
            "SEND\ndestination:{destination}\n{extra}receipt:r{i}\n\n{body}\0"
        ));
    }
    c.send_raw(out.as_bytes()).await;
    for i in 0..bodies.len() {
        let f = c.expect(Command::Receipt).await;
        assert_eq!(f.headers.get("receipt-id"), Some(format!("r{i}").as_str()));
    }
}

/// Reads `n` MESSAGE frames.
async fn take(c: &mut Client, n: usize) -> Vec<Frame> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.expect(Command::Message).await);
    }
    out
}

fn bodies(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| String::from_utf8(f.body.to_vec()).unwrap())
        .collect()
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test]
async fn persistent_messages_survive_a_restart_in_order_and_flagged_redelivered() {
    let dir = DataDir::new("restart");
    let broker = start_with(dir.config()).await;
    let mut p = connected(&broker).await;
    let sent = numbered("p", 200);
    send_all(&mut p, "/queue/d", "persistent:true\n", &sent).await;
    let plain = numbered("plain", 5);
    send_all(&mut p, "/queue/d", "", &plain).await;
    drop(p);
    broker.handle.shutdown().await;

    let broker = start_with(dir.config()).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/d", "auto").await;
    let got = take(&mut c, 200).await;
    assert_eq!(bodies(&got), sent, "every persistent message, in order");
    for f in &got {
        assert_eq!(f.headers.get("redelivered"), Some("true"));
        assert_eq!(f.headers.get("persistent"), Some("true"));
    }
    // The non-persistent ones were never on disk.
    c.expect_silence(Duration::from_millis(300)).await;
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn acknowledged_messages_do_not_come_back_and_unacknowledged_ones_do() {
    let dir = DataDir::new("acks");
    let broker = start_with(dir.config()).await;
    let mut p = connected(&broker).await;
    send_all(&mut p, "/queue/a", "persistent:true\n", &numbered("m", 10)).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/a", "client-individual").await;
    let got = take(&mut c, 10).await;
    // ACK the even ones, each with a receipt: a receipted ACK is on disk.
    for (i, f) in got.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let ack = f.headers.get("ack").unwrap();
        c.send(&format!("ACK\nid:{ack}\nreceipt:a{i}\n\n")).await;
        c.until_receipt(&format!("a{i}")).await;
    }
    drop(c);
    drop(p);
    broker.handle.shutdown().await;

    let broker = start_with(dir.config()).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/a", "auto").await;
    let again = take(&mut c, 5).await;
    assert_eq!(bodies(&again), ["m-1", "m-3", "m-5", "m-7", "m-9"]);
    c.expect_silence(Duration::from_millis(300)).await;
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn redelivery_counts_and_dead_letters_survive_a_restart() {
    let dir = DataDir::new("counts");
    let mut config = dir.config();
    config.queues.max_redeliveries = 2;
    let broker = start_with(config.clone()).await;
    let mut p = connected(&broker).await;
    send_all(&mut p, "/queue/n", "persistent:true\n", &["once".into()]).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/n", "client-individual").await;
    // Delivered, NACKed (count 1, on disk once receipted), delivered again and held
    // unacknowledged when the broker stops: returned, count 2.
    let f = c.expect(Command::Message).await;
    let ack = f.headers.get("ack").unwrap().to_owned();
    c.send(&format!("NACK\nid:{ack}\nreceipt:n0\n\n")).await;
    c.until_receipt("n0").await;
    let f = c.expect(Command::Message).await;
    assert_eq!(f.headers.get("redelivery-count"), Some("1"));
    drop(p);
    broker.handle.shutdown().await;
    drop(c);

    // The restart counts as one more: 3, and the next NACK (4 > 2) dead-letters it.
    let broker = start_with(config.clone()).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/n", "client-individual").await;
    let f = c.expect(Command::Message).await;
    assert_eq!(f.headers.get("redelivery-count"), Some("3"));
    let ack = f.headers.get("ack").unwrap().to_owned();
    c.send(&format!("NACK\nid:{ack}\nreceipt:n\n\n")).await;
    c.until_receipt("n").await;
    drop(c);
    broker.handle.shutdown().await;

    // The dead letter is persistent too.
    let broker = start_with(config).await;
    let mut c = connected(&broker).await;
    c.subscribe("dlq", "/queue/DLQ.n", "auto").await;
    let f = c.expect(Command::Message).await;
    assert_eq!(&f.body[..], b"once");
    assert_eq!(f.headers.get("original-destination"), Some("/queue/n"));
    c.subscribe("s", "/queue/n", "auto").await;
    c.expect_silence(Duration::from_millis(300)).await;
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn persistent_by_default_and_persistent_false() {
    let dir = DataDir::new("default");
    let mut config = dir.config();
    config.queues.persistent_by_default = true;
    let broker = start_with(config.clone()).await;
    let mut p = connected(&broker).await;
    send_all(&mut p, "/queue/q", "", &["kept".into()]).await;
    send_all(&mut p, "/queue/q", "persistent:false\n", &["lost".into()]).await;
    drop(p);
    broker.handle.shutdown().await;

    let broker = start_with(config).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/q", "auto").await;
    assert_eq!(bodies(&take(&mut c, 1).await), ["kept"]);
    c.expect_silence(Duration::from_millis(300)).await;
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn persistent_sends_in_a_transaction_survive_and_aborted_ones_do_not() {
    let dir = DataDir::new("tx");
    let broker = start_with(dir.config()).await;
    let mut p = connected(&broker).await;
    p.send("BEGIN\ntransaction:t1\n\n").await;
    for i in 0..3 {
        p.send(&format!(
            "SEND\ndestination:/queue/t\ntransaction:t1\npersistent:true\n\nc{i}"
        ))
        .await;
    }
    p.send("COMMIT\ntransaction:t1\nreceipt:c\n\n").await;
    p.until_receipt("c").await;
    p.send("BEGIN\ntransaction:t2\n\n").await;
    p.send("SEND\ndestination:/queue/t\ntransaction:t2\npersistent:true\n\naborted")
        .await;
    p.send("ABORT\ntransaction:t2\nreceipt:a\n\n").await;
    p.until_receipt("a").await;
    drop(p);
    broker.handle.shutdown().await;

    let broker = start_with(dir.config()).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/t", "auto").await;
    assert_eq!(bodies(&take(&mut c, 3).await), ["c0", "c1", "c2"]);
    c.expect_silence(Duration::from_millis(300)).await;
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn a_live_consumer_gets_persistent_messages_in_order_with_receipts_in_order() {
    let dir = DataDir::new("live");
    let broker = start_with(dir.config()).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/live", "auto").await;
    let mut p = connected(&broker).await;
    // Persistent and plain SENDs interleaved on one connection: order holds across
    // the two paths, and so does the order of receipts (checked by `send_all`).
    let mut out = String::new();
    for i in 0..300 {
        let extra = if i % 3 == 0 { "" } else { "persistent:true\n" };
        out.push_str(&format!(
            "SEND\ndestination:/queue/live\n{extra}receipt:r{i}\n\nm{i}\0"
        ));
    }
    p.send_raw(out.as_bytes()).await;
    for i in 0..300 {
        let f = p.expect(Command::Receipt).await;
        assert_eq!(f.headers.get("receipt-id"), Some(format!("r{i}").as_str()));
    }
    let got = take(&mut c, 300).await;
    assert_eq!(
        bodies(&got),
        (0..300).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|f| f.headers.get("redelivered").is_none()));
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_store_file_stops_the_start_with_an_error_naming_it() {
    let dir = DataDir::new("corrupt");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("stompbox.redb");
    std::fs::write(&file, vec![0xa5; 16384]).unwrap();
    let err = Broker::start(dir.config()).await.unwrap_err().to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
}

#[tokio::test]
async fn the_data_directory_is_created_on_start() {
    let dir = DataDir::new("create");
    let nested = dir.0.join("a/b");
    let mut config = dir.config();
    config.store.data_dir = nested.to_string_lossy().into_owned();
    let broker = start_with(config).await;
    assert!(nested.join("stompbox.redb").is_file());
    broker.handle.shutdown().await;
    let _ = WAIT;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Subscribes to `/queue/NAME` and its dead-letter queue; returns (live bodies,
/// dead-lettered bodies with their reason) once `n` messages have arrived.
async fn live_and_dead(
    c: &mut Client,
    name: &str,
    n: usize,
) -> (Vec<String>, Vec<(String, String)>) {
    c.subscribe("s", &format!("/queue/{name}"), "auto").await;
    c.subscribe("d", &format!("/queue/DLQ.{name}"), "auto")
        .await;
    let (mut live, mut dead) = (Vec::new(), Vec::new());
    for f in take(c, n).await {
        let body = String::from_utf8(f.body.to_vec()).unwrap();
        match f.headers.get("subscription") {
            Some("s") => live.push(body),
            _ => dead.push((
                body,
                f.headers.get("dead-letter-reason").unwrap_or("").to_owned(),
            )),
        }
    }
    c.expect_silence(Duration::from_millis(300)).await;
    (live, dead)
}

#[tokio::test]
async fn expired_messages_are_never_delivered_and_go_to_the_dead_letter_queue() {
    let broker = start_with(common::config()).await;
    let mut p = connected(&broker).await;
    let past = now_ms() - 1;
    let later = now_ms() + 60_000;
    send_all(
        &mut p,
        "/queue/x",
        &format!("expires:{past}\n"),
        &["stale".into()],
    )
    .await;
    send_all(
        &mut p,
        "/queue/x",
        &format!("expires:{later}\n"),
        &["fresh".into()],
    )
    .await;
    // RabbitMQ's relative form.
    send_all(&mut p, "/queue/x", "expiration:100\n", &["short".into()]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = connected(&broker).await;
    let (live, dead) = live_and_dead(&mut c, "x", 3).await;
    assert_eq!(live, ["fresh"]);
    let expired = |b: &str| (b.to_owned(), "expired".to_owned());
    assert_eq!(dead, [expired("stale"), expired("short")]);
    assert_eq!(
        broker
            .handle
            .metrics()
            .expired
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    broker.handle.shutdown().await;

    // The queue TTL.
    let mut config = common::config();
    config.queues.message_ttl_ms = 100;
    let broker = start_with(config).await;
    let mut p = connected(&broker).await;
    send_all(&mut p, "/queue/y", "", &["old".into()]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = connected(&broker).await;
    let (live, dead) = live_and_dead(&mut c, "y", 1).await;
    assert!(live.is_empty());
    assert_eq!(dead, [expired("old")]);
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn delayed_messages_wait_in_every_dialect() {
    let broker = start_with(common::config()).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/later", "auto").await;
    let mut p = connected(&broker).await;
    let start = now_ms();
    let headers = [
        "delay:600\n".to_owned(),
        "AMQ_SCHEDULED_DELAY:400\n".to_owned(),
        format!("_AMQ_SCHED_DELIVERY:{}\n", start + 200),
        "\n".to_owned(),
    ];
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim_start_matches('\n');
        send_all(&mut p, "/queue/later", h, &[format!("m{i}")]).await;
    }
    let mut arrivals = Vec::new();
    for _ in 0..4 {
        let f = c.expect(Command::Message).await;
        arrivals.push((
            String::from_utf8(f.body.to_vec()).unwrap(),
            now_ms() - start,
        ));
    }
    let order: Vec<&str> = arrivals.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(order, ["m3", "m2", "m1", "m0"], "{arrivals:?}");
    for ((_, at), min) in arrivals.iter().zip([0, 200, 400, 600]) {
        assert!(*at >= min, "{arrivals:?}");
    }
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn a_bad_delay_is_an_error_naming_the_header() {
    let broker = start_with(common::config()).await;
    let mut p = connected(&broker).await;
    p.send("SEND\ndestination:/queue/bad\ndelay:soon\n\nx")
        .await;
    let e = p.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("invalid delay header \"soon\": expected milliseconds as a non-negative integer")
    );
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn expiry_and_delay_survive_a_restart() {
    let dir = DataDir::new("timing");
    let broker = start_with(dir.config()).await;
    let mut p = connected(&broker).await;
    let start = now_ms();
    let headers = format!("persistent:true\nexpires:{}\n", start + 300);
    send_all(&mut p, "/queue/t", &headers, &["expiring".into()]).await;
    send_all(
        &mut p,
        "/queue/t",
        "persistent:true\ndelay:1500\n",
        &["delayed".into()],
    )
    .await;
    drop(p);
    broker.handle.shutdown().await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    let broker = start_with(dir.config()).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/t", "auto").await;
    c.subscribe("d", "/queue/DLQ.t", "auto").await;
    let f = c.expect(Command::Message).await;
    assert_eq!(
        (&f.body[..], f.headers.get("dead-letter-reason")),
        (&b"expiring"[..], Some("expired"))
    );
    let f = c.expect(Command::Message).await;
    assert_eq!(&f.body[..], b"delayed");
    assert!(
        now_ms() >= start + 1500,
        "delivered {} ms early",
        start + 1500 - now_ms()
    );
    broker.handle.shutdown().await;
}

/// A TCP client connected with CONNECT `client-id` (ActiveMQ and Artemis dialects).
async fn connected_as(broker: &TestBroker, client_id: &str) -> Client {
    let mut c = Client::tcp(broker.tcp()).await;
    c.send(&format!(
        "CONNECT\naccept-version:1.2\nhost:localhost\nclient-id:{client_id}\n\n"
    ))
    .await;
    c.expect(Command::Connected).await;
    c
}

async fn subscribe_with(c: &mut Client, headers: &str) {
    c.send(&format!("SUBSCRIBE\n{headers}receipt:sub\n\n"))
        .await;
    c.until_receipt("sub").await;
}

/// Publishes `bodies` to `topic` with receipts.
async fn publish(broker: &TestBroker, topic: &str, extra: &str, bodies: &[&str]) {
    let mut p = connected(broker).await;
    let bodies: Vec<String> = bodies.iter().map(|b| (*b).to_owned()).collect();
    send_all(&mut p, topic, extra, &bodies).await;
}

#[tokio::test]
async fn durable_subscriptions_keep_a_backlog_in_all_three_dialects() {
    let broker = start_with(common::config()).await;
    // (connect as, SUBSCRIBE headers, UNSUBSCRIBE headers that delete it)
    let dialects = [
        (
            None,
            "id:r1\ndestination:/topic/news.rmq\ndurable:true\nauto-delete:false\nack:client-individual\n",
            "id:r1\ndurable:true\nauto-delete:false\n",
        ),
        (
            Some("classic"),
            "id:a1\ndestination:/topic/news.classic\nactivemq.subscriptionName:mysub\n",
            "id:a1\nactivemq.subscriptionName:mysub\n",
        ),
        (
            Some("artemis"),
            "id:x1\ndestination:/topic/news.artemis\ndurable-subscription-name:mysub\n",
            "id:x1\ndurable-subscription-name:mysub\n",
        ),
    ];
    for (client_id, sub, unsub) in dialects {
        let topic = sub
            .lines()
            .nth(1)
            .unwrap()
            .trim_start_matches("destination:");
        let open = || async {
            match client_id {
                Some(id) => connected_as(&broker, id).await,
                None => connected(&broker).await,
            }
        };
        let mut c = open().await;
        subscribe_with(&mut c, sub).await;
        publish(&broker, topic, "", &["live"]).await;
        let live = take(&mut c, 1).await;
        assert_eq!(bodies(&live), ["live"], "{sub}");
        if sub.contains("client-individual") {
            let ack = live[0].headers.get("ack").unwrap();
            c.send(&format!("ACK\nid:{ack}\nreceipt:ack\n\n")).await;
            c.until_receipt("ack").await;
        }
        // Away: a plain disconnect keeps the subscription; it keeps receiving.
        drop(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
        publish(&broker, topic, "", &["a", "b", "c"]).await;
        let mut c = open().await;
        subscribe_with(&mut c, sub).await;
        let got = take(&mut c, 3).await;
        assert_eq!(bodies(&got), ["a", "b", "c"], "{sub}");
        assert!(
            got.iter()
                .all(|f| f.headers.get("destination") == Some(topic))
        );
        if sub.contains("client-individual") {
            for f in &got {
                let ack = f.headers.get("ack").unwrap();
                c.send(&format!("ACK\nid:{ack}\n\n")).await;
            }
        }
        // UNSUBSCRIBE with the durable headers deletes it and its backlog.
        c.send(&format!("UNSUBSCRIBE\n{unsub}receipt:u\n\n")).await;
        c.until_receipt("u").await;
        publish(&broker, topic, "", &["gone"]).await;
        subscribe_with(&mut c, sub).await;
        c.expect_silence(Duration::from_millis(300)).await;
        c.send(&format!("UNSUBSCRIBE\n{unsub}receipt:u2\n\n")).await;
        c.until_receipt("u2").await;
    }
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn artemis_deletes_a_durable_subscription_by_name_without_a_live_one() {
    let broker = start_with(common::config()).await;
    let sub = "id:x\ndestination:/topic/t\ndurable-subscription-name:n\n";
    let mut c = connected_as(&broker, "app").await;
    subscribe_with(&mut c, sub).await;
    drop(c);
    publish(&broker, "/topic/t", "", &["backlog"]).await;
    let mut c = connected_as(&broker, "app").await;
    c.send("UNSUBSCRIBE\nid:x\ndurable-subscription-name:n\nreceipt:u\n\n")
        .await;
    c.until_receipt("u").await;
    subscribe_with(&mut c, sub).await;
    c.expect_silence(Duration::from_millis(300)).await;
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn a_subscription_name_without_client_id_is_an_error() {
    let broker = start_with(common::config()).await;
    let mut c = connected(&broker).await;
    c.send("SUBSCRIBE\nid:x\ndestination:/topic/t\nactivemq.subscriptionName:n\n\n")
        .await;
    let e = c.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("a durable subscription name needs a client-id header on CONNECT")
    );
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn a_durable_backlog_is_bounded_by_the_queue_limits() {
    let mut config = common::config();
    config.queues.max_depth = 3;
    config.queues.overflow = stompbox::config::OverflowPolicy::DropOldest;
    let broker = start_with(config).await;
    let sub = "id:x\ndestination:/topic/b\ndurable-subscription-name:n\n";
    let mut c = connected_as(&broker, "app").await;
    subscribe_with(&mut c, sub).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&broker, "/topic/b", "", &["1", "2", "3", "4", "5"]).await;
    let mut c = connected_as(&broker, "app").await;
    subscribe_with(&mut c, sub).await;
    assert_eq!(bodies(&take(&mut c, 3).await), ["3", "4", "5"]);
    c.expect_silence(Duration::from_millis(300)).await;
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn durable_subscriptions_and_their_persistent_backlog_survive_a_restart() {
    let dir = DataDir::new("durable-sub");
    let broker = start_with(dir.config()).await;
    let sub = "id:s\ndestination:/topic/orders.*\ndurable:true\nauto-delete:false\n";
    let mut c = connected(&broker).await;
    subscribe_with(&mut c, sub).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(
        &broker,
        "/topic/orders.eu",
        "persistent:true\n",
        &["p1", "p2"],
    )
    .await;
    publish(&broker, "/topic/orders.us", "", &["transient"]).await;
    publish(&broker, "/topic/orders.us", "persistent:true\n", &["p3"]).await;
    broker.handle.shutdown().await;

    let broker = start_with(dir.config()).await;
    // Still subscribed while nobody is connected: it receives across the restart.
    publish(&broker, "/topic/orders.eu", "persistent:true\n", &["p4"]).await;
    let mut c = connected(&broker).await;
    subscribe_with(&mut c, sub).await;
    let got = take(&mut c, 4).await;
    assert_eq!(bodies(&got), ["p1", "p2", "p3", "p4"]);
    assert_eq!(got[0].headers.get("redelivered"), Some("true"));
    assert_eq!(got[3].headers.get("redelivered"), None);
    c.expect_silence(Duration::from_millis(300)).await;
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn a_queue_holding_only_delayed_messages_is_not_idle() {
    let mut config = common::config();
    config.queues.idle_delete_ms = 100;
    let broker = start_with(config).await;
    let mut p = connected(&broker).await;
    send_all(&mut p, "/queue/patient", "delay:700\n", &["later".into()]).await;
    // Several idle sweeps pass while the message waits.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/patient", "auto").await;
    assert_eq!(bodies(&take(&mut c, 1).await), ["later"]);
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn a_transaction_keeps_frame_order_across_persistent_and_plain_sends() {
    let dir = DataDir::new("tx-order");
    let broker = start_with(dir.config()).await;
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/mixed", "auto").await;
    let mut p = connected(&broker).await;
    p.send("BEGIN\ntransaction:t\n\n").await;
    for (i, h) in ["persistent:true\n", "", "persistent:true\n", ""]
        .iter()
        .enumerate()
    {
        p.send(&format!(
            "SEND\ndestination:/queue/mixed\ntransaction:t\n{h}\nm{i}"
        ))
        .await;
    }
    p.send("COMMIT\ntransaction:t\nreceipt:c\n\n").await;
    p.until_receipt("c").await;
    assert_eq!(bodies(&take(&mut c, 4).await), ["m0", "m1", "m2", "m3"]);
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn a_persistent_topic_send_without_receipt_is_not_overtaken() {
    let dir = DataDir::new("topic-order");
    let broker = start_with(dir.config()).await;
    let sub = "id:s\ndestination:/topic/ord\ndurable:true\nauto-delete:false\n";
    let mut c = connected(&broker).await;
    subscribe_with(&mut c, sub).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut p = connected(&broker).await;
    let mut out = String::new();
    for i in 0..50 {
        let h = if i % 2 == 0 { "persistent:true\n" } else { "" };
        out.push_str(&format!("SEND\ndestination:/topic/ord\n{h}\nm{i}\0"));
    }
    out.push_str("DISCONNECT\nreceipt:bye\n\n\0");
    p.send_raw(out.as_bytes()).await;
    p.until_receipt("bye").await;
    let mut c = connected(&broker).await;
    subscribe_with(&mut c, sub).await;
    let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&take(&mut c, 50).await), expected);
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn limits_max_durable_subscriptions() {
    let mut config = common::config();
    config.limits.max_durable_subscriptions = 2;
    let broker = start_with(config).await;
    let mut c = connected_as(&broker, "app").await;
    for i in 0..2 {
        let sub = format!("id:{i}\ndestination:/topic/t{i}\ndurable-subscription-name:n{i}\n");
        subscribe_with(&mut c, &sub).await;
    }
    c.send("SUBSCRIBE\nid:2\ndestination:/topic/t2\ndurable-subscription-name:n2\n\n")
        .await;
    let e = c.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("too many durable subscriptions (limit 2)")
    );
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn store_max_inflight_per_connection_bounds_the_pipeline() {
    let dir = DataDir::new("inflight");
    let mut config = dir.config();
    config.store.max_inflight_per_connection = 1;
    let broker = start_with(config).await;
    let mut p = connected(&broker).await;
    let sent = numbered("m", 200);
    // Written all at once; with one allowed in flight, each waits for the one before.
    send_all(&mut p, "/queue/one", "persistent:true\n", &sent).await;
    let commits = broker
        .handle
        .metrics()
        .store_commits
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        commits >= 200,
        "{commits} commits for 200 SENDs one at a time"
    );
    let mut c = connected(&broker).await;
    c.subscribe("s", "/queue/one", "auto").await;
    assert_eq!(bodies(&take(&mut c, 200).await), sent);
    broker.handle.shutdown().await;
}

#[tokio::test]
async fn queue_policies_set_persistence_and_ttl_per_queue() {
    let dir = DataDir::new("policies");
    let mut config = dir.config();
    config.queues.policies = vec![
        stompbox::config::QueuePolicy {
            pattern: "orders.#".into(),
            message_ttl_ms: None,
            persistent_by_default: Some(true),
        },
        stompbox::config::QueuePolicy {
            pattern: "short".into(),
            message_ttl_ms: Some(100),
            persistent_by_default: None,
        },
    ];
    let broker = start_with(config.clone()).await;
    let mut p = connected(&broker).await;
    send_all(&mut p, "/queue/orders.eu.new", "", &["kept".into()]).await;
    send_all(&mut p, "/queue/other", "", &["memory".into()]).await;
    send_all(&mut p, "/queue/short", "", &["brief".into()]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = connected(&broker).await;
    let (live, dead) = live_and_dead(&mut c, "short", 1).await;
    assert!(live.is_empty());
    assert_eq!(dead, [("brief".to_owned(), "expired".to_owned())]);
    drop(c);
    drop(p);
    broker.handle.shutdown().await;

    let broker = start_with(config).await;
    let mut c = connected(&broker).await;
    c.subscribe("o", "/queue/orders.eu.new", "auto").await;
    c.subscribe("x", "/queue/other", "auto").await;
    assert_eq!(bodies(&take(&mut c, 1).await), ["kept"]);
    c.expect_silence(Duration::from_millis(300)).await;
    broker.handle.shutdown().await;
}

/// A TCP client logged in as `login` (passcode `pw`), with CONNECT `client-id`.
async fn login_as(broker: &TestBroker, login: &str, client_id: &str) -> Client {
    let mut c = Client::tcp(broker.tcp()).await;
    c.send(&format!(
        "CONNECT\naccept-version:1.2\nhost:localhost\nlogin:{login}\npasscode:pw\nclient-id:{client_id}\n\n"
    ))
    .await;
    c.expect(Command::Connected).await;
    c
}

fn users_and_acls() -> Config {
    let mut cfg = common::config();
    cfg.auth.users = ["alice", "mallory", "bob"]
        .iter()
        .map(|l| common::user(l, "pw"))
        .collect();
    let rule = |users: &[&str], read: &[&str]| stompbox::config::AclRule {
        users: users.iter().map(|s| (*s).to_owned()).collect(),
        read: read.iter().map(|s| (*s).to_owned()).collect(),
        write: vec!["/topic/#".into()],
        ..Default::default()
    };
    cfg.auth.acls = vec![
        rule(&["alice", "bob"], &["/topic/secret.#"]),
        rule(&["mallory"], &["/topic/public.#"]),
        rule(&["*"], &[]),
    ];
    cfg
}

/// Issue 18, finding 2: the key came from the client-chosen `client-id`, so mallory
/// (read on `/topic/public.#` only) deleted alice's subscription to
/// `/topic/secret.#` and its backlog with an UNSUBSCRIBE naming it, and replaced it
/// by reusing the key on another topic; bob, who may read the topic, consumed
/// alice's backlog by reusing her key. Keys are now scoped by the authenticated
/// user: none of that reaches alice's subscription, and she gets all 3 messages.
#[tokio::test]
async fn durable_subscriptions_belong_to_the_user_who_made_them() {
    let broker = start_with(users_and_acls()).await;
    let named = "id:s\ndestination:/topic/secret.x\ndurable-subscription-name:s\n";
    let mut alice = login_as(&broker, "alice", "app").await;
    subscribe_with(&mut alice, named).await;
    drop(alice);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut p = login_as(&broker, "alice", "producer").await;
    let three: Vec<String> = numbered("m", 3);
    send_all(&mut p, "/topic/secret.x", "", &three).await;

    // Mallory names it to delete it (no live subscription: Artemis's way), and
    // reuses its key on a topic she may read.
    let mut mallory = login_as(&broker, "mallory", "app").await;
    mallory
        .send("UNSUBSCRIBE\nid:s\ndurable-subscription-name:s\nreceipt:u\n\n")
        .await;
    mallory.until_receipt("u").await;
    subscribe_with(
        &mut mallory,
        "id:m\ndestination:/topic/public.x\ndurable-subscription-name:s\n",
    )
    .await;
    // Bob may read the topic and reuses the key: he gets a subscription of his own.
    let mut bob = login_as(&broker, "bob", "app").await;
    subscribe_with(&mut bob, named).await;
    bob.expect_silence(Duration::from_millis(200)).await;

    let mut alice = login_as(&broker, "alice", "app").await;
    subscribe_with(&mut alice, named).await;
    assert_eq!(bodies(&take(&mut alice, 3).await), three);
    let owners: Vec<String> = broker
        .handle
        .router()
        .durables()
        .into_iter()
        .map(|d| d.owner)
        .collect();
    assert_eq!(owners, ["user:alice", "user:bob", "user:mallory"]);
}

/// A `client-id` is one live connection's, per user (as ActiveMQ and Artemis refuse
/// a second): two connections never share one named durable subscription at once,
/// and another user's connection with the same id is no obstacle.
#[tokio::test]
async fn a_client_id_in_use_is_refused_for_the_same_user_only() {
    let broker = start_with(users_and_acls()).await;
    let first = login_as(&broker, "alice", "app").await;
    let mut second = Client::tcp(broker.tcp()).await;
    second
        .send("CONNECT\naccept-version:1.2\nhost:h\nlogin:alice\npasscode:pw\nclient-id:app\n\n")
        .await;
    let e = second.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("client-id \"app\" is in use by another connection")
    );
    let _bob = login_as(&broker, "bob", "app").await;
    drop(first);
    // Given back when the connection ends.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = Client::tcp(broker.tcp()).await;
        again
            .send(
                "CONNECT\naccept-version:1.2\nhost:h\nlogin:alice\npasscode:pw\nclient-id:app\n\n",
            )
            .await;
        if again.frame().await.command == Command::Connected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "client-id never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 18, findings 9 and 19: one anonymous connection could fill the broker's
/// durable subscriptions for good; stompjs's default ids (`sub-0`) made two unrelated
/// apps share one durable queue. Now each user has a quota (all anonymous clients
/// are one user), an expiry frees the ones nobody attaches to, and the RabbitMQ
/// dialect's key includes the client id.
#[tokio::test]
async fn durable_subscriptions_have_a_quota_per_user_an_expiry_and_distinct_keys() {
    let mut cfg = users_and_acls();
    cfg.auth.acls.clear();
    cfg.limits.max_durable_subscriptions_per_user = 2;
    cfg.limits.durable_subscription_expiry_ms = 1000;
    cfg.queues.idle_delete_ms = 0;
    let broker = start_with(cfg).await;
    let rabbit =
        |topic: &str| format!("id:sub-0\ndestination:{topic}\ndurable:true\nauto-delete:false\n");
    // Two apps, both with stompjs's first id, told apart by their client ids.
    let mut one = connected_as(&broker, "app-one").await;
    subscribe_with(&mut one, &rabbit("/topic/t")).await;
    let mut two = connected_as(&broker, "app-two").await;
    subscribe_with(&mut two, &rabbit("/topic/t")).await;
    drop((one, two));
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&broker, "/topic/t", "", &["a", "b"]).await;
    for app in ["app-one", "app-two"] {
        let mut c = connected_as(&broker, app).await;
        subscribe_with(&mut c, &rabbit("/topic/t")).await;
        assert_eq!(bodies(&take(&mut c, 2).await), ["a", "b"], "{app}");
    }
    // The anonymous user holds 2: a third is refused; alice still gets hers.
    let mut third = connected_as(&broker, "app-three").await;
    third
        .send(&format!("SUBSCRIBE\n{}\n", rabbit("/topic/t")))
        .await;
    let e = third.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some(
            "you have too many durable subscriptions (limit 2): unsubscribe one with its durable headers"
        )
    );
    let mut alice = login_as(&broker, "alice", "a").await;
    subscribe_with(&mut alice, &rabbit("/topic/t")).await;
    drop(alice);
    // Nobody attached for 1 s: all three expire, with their backlogs.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !broker.handle.router().durables().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Found in review: re-subscribing a durable subscription's name to another topic
/// deleted the old one before the checks that could refuse the new one, so a refused
/// SUBSCRIBE lost the backlog. Now a refusal leaves it as it was.
#[tokio::test]
async fn a_refused_resubscription_keeps_the_durable_subscription() {
    let broker = start_with(common::config()).await;
    let named = |topic: &str| format!("id:s\ndestination:{topic}\ndurable-subscription-name:n\n");
    let mut c = connected_as(&broker, "app").await;
    subscribe_with(&mut c, &named("/topic/kept")).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&broker, "/topic/kept", "", &["a", "b"]).await;
    let mut c = connected_as(&broker, "app").await;
    c.send(&format!("SUBSCRIBE\n{}\n", named("/topic/x.#.y.#")))
        .await;
    let e = c.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .contains("more than one #"),
        "{e:?}"
    );
    let mut c = connected_as(&broker, "app").await;
    subscribe_with(&mut c, &named("/topic/kept")).await;
    assert_eq!(bodies(&take(&mut c, 2).await), ["a", "b"]);
}
