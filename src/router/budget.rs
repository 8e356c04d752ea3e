//! A queue's byte budget (`queues.max_bytes`). Taken and given back once per message,
//! so it is an atomic counter rather than a semaphore (whose release takes a mutex
//! every time); producers that wait for room park on a `Notify`, woken only when
//! someone is waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes in use out of `max`.
#[derive(Debug)]
pub(super) struct Budget {
    used: AtomicUsize,
    max: usize,
    /// Producers waiting in [`Budget::take`].
    waiting: AtomicUsize,
    room: Notify,
}

/// `n` bytes of a budget, given back on drop.
#[derive(Debug)]
pub(super) struct BytePermit {
    budget: Arc<Budget>,
    n: usize,
}

impl Budget {
    pub(super) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            max,
            waiting: AtomicUsize::new(0),
            room: Notify::new(),
        })
    }

    /// Whether producers are waiting for bytes.
    pub(super) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Bytes free now.
    pub(super) fn available(&self) -> usize {
        self.max.saturating_sub(self.used.load(Ordering::SeqCst))
    }

    /// `n` bytes now, if they are free and no producer is waiting for bytes: a
    /// stream of small messages must not starve a large one that waits.
    pub(super) fn try_take(self: &Arc<Self>, n: usize) -> Option<BytePermit> {
        if self.has_waiters() {
            return None;
        }
        self.grab(n)
    }

    fn grab(self: &Arc<Self>, n: usize) -> Option<BytePermit> {
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used.checked_add(n).is_none_or(|total| total > self.max) {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    return Some(BytePermit {
                        budget: self.clone(),
                        n,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// `n` bytes, waiting for them (callers bound the wait; `n` must be at most `max`).
    pub(super) async fn take(self: &Arc<Self>, n: usize) -> BytePermit {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Registered (and counted) before looking: a release after this look sees
            // the count and wakes us; one before it left the bytes for us to see.
            if let Some(permit) = self.grab(n) {
                return permit;
            }
            room.await;
        }
    }
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Ordering::SeqCst);
        if self.budget.waiting.load(Ordering::SeqCst) > 0 {
            self.budget.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_up_to_max_and_wakes_a_waiter_on_release() {
        let budget = Budget::new(10);
        let a = budget.try_take(6).unwrap();
        assert!(budget.try_take(5).is_none());
        let b = budget.try_take(4).unwrap();
        assert_eq!(budget.available(), 0);
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(5).await.n }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "4 free, 5 wanted");
        drop(a);
        assert_eq!(waiter.await.unwrap(), 5);
        assert_eq!(budget.available(), 10);
        assert_eq!(budget.waiting.load(Ordering::SeqCst), 0);
    }
}
