//! The broker-wide memory bound (`memory.high_watermark_bytes`).
//!
//! Everything a client can make the broker hold — queued messages, outboxes, open
//! transactions, partly read frames — is charged here while it is held. Each holder
//! keeps a [`Charge`] whose drop gives the bytes back, so nothing is forgotten on an
//! error path. Above the watermark the alarm is raised (logged, counted): SENDs wait
//! for it to clear, up to `queues.send_timeout_ms`, and are then refused with ERROR,
//! as RabbitMQ's memory alarm blocks publishers. Consumers, ACKs and everything that
//! frees memory carry on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// The gauge of held bytes and its watermark.
#[derive(Debug)]
pub struct Memory {
    used: AtomicUsize,
    high: usize,
    /// Wakes publishers waiting for the alarm to clear.
    cleared: Notify,
    metrics: Arc<Metrics>,
}

impl Memory {
    /// A gauge with `high` as its watermark.
    pub fn new(high: usize, metrics: Arc<Metrics>) -> Arc<Memory> {
        Arc::new(Memory {
            used: AtomicUsize::new(0),
            high,
            cleared: Notify::new(),
            metrics,
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the alarm is raised (held bytes above the watermark): publishers must
    /// wait.
    pub fn is_high(&self) -> bool {
        self.used() > self.high
    }

    /// Charges `n` bytes until the returned charge is dropped.
    pub fn charge(self: &Arc<Self>, n: usize) -> Charge {
        self.add(n);
        Charge {
            memory: self.clone(),
            n,
        }
    }

    // Each crossing of the watermark is seen by exactly one update (the one whose
    // before and after straddle it), so the alarm is logged, counted and cleared
    // exactly once per crossing, on any number of threads.
    fn add(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before <= self.high && before + n > self.high {
            Metrics::inc(&self.metrics.memory_alarms);
            tracing::warn!(
                used = before + n,
                high_watermark = self.high,
                "memory high watermark reached: publishers are paced"
            );
        }
    }

    fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.used.fetch_sub(n, Ordering::Relaxed);
        if before > self.high && before - n <= self.high {
            tracing::info!(used = before - n, "memory back below the high watermark");
            self.cleared.notify_waiters();
        }
    }

    /// Waits up to `timeout` for the alarm to clear; false if it did not.
    pub async fn wait_below(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let cleared = self.cleared.notified();
                tokio::pin!(cleared);
                cleared.as_mut().enable();
                if !self.is_high() {
                    return;
                }
                cleared.await;
            }
        };
        let ok = tokio::time::timeout(timeout, wait).await.is_ok();
        if !ok {
            Metrics::inc(&self.metrics.memory_refusals);
        }
        ok
    }
}

/// Bytes charged to a [`Memory`] while this is alive.
#[derive(Debug)]
pub struct Charge {
    memory: Arc<Memory>,
    n: usize,
}

impl Charge {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.n
    }

    /// Charges `n` bytes in total from now on (a buffer that grew or shrank).
    pub fn set(&mut self, n: usize) {
        if n > self.n {
            self.memory.add(n - self.n);
        } else {
            self.memory.sub(self.n - n);
        }
        self.n = n;
    }

    /// Charges `n` more bytes.
    pub fn grow(&mut self, n: usize) {
        self.set(self.n + n);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.memory.sub(self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_alarm_rises_above_the_watermark_and_clears_below() {
        let metrics = Arc::new(Metrics::default());
        let memory = Memory::new(100, metrics.clone());
        let a = memory.charge(60);
        assert!(!memory.is_high());
        let mut b = memory.charge(50);
        assert!(memory.is_high());
        assert_eq!(Metrics::get(&metrics.memory_alarms), 1);
        assert!(!memory.wait_below(Duration::from_millis(10)).await);
        assert_eq!(Metrics::get(&metrics.memory_refusals), 1);
        let waiter = {
            let memory = memory.clone();
            tokio::spawn(async move { memory.wait_below(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        b.set(10);
        assert!(waiter.await.unwrap());
        drop((a, b));
        assert_eq!(memory.used(), 0);
    }
}
