//! Per-destination counters, for `/metrics`, the admin API and `/sys/stats`.
//!
//! Each queue and topic holds an `Arc<DestStats>` taken when it is created (a queue
//! by its first use, a topic by its first exact-name subscriber), so the message path
//! adds to its own destination's counters without a lookup. The index gives a
//! destination its own counters only while fewer than `admin.max_destination_labels`
//! names have them; later names, every temp queue (whose names are per connection)
//! and the system topics share the `other` counters. Publishing to a topic nobody
//! subscribes to takes no label. A name keeps its
//! counters for the broker's life, across the deletion and re-creation of its
//! queue, so every labelled series only ever grows, as Prometheus counters must.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// One destination's counters (or the shared `other` ones).
#[derive(Debug, Default)]
pub struct DestStats {
    /// Messages accepted for it.
    pub published: AtomicU64,
    /// Deliveries handed to subscribers.
    pub delivered: AtomicU64,
    /// Deliveries settled by ACK.
    pub acked: AtomicU64,
    /// Deliveries refused by NACK.
    pub nacked: AtomicU64,
    /// Queue messages delivered again.
    pub redelivered: AtomicU64,
    /// Queue messages that expired before delivery.
    pub expired: AtomicU64,
    /// Messages moved from it to a dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Messages dropped: a slow topic subscriber's, a full queue's oldest
    /// (`drop-oldest`), or one nobody could ever receive.
    pub dropped: AtomicU64,
}

/// The label of the shared counters.
pub const OTHER: &str = "other";

/// Names to counters, bounded (see the module docs).
#[derive(Debug)]
pub struct StatsIndex {
    max: usize,
    named: Mutex<HashMap<String, Arc<DestStats>>>,
    other: Arc<DestStats>,
}

impl StatsIndex {
    /// An index giving at most `max` names counters of their own.
    pub fn new(max: usize) -> StatsIndex {
        StatsIndex {
            max,
            named: Mutex::new(HashMap::new()),
            other: Arc::new(DestStats::default()),
        }
    }

    /// The counters of a queue or topic being created: its own if it has or can get
    /// them, else `other`. Temp queues (their names are per connection) and system
    /// topics share `other`.
    pub fn label(&self, name: &str) -> Arc<DestStats> {
        if name.starts_with("/temp-queue/") || name.starts_with("/sys/") {
            return self.other.clone();
        }
        let mut named = self.named.lock().expect("stats index lock poisoned");
        if let Some(s) = named.get(name) {
            return s.clone();
        }
        if named.len() >= self.max {
            return self.other.clone();
        }
        let s = Arc::new(DestStats::default());
        named.insert(name.to_owned(), s.clone());
        s
    }

    /// The counters `name` has already, or `other`: for a publish to a topic nobody
    /// subscribes to, which must not take a label (anyone can invent topic names).
    pub fn existing(&self, name: &str) -> Arc<DestStats> {
        self.named
            .lock()
            .expect("stats index lock poisoned")
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.other.clone())
    }

    /// Whether `stats` are the shared `other` counters.
    pub fn is_other(&self, stats: &Arc<DestStats>) -> bool {
        Arc::ptr_eq(stats, &self.other)
    }

    /// Every labelled destination's counters, then `other`'s, sorted by name.
    pub fn all(&self) -> Vec<(String, Arc<DestStats>)> {
        let mut v: Vec<_> = self
            .named
            .lock()
            .expect("stats index lock poisoned")
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.push((OTHER.to_owned(), self.other.clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_the_cap_and_temp_queues_share_other() {
        let index = StatsIndex::new(2);
        assert!(index.is_other(&index.existing("/queue/a")), "no label yet");
        let a = index.label("/queue/a");
        assert!(Arc::ptr_eq(&a, &index.label("/queue/a")));
        assert!(Arc::ptr_eq(&a, &index.existing("/queue/a")));
        assert!(index.is_other(&index.label("/sys/stats")));
        let b = index.label("/topic/b");
        assert!(!index.is_other(&a) && !index.is_other(&b));
        assert!(index.is_other(&index.label("/queue/c")));
        assert!(index.is_other(&index.label("/temp-queue/s/x")));
        // A labelled name keeps its counters after the cap is reached.
        assert!(Arc::ptr_eq(&a, &index.label("/queue/a")));
        let names: Vec<String> = index.all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["/queue/a", "/topic/b", "other"]);
    }
}
