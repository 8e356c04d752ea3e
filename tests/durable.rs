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
