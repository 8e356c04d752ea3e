//! The session fuzz harness, shared by `fuzz/fuzz_targets/session.rs` (cargo-fuzz) and
//! `tests/fuzz_regressions.rs` (stable `cargo test` replays every saved input).
//!
//! An input is a little program: each step's first byte picks a frame (SEND,
//! SUBSCRIBE, ACK, a transaction, raw garbage, ...) and the next bytes pick its
//! headers from small dictionaries that make steps meet — the same queues, topics,
//! wildcards, subscription ids, ack ids and transactions. The frames go to a real
//! broker over a real socket after a CONNECT; the harness then asks for a
//! DISCONNECT receipt and reads until the connection ends. The broker must not panic
//! (the fuzz target aborts on any panic, a broker task's included) and must end the
//! connection in time: every wait it may enter is bounded by the config below.

use std::net::SocketAddr;
use std::time::Duration;

use stompbox::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A config whose every wait is short, and whose limits small inputs reach.
pub fn config() -> Config {
    let mut c = Config::default();
    c.listeners.tcp = "127.0.0.1:0".parse().unwrap();
    c.listeners.ws = "127.0.0.1:0".parse().unwrap();
    c.store.data_dir = String::new();
    c.admin.listen = String::new();
    c.limits.max_body_bytes = 4096;
    c.limits.max_headers = 16;
    c.limits.max_header_line_bytes = 256;
    c.limits.max_tx_frames = 8;
    c.limits.max_tx_bytes = 2048;
    c.limits.max_transactions = 2;
    c.limits.max_subscriptions = 8;
    c.limits.max_wildcard_subscriptions = 2;
    c.limits.max_queues_per_connection = 6;
    c.limits.max_held_frames = 4;
    c.limits.frame_timeout_ms = 100;
    c.limits.linger_ms = 50;
    c.queues.max_depth = 4;
    c.queues.max_bytes = 512;
    c.queues.send_timeout_ms = 30;
    c.queues.max_prefetch = 3;
    c.queues.max_redeliveries = 1;
    c.queues.idle_delete_ms = 50;
    c.topics.slow_consumer_grace_ms = 30;
    c.outbox.max_frames = 8;
    c.outbox.max_bytes = 2048;
    c.memory.high_watermark_bytes = 64 * 1024;
    c
}

const DESTINATIONS: [&str; 10] = [
    "/queue/a",
    "/queue/b",
    "/queue/DLQ.a",
    "/topic/t",
    "/topic/t.x",
    "/topic/t.*",
    "/topic/#",
    "/topic/*.#.x",
    "/temp-queue/r",
    "/nowhere",
];
const ACKS: [&str; 4] = ["auto", "client", "client-individual", "bogus"];
const IDS: [&str; 3] = ["0", "1", "2"];
const TXS: [&str; 2] = ["t1", "t2"];
const PREFETCH: [&str; 4] = ["1", "2", "18446744073709551615", "0"];

/// Reads input bytes as choices.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn pick<'t>(&mut self, table: &[&'t str]) -> &'t str {
        table[usize::from(self.byte().unwrap_or(0)) % table.len()]
    }
    /// Sometimes a header with a value from `table`, sometimes not.
    fn maybe_pick(&mut self, name: &str, table: &[&str], out: &mut String) {
        let value = self.pick(table);
        self.maybe(name, value, out);
    }

    /// Sometimes a header, sometimes not.
    fn maybe(&mut self, name: &str, value: &str, out: &mut String) {
        if !self.byte().unwrap_or(0).is_multiple_of(4) {
            out.push_str(&format!("{name}:{value}\n"));
        }
    }
}

/// The wire bytes an input stands for (after CONNECT, before the final DISCONNECT).
pub fn frames(data: &[u8]) -> Vec<u8> {
    let mut c = Choices(data);
    let mut wire = Vec::new();
    let mut step = 0;
    while let Some(op) = c.byte() {
        step += 1;
        let mut h = String::new();
        let (command, body): (&str, Vec<u8>) = match op % 13 {
            0 | 1 => {
                c.maybe_pick("destination", &DESTINATIONS, &mut h);
                c.maybe_pick("transaction", &TXS, &mut h);
                c.maybe("reply-to", "/temp-queue/r", &mut h);
                c.maybe("persistent", "true", &mut h);
                let len = usize::from(c.byte().unwrap_or(0)) * 4;
                ("SEND", vec![b'x'; len])
            }
            2 | 3 => {
                c.maybe_pick("destination", &DESTINATIONS, &mut h);
                c.maybe_pick("id", &IDS, &mut h);
                c.maybe_pick("ack", &ACKS, &mut h);
                c.maybe_pick("prefetch-count", &PREFETCH, &mut h);
                ("SUBSCRIBE", Vec::new())
            }
            4 => {
                c.maybe_pick("id", &IDS, &mut h);
                ("UNSUBSCRIBE", Vec::new())
            }
            5 | 6 => {
                let id = format!(
                    "{}-{}",
                    c.byte().unwrap_or(0) % 4,
                    c.byte().unwrap_or(0) % 8
                );
                c.maybe("id", &id, &mut h);
                c.maybe_pick("transaction", &TXS, &mut h);
                (if op % 13 == 5 { "ACK" } else { "NACK" }, Vec::new())
            }
            7 => {
                c.maybe_pick("transaction", &TXS, &mut h);
                ("BEGIN", Vec::new())
            }
            8 => {
                c.maybe_pick("transaction", &TXS, &mut h);
                ("COMMIT", Vec::new())
            }
            9 => {
                c.maybe_pick("transaction", &TXS, &mut h);
                ("ABORT", Vec::new())
            }
            10 => {
                // Raw bytes: garbage, half frames, heart-beats.
                let len = usize::from(c.byte().unwrap_or(0) % 32);
                let raw: Vec<u8> = (0..len).map(|_| c.byte().unwrap_or(b'\n')).collect();
                wire.extend_from_slice(&raw);
                continue;
            }
            11 => ("CONNECT", Vec::new()),
            _ => {
                wire.push(b'\n');
                continue;
            }
        };
        c.maybe("receipt", &format!("r{step}"), &mut h);
        wire.extend_from_slice(format!("{command}\n{h}\n").as_bytes());
        wire.extend_from_slice(&body);
        wire.push(0);
    }
    wire
}

/// Plays one input against the broker at `addr`; panics if the connection does not
/// end in time.
pub async fn run(addr: SocketAddr, data: &[u8]) {
    let mut s = TcpStream::connect(addr).await.expect("broker accepts");
    let mut wire = b"CONNECT\naccept-version:1.0,1.1,1.2\nheart-beat:0,0\n\n\0".to_vec();
    wire.extend(frames(data));
    wire.extend_from_slice(b"DISCONNECT\nreceipt:end\n\n\0");
    // Write and read at once: the broker may stop reading until we read.
    let (mut r, mut w) = s.split();
    let write = async {
        let _ = w.write_all(&wire).await;
    };
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let both = async { tokio::join!(write, read) };
    // Every wait the broker may enter is bounded (send timeout, grace, frame
    // timeout, linger); a connection still open after this is a hang.
    tokio::time::timeout(Duration::from_secs(5), both)
        .await
        .expect("the broker ended the connection in time");
}
