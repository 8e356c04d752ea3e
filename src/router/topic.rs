//! Topics: every current subscriber gets every message. Nothing is kept for
//! subscribers that arrive later.
//!
//! Flow control instead of loss: a subscriber whose outbox is momentarily full does
//! not lose the message. The publisher waits for room — outside every lock, after
//! every other subscriber has its copy — for at most `topics.slow_consumer_grace_ms`.
//! A subscriber still full after the grace is the slow consumer: its outbox is marked
//! slow, the policy (`drop`, counted, or `disconnect`) applies to it, and no publisher
//! waits for it again until it has drained below half.

use std::sync::{Arc, Mutex};

use super::{DestStats, Message, Subscription};
use crate::config::SlowConsumerPolicy;
use crate::metrics::Metrics;

/// One `/topic/…` (or system topic, `/sys/…`) with at least one exact-name subscriber.
#[derive(Debug)]
pub struct Topic {
    /// The full destination name.
    pub name: String,
    subs: Mutex<Vec<Arc<Subscription>>>,
    /// Its counters (shared `other` ones past the label cap).
    pub stats: Arc<DestStats>,
}

impl Topic {
    pub(super) fn new(name: String, stats: Arc<DestStats>) -> Topic {
        Topic {
            name,
            subs: Mutex::new(Vec::new()),
            stats,
        }
    }

    /// Under this topic's lock, so that no publish on it reaches `sub` in between,
    /// hands `sub` the message `first` builds (see `Router::deliver_first`).
    pub(super) fn first(&self, sub: &Arc<Subscription>, first: impl FnOnce() -> Message) -> bool {
        let _publishes = self.lock();
        sub.deliver_now(&Arc::new(first()))
    }

    /// How many subscribe to it by its exact name.
    pub fn subscribers(&self) -> usize {
        self.lock().len()
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

    /// Delivers to every subscriber; those with a full outbox land in `blocked`.
    pub(super) fn publish(&self, message: &Arc<Message>, fanout: &mut Fanout) {
        for sub in self.lock().iter() {
            fanout.offer(sub, message);
        }
    }
}

/// One publish's fan-out: counts deliveries, applies the policy to subscribers already
/// known slow, and collects the ones worth waiting for.
pub(super) struct Fanout {
    pub policy: SlowConsumerPolicy,
    pub metrics: Arc<Metrics>,
    /// The published-to destination's counters.
    pub stats: Arc<DestStats>,
    pub delivered: usize,
    pub blocked: Vec<Arc<Subscription>>,
}

impl Fanout {
    /// Adds the deliveries made so far to the counters. A client's message also
    /// counts in the broker-wide totals and the latency histogram (one clock read for
    /// all of them); the broker's own (`/sys/…`) only in its topic's counters.
    pub(super) fn counted(&mut self, message: &Message, from_client: bool) {
        let n = std::mem::take(&mut self.delivered);
        Metrics::inc(&self.stats.published);
        Metrics::add(&self.stats.delivered, n);
        if n == 0 || !from_client {
            return;
        }
        Metrics::add(&self.metrics.messages_out, n);
        self.metrics
            .publish_to_deliver_seconds
            .observe_duration(message.published.elapsed(), n as u64);
    }

    /// One topic delivery attempt, under the destination's lock: never waits.
    pub(super) fn offer(&mut self, sub: &Arc<Subscription>, message: &Arc<Message>) {
        // A client-ack subscription whose window is full of unacknowledged messages
        // will not make room by reading: it gets the policy at once.
        if sub.window_full() {
            slow(sub, self.policy, &self.metrics, &self.stats);
        } else if sub.deliver_topic(message) {
            self.delivered += 1;
        } else if sub.outbox.is_slow() || sub.outbox.is_closed() {
            slow(sub, self.policy, &self.metrics, &self.stats);
        } else {
            self.blocked.push(sub.clone());
        }
    }
}

/// Ends a subscriber's connection as a slow consumer (counted once).
pub(super) fn disconnect(sub: &Subscription, metrics: &Metrics) {
    if !sub.kill.is_cancelled() {
        Metrics::inc(&metrics.slow_consumer_disconnects);
        sub.kill.cancel();
    }
}

/// The policy for a slow consumer: drop (counted) or disconnect.
fn slow(sub: &Subscription, policy: SlowConsumerPolicy, metrics: &Metrics, stats: &DestStats) {
    match policy {
        SlowConsumerPolicy::Drop => {
            Metrics::inc(&metrics.slow_consumer_drops);
            Metrics::inc(&stats.dropped);
        }
        SlowConsumerPolicy::Disconnect => disconnect(sub, metrics),
    }
}

/// The publisher's wait for subscribers whose outbox was full: holding no lock, all of
/// them until one `deadline` (the publish time plus the grace). One still full when
/// the deadline passes is marked slow and gets the policy; one marked slow meanwhile
/// (by another publisher) gets it at once.
pub(super) async fn wait_for_room(
    message: Arc<Message>,
    fanout: Fanout,
    deadline: tokio::time::Instant,
) {
    let Fanout {
        policy,
        metrics,
        stats,
        blocked,
        ..
    } = fanout;
    for sub in blocked {
        // An upper bound of the delivery's size: once it fits, the push succeeds
        // unless another publisher took the room first.
        let len = sub.delivery_len(&message);
        loop {
            if sub.is_detached() {
                break;
            }
            if sub.outbox.is_slow() {
                slow(&sub, policy, &metrics, &stats);
                break;
            }
            match tokio::time::timeout_at(deadline, sub.outbox.room_for(len)).await {
                Ok(true) => {
                    if sub.window_full() {
                        slow(&sub, policy, &metrics, &stats);
                    } else if sub.deliver_topic(&message) {
                        Metrics::inc(&metrics.messages_out);
                        Metrics::inc(&stats.delivered);
                        metrics
                            .publish_to_deliver_seconds
                            .observe_duration(message.published.elapsed(), 1);
                    } else {
                        // Another publisher took the room first, or it was detached.
                        continue;
                    }
                }
                Ok(false) => {}
                Err(_) => {
                    if sub.outbox.mark_slow() {
                        Metrics::inc(&metrics.slow_consumer_graces);
                        tracing::info!(
                            subscription = %sub.id,
                            session = %sub.session,
                            "slow consumer: outbox still full after the grace"
                        );
                    }
                    slow(&sub, policy, &metrics, &stats);
                }
            }
            break;
        }
    }
}
