//! Topics: every current subscriber gets every message. Nothing is kept for
//! subscribers that arrive later.

use std::sync::{Arc, Mutex};

use super::{Message, Subscription};
use crate::config::SlowConsumerPolicy;
use crate::metrics::Metrics;

/// One `/topic/…` with at least one exact-name subscriber.
#[derive(Debug)]
pub struct Topic {
    /// The full destination name.
    pub name: String,
    subs: Mutex<Vec<Arc<Subscription>>>,
}

impl Topic {
    pub(super) fn new(name: String) -> Topic {
        Topic {
            name,
            subs: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Subscription>>> {
        self.subs.lock().expect("topic lock poisoned")
    }

    pub(super) fn add(&self, sub: Arc<Subscription>) {
        self.lock().push(sub);
    }

    /// Removes a subscriber; returns whether the topic is now empty.
    pub(super) fn remove(&self, sub: &Arc<Subscription>) -> bool {
        let mut subs = self.lock();
        subs.retain(|s| !Arc::ptr_eq(s, sub));
        subs.is_empty()
    }

    /// Delivers to every subscriber.
    pub(super) fn publish(
        &self,
        message: &Arc<Message>,
        policy: SlowConsumerPolicy,
        metrics: &Metrics,
    ) {
        let delivered = self
            .lock()
            .iter()
            .filter(|sub| deliver(sub, message, policy, metrics))
            .count();
        Metrics::add(&metrics.messages_out, delivered);
    }
}

/// One topic delivery. A subscriber whose outbox is full, or whose client-ack window is
/// full of unacknowledged messages, is a slow consumer and gets the configured policy;
/// the publisher and the other subscribers never wait for it. Returns whether it was
/// delivered (the caller counts, once per publish rather than per subscriber).
pub(super) fn deliver(
    sub: &Arc<Subscription>,
    message: &Arc<Message>,
    policy: SlowConsumerPolicy,
    metrics: &Metrics,
) -> bool {
    if !sub.window_full() && sub.deliver(message.clone(), 0, None, None).is_ok() {
        return true;
    }
    match policy {
        SlowConsumerPolicy::Drop => Metrics::inc(&metrics.slow_consumer_drops),
        SlowConsumerPolicy::Disconnect => {
            if !sub.kill.is_cancelled() {
                Metrics::inc(&metrics.slow_consumer_disconnects);
                sub.kill.cancel();
            }
        }
    }
    false
}
