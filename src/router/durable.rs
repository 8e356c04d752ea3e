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
//! Keys (see `session`): `rabbitmq/ID/DESTINATION` for RabbitMQ's `durable:true` +
//! `auto-delete:false` + `id`, `client/CLIENT-ID/NAME` for ActiveMQ Classic's
//! `activemq.subscriptionName` and Artemis's `durable-subscription-name`, both with
//! CONNECT's `client-id` (the two share one namespace, as JMS's client id and
//! subscription name do).

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
}

/// Every durable subscription, indexed for publishing as live ones are: by exact
/// topic, and the wildcard ones in a trie, so a publish costs its matches, not a
/// pattern match per durable subscription.
#[derive(Debug, Default)]
pub(super) struct Durables {
    by_key: HashMap<String, Arc<Durable>>,
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
        self.by_key.insert(durable.key.clone(), durable);
        indexed
    }

    pub fn remove(&mut self, key: &str) -> Option<Arc<Durable>> {
        let durable = self.by_key.remove(key)?;
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
