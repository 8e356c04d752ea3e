//! Delayed delivery: one timer for the whole broker that releases delayed queue
//! messages when they are due. Each queue keeps its own delayed messages; the schedule
//! only knows when to wake which queue, so a queue deleted meanwhile costs nothing.

use std::collections::BTreeMap;
use std::sync::{Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Queue;

/// Milliseconds since the Unix epoch: the clock `expires` and delays are given in.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// When to wake which queue.
#[derive(Debug, Default)]
pub struct Schedule {
    due: Mutex<BTreeMap<u64, Vec<Weak<Queue>>>>,
    changed: Notify,
}

impl Schedule {
    /// Wakes `queue` at `at_ms` (it may have been woken for it already: releasing is
    /// idempotent).
    pub(super) fn add(&self, at_ms: u64, queue: Weak<Queue>) {
        let mut due = self.due.lock().expect("schedule lock poisoned");
        let earliest = due
            .first_key_value()
            .is_none_or(|(first, _)| at_ms < *first);
        let wakes = due.entry(at_ms).or_default();
        if !wakes.iter().any(|w| w.ptr_eq(&queue)) {
            wakes.push(queue);
        }
        drop(due);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Releases due messages until `stop`.
    pub(super) async fn run(&self, stop: CancellationToken) {
        loop {
            let next = self
                .due
                .lock()
                .expect("schedule lock poisoned")
                .first_key_value()
                .map(|(at, _)| *at);
            let wait = match next {
                Some(at) => Duration::from_millis(at.saturating_sub(now_ms())),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.changed.notified() => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            let now = now_ms();
            let woken: Vec<Weak<Queue>> = {
                let mut due = self.due.lock().expect("schedule lock poisoned");
                let later = due.split_off(&(now + 1));
                std::mem::replace(&mut *due, later)
                    .into_values()
                    .flatten()
                    .collect()
            };
            for queue in woken {
                if let Some(queue) = queue.upgrade() {
                    queue.release_due(now);
                }
            }
        }
    }
}
