//! Crash tests: the real `stompbox` binary as a child process with a data directory,
//! killed with SIGKILL at a random moment while producers send persistent messages
//! with receipts and a consumer acknowledges with receipts; then restarted and
//! drained. Asserted every round:
//!
//! - every receipted message arrives (during the run or after the restart): loss is 0;
//! - nothing arrives that was not sent;
//! - a message whose ACK was receipted never comes back; a message that comes back
//!   after being delivered is flagged `redelivered:true`;
//! - each producer's messages arrive in its order.
//!
//! The last producer publishes to a topic with a durable subscription that is away,
//! so its backlog is checked the same way. A second test runs a
//! consume-transform-produce worker (BEGIN, ACK in, SEND out, COMMIT) and kills the
//! broker under it: each input or its output survives. A third kills the broker
//! repeatedly while it compacts a mostly empty store file at start.
//!
//! CI runs a few rounds (`STOMPBOX_CRASH_ROUNDS`, default 3). The long run:
//! `STOMPBOX_CRASH_ROUNDS=100 cargo test --release --test crash -- --nocapture`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use stompbox::frame::{Command, Frame, Inbound, Limits, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const QUEUE: &str = "/queue/crash";
/// The last producer publishes here, to a durable subscription that is away.
const TOPIC: &str = "/topic/crash.events";
const DURABLE: &str = "id:away\ndestination:/topic/crash.events\ndurable:true\nauto-delete:false\nack:client-individual\n";
const PRODUCERS: usize = 4;
/// Persistent SENDs a producer may have unreceipted at once.
const WINDOW: usize = 64;

/// A small pseudo-random source (xorshift), seeded from the clock and printed, so a
/// failing round can be replayed with `STOMPBOX_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    /// Starts the binary on `port` with `dir`, without waiting for it.
    fn spawn(dir: &Path, port: u16) -> Broker {
        let child = Process::new(env!("CARGO_BIN_EXE_stompbox"))
            .arg("--data-dir")
            .arg(dir)
            .arg("--tcp")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--ws")
            .arg("127.0.0.1:0")
            .arg("--admin")
            .arg("")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start stompbox");
        Broker {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    }

    /// Starts it and waits until it accepts connections.
    async fn start(dir: &Path, port: u16) -> Broker {
        let mut b = Broker::spawn(dir, port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(b.addr).await.is_ok() {
                return b;
            }
            if let Some(status) = b.child.try_wait().unwrap() {
                panic!("stompbox exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "stompbox did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL (`Child::kill` on Unix), and wait for it to be gone.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Conn {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    buf: BytesMut,
    parser: Parser,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Option<Conn> {
        let stream = TcpStream::connect(addr).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let (read, write) = stream.into_split();
        let mut c = Conn {
            read,
            write,
            buf: BytesMut::new(),
            parser: Parser::new(Limits {
                max_headers: 1000,
                max_header_line_bytes: 1 << 16,
                max_body_bytes: 1 << 24,
            }),
        };
        c.write
            .write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
            .await
            .ok()?;
        let f = c.frame().await?;
        assert_eq!(f.command, Command::Connected, "{f:?}");
        Some(c)
    }

    async fn frame(&mut self) -> Option<Frame> {
        frame(&mut self.read, &mut self.buf, &mut self.parser).await
    }
}

async fn frame(read: &mut OwnedReadHalf, buf: &mut BytesMut, parser: &mut Parser) -> Option<Frame> {
    loop {
        match parser.parse(buf) {
            Ok(Some(Inbound::Frame(f))) => return Some(f),
            Ok(Some(Inbound::Heartbeat)) => continue,
            Ok(None) => {}
            Err(e) => panic!("bad frame from broker: {e}"),
        }
        buf.reserve(16 * 1024);
        match read.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// What one round saw before the kill.
#[derive(Default)]
struct Seen {
    /// Per producer: how many it sent, and which got a RECEIPT.
    sent: Vec<u64>,
    receipted: HashSet<String>,
    /// Bodies delivered to the consumer during the run, in order.
    delivered: Vec<String>,
    /// Bodies whose ACK was receipted.
    acked: HashSet<String>,
}

/// One producer: pipelined persistent SENDs with receipts (at most `WINDOW`
/// unreceipted), until the connection dies or `limit` are sent.
async fn produce(addr: SocketAddr, round: usize, pid: usize, limit: u64, seen: Arc<Mutex<Seen>>) {
    let Some(conn) = Conn::open(addr).await else {
        return;
    };
    let Conn {
        mut read,
        mut write,
        mut buf,
        mut parser,
    } = conn;
    let (credit_tx, mut credit_rx) = tokio::sync::mpsc::channel::<()>(WINDOW);
    for _ in 0..WINDOW {
        credit_tx.try_send(()).unwrap();
    }
    let reader_seen = seen.clone();
    let reader = tokio::spawn(async move {
        while let Some(f) = frame(&mut read, &mut buf, &mut parser).await {
            match f.command {
                Command::Receipt => {
                    let id = f.headers.get("receipt-id").unwrap().to_owned();
                    reader_seen.lock().unwrap().receipted.insert(id);
                    if credit_tx.send(()).await.is_err() {
                        return;
                    }
                }
                _ => panic!("producer got {f:?}"),
            }
        }
    });
    for seq in 0..limit {
        if credit_rx.recv().await.is_none() {
            break;
        }
        let body = format!("r{round}-p{pid}-{seq}");
        // Counted before it is written: a SEND the broker may have read.
        seen.lock().unwrap().sent[pid] = seq + 1;
        let destination = if pid == PRODUCERS - 1 { TOPIC } else { QUEUE };
        let frame = format!(
            "SEND\ndestination:{destination}\npersistent:true\nreceipt:{body}\ncontent-type:text/plain\n\n{body}\0"
        );
        if write.write_all(frame.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = reader.await;
}

/// The consumer during the run: client-individual, each message ACKed with a receipt.
async fn consume(addr: SocketAddr, seen: Arc<Mutex<Seen>>) {
    let Some(mut c) = Conn::open(addr).await else {
        return;
    };
    let sub = format!(
        "SUBSCRIBE\nid:s\ndestination:{QUEUE}\nack:client-individual\nprefetch-count:32\n\n\0"
    );
    if c.write.write_all(sub.as_bytes()).await.is_err() {
        return;
    }
    while let Some(f) = c.frame().await {
        match f.command {
            Command::Message => {
                let body = String::from_utf8(f.body.to_vec()).unwrap();
                let ack = f.headers.get("ack").unwrap().to_owned();
                seen.lock().unwrap().delivered.push(body.clone());
                let frame = format!("ACK\nid:{ack}\nreceipt:{body}\n\n\0");
                if c.write.write_all(frame.as_bytes()).await.is_err() {
                    return;
                }
            }
            Command::Receipt => {
                let id = f.headers.get("receipt-id").unwrap().to_owned();
                seen.lock().unwrap().acked.insert(id);
            }
            _ => panic!("consumer got {f:?}"),
        }
    }
}

/// After the restart: everything in the queue (or, with `durable`, the durable
/// subscription), ACKed, until it stays empty.
async fn drain(addr: SocketAddr, durable: bool) -> Vec<(String, bool)> {
    let mut c = Conn::open(addr).await.expect("connect after restart");
    let sub = if durable {
        format!("SUBSCRIBE\n{DURABLE}\n\0")
    } else {
        format!("SUBSCRIBE\nid:d\ndestination:{QUEUE}\nack:client-individual\n\n\0")
    };
    c.write.write_all(sub.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    loop {
        let Ok(f) = tokio::time::timeout(Duration::from_millis(1500), c.frame()).await else {
            break;
        };
        let f = f.expect("connection open while draining");
        assert_eq!(f.command, Command::Message, "{f:?}");
        let body = String::from_utf8(f.body.to_vec()).unwrap();
        out.push((body, f.headers.get("redelivered") == Some("true")));
        let ack = f.headers.get("ack").unwrap();
        c.write
            .write_all(format!("ACK\nid:{ack}\n\n\0").as_bytes())
            .await
            .unwrap();
    }
    // The ACKs are on disk before the next round kills the broker.
    c.write
        .write_all(b"DISCONNECT\nreceipt:bye\n\n\0")
        .await
        .unwrap();
    let f = c.frame().await.expect("receipt for DISCONNECT");
    assert_eq!(f.headers.get("receipt-id"), Some("bye"));
    out
}

fn parse(body: &str) -> (usize, usize, u64) {
    let mut it = body.split('-');
    let mut num = |p: char| {
        it.next()
            .unwrap()
            .trim_start_matches(p)
            .parse::<u64>()
            .unwrap()
    };
    (num('r') as usize, num('p') as usize, num('\0'))
}

/// Checks one round, given what each destination held after the restart; returns
/// (receipted, redelivered after the restart).
fn check(round: usize, seen: &Seen, lists: &[&[(String, bool)]]) -> (usize, usize) {
    let delivered: HashSet<&str> = seen.delivered.iter().map(String::as_str).collect();
    let mut after = HashSet::new();
    for (body, redelivered) in lists.iter().copied().flatten() {
        assert!(
            after.insert(body.as_str()),
            "round {round}: {body} twice after the restart"
        );
        assert!(
            !seen.acked.contains(body),
            "round {round}: {body} came back although its ACK was receipted"
        );
        if delivered.contains(body.as_str()) {
            assert!(
                *redelivered,
                "round {round}: {body} delivered again without redelivered:true"
            );
        }
    }
    let lost: Vec<&String> = seen
        .receipted
        .iter()
        .filter(|b| !delivered.contains(b.as_str()) && !after.contains(b.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "round {round}: receipted messages lost: {lost:?}"
    );
    // Nothing invented; each producer's order kept, during the run and after.
    let mut all = vec![seen.delivered.iter().collect::<Vec<_>>()];
    all.extend(lists.iter().map(|l| l.iter().map(|(b, _)| b).collect()));
    for list in all {
        let mut last: BTreeMap<usize, u64> = BTreeMap::new();
        for body in list {
            let (r, p, seq) = parse(body);
            assert_eq!(r, round, "round {round}: a message of round {r}: {body}");
            assert!(
                p < PRODUCERS && seq < seen.sent[p],
                "round {round}: never sent: {body}"
            );
            if let Some(prev) = last.insert(p, seq) {
                assert!(
                    seq > prev,
                    "round {round}: producer {p} out of order: {prev} then {seq}"
                );
            }
        }
    }
    let redelivered = lists.iter().copied().flatten().filter(|(_, r)| *r).count();
    (seen.receipted.len(), redelivered)
}

fn data_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stompbox-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `STOMPBOX_CRASH_ROUNDS` (default 3), and `STOMPBOX_CRASH_SEED` or one from the
/// clock (printed by each test, so a failing run can be replayed).
fn rounds_and_seed() -> (usize, u64) {
    let rounds: usize = std::env::var("STOMPBOX_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed = std::env::var("STOMPBOX_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    (rounds, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipted_persistent_messages_survive_sigkill() {
    let (rounds, seed) = rounds_and_seed();
    println!("crash test: {rounds} rounds, STOMPBOX_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = data_dir("sigkill");
    let port = free_port();
    let mut broker = Broker::start(&dir, port).await;
    // The durable subscription, created and left.
    let mut c = Conn::open(broker.addr).await.unwrap();
    c.write
        .write_all(format!("SUBSCRIBE\n{DURABLE}receipt:s\n\n\0").as_bytes())
        .await
        .unwrap();
    assert_eq!(c.frame().await.unwrap().command, Command::Receipt);
    drop(c);
    let (mut total_receipted, mut total_redelivered, mut total_acked) = (0, 0, 0);
    for round in 0..rounds {
        let seen = Arc::new(Mutex::new(Seen {
            sent: vec![0; PRODUCERS],
            ..Seen::default()
        }));
        let mut tasks = Vec::new();
        for pid in 0..PRODUCERS {
            tasks.push(tokio::spawn(produce(
                broker.addr,
                round,
                pid,
                200_000,
                seen.clone(),
            )));
        }
        // Some rounds consume (and ACK) while producing: kills land in ACK batches.
        if round % 3 != 2 {
            tasks.push(tokio::spawn(consume(broker.addr, seen.clone())));
        }
        tokio::time::sleep(Duration::from_millis(100 + rng.below(900))).await;
        broker.kill();
        for t in tasks {
            t.await.unwrap();
        }
        // Sometimes also kill it again while it starts (recovering the file).
        if rng.below(4) == 0 {
            let early = Broker::spawn(&dir, port);
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            early.kill();
        }
        broker = Broker::start(&dir, port).await;
        let drained = drain(broker.addr, false).await;
        let from_durable = drain(broker.addr, true).await;
        let seen = seen.lock().unwrap();
        // The durable subscription holds only the last producer's messages.
        assert!(
            from_durable
                .iter()
                .all(|(b, _)| parse(b).1 == PRODUCERS - 1)
        );
        let (receipted, redelivered) = check(round, &seen, &[&drained, &from_durable]);
        println!(
            "round {round}: sent {:?}, receipted {receipted}, delivered during the run {}, \
             acks receipted {}, after restart {} + {} from the durable subscription \
             ({redelivered} redelivered), lost 0",
            seen.sent,
            seen.delivered.len(),
            seen.acked.len(),
            drained.len(),
            from_durable.len()
        );
        total_receipted += receipted;
        total_redelivered += redelivered;
        total_acked += seen.acked.len();
    }
    println!(
        "crash test: {rounds} rounds, {total_receipted} receipted messages, {total_acked} receipted acks, \
         {total_redelivered} redelivered after restarts, 0 lost"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    let _: HashMap<(), ()> = HashMap::new();
}

/// SENDs `n` persistent messages of `size` bytes to `destination` (pipelined, every
/// one receipted).
async fn fill(addr: SocketAddr, destination: &str, n: usize, size: usize, tag: &str) {
    let mut c = Conn::open(addr).await.unwrap();
    let pad = "x".repeat(size);
    for i in 0..n {
        let frame = format!(
            "SEND\ndestination:{destination}\npersistent:true\nreceipt:{i}\n\n{tag}-{i}-{pad}\0"
        );
        c.write.write_all(frame.as_bytes()).await.unwrap();
    }
    for _ in 0..n {
        assert_eq!(c.frame().await.unwrap().command, Command::Receipt);
    }
}

/// Consumes `n` messages from `destination` with one cumulative ACK at the end whose
/// receipt says the deletes are on disk; returns the bodies' tags.
async fn consume_all(addr: SocketAddr, destination: &str, n: usize) -> Vec<String> {
    let mut c = Conn::open(addr).await.unwrap();
    let sub = format!(
        "SUBSCRIBE\nid:c\ndestination:{destination}\nack:client\nprefetch-count:1000\n\n\0"
    );
    c.write.write_all(sub.as_bytes()).await.unwrap();
    let mut tags = Vec::new();
    let mut last = String::new();
    for _ in 0..n {
        let f = tokio::time::timeout(Duration::from_secs(10), c.frame())
            .await
            .expect("a message in time")
            .unwrap();
        last = f.headers.get("ack").unwrap().to_owned();
        let body = String::from_utf8(f.body.to_vec()).unwrap();
        let mut parts = body.splitn(3, '-');
        tags.push(format!(
            "{}-{}",
            parts.next().unwrap(),
            parts.next().unwrap()
        ));
    }
    c.write
        .write_all(format!("ACK\nid:{last}\nreceipt:done\n\n\0").as_bytes())
        .await
        .unwrap();
    let f = c.frame().await.unwrap();
    assert_eq!(f.headers.get("receipt-id"), Some("done"));
    tags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_compaction_loses_nothing() {
    let dir = data_dir("compaction");
    let port = free_port();
    let file = dir.join("stompbox.redb");
    let broker = Broker::start(&dir, port).await;
    fill(broker.addr, "/queue/keep", 20, 100, "keep").await;
    // Over 64 MiB stored, then consumed: a file mostly free space, which the next
    // start compacts.
    for q in ["/queue/big.a", "/queue/big.b"] {
        fill(broker.addr, q, 600, 64 * 1024, "big").await;
        assert_eq!(consume_all(broker.addr, q, 600).await.len(), 600);
    }
    broker.kill();
    let big = std::fs::metadata(&file).unwrap().len();
    assert!(big > 64 << 20, "{big}");
    let mut sizes = Vec::new();
    // Ever later kills, until one finds the compaction finished (each start resumes
    // it): small steps, so that kills land in it on a fast machine, growing, so that
    // they reach it on a slow one, where the integrity check before it takes longer.
    let delays = (0..60).map(|i: u64| 5 + i * 10 + i * i * 2);
    for delay in delays {
        let b = Broker::spawn(&dir, port);
        std::thread::sleep(Duration::from_millis(delay));
        b.kill();
        let size = std::fs::metadata(&file).unwrap().len();
        sizes.push((delay, size));
        if size < big / 4 {
            break;
        }
    }
    println!("file size after a kill at (ms, bytes): {sizes:?}");
    let broker = Broker::start(&dir, port).await;
    let after = std::fs::metadata(&file).unwrap().len();
    let kept = consume_all(broker.addr, "/queue/keep", 20).await;
    let expected: Vec<String> = (0..20).map(|i| format!("keep-{i}")).collect();
    assert_eq!(kept, expected);
    println!("store file {big} bytes before compaction, {after} after");
    assert!(after < big / 4, "{big} -> {after}");
    assert!(
        sizes.iter().any(|(_, s)| *s < big && *s > after),
        "no kill landed while compacting: {sizes:?}"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

const CTP_IN: &str = "/queue/ctp.in";
const CTP_OUT: &str = "/queue/ctp.out";

/// A consume-transform-produce worker: for each input, BEGIN, ACK it, SEND its output
/// persistent, COMMIT with a receipt (pipelined: the next input comes once the
/// COMMIT settled this one). Records the inputs whose COMMIT was receipted.
async fn transform(addr: SocketAddr, committed: Arc<Mutex<HashSet<u64>>>) {
    let Some(mut c) = Conn::open(addr).await else {
        return;
    };
    let sub = format!(
        "SUBSCRIBE\nid:w\ndestination:{CTP_IN}\nack:client-individual\nprefetch-count:1\n\n\0"
    );
    if c.write.write_all(sub.as_bytes()).await.is_err() {
        return;
    }
    while let Some(f) = c.frame().await {
        match f.command {
            Command::Message => {
                let body = String::from_utf8(f.body.to_vec()).unwrap();
                let i: u64 = body.split('-').nth(1).unwrap().parse().unwrap();
                let ack = f.headers.get("ack").unwrap();
                let tx = format!(
                    "BEGIN\ntransaction:t{i}\n\n\0\
                     ACK\nid:{ack}\ntransaction:t{i}\n\n\0\
                     SEND\ndestination:{CTP_OUT}\npersistent:true\ntransaction:t{i}\n\nout-{i}\0\
                     COMMIT\ntransaction:t{i}\nreceipt:{i}\n\n\0"
                );
                if c.write.write_all(tx.as_bytes()).await.is_err() {
                    return;
                }
            }
            Command::Receipt => {
                let i = f.headers.get("receipt-id").unwrap().parse().unwrap();
                committed.lock().unwrap().insert(i);
            }
            _ => panic!("worker got {f:?}"),
        }
    }
}

/// Everything in `destination`, acknowledged, until it stays empty: the numbers of
/// the bodies (`TAG-N…`).
async fn drain_numbers(addr: SocketAddr, destination: &str) -> Vec<u64> {
    let mut c = Conn::open(addr).await.expect("connect after restart");
    let sub = format!("SUBSCRIBE\nid:d\ndestination:{destination}\nack:client-individual\n\n\0");
    c.write.write_all(sub.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    while let Ok(f) = tokio::time::timeout(Duration::from_millis(1500), c.frame()).await {
        let f = f.expect("connection open while draining");
        assert_eq!(f.command, Command::Message, "{f:?}");
        let body = String::from_utf8(f.body.to_vec()).unwrap();
        out.push(body.split('-').nth(1).unwrap().parse().unwrap());
        let ack = f.headers.get("ack").unwrap();
        c.write
            .write_all(format!("ACK\nid:{ack}\n\n\0").as_bytes())
            .await
            .unwrap();
    }
    c.write
        .write_all(b"DISCONNECT\nreceipt:bye\n\n\0")
        .await
        .unwrap();
    let f = c.frame().await.expect("receipt for DISCONNECT");
    assert_eq!(f.headers.get("receipt-id"), Some("bye"));
    out
}

/// Issue 18, finding 6: a transaction's ACK deletes went to the store as one request
/// and its persistent SENDs as another, which could land in different fsyncs: a
/// consume-transform-produce worker killed -9 at random lost an input (its ACK on
/// disk) and its output in 1 round in 14. Now a COMMIT's deletes and puts are one
/// request, one batch. Every round: each input is still there or its output is (none
/// lost); a receipted COMMIT's input is gone and its output there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_transform_produce_worker_loses_nothing_across_sigkill() {
    let (rounds, seed) = rounds_and_seed();
    println!("consume-transform-produce: seed {seed}, {rounds} rounds");
    let mut rng = Rng(seed);
    const N: usize = 400;
    let mut lost_total = 0;
    for round in 0..rounds {
        let dir = data_dir(&format!("ctp-{round}"));
        let port = free_port();
        let b = Broker::start(&dir, port).await;
        fill(b.addr, CTP_IN, N, 16, "in").await;
        let committed = Arc::new(Mutex::new(HashSet::new()));
        let worker = tokio::spawn(transform(b.addr, committed.clone()));
        tokio::time::sleep(Duration::from_millis(20 + rng.below(300))).await;
        b.kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
        let b = Broker::start(&dir, port).await;
        let inputs: HashSet<u64> = drain_numbers(b.addr, CTP_IN).await.into_iter().collect();
        let outputs: HashSet<u64> = drain_numbers(b.addr, CTP_OUT).await.into_iter().collect();
        let committed = committed.lock().unwrap().clone();
        let lost: Vec<u64> = (0..N as u64)
            .filter(|i| !inputs.contains(i) && !outputs.contains(i))
            .collect();
        println!(
            "round {round}: {} committed with receipt, {} outputs, {} inputs left, {} lost",
            committed.len(),
            outputs.len(),
            inputs.len(),
            lost.len()
        );
        for i in &committed {
            assert!(
                outputs.contains(i) && !inputs.contains(i),
                "round {round}: receipted COMMIT {i} undone"
            );
        }
        lost_total += lost.len();
        assert!(
            lost.is_empty(),
            "round {round} (seed {seed}): inputs lost with their outputs: {lost:?}"
        );
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(lost_total, 0);
}

/// Issue 18, finding 7: three receipted persistent messages, kill -9, one byte of the
/// newest stored body flipped: redb fell back to the previous commit and the broker
/// started with 2 messages and no warning. Now the start stops with an error saying
/// commits are lost; `store.accept_rollback = true` starts with what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fell_back_to_an_earlier_commit_is_reported() {
    let dir = data_dir("rollback");
    let port = free_port();
    let b = Broker::start(&dir, port).await;
    let mut c = Conn::open(b.addr).await.unwrap();
    for i in 0..3 {
        let frame = format!(
            "SEND\ndestination:/queue/rb\npersistent:true\nreceipt:{i}\n\nrb-{i}-rollback-marker\0"
        );
        c.write.write_all(frame.as_bytes()).await.unwrap();
        assert_eq!(c.frame().await.unwrap().command, Command::Receipt);
    }
    drop(c);
    b.kill();
    let file = dir.join("stompbox.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let needle = b"rb-2-rollback-marker";
    let at = bytes
        .windows(needle.len())
        .rposition(|w| w == needle)
        .expect("the newest body is in the file");
    bytes[at + 10] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();

    let run = |extra: &[&str]| {
        Process::new(env!("CARGO_BIN_EXE_stompbox"))
            .args(extra)
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--tcp",
                &format!("127.0.0.1:{port}"),
                "--ws",
                "127.0.0.1:0",
                "--admin",
                "",
            ])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut refused = run(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = refused.kill();
            panic!("the broker started on a store that lost its last commit");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = refused.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("commit(s) are lost") && stderr.contains("store.accept_rollback = true"),
        "{stderr}"
    );
    // Accepted: it starts with what the store holds, and says so.
    let config = dir.with_extension("toml");
    std::fs::write(&config, "[store]\naccept_rollback = true\n").unwrap();
    let child = run(&["--config", config.to_str().unwrap()]);
    let b = Broker {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(b.addr).await.is_err() {
        assert!(Instant::now() < deadline, "stompbox did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = drain_numbers(b.addr, "/queue/rb").await;
    assert!(left.len() < 3, "{left:?}");
    drop(b);
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_dir_all(&dir);
}
