//! Broker-wide counters and histograms. Plain relaxed atomics: they are read for
//! reports (the admin listener's `/metrics`, `/api/overview`, `/sys/stats`, the log at
//! shutdown), never used to make decisions, so no ordering is needed.
//!
//! Hot paths do not touch a shared counter per frame: the reader and the writer of a
//! connection count in locals and add them here once per batch (see [`FrameCounts`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::frame::Command;

/// Counters shared by every part of the broker.
#[derive(Debug)]
pub struct Metrics {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections currently open.
    pub connections_open: AtomicU64,
    /// SEND frames accepted (committed, for transactions).
    pub messages_in: AtomicU64,
    /// MESSAGE frames handed to outboxes.
    pub messages_out: AtomicU64,
    /// Topic messages dropped for a subscriber whose outbox was full.
    pub slow_consumer_drops: AtomicU64,
    /// Times a publisher waited a whole `topics.slow_consumer_grace_ms` for a full
    /// outbox in vain, marking that connection a slow consumer.
    pub slow_consumer_graces: AtomicU64,
    /// Connections closed because they did not keep up.
    pub slow_consumer_disconnects: AtomicU64,
    /// Queue messages delivered again after NACK or a consumer leaving.
    pub redeliveries: AtomicU64,
    /// Messages moved to a dead-letter queue.
    pub dead_letters: AtomicU64,
    /// Messages discarded because nobody could ever receive them (a temp queue whose
    /// owner is gone, or a full dead-letter queue).
    pub discarded: AtomicU64,
    /// Times the broker's held bytes rose above `memory.high_watermark_bytes`.
    pub memory_alarms: AtomicU64,
    /// SENDs refused because the memory alarm did not clear in time.
    pub memory_refusals: AtomicU64,
    /// Messages dropped from a full queue by `queues.overflow = "drop-oldest"`.
    pub overflow_drops: AtomicU64,
    /// Idle queues deleted after `queues.idle_delete_ms`.
    pub queues_deleted: AtomicU64,
    /// Store write transactions committed: one fsync each.
    pub store_commits: AtomicU64,
    /// Store operations (message writes, deletes, redelivery counts) committed.
    pub store_ops: AtomicU64,
    /// Queue messages that expired before delivery (dead-lettered or discarded).
    pub expired: AtomicU64,
    /// Persistent messages loaded from the store at start.
    pub store_recovered: AtomicU64,
    /// Store commits that failed (after one, persistent work is refused until a
    /// restart, and `/readyz` says not ready).
    pub store_failures: AtomicU64,
    /// Connections closed because the client sent nothing within its heart-beat
    /// interval (plus the grace).
    pub heartbeat_timeouts: AtomicU64,
    /// Frames received, by command ([`command_index`]).
    pub frames_in: [AtomicU64; COMMANDS],
    /// Bytes of the frames received (headers and body), by command.
    pub bytes_in: [AtomicU64; COMMANDS],
    /// Frames written, by command.
    pub frames_out: [AtomicU64; COMMANDS],
    /// Bytes of the frames written, by command.
    pub bytes_out: [AtomicU64; COMMANDS],
    /// Connections closed with an ERROR, by reason ([`ERROR_REASONS`]).
    pub errors: [AtomicU64; REASONS],
    /// Store operations per commit.
    pub store_batch: Histogram,
    /// Seconds per store commit, fsync included.
    pub store_commit_seconds: Histogram,
    /// Seconds from a SEND being accepted to its MESSAGE being handed to a subscriber's
    /// connection (its outbox): time spent waiting in a queue included, the socket
    /// write not.
    pub publish_to_deliver_seconds: Histogram,
}

/// Number of STOMP commands ([`Command`]).
pub const COMMANDS: usize = 15;

/// Every command, in [`command_index`] order.
pub const ALL_COMMANDS: [Command; COMMANDS] = [
    Command::Connect,
    Command::Stomp,
    Command::Connected,
    Command::Send,
    Command::Subscribe,
    Command::Unsubscribe,
    Command::Ack,
    Command::Nack,
    Command::Begin,
    Command::Commit,
    Command::Abort,
    Command::Disconnect,
    Command::Message,
    Command::Receipt,
    Command::Error,
];

/// A command's slot in the per-command counters.
pub fn command_index(c: Command) -> usize {
    c as usize
}

/// Number of ERROR reasons (`outbox::CloseReason`).
pub const REASONS: usize = 7;

/// The metric label of each close reason, in `CloseReason::metric_index` order.
pub const ERROR_REASONS: [&str; REASONS] = [
    "normal",
    "going_away",
    "protocol",
    "invalid_data",
    "policy",
    "too_big",
    "internal",
];

/// Frames and bytes counted locally by one connection's reader or writer, added to
/// the shared counters once per batch.
#[derive(Default)]
pub struct FrameCounts {
    frames: [u64; COMMANDS],
    bytes: [u64; COMMANDS],
    any: bool,
}

impl FrameCounts {
    /// Counts one frame.
    pub fn count(&mut self, c: Command, bytes: usize) {
        let i = command_index(c);
        self.frames[i] += 1;
        self.bytes[i] += bytes as u64;
        self.any = true;
    }

    /// Adds what was counted to `frames`/`bytes` and starts again.
    pub fn flush(&mut self, frames: &[AtomicU64; COMMANDS], bytes: &[AtomicU64; COMMANDS]) {
        if !std::mem::take(&mut self.any) {
            return;
        }
        for i in 0..COMMANDS {
            let n = std::mem::take(&mut self.frames[i]);
            if n > 0 {
                frames[i].fetch_add(n, Ordering::Relaxed);
                bytes[i].fetch_add(std::mem::take(&mut self.bytes[i]), Ordering::Relaxed);
            }
        }
    }
}

/// A Prometheus-style histogram with fixed buckets: a count per bucket (not
/// cumulative; the exporter sums them), the sum and the count.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds, ascending; the last bucket (`+Inf`) is implicit.
    pub bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    /// The sum of observations, in millionths of the unit (fixed point, so it can
    /// be an atomic integer).
    sum_micros: AtomicU64,
}

/// Latency bounds in seconds: 50 µs to 10 s.
pub const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Batch-size bounds: powers of two up to 4096.
pub const SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

impl Histogram {
    /// An empty histogram with these bucket bounds.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records `n` observations of `value`.
    pub fn observe_n(&self, value: f64, n: u64) {
        if n == 0 {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        let micros = (value * 1e6) as u64;
        self.sum_micros
            .fetch_add(micros.saturating_mul(n), Ordering::Relaxed);
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        self.observe_n(value, 1);
    }

    /// Records one duration, in seconds.
    pub fn observe_duration(&self, d: Duration, n: u64) {
        self.observe_n(d.as_secs_f64(), n);
    }

    /// Cumulative counts per bound (the last is `+Inf`, the total count) and the sum.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_total: AtomicU64::default(),
            connections_open: AtomicU64::default(),
            messages_in: AtomicU64::default(),
            messages_out: AtomicU64::default(),
            slow_consumer_drops: AtomicU64::default(),
            slow_consumer_graces: AtomicU64::default(),
            slow_consumer_disconnects: AtomicU64::default(),
            redeliveries: AtomicU64::default(),
            dead_letters: AtomicU64::default(),
            discarded: AtomicU64::default(),
            memory_alarms: AtomicU64::default(),
            memory_refusals: AtomicU64::default(),
            overflow_drops: AtomicU64::default(),
            queues_deleted: AtomicU64::default(),
            store_commits: AtomicU64::default(),
            store_ops: AtomicU64::default(),
            expired: AtomicU64::default(),
            store_recovered: AtomicU64::default(),
            store_failures: AtomicU64::default(),
            heartbeat_timeouts: AtomicU64::default(),
            frames_in: Default::default(),
            bytes_in: Default::default(),
            frames_out: Default::default(),
            bytes_out: Default::default(),
            errors: Default::default(),
            store_batch: Histogram::new(SIZES),
            store_commit_seconds: Histogram::new(SECONDS),
            publish_to_deliver_seconds: Histogram::new(SECONDS),
        }
    }
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_indexes_follow_the_list() {
        for (i, c) in ALL_COMMANDS.iter().enumerate() {
            assert_eq!(command_index(*c), i, "{c:?}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe(1.0);
        h.observe_n(1.5, 2);
        h.observe(9.0);
        let (counts, sum) = h.snapshot();
        assert_eq!(counts, vec![1, 3, 4]);
        assert!((sum - 13.0).abs() < 1e-9);
    }

    #[test]
    fn frame_counts_add_up_once_per_flush() {
        let m = Metrics::default();
        let mut c = FrameCounts::default();
        c.count(Command::Send, 10);
        c.count(Command::Send, 5);
        c.count(Command::Ack, 1);
        c.flush(&m.frames_in, &m.bytes_in);
        c.flush(&m.frames_in, &m.bytes_in);
        assert_eq!(Metrics::get(&m.frames_in[command_index(Command::Send)]), 2);
        assert_eq!(Metrics::get(&m.bytes_in[command_index(Command::Send)]), 15);
        assert_eq!(Metrics::get(&m.frames_in[command_index(Command::Ack)]), 1);
    }
}
