//! Broker-wide counters. Plain relaxed atomics: they are read for reports, never used
//! to make decisions, so no ordering is needed.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every part of the broker.
#[derive(Debug, Default)]
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
    /// Connections closed with an ERROR frame for a protocol violation.
    pub protocol_errors: AtomicU64,
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
    /// Microseconds spent committing, fsync included.
    pub store_commit_us: AtomicU64,
    /// Queue messages that expired before delivery (dead-lettered or discarded).
    pub expired: AtomicU64,
    /// Persistent messages loaded from the store at start.
    pub store_recovered: AtomicU64,
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
