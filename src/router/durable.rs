//! Durable topic subscriptions: a subscription that keeps receiving while its
//! subscriber is away, and hands over the backlog when it comes back.
//!
//! Each one is a queue of its own, named `/durable/KEY` (a name no client can SEND
//! to), fed by every publish to its topic or pattern and consumed like any queue: its
//! subscriber attaches to it as a queue consumer, so acks, redelivery, dead-lettering,
//! `queues.max_bytes` with the overflow policy, and persistence are the queue's. A
//! publish shares one `Arc<Message>` between the topic's live subscribers and every
//! durable queue it feeds. With a store, the subscription itself is stored, and
//! persistent messages are written to each durable queue before they reach it.
//!
//! Keys (see `session::durable`): `OWNER/rabbitmq/CLIENT-ID/ID/DESTINATION` for
//! RabbitMQ's `durable:true` + `auto-delete:false` + `id`, `OWNER/client/CLIENT-ID/NAME`
//! for ActiveMQ Classic's `activemq.subscriptionName` and Artemis's
//! `durable-subscription-name`, both with CONNECT's `client-id`; `OWNER` is
//! `user:LOGIN` or `anonymous`, and each holds at most
//! `limits.max_durable_subscriptions_per_user` of them.

use std::collections::HashMap;
use std::sync::Arc;

use super::sublist::TooManyHashes;
use super::{Message, Pattern, Queue, Sublist, TOPIC};

/// Where durable queues live in the router's queue map.
pub(super) const PREFIX: &str = "/durable/";

/// One durable subscription.
#[derive(Debug)]
pub(super) struct Durable {
    pub key: String,
    /// The topic or pattern it subscribes to.
    pub destination: String,
    pub queue: Arc<Queue>,
    /// Since when no subscriber has been attached, as far as sweeps have seen (for
    /// `limits.durable_subscription_expiry_ms`).
    pub unattached_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Durable {
    pub fn new(key: String, destination: String, queue: Arc<Queue>) -> Durable {
        Durable {
            key,
            destination,
            queue,
            unattached_since: std::sync::Mutex::new(None),
        }
    }

    /// Its owner: what the key says before its first `/`.
    pub fn owner(&self) -> &str {
        owner_of(&self.key)
    }
}

/// The owner part of a durable key.
pub(super) fn owner_of(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

/// Every durable subscription, indexed for publishing as live ones are: by exact
/// topic, and the wildcard ones in a trie, so a publish costs its matches, not a
/// pattern match per durable subscription.
#[derive(Debug, Default)]
pub(super) struct Durables {
    by_key: HashMap<String, Arc<Durable>>,
    /// Durable subscriptions per owner.
    per_owner: HashMap<String, usize>,
    exact: HashMap<String, Vec<Arc<Durable>>>,
    patterns: Sublist<Durable>,
}

impl Durables {
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn get(&self, key: &str) -> Option<&Arc<Durable>> {
        self.by_key.get(key)
    }

    /// How many `owner` holds.
    pub fn owned_by(&self, owner: &str) -> usize {
        self.per_owner.get(owner).copied().unwrap_or(0)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Durable>> {
        self.by_key.values()
    }

    /// The wildcard index's size and what `pattern` would add to it.
    pub fn pattern_nodes(&self, pattern: &Pattern) -> Result<(usize, usize), TooManyHashes> {
        Ok((self.patterns.nodes(), self.patterns.cost(pattern)?))
    }

    /// Adds `durable`. One whose pattern has several `#` (stored before they were
    /// refused) is kept, so its backlog can be consumed or deleted, but fed nothing.
    pub fn insert(&mut self, durable: Arc<Durable>) -> Result<(), TooManyHashes> {
        let indexed = match Pattern::parse(&durable.destination[TOPIC.len()..]) {
            Some(p) => self.patterns.insert(&p, durable.clone()),
            None => {
                self.exact
                    .entry(durable.destination.clone())
                    .or_default()
                    .push(durable.clone());
                Ok(())
            }
        };
        *self
            .per_owner
            .entry(durable.owner().to_owned())
            .or_default() += 1;
        if let Some(old) = self.by_key.insert(durable.key.clone(), durable) {
            self.uncount(&old);
        }
        indexed
    }

    fn uncount(&mut self, durable: &Durable) {
        if let Some(n) = self.per_owner.get_mut(durable.owner()) {
            *n -= 1;
            if *n == 0 {
                self.per_owner.remove(durable.owner());
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Arc<Durable>> {
        let durable = self.by_key.remove(key)?;
        self.uncount(&durable);
        if let Some(p) = Pattern::parse(&durable.destination[TOPIC.len()..]) {
            self.patterns.remove(&p, &durable);
        }
        if let Some(list) = self.exact.get_mut(&durable.destination) {
            list.retain(|d| !Arc::ptr_eq(d, &durable));
            if list.is_empty() {
                self.exact.remove(&durable.destination);
            }
        }
        Some(durable)
    }

    /// The durable queues a publish to `message.destination` feeds.
    pub fn matching(&self, message: &Message) -> Vec<Arc<Queue>> {
        let name = &message.destination[TOPIC.len()..];
        let mut out: Vec<Arc<Queue>> = self
            .exact
            .get(&message.destination)
            .into_iter()
            .flatten()
            .map(|d| d.queue.clone())
            .collect();
        self.patterns
            .for_each_match(name, |d| out.push(d.queue.clone()));
        out
    }
}
