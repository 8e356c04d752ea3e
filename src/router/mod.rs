//! The destination router: maps names to destinations, creating them on first use.
//!
//! - `/queue/NAME`: one consumer per message, kept until consumed ([`Queue`]).
//! - `/topic/NAME`: every current subscriber ([`Topic`]); subscriptions may use
//!   wildcards ([`Pattern`]). A topic exists only while it has subscribers, so a SEND to
//!   a fresh name allocates nothing.
//! - `/temp-queue/SESSION/NAME`: a queue private to the connection SESSION (only it may
//!   subscribe), removed when that connection closes. Sessions translate the short form
//!   `/temp-queue/NAME` that clients use into this routable form.
//!
//! The maps are behind `RwLock`s held only to find or insert an `Arc`; every
//! destination has its own mutex. Nothing here awaits while holding a lock: the only
//! await, for queue depth, happens before the queue's lock is taken.

mod budget;
mod delivery;
mod durable;
mod lifecycle;
mod message;
mod pattern;
mod publish;
mod queue;
mod schedule;
mod stats;
mod sublist;
mod subscription;
mod timing;
mod topic;

pub use delivery::{AckRef, Link, LinkGuard};
pub use lifecycle::Quota;
pub use message::Message;
pub use pattern::Pattern;
pub use publish::is_reserved;
pub use queue::{Permit, Queue};
pub use schedule::now_ms;
pub use stats::{DestStats, OTHER, StatsIndex};
pub use sublist::Sublist;
pub use subscription::{AckMode, Subscription, Undelivered};
pub use topic::Topic;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use thiserror::Error;

use crate::config::{Config, OverflowPolicy, SlowConsumerPolicy};
use crate::frame::Headers;
use crate::memory::Memory;
use crate::metrics::Metrics;
use crate::store::{GroupCommit, Op, Record, RecordError, StoreError, StoredQueue};

/// Why the router refused a SEND or SUBSCRIBE; the text becomes the ERROR `message`.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RouteError {
    /// Not `/queue/…`, `/topic/…` or `/temp-queue/…`, or an empty name.
    #[error("unsupported destination {0:?}: use /queue/NAME, /topic/NAME or /temp-queue/NAME")]
    BadDestination(String),
    /// A `/sys/…` destination: only the broker publishes there.
    #[error("{0} is a system destination: only the broker publishes there")]
    SystemDestination(String),
    /// The queue stayed full for `queues.send_timeout_ms`.
    #[error("queue {0} is full")]
    QueueFull(String),
    /// `limits.max_queues` queues exist already.
    #[error("too many queues (limit {0})")]
    TooManyQueues(usize),
    /// A topic name or pattern of more than `limits.max_destination_words` words.
    #[error("destination {0:?} has too many words (limit {1})")]
    TooManyWords(String, usize),
    /// The connection created `limits.max_queues_per_connection` queues already.
    #[error("this connection created too many queues (limit {0})")]
    TooManyQueuesForConnection(usize),
    /// A message larger than a whole queue's `queues.max_bytes`.
    #[error("message too large for queue {0} (queues.max_bytes {1})")]
    TooLargeForQueue(String, usize),
    /// The memory alarm did not clear within `queues.send_timeout_ms`.
    #[error("broker memory is above its high watermark: message refused")]
    MemoryHigh,
    /// A SUBSCRIBE to another connection's temp queue.
    #[error("temp queue {0} belongs to another connection")]
    NotOwner(String),
    /// A wildcard pattern with several `#`: the index could not bound its cost.
    #[error("pattern {0:?} has more than one # (at most one per pattern)")]
    TooManyHashes(String),
    /// The wildcard index holds `limits.max_wildcard_words` words already.
    #[error("too many wildcard subscription words in the broker (limit {0})")]
    WildcardIndexFull(usize),
    /// An expiry or delay header that is not a time.
    #[error("invalid {header} header {value:?}: expected milliseconds as a non-negative integer")]
    BadHeader {
        /// The header.
        header: &'static str,
        /// Its value.
        value: String,
    },
    /// A persistent message could not be written to the store: it was not accepted.
    #[error("persistent message not stored: {0}")]
    Store(String),
    /// `limits.max_durable_subscriptions` exist already.
    #[error("too many durable subscriptions (limit {0})")]
    TooManyDurables(usize),
    /// This user holds `limits.max_durable_subscriptions_per_user` already.
    #[error(
        "you have too many durable subscriptions (limit {0}): unsubscribe one with its durable headers"
    )]
    TooManyDurablesForUser(usize),
}

/// A SEND waiting for room: in a full queue (at most `queues.send_timeout_ms`, then
/// an error), or in topic subscribers' full outboxes (at most
/// `topics.slow_consumer_grace_ms`, then the slow-consumer policy).
pub type Wait = Pin<Box<dyn Future<Output = Result<(), RouteError>> + Send>>;

/// Where a message will go, with room taken in its queue when it is one.
#[derive(Debug)]
pub enum Reservation {
    /// A topic: nothing to reserve.
    Topic,
    /// A queue, and a depth permit once there is room.
    Queue {
        /// The queue.
        queue: Arc<Queue>,
        /// Room for the message; `None` while the queue is full.
        permit: Option<Permit>,
        /// The message's size.
        size: usize,
        /// How long [`Reservation::fill`] waits for room.
        timeout: Duration,
    },
    /// A temp queue whose owner is gone: the message is discarded (counted).
    Nowhere,
}

impl Reservation {
    /// Whether the message can be handed on without waiting.
    pub fn is_ready(&self) -> bool {
        !matches!(self, Reservation::Queue { permit: None, .. })
    }

    /// Takes room in a full queue now by its drop-oldest policy, if it has one.
    pub fn evict(&mut self) {
        if let Reservation::Queue {
            queue,
            permit: permit @ None,
            size,
            ..
        } = self
        {
            *permit = queue.try_reserve(*size, true);
        }
    }

    /// Waits (up to `queues.send_timeout_ms`) for room in a full queue.
    pub async fn fill(&mut self) -> Result<(), RouteError> {
        if let Reservation::Queue {
            queue,
            permit: permit @ None,
            size,
            timeout,
        } = self
        {
            *permit = Some(queue.reserve(*size, *timeout).await?);
        }
        Ok(())
    }
}

/// What a subscription is attached to.
#[derive(Clone, Debug)]
pub enum Target {
    /// A queue or temp queue.
    Queue(Arc<Queue>),
    /// An exact-name topic.
    Topic(Arc<Topic>),
    /// A wildcard topic subscription, indexed under its pattern.
    Wildcard(Pattern),
}

/// Router settings taken from the config.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// `[queues]`.
    pub max_depth: usize,
    /// `queues.max_bytes`.
    pub max_bytes: usize,
    /// `queues.overflow`.
    pub overflow: OverflowPolicy,
    /// `queues.idle_delete_ms` (zero: never).
    pub idle_delete: Duration,
    /// `memory.high_watermark_bytes`.
    pub high_watermark: usize,
    /// `queues.send_timeout_ms`.
    pub send_timeout: Duration,
    /// `queues.max_redeliveries`.
    pub max_redeliveries: u32,
    /// `queues.dead_letter_prefix`.
    pub dead_letter_prefix: String,
    /// `topics.slow_consumer`.
    pub slow_consumer: SlowConsumerPolicy,
    /// `topics.slow_consumer_grace_ms`.
    pub slow_consumer_grace: Duration,
    /// `limits.max_queues`.
    pub max_queues: usize,
    /// `limits.max_destination_words`.
    pub max_destination_words: usize,
    /// `limits.max_wildcard_words`.
    pub max_wildcard_words: usize,
    /// `limits.max_durable_subscriptions_per_user`.
    pub max_durable_subscriptions_per_user: usize,
    /// `limits.durable_subscription_expiry_ms` (zero: never).
    pub durable_expiry: Duration,
    /// `limits.max_queues_per_connection`.
    pub max_queues_per_connection: usize,
    /// `queues.persistent_by_default`.
    pub persistent_by_default: bool,
    /// `limits.max_durable_subscriptions`.
    pub max_durable_subscriptions: usize,
    /// `queues.message_ttl_ms`.
    pub message_ttl_ms: u64,
    /// `[[queues.policies]]`, their patterns parsed.
    pub policies: Vec<Policy>,
    /// `admin.max_destination_labels`.
    pub max_destination_labels: usize,
    /// Queues an ACL rule names exactly: never deleted as idle, since a producer
    /// granted `write` but not `create` could not bring one back.
    pub named_by_acls: std::collections::HashSet<String>,
}

/// One `[[queues.policies]]` entry.
#[derive(Clone, Debug)]
pub struct Policy {
    /// A wildcard pattern, or `None` for an exact name.
    pattern: Option<Pattern>,
    exact: String,
    message_ttl_ms: Option<u64>,
    persistent_by_default: Option<bool>,
}

impl Policy {
    fn matches(&self, name: &str) -> bool {
        match &self.pattern {
            Some(p) => p.matches(name),
            None => self.exact == name,
        }
    }
}

impl RouterConfig {
    /// From the `[queues]`, `[topics]` and `[limits]` tables.
    pub fn new(config: &Config) -> Self {
        let queues = &config.queues;
        let named_by_acls = config
            .auth
            .acls
            .iter()
            .flat_map(|r| r.read.iter().chain(&r.write).chain(&r.create))
            .filter(|p| {
                p.strip_prefix("/queue/")
                    .is_some_and(|name| Pattern::parse(name).is_none())
            })
            .cloned()
            .collect();
        RouterConfig {
            named_by_acls,
            max_depth: queues.max_depth,
            max_bytes: queues.max_bytes,
            overflow: queues.overflow,
            idle_delete: Duration::from_millis(queues.idle_delete_ms),
            high_watermark: config.memory.high_watermark_bytes,
            send_timeout: Duration::from_millis(queues.send_timeout_ms),
            max_redeliveries: queues.max_redeliveries,
            dead_letter_prefix: queues.dead_letter_prefix.clone(),
            slow_consumer: config.topics.slow_consumer,
            slow_consumer_grace: Duration::from_millis(config.topics.slow_consumer_grace_ms),
            max_queues: config.limits.max_queues,
            max_destination_words: config.limits.max_destination_words,
            max_wildcard_words: config.limits.max_wildcard_words,
            max_durable_subscriptions_per_user: config.limits.max_durable_subscriptions_per_user,
            durable_expiry: Duration::from_millis(config.limits.durable_subscription_expiry_ms),
            max_queues_per_connection: config.limits.max_queues_per_connection,
            persistent_by_default: queues.persistent_by_default,
            max_durable_subscriptions: config.limits.max_durable_subscriptions,
            message_ttl_ms: queues.message_ttl_ms,
            policies: queues
                .policies
                .iter()
                .map(|p| Policy {
                    pattern: Pattern::parse(&p.pattern),
                    exact: p.pattern.clone(),
                    message_ttl_ms: p.message_ttl_ms,
                    persistent_by_default: p.persistent_by_default,
                })
                .collect(),
            max_destination_labels: config.admin.max_destination_labels,
        }
    }
}

/// The shared state behind [`Router`] handles.
#[derive(Debug)]
pub struct RouterInner {
    config: RouterConfig,
    metrics: Arc<Metrics>,
    memory: Arc<Memory>,
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    wildcards: RwLock<Sublist>,
    /// Random per broker run, so message ids never repeat across restarts in practice.
    id_prefix: String,
    next_id: AtomicU64,
    /// Where persistent messages go; `None` without `store.data_dir`.
    store: Option<GroupCommit>,
    /// The next queue id in the store.
    next_queue_id: AtomicU64,
    /// When to release delayed messages.
    schedule: schedule::Schedule,
    /// Durable topic subscriptions.
    durables: RwLock<durable::Durables>,
    /// Per-destination counters.
    stats: StatsIndex,
}

/// A cheap, cloneable handle to the router.
#[derive(Clone, Debug)]
pub struct Router {
    inner: Arc<RouterInner>,
}

const TOPIC: &str = "/topic/";

enum Kind {
    Queue,
    Topic,
    TempQueue,
    /// `/sys/…`: topics the broker itself publishes on (`/sys/stats`, presence),
    /// subscribed to by exact name only.
    System,
}

/// The prefix of the broker's own topics.
pub const SYSTEM: &str = "/sys/";

fn classify(destination: &str) -> Result<Kind, RouteError> {
    let bad = || RouteError::BadDestination(destination.to_owned());
    // Control characters (an escaped LF from a 1.1+ client) would forge headers in the
    // frames of 1.0 subscribers, who have no escapes.
    let nonempty = |rest: &str| {
        if rest.is_empty() || rest.chars().any(char::is_control) {
            Err(bad())
        } else {
            Ok(())
        }
    };
    if let Some(rest) = destination.strip_prefix("/queue/") {
        nonempty(rest)?;
        Ok(Kind::Queue)
    } else if let Some(rest) = destination.strip_prefix(TOPIC) {
        nonempty(rest)?;
        Ok(Kind::Topic)
    } else if let Some(rest) = destination.strip_prefix("/temp-queue/") {
        nonempty(rest)?;
        Ok(Kind::TempQueue)
    } else if let Some(rest) = destination.strip_prefix(SYSTEM) {
        nonempty(rest)?;
        Ok(Kind::System)
    } else {
        Err(bad())
    }
}

/// The owning session of a routable temp-queue name `/temp-queue/SESSION/NAME`.
fn temp_owner(destination: &str) -> Option<&str> {
    let rest = destination.strip_prefix("/temp-queue/")?;
    rest.split_once('/').map(|(owner, _)| owner)
}

impl RouterInner {
    /// [`classify`], with topic names held to `limits.max_destination_words` words: the
    /// words of every publish are walked through the wildcard index.
    fn classify(&self, destination: &str) -> Result<Kind, RouteError> {
        let kind = classify(destination)?;
        if matches!(kind, Kind::Topic) {
            let max = self.config.max_destination_words;
            if destination[TOPIC.len()..].split('.').nth(max).is_some() {
                return Err(RouteError::TooManyWords(destination.to_owned(), max));
            }
        }
        Ok(kind)
    }

    /// Whether a wildcard subscription to `destination` may join an index of `nodes`
    /// nodes to which it adds `cost`: one `#` at most, and the index within
    /// `limits.max_wildcard_words` (the most a publish can visit).
    fn check_pattern(
        &self,
        destination: &str,
        nodes: usize,
        cost: Result<usize, sublist::TooManyHashes>,
    ) -> Result<(), RouteError> {
        let cost = cost.map_err(|_| RouteError::TooManyHashes(destination.to_owned()))?;
        let max = self.config.max_wildcard_words;
        if cost > 0 && nodes + cost > max {
            return Err(RouteError::WildcardIndexFull(max));
        }
        Ok(())
    }

    fn is_dead_letter_queue(&self, name: &str) -> bool {
        name.strip_prefix("/queue/")
            .is_some_and(|n| n.starts_with(&self.config.dead_letter_prefix))
    }

    /// The queue `name`, created on first use unless `limits.max_queues` exist already:
    /// clients create queues just by naming them, so their number is bounded too.
    ///
    /// A queue created for a connection counts against its `quota`.
    fn queue(
        self: &Arc<Self>,
        name: &str,
        owner: Option<&Arc<str>>,
        quota: Option<&Quota>,
    ) -> Result<Arc<Queue>, RouteError> {
        self.queue_capped(name, owner, quota, true)
    }

    /// [`RouterInner::queue`]; `capped: false` for the dead-letter queue of a queue
    /// that exists (at most one per queue, so still bounded): a client that fills
    /// `limits.max_queues` by naming queues must not make dead letters undeliverable.
    fn queue_capped(
        self: &Arc<Self>,
        name: &str,
        owner: Option<&Arc<str>>,
        quota: Option<&Quota>,
        capped: bool,
    ) -> Result<Arc<Queue>, RouteError> {
        if let Some(q) = self.queues.read().expect("router lock poisoned").get(name) {
            return Ok(q.clone());
        }
        if let Some(quota) = quota {
            quota.check()?;
        }
        let mut queues = self.queues.write().expect("router lock poisoned");
        if let Some(q) = queues.get(name) {
            return Ok(q.clone());
        }
        // Dead-letter queues may take up to as many again: one per queue at most.
        let max = if capped {
            self.config.max_queues
        } else {
            self.config.max_queues.saturating_mul(2)
        };
        if queues.len() >= max {
            return Err(RouteError::TooManyQueues(self.config.max_queues));
        }
        let queue = Queue::new(
            name.to_owned(),
            owner.cloned(),
            &self.config,
            Arc::downgrade(self),
            self.stats.label(name),
        );
        queues.insert(name.to_owned(), queue.clone());
        if let Some(quota) = quota {
            quota.note(&queue);
        }
        Ok(queue)
    }

    /// The queue of the durable subscription `key` to `destination` (a topic or
    /// pattern), created (and stored) if new. A key reused for another destination
    /// replaces the old subscription and its backlog, as JMS does.
    ///
    /// `attach` runs while the durables' lock is held, so that neither the expiry
    /// sweep nor an administrator deletes the subscription between its lookup and the
    /// subscriber's arrival; attaching restarts its unattached time.
    fn durable(
        self: &Arc<Self>,
        key: &str,
        destination: &str,
        attach: impl FnOnce(&Arc<Queue>),
    ) -> Result<Arc<Queue>, RouteError> {
        fn attached(d: &durable::Durable, attach: impl FnOnce(&Arc<Queue>)) -> Arc<Queue> {
            *d.unattached_since.lock().expect("durable lock poisoned") = None;
            attach(&d.queue);
            d.queue.clone()
        }
        let read = self.durables.read().expect("router lock poisoned");
        if let Some(d) = read.get(key).filter(|d| d.destination == destination) {
            return Ok(attached(d, attach));
        }
        drop(read);
        let mut durables = self.durables.write().expect("router lock poisoned");
        let replacing = match durables.get(key) {
            Some(d) if d.destination == destination => return Ok(attached(d, attach)),
            Some(_) => 1,
            None => 0,
        };
        // Every check before the old subscription (a reused key) goes: a refused
        // SUBSCRIBE leaves it as it was.
        let max = self.config.max_durable_subscriptions;
        if durables.len() - replacing >= max {
            return Err(RouteError::TooManyDurables(max));
        }
        let per_user = self.config.max_durable_subscriptions_per_user;
        if durables.owned_by(durable::owner_of(key)) - replacing >= per_user {
            return Err(RouteError::TooManyDurablesForUser(per_user));
        }
        if let Some(pattern) = Pattern::parse(&destination[TOPIC.len()..]) {
            let (nodes, cost) = match durables.pattern_nodes(&pattern) {
                Ok((nodes, cost)) => (nodes, Ok(cost)),
                Err(e) => (0, Err(e)),
            };
            self.check_pattern(destination, nodes, cost)?;
        }
        if replacing > 0 {
            let old = durables.remove(key).expect("present");
            self.forget_durable(&old);
        }
        let queue = self.queue(&format!("{}{key}", durable::PREFIX), None, None)?;
        if let Some(store) = &self.store {
            store.submit(
                vec![Op::Durable {
                    key: key.to_owned(),
                    destination: destination.to_owned(),
                }],
                None,
            );
        }
        durables
            .insert(Arc::new(durable::Durable::new(
                key.to_owned(),
                destination.to_owned(),
                queue.clone(),
            )))
            .expect("checked: at most one #");
        attach(&queue);
        Ok(queue)
    }

    /// Deletes a durable subscription's queue, backlog and record. Called holding the
    /// durables' write lock (see `feed_durables`).
    fn forget_durable(&self, d: &durable::Durable) {
        {
            let mut queues = self.queues.write().expect("router lock poisoned");
            if queues
                .get(&d.queue.name)
                .is_some_and(|q| Arc::ptr_eq(q, &d.queue))
            {
                queues.remove(&d.queue.name);
            }
        }
        Metrics::add(&self.metrics.discarded, d.queue.ready_len());
        if let Some(store) = &self.store {
            let mut ops = vec![Op::Undurable { key: d.key.clone() }];
            ops.extend(d.queue.stored_id().map(|id| Op::DeleteQueue { id }));
            store.submit(ops, None);
        }
    }

    /// Feeds a topic publish to the durable subscriptions it matches. A full durable
    /// queue makes room by its overflow policy, or this subscription misses the
    /// message (counted): one away subscriber never blocks the publisher. Persistent
    /// messages reach the durable queues once written to each.
    fn feed_durables(&self, message: &Arc<Message>) {
        // Held while the writes are submitted: a subscription deleted meanwhile (under
        // the write lock) has its queue deleted in the store after them, never before.
        let durables = self.durables.read().expect("router lock poisoned");
        if durables.len() == 0 {
            return;
        }
        let targets = durables.matching(message);
        let store = self.store.as_ref().filter(|_| message.persistent);
        // One record head, shared by every durable queue it goes to, as is the body.
        let record = store.map(|_| message.record_head());
        let mut ops = Vec::new();
        let mut held = Vec::new();
        for queue in targets {
            let Some(permit) = queue.try_reserve(message.size, true) else {
                Metrics::inc(&self.metrics.overflow_drops);
                Metrics::inc(&queue.stats.dropped);
                continue;
            };
            Metrics::inc(&queue.stats.published);
            match (store, &record) {
                (Some(store), Some(record)) => {
                    let seq = queue.take_seq();
                    ops.push(Op::Put {
                        queue: queue.store_id(store, self),
                        seq,
                        head: record.clone(),
                        body: message.body.clone(),
                    });
                    held.push((queue, permit, seq));
                }
                _ => queue.push(message.clone(), permit),
            }
        }
        if let (Some(store), false) = (store, held.is_empty()) {
            let message = message.clone();
            store.submit(
                ops,
                Some(Box::new(move |result| {
                    if result.is_ok() {
                        for (queue, permit, seq) in held {
                            queue.push_at(message.clone(), Some(permit), seq, 0);
                        }
                    }
                })),
            );
        }
        drop(durables);
    }

    /// Moves a message that exhausted its redeliveries to `/queue/<prefix>NAME`, keeping
    /// where it came from in an `original-destination` header. Its creation is not
    /// held to `limits.max_queues`. A full dead-letter queue discards it, counted: it
    /// must not block the NACK that caused it. A persistent message's move is two
    /// operations in `ops` (its record deleted where it was, written in the dead-letter
    /// queue), which the caller submits in one batch — never lost, never in both —
    /// before it hands the returned [`DeadLetter`] to its queue, so that an ACK of it
    /// can only be written after its record.
    #[must_use]
    fn dead_letter(
        self: &Arc<Self>,
        from: &str,
        message: &Message,
        stored_at: Option<(u64, u64)>,
        ops: &mut Vec<Op>,
        reason: Option<&str>,
    ) -> Option<DeadLetter> {
        if let Some((queue, seq)) = stored_at {
            ops.push(Op::Delete { queue, seq });
        }
        let name = from.strip_prefix("/queue/").unwrap_or(from);
        let dlq_name = format!("/queue/{}{}", self.config.dead_letter_prefix, name);
        let mut headers = message.headers.clone();
        if headers.get("original-destination").is_none() {
            headers.push("original-destination", message.destination.clone());
        }
        if let Some(reason) = reason
            && !headers.set_first("dead-letter-reason", reason.to_owned())
        {
            headers.push("dead-letter-reason", reason);
        }
        // Built first, so that what is reserved is its own size.
        let mut dead = Message::new(message.id.clone(), dlq_name, headers, message.body.clone());
        dead.persistent = message.persistent;
        let reserved = self
            .queue_capped(&dead.destination, None, None, false)
            .ok()
            .and_then(|q| q.try_reserve(dead.size, true).map(|p| (q, p)));
        let source = self.stats.existing(from);
        let Some((dlq, permit)) = reserved else {
            Metrics::inc(&source.dropped);
            Metrics::inc(&self.metrics.discarded);
            tracing::warn!(queue = %dead.destination, "dead-letter queue full or not creatable; message discarded");
            return None;
        };
        let dead = dead.charged(&self.memory);
        Metrics::inc(&self.metrics.dead_letters);
        Metrics::inc(&source.dead_lettered);
        Metrics::inc(&dlq.stats.published);
        let seq = dlq.take_seq();
        if let (true, Some(store)) = (dead.persistent, &self.store) {
            ops.push(Op::Put {
                queue: dlq.store_id(store, self),
                seq,
                head: dead.record_head(),
                body: dead.body.clone(),
            });
        }
        Some(DeadLetter {
            queue: dlq,
            message: dead,
            permit,
            seq,
        })
    }
}

/// Store writes held back by a COMMIT (its ACKs' deletes), written in one request
/// with its persistent SENDs by [`Router::persist_staged_with`]. Opaque: only the
/// router talks to the store.
#[derive(Debug, Default)]
pub struct StoreOps(Vec<Op>);

impl StoreOps {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A persistent message with its place taken in its queue and its record encoded,
/// waiting to be written ([`Router::persist_staged`]).
#[derive(Debug)]
pub struct Staged {
    queue: Arc<Queue>,
    permit: Permit,
    seq: u64,
    message: Message,
    /// Its record's write, if persistent.
    op: Option<Op>,
}

/// A dead letter with its place in its dead-letter queue, to hand over once its
/// record's batch is submitted.
#[derive(Debug)]
struct DeadLetter {
    queue: Arc<Queue>,
    message: Message,
    permit: Permit,
    seq: u64,
}

impl DeadLetter {
    fn deliver(self) {
        let DeadLetter {
            queue,
            message,
            permit,
            seq,
        } = self;
        queue.push_at(Arc::new(message), Some(permit), seq, 0);
    }
}

impl Router {
    /// An empty router with no store: every message is kept in memory only.
    pub fn new(config: RouterConfig, metrics: Arc<Metrics>) -> Router {
        Router::with_store(config, metrics, None)
    }

    /// An empty router keeping persistent messages in `store`.
    pub fn with_store(
        config: RouterConfig,
        metrics: Arc<Metrics>,
        store: Option<GroupCommit>,
    ) -> Router {
        let id_prefix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        Router {
            inner: Arc::new(RouterInner {
                memory: Memory::new(config.high_watermark, metrics.clone()),
                metrics,
                queues: RwLock::default(),
                topics: RwLock::default(),
                wildcards: RwLock::default(),
                id_prefix,
                next_id: AtomicU64::new(0),
                store,
                next_queue_id: AtomicU64::new(1),
                schedule: schedule::Schedule::default(),
                durables: RwLock::default(),
                stats: StatsIndex::new(config.max_destination_labels),
                config,
            }),
        }
    }

    /// Builds a message with a fresh id.
    pub fn message(&self, destination: String, headers: Headers, body: bytes::Bytes) -> Message {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        Message::new(
            format!("{}-{n}", self.inner.id_prefix),
            destination,
            headers,
            body,
        )
        .charged(&self.inner.memory)
    }

    /// Whether a SEND to `destination` whose `persistent` header is `header` is kept in
    /// the store: a queue (temp queues die with their connection, topics keep
    /// nothing), a store configured, and `persistent:true` (or
    /// `queues.persistent_by_default` unless `persistent:false`).
    pub fn persists(&self, destination: &str, header: Option<&str>) -> bool {
        let wanted = match header {
            Some(v) => v.eq_ignore_ascii_case("true"),
            None => self
                .policy(destination)
                .and_then(|p| p.persistent_by_default)
                .unwrap_or(self.inner.config.persistent_by_default),
        };
        wanted && self.inner.store.is_some() && matches!(classify(destination), Ok(Kind::Queue))
    }

    /// The TTL of messages to the queue `destination`, in ms (0: none):
    /// `queues.message_ttl_ms`, or its policy's.
    pub fn message_ttl_ms(&self, destination: &str) -> u64 {
        self.policy(destination)
            .and_then(|p| p.message_ttl_ms)
            .unwrap_or(self.inner.config.message_ttl_ms)
    }

    /// Whether a `[[queues.policies]]` entry names the queue `destination` exactly
    /// (a wildcard one matches names clients invent, which may still go when idle).
    fn named_by_policy(&self, destination: &str) -> bool {
        let Some(name) = destination.strip_prefix("/queue/") else {
            return false;
        };
        self.inner
            .config
            .policies
            .iter()
            .any(|p| p.pattern.is_none() && p.exact == name)
    }

    /// The first `[[queues.policies]]` entry for the queue `destination`.
    fn policy(&self, destination: &str) -> Option<&Policy> {
        let policies = &self.inner.config.policies;
        if policies.is_empty() {
            return None;
        }
        let name = destination.strip_prefix("/queue/")?;
        policies.iter().find(|p| p.matches(name))
    }

    /// The store's writer, if there is a store.
    pub fn store(&self) -> Option<&GroupCommit> {
        self.inner.store.as_ref()
    }

    /// Routing, step two, for persistent messages: writes them in one store batch and,
    /// once it is on disk, hands each to its queue (in the order given), then runs
    /// `done` — all on the store's thread, in submission order, so nothing is
    /// delivered or receipted before it is on disk and one connection's messages keep
    /// their order. Callers pass only filled queue reservations (see [`Router::stage`]).
    pub fn persist(
        &self,
        items: Vec<(Reservation, Message)>,
        done: impl FnOnce(Result<(), Arc<StoreError>>) + Send + 'static,
    ) {
        let staged = items
            .into_iter()
            .filter_map(|(reservation, message)| self.stage(reservation, message, true))
            .collect();
        self.persist_staged(staged, done);
    }

    /// Takes a message's place in its queue now (so that what the same client sends
    /// after it queues after it) and, if `persistent`, encodes its record, for
    /// [`Router::persist_staged`], which hands it over after the batch it is in. A
    /// transaction stages its non-persistent queue SENDs too when it has persistent
    /// ones, so that none overtakes them. A reservation that is not a filled queue
    /// one is routed at once instead.
    pub fn stage(
        &self,
        reservation: Reservation,
        message: Message,
        persistent: bool,
    ) -> Option<Staged> {
        let Some(store) = &self.inner.store else {
            drop(self.commit(reservation, message));
            return None;
        };
        match reservation {
            Reservation::Queue {
                queue,
                permit: Some(permit),
                ..
            } => {
                let message = if persistent {
                    message.persistent()
                } else {
                    message
                };
                let seq = queue.take_seq();
                let op = persistent.then(|| Op::Put {
                    queue: queue.store_id(store, &self.inner),
                    seq,
                    head: message.record_head(),
                    body: message.body.clone(),
                });
                Some(Staged {
                    queue,
                    permit,
                    seq,
                    message,
                    op,
                })
            }
            other => {
                drop(self.commit(other, message));
                None
            }
        }
    }

    /// Writes staged messages in one batch, then hands them over and runs `done`
    /// (see [`Router::persist`]). With nothing staged it is a barrier: `done` runs
    /// once everything submitted before is on disk.
    pub fn persist_staged(
        &self,
        staged: Vec<Staged>,
        done: impl FnOnce(Result<(), Arc<StoreError>>) + Send + 'static,
    ) {
        self.persist_staged_with(StoreOps::default(), staged, done);
    }

    /// [`Router::persist_staged`], with `first` (a COMMIT's ACK deletes) in the same
    /// store request: one batch, so a crash keeps all of a transaction or none.
    pub fn persist_staged_with(
        &self,
        first: StoreOps,
        staged: Vec<Staged>,
        done: impl FnOnce(Result<(), Arc<StoreError>>) + Send + 'static,
    ) {
        let Some(store) = &self.inner.store else {
            done(Ok(()));
            return;
        };
        let mut ops = first.0;
        ops.reserve(staged.len());
        let mut held = Vec::with_capacity(staged.len());
        for s in staged {
            ops.extend(s.op);
            held.push((s.queue, s.permit, s.seq, s.message));
        }
        let metrics = self.inner.metrics.clone();
        store.submit(
            ops,
            Some(Box::new(move |result| {
                if result.is_ok() {
                    for (queue, permit, seq, message) in held {
                        Metrics::inc(&queue.stats.published);
                        queue.push_at(Arc::new(message), Some(permit), seq, 0);
                        Metrics::inc(&metrics.messages_in);
                    }
                } else {
                    // Not on disk: not accepted. Their permits go with them.
                    drop(held);
                }
                done(result);
            })),
        );
    }

    /// Queues again every message loaded from the store, each in its place in its
    /// queue, marked redelivered (the broker cannot know whether a consumer saw it
    /// before the restart) with its redelivery count. Returns how many.
    pub fn recover(&self, queues: Vec<StoredQueue>, max_id: u64) -> Result<usize, RecordError> {
        let inner = &self.inner;
        inner.next_queue_id.fetch_max(max_id + 1, Ordering::Relaxed);
        let mut n = 0;
        for stored in queues {
            let queue = match inner.queue(&stored.name, None, None) {
                Ok(queue) => queue,
                Err(e) => {
                    // Only `limits.max_queues`, lowered below what was stored, can
                    // refuse: say so rather than start without them.
                    tracing::error!(queue = %stored.name, error = %e, "stored queue not loaded");
                    continue;
                }
            };
            // A queue deleted while it still had records (a durable subscription's)
            // and created again under a new id: its records move under the id of the
            // queue of that name, after that queue's own.
            let merge_into = queue.stored_id().filter(|id| *id != stored.id);
            queue.set_store_id(stored.id);
            let mut ops = Vec::new();
            for m in stored.messages {
                let message =
                    Message::from_record(Record::decode(m.record.clone())?).charged(&inner.memory);
                let permit = queue.try_reserve(message.size, false);
                let seq = match merge_into {
                    None => m.seq,
                    Some(id) => {
                        let seq = queue.take_seq();
                        ops.push(Op::Put {
                            queue: id,
                            seq,
                            head: m.record,
                            body: bytes::Bytes::new(),
                        });
                        if m.redeliveries > 0 {
                            ops.push(Op::Count {
                                queue: id,
                                seq,
                                redeliveries: m.redeliveries,
                            });
                        }
                        seq
                    }
                };
                queue.push_at(Arc::new(message), permit, seq, m.redeliveries + 1);
                n += 1;
            }
            if let (Some(_), Some(store)) = (merge_into, &inner.store) {
                ops.push(Op::DeleteQueue { id: stored.id });
                store.submit(ops, None);
            }
        }
        Metrics::add(&inner.metrics.store_recovered, n);
        Ok(n)
    }

    /// Checks that a client may send to a destination, without routing anything.
    pub fn check_destination(&self, destination: &str) -> Result<(), RouteError> {
        match self.inner.classify(destination)? {
            Kind::System => Err(RouteError::SystemDestination(destination.to_owned())),
            _ => Ok(()),
        }
    }

    /// Routes a message, waiting (see [`Wait`]) when the queue or a topic subscriber
    /// is full.
    pub async fn send(&self, message: Message) -> Result<(), RouteError> {
        match self.route(message, None)? {
            None => Ok(()),
            Some(wait) => wait.await,
        }
    }

    /// The broker-wide memory gauge.
    pub fn memory(&self) -> &Arc<Memory> {
        &self.inner.memory
    }

    /// Waits, while the memory alarm is raised, for it to clear (up to
    /// `queues.send_timeout_ms`): what every publish does first.
    pub async fn memory_room(&self) -> Result<(), RouteError> {
        let memory = &self.inner.memory;
        if memory.is_high() && !memory.wait_below(self.inner.config.send_timeout).await {
            return Err(RouteError::MemoryHigh);
        }
        Ok(())
    }

    /// Routes a message without waiting when it can. For a full queue, topic
    /// subscribers with a full outbox, or the memory alarm, it returns the wait, boxed,
    /// so that the common path keeps no large future in every session's state. A queue
    /// it creates counts against `quota`.
    pub fn route(
        &self,
        message: Message,
        quota: Option<&Quota>,
    ) -> Result<Option<Wait>, RouteError> {
        if self.inner.memory.is_high() {
            // Nothing is dropped for a SEND that may yet be refused: the drop-oldest
            // policy makes room only once the memory wait is over.
            let mut reservation =
                self.reserve_with(&message.destination, message.size, quota, false)?;
            let router = self.clone();
            return Ok(Some(Box::pin(async move {
                router.memory_room().await?;
                reservation.evict();
                reservation.fill().await?;
                match router.commit(reservation, message) {
                    Some(wait) => wait.await,
                    None => Ok(()),
                }
            })));
        }
        let reservation = self.reserve_with(&message.destination, message.size, quota, true)?;
        Ok(self.commit(reservation, message))
    }

    /// Routing, step one (the only one that can fail): finds or creates the queue a
    /// message of `size` bytes to `destination` goes to (counted against `quota` when
    /// created) and takes room in it if there is any now. A transaction reserves for
    /// all its SENDs before it applies any; it never makes room by dropping messages
    /// (`queues.overflow = "drop-oldest"`), so a COMMIT that fails has dropped nothing.
    pub fn reserve(
        &self,
        destination: &str,
        size: usize,
        quota: Option<&Quota>,
    ) -> Result<Reservation, RouteError> {
        self.reserve_with(destination, size, quota, false)
    }

    /// [`Router::reserve`] for a single SEND: a full queue with the drop-oldest
    /// policy makes room by dropping its oldest waiting messages.
    pub fn reserve_evicting(
        &self,
        destination: &str,
        size: usize,
        quota: Option<&Quota>,
    ) -> Result<Reservation, RouteError> {
        self.reserve_with(destination, size, quota, true)
    }

    fn reserve_with(
        &self,
        destination: &str,
        size: usize,
        quota: Option<&Quota>,
        evict: bool,
    ) -> Result<Reservation, RouteError> {
        let inner = &self.inner;
        let queue = match inner.classify(destination)? {
            Kind::Topic => return Ok(Reservation::Topic),
            Kind::System => return Err(RouteError::SystemDestination(destination.to_owned())),
            Kind::Queue => inner.queue(destination, None, quota)?,
            Kind::TempQueue => {
                let queue = inner
                    .queues
                    .read()
                    .expect("router lock poisoned")
                    .get(destination)
                    .cloned();
                match queue {
                    Some(queue) => queue,
                    // Its owner is gone (or never existed): nobody could ever read it.
                    None => return Ok(Reservation::Nowhere),
                }
            }
        };
        queue.check_size(size)?;
        let permit = queue.try_reserve(size, evict);
        Ok(Reservation::Queue {
            queue,
            permit,
            size,
            timeout: inner.config.send_timeout,
        })
    }

    /// Routing, step two, which cannot fail: hands the message on with its
    /// reservation. Returns the wait when a queue reservation has no room yet (it then
    /// waits up to `queues.send_timeout_ms`) or topic subscribers' outboxes are full.
    pub fn commit(&self, reservation: Reservation, message: Message) -> Option<Wait> {
        let inner = &self.inner;
        match reservation {
            Reservation::Nowhere => {
                Metrics::inc(&inner.metrics.discarded);
                Metrics::inc(&inner.stats.existing(&message.destination).dropped);
                tracing::debug!(destination = %message.destination, "no such temp queue; message discarded");
                None
            }
            Reservation::Topic => self.fan_out(Arc::new(message), Publisher::Client),
            Reservation::Queue {
                queue,
                permit: Some(permit),
                ..
            } => {
                Metrics::inc(&queue.stats.published);
                queue.push(Arc::new(message), permit);
                Metrics::inc(&inner.metrics.messages_in);
                None
            }
            mut waiting @ Reservation::Queue { permit: None, .. } => {
                let router = self.clone();
                Some(Box::pin(async move {
                    waiting.fill().await?;
                    router.commit(waiting, message);
                    Ok(())
                }))
            }
        }
    }

    /// Fans a topic message out to every matching subscriber (see [`Publisher`] for
    /// what happens to those with a full outbox).
    fn fan_out(&self, message: Arc<Message>, from: Publisher) -> Option<Wait> {
        let inner = &self.inner;
        let topic = inner
            .topics
            .read()
            .expect("router lock poisoned")
            .get(&message.destination)
            .cloned();
        // A topic nobody subscribes to by its exact name has no `Topic`: its counters
        // are its label's if it has one already (publishing to new names takes none),
        // else `other`.
        let stats = match &topic {
            Some(topic) => topic.stats.clone(),
            None => inner.stats.existing(&message.destination),
        };
        let mut fanout = topic::Fanout {
            policy: match from {
                Publisher::Presence => SlowConsumerPolicy::Disconnect,
                _ => inner.config.slow_consumer,
            },
            metrics: inner.metrics.clone(),
            stats,
            delivered: 0,
            blocked: Vec::new(),
        };
        if let Some(topic) = topic {
            topic.publish(&message, &mut fanout);
        }
        // System topics (`/sys/…`) are for their exact subscribers only.
        if let Some(name) = message.destination.strip_prefix(TOPIC) {
            inner
                .wildcards
                .read()
                .expect("router lock poisoned")
                .for_each_match(name, |sub| fanout.offer(sub, &message));
            inner.feed_durables(&message);
        }
        fanout.counted(&message, from == Publisher::Client);
        if from == Publisher::Client {
            Metrics::inc(&inner.metrics.messages_in);
        }
        if fanout.blocked.is_empty() {
            return None;
        }
        match from {
            Publisher::Client => {}
            // The next snapshot comes soon: a full outbox misses this one.
            Publisher::Stats => return None,
            // A watcher that misses or reorders an event keeps a wrong member list:
            // one that cannot take it now is disconnected, and learns the truth from
            // the snapshot when it subscribes again.
            Publisher::Presence => {
                for sub in &fanout.blocked {
                    topic::disconnect(sub, &inner.metrics);
                }
                return None;
            }
        }
        let deadline = tokio::time::Instant::now() + inner.config.slow_consumer_grace;
        Some(Box::pin(async move {
            topic::wait_for_room(message, fanout, deadline).await;
            Ok(())
        }))
    }

    /// Creates a temp queue owned by `owner` (so replies sent before the owner
    /// subscribes are kept).
    pub fn ensure_temp_queue(
        &self,
        destination: &str,
        owner: &Arc<str>,
        quota: &Quota,
    ) -> Result<(), RouteError> {
        self.inner
            .queue(destination, Some(owner), Some(quota))
            .map(drop)
    }

    /// Attaches a subscription to `destination` (for `Link::subscribe`); a queue it
    /// creates counts against `quota`.
    fn attach(
        &self,
        destination: &str,
        sub: Arc<Subscription>,
        quota: &Quota,
    ) -> Result<(), RouteError> {
        let inner = &self.inner;
        let set = |target: Target| {
            let _ = sub.target.set(target);
        };
        match inner.classify(destination)? {
            kind @ (Kind::Queue | Kind::TempQueue) => {
                let owner = if matches!(kind, Kind::TempQueue) {
                    if temp_owner(destination) != Some(&*sub.session) {
                        return Err(RouteError::NotOwner(destination.to_owned()));
                    }
                    Some(&sub.session)
                } else {
                    None
                };
                let queue = inner.queue(destination, owner, Some(quota))?;
                set(Target::Queue(queue.clone()));
                queue.add_consumer(sub);
            }
            kind @ (Kind::Topic | Kind::System) => {
                match destination
                    .strip_prefix(TOPIC)
                    .and_then(Pattern::parse)
                    .filter(|_| matches!(kind, Kind::Topic))
                {
                    Some(pattern) => {
                        let mut wildcards = inner.wildcards.write().expect("router lock poisoned");
                        inner.check_pattern(
                            destination,
                            wildcards.nodes(),
                            wildcards.cost(&pattern),
                        )?;
                        set(Target::Wildcard(pattern.clone()));
                        wildcards
                            .insert(&pattern, sub)
                            .expect("checked: at most one #");
                    }
                    None => {
                        // Added under the map's lock: a topic emptied meanwhile by its last
                        // subscriber leaving is removed under the same lock.
                        let mut topics = inner.topics.write().expect("router lock poisoned");
                        let topic = topics
                            .entry(destination.to_owned())
                            .or_insert_with(|| {
                                Arc::new(Topic::new(
                                    destination.to_owned(),
                                    inner.stats.label(destination),
                                ))
                            })
                            .clone();
                        set(Target::Topic(topic.clone()));
                        topic.add(sub);
                    }
                }
            }
        }
        Ok(())
    }

    /// Attaches `sub` to the durable subscription `key` to the topic or pattern
    /// `destination`, creating it if new (for `Link::subscribe_durable`).
    fn attach_durable(
        &self,
        key: &str,
        destination: &str,
        sub: Arc<Subscription>,
    ) -> Result<(), RouteError> {
        if !matches!(self.inner.classify(destination)?, Kind::Topic) {
            return Err(RouteError::BadDestination(destination.to_owned()));
        }
        self.inner.durable(key, destination, |queue| {
            let _ = sub.target.set(Target::Queue(queue.clone()));
            queue.add_consumer(sub);
        })?;
        Ok(())
    }

    /// The topic or pattern of the durable subscription `key`, if there is one.
    pub fn durable_destination(&self, key: &str) -> Option<String> {
        let durables = self.inner.durables.read().expect("router lock poisoned");
        durables.get(key).map(|d| d.destination.clone())
    }

    /// Every durable subscription, for the admin side, ordered by key.
    pub fn durables(&self) -> Vec<DurableView> {
        let durables = self.inner.durables.read().expect("router lock poisoned");
        let mut list: Vec<DurableView> = durables
            .all()
            .map(|d| {
                let v = d.queue.view();
                DurableView {
                    key: d.key.clone(),
                    owner: d.owner().to_owned(),
                    destination: d.destination.clone(),
                    depth: v.depth,
                    bytes: v.bytes,
                    consumers: v.consumers,
                }
            })
            .collect();
        list.sort_by(|a, b| a.key.cmp(&b.key));
        list
    }

    /// Deletes the durable subscription `key` for an administrator: not while a
    /// subscriber is attached.
    pub fn delete_durable_unattached(&self, key: &str) -> Result<usize, DeleteError> {
        let mut durables = self.inner.durables.write().expect("router lock poisoned");
        let d = durables.get(key).ok_or(DeleteError::NotFound)?;
        if d.queue.view().consumers > 0 {
            return Err(DeleteError::InUse);
        }
        let depth = d.queue.ready_len();
        let d = durables.remove(key).expect("checked above");
        self.inner.forget_durable(&d);
        Ok(depth)
    }

    /// Deletes every durable subscription nobody has attached to for
    /// `limits.durable_subscription_expiry_ms` (as sweeps see it); returns how many.
    pub fn sweep_durables(&self, now: std::time::Instant) -> usize {
        let expiry = self.inner.config.durable_expiry;
        if expiry.is_zero() {
            return 0;
        }
        let expired: Vec<String> = {
            let durables = self.inner.durables.read().expect("router lock poisoned");
            durables
                .all()
                .filter(|d| {
                    let attached = d.queue.view().consumers > 0;
                    let mut since = d.unattached_since.lock().expect("durable lock poisoned");
                    if attached {
                        *since = None;
                        return false;
                    }
                    now.duration_since(*since.get_or_insert(now)) >= expiry
                })
                .map(|d| d.key.clone())
                .collect()
        };
        let mut deleted = 0;
        for key in expired {
            if self.delete_durable_unattached(&key).is_ok() {
                tracing::info!(%key, "durable subscription expired: nobody attached to it");
                deleted += 1;
            }
        }
        deleted
    }

    /// Deletes the durable subscription `key` with its backlog; false if none.
    pub fn delete_durable(&self, key: &str) -> bool {
        let mut durables = self.inner.durables.write().expect("router lock poisoned");
        match durables.remove(key) {
            Some(d) => {
                self.inner.forget_durable(&d);
                true
            }
            None => false,
        }
    }

    /// Re-creates the stored durable subscriptions (before their messages load).
    pub fn recover_durables(&self, list: Vec<(String, String)>) {
        for (key, destination) in list {
            let queue = self
                .inner
                .queue(&format!("{}{key}", durable::PREFIX), None, None);
            match queue {
                Ok(queue) => {
                    if !(key.starts_with("user:") || key.starts_with("anonymous/")) {
                        tracing::warn!(
                            %key, %destination,
                            "durable subscription stored before subscriptions had owners: no \
                             client can attach to it any more; it keeps its backlog until deleted \
                             (DELETE /api/durables) or expired (limits.durable_subscription_expiry_ms)"
                        );
                    }
                    let durable = Arc::new(durable::Durable::new(key, destination, queue));
                    let mut durables = self.inner.durables.write().expect("router lock poisoned");
                    if durables.insert(durable.clone()).is_err() {
                        tracing::error!(
                            key = %durable.key,
                            destination = %durable.destination,
                            "stored durable subscription has more than one # in its pattern: \
                             its backlog is kept, but it receives nothing new; delete it"
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(%key, error = %e, "stored durable subscription not loaded")
                }
            }
        }
    }

    /// Detaches a subscription from its destination: no more deliveries. Idempotent.
    fn detach(&self, sub: &Arc<Subscription>) {
        if sub.is_detached() {
            return;
        }
        self.remove_from_destination(sub);
        // The flag stops publishers that hold it outside the destination's lock (a
        // topic publisher waiting for room). Taking its pending lock once afterwards is
        // a barrier: a tracked delivery that passed the flag check is in the outbox by
        // now, where UNSUBSCRIBE finds it.
        sub.detached.store(true, Ordering::Release);
        drop(sub.lock());
    }

    /// Removes a subscription from its destination's list, flag or not. Idempotent;
    /// removed first so that no dispatch picks a subscription that refuses deliveries.
    fn remove_from_destination(&self, sub: &Arc<Subscription>) {
        match sub.target.get() {
            None => {}
            Some(Target::Queue(queue)) => queue.remove_consumer(sub),
            Some(Target::Topic(topic)) => {
                let mut topics = self.inner.topics.write().expect("router lock poisoned");
                if topic.remove(sub) {
                    topics.remove(&topic.name);
                }
            }
            Some(Target::Wildcard(pattern)) => {
                self.inner
                    .wildcards
                    .write()
                    .expect("router lock poisoned")
                    .remove(pattern, sub);
            }
        }
    }

    /// Deletes a closing session's temp queues (no scan of the others); their
    /// messages are discarded.
    fn remove_temp_queues(&self, temps: Vec<Arc<Queue>>) {
        if temps.is_empty() {
            return;
        }
        let mut queues = self.inner.queues.write().expect("router lock poisoned");
        for q in temps {
            if queues.get(&q.name).is_some_and(|x| Arc::ptr_eq(x, &q)) {
                queues.remove(&q.name);
                Metrics::add(&self.inner.metrics.discarded, q.ready_len());
            }
        }
    }

    /// Deletes every queue that has been unused for `queues.idle_delete_ms`: empty, no
    /// consumer, and referenced by nothing but the map (so no producer holds a
    /// reservation and no delivery is in flight). Temp queues are left to their
    /// connection, and queues named exactly by `[[queues.policies]]` or by an ACL rule
    /// stay (a write-only producer could not re-create them). Candidates are found under the read lock; the write lock is taken
    /// only to delete, and the reference count is checked again under it, where no new
    /// reference can be made. Returns how many were deleted.
    pub fn sweep_idle(&self) -> usize {
        let idle = self.inner.config.idle_delete;
        if idle.is_zero() {
            return 0;
        }
        let now = std::time::Instant::now();
        // Queues named by a policy or an ACL rule are configured, not litter.
        let unused = |q: &Arc<Queue>| {
            q.owner.is_none()
                && Arc::strong_count(q) == 1
                && !self.inner.config.named_by_acls.contains(&q.name)
                && !self.named_by_policy(&q.name)
        };
        let candidates: Vec<String> = self
            .inner
            .queues
            .read()
            .expect("router lock poisoned")
            .iter()
            .filter(|(_, q)| unused(q) && q.idle_for(now).is_some_and(|d| d >= idle))
            .map(|(name, _)| name.clone())
            .collect();
        if candidates.is_empty() {
            return 0;
        }
        let mut queues = self.inner.queues.write().expect("router lock poisoned");
        let mut deleted = 0;
        for name in candidates {
            if queues
                .get(&name)
                .is_some_and(|q| unused(q) && q.idle_for(now).is_some_and(|d| d >= idle))
            {
                queues.remove(&name);
                deleted += 1;
            }
        }
        drop(queues);
        Metrics::add(&self.inner.metrics.queues_deleted, deleted);
        if deleted > 0 {
            tracing::debug!(deleted, "idle queues deleted");
        }
        deleted
    }

    /// Runs [`Router::sweep_idle`] every half `queues.idle_delete_ms` until `stop`:
    /// an idle queue goes between one and one and a half idle periods after its last use.
    ///
    /// Durable subscriptions nobody attached to are swept on the same tick (every half
    /// `limits.durable_subscription_expiry_ms`, if shorter).
    pub async fn sweep_idle_until(self, stop: tokio_util::sync::CancellationToken) {
        let every = [
            self.inner.config.idle_delete,
            self.inner.config.durable_expiry,
        ]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min();
        let Some(every) = every else {
            return;
        };
        let mut tick = tokio::time::interval((every / 2).max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    self.sweep_idle();
                    self.sweep_durables(std::time::Instant::now());
                }
            }
        }
    }

    /// Releases delayed messages when they are due, until `stop`.
    pub async fn schedule_until(self, stop: tokio_util::sync::CancellationToken) {
        self.inner.schedule.run(stop).await;
    }

    /// Whether the queue `name` exists (for the `create` permission).
    pub fn has_queue(&self, name: &str) -> bool {
        self.inner
            .queues
            .read()
            .expect("router lock poisoned")
            .contains_key(name)
    }

    /// The queue named `name`, if it exists (for tests and the admin side).
    pub fn queue_depth(&self, name: &str) -> Option<usize> {
        self.inner
            .queues
            .read()
            .expect("router lock poisoned")
            .get(name)
            .map(|q| q.ready_len())
    }

    /// Counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Per-destination counters.
    pub fn stats(&self) -> &StatsIndex {
        &self.inner.stats
    }

    /// Every queue and exact-name topic, as the admin side reports them, by name.
    pub fn destinations(&self) -> Vec<DestView> {
        // Viewed under the map's read lock (each queue's own lock is next in the lock
        // order) rather than cloned out: a clone held meanwhile would make
        // `delete_queue` see the queue as in use.
        let queues: Vec<DestView> = self
            .inner
            .queues
            .read()
            .expect("router lock poisoned")
            .values()
            .map(|q| {
                let v = q.view();
                DestView {
                    name: q.name.clone(),
                    kind: if q.owner.is_some() {
                        "temp-queue"
                    } else {
                        "queue"
                    },
                    depth: v.depth,
                    bytes: v.bytes,
                    unacked: v.unacked,
                    consumers: v.consumers,
                    stats: q.stats.clone(),
                }
            })
            .collect();
        let topics: Vec<Arc<Topic>> = self
            .inner
            .topics
            .read()
            .expect("router lock poisoned")
            .values()
            .cloned()
            .collect();
        let mut out: Vec<DestView> = queues
            .into_iter()
            .chain(topics.iter().map(|t| DestView {
                name: t.name.clone(),
                kind: "topic",
                depth: 0,
                bytes: 0,
                unacked: 0,
                consumers: t.subscribers(),
                stats: t.stats.clone(),
            }))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
    /// Drops every message waiting in the queue `name` (delayed ones included; not
    /// those delivered and not yet acknowledged). Returns how many, or `None` if
    /// there is no such queue.
    pub fn purge(&self, name: &str) -> Option<usize> {
        let queue = self
            .inner
            .queues
            .read()
            .expect("router lock poisoned")
            .get(name)
            .cloned()?;
        Some(queue.purge())
    }

    /// Deletes the queue `name` with the messages waiting in it, if nothing uses it:
    /// no consumer, no delivery awaiting its ACK, no producer holding room in it (as
    /// the idle sweep requires). Returns how many messages went with it.
    pub fn delete_queue(&self, name: &str) -> Result<usize, DeleteError> {
        if !name.starts_with("/queue/") {
            return Err(DeleteError::NotAQueue);
        }
        let queue = {
            let mut queues = self.inner.queues.write().expect("router lock poisoned");
            let queue = queues.get(name).ok_or(DeleteError::NotFound)?;
            if Arc::strong_count(queue) != 1 || queue.view().consumers > 0 {
                return Err(DeleteError::InUse);
            }
            queues.remove(name).expect("checked above")
        };
        let purged = queue.purge();
        if let (Some(store), Some(id)) = (&self.inner.store, queue.stored_id()) {
            store.submit(vec![Op::DeleteQueue { id }], None);
        }
        Metrics::inc(&self.inner.metrics.queues_deleted);
        Ok(purged)
    }

    /// Publishes a message of the broker's own on a system topic (`/sys/…`) to its
    /// exact subscribers, never waiting: `from` says what becomes of one whose outbox
    /// is full.
    pub fn publish_system(
        &self,
        destination: &str,
        headers: Headers,
        body: bytes::Bytes,
        from: Publisher,
    ) {
        debug_assert!(destination.starts_with(SYSTEM) && from != Publisher::Client);
        let message = self.message(destination.to_owned(), headers, body);
        let wait = self.fan_out(Arc::new(message), from);
        debug_assert!(wait.is_none());
    }

    /// Hands `sub`, just attached to the system topic it subscribed to, its first
    /// message (built by `first`), under the topic's lock: no message published on the
    /// topic can reach it before that one, nor be missed after it. Returns false if
    /// the connection is gone.
    pub fn deliver_first(&self, sub: &Arc<Subscription>, first: impl FnOnce() -> Message) -> bool {
        match sub.target.get() {
            Some(Target::Topic(topic)) => topic.first(sub, first),
            _ => false,
        }
    }

    /// Whether anyone subscribes to the system topic `destination`.
    pub fn has_subscribers(&self, destination: &str) -> bool {
        self.inner
            .topics
            .read()
            .expect("router lock poisoned")
            .contains_key(destination)
    }
}

/// Who publishes on a topic, which decides what becomes of a subscriber whose outbox
/// is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publisher {
    /// A client's SEND: the publisher waits for room, up to the slow-consumer grace.
    Client,
    /// A `/sys/stats` snapshot: a full outbox misses it.
    Stats,
    /// A presence event: a watcher that cannot take it is disconnected.
    Presence,
}

/// One destination, for the admin side.
#[derive(Debug)]
pub struct DestView {
    /// Its name.
    pub name: String,
    /// `queue`, `temp-queue` or `topic`.
    pub kind: &'static str,
    /// Messages waiting (delayed ones included).
    pub depth: usize,
    /// Bytes it holds, waiting and unacknowledged messages.
    pub bytes: usize,
    /// Delivered, not yet settled.
    pub unacked: usize,
    /// Consumers (queue) or exact-name subscribers (topic).
    pub consumers: usize,
    /// Its counters.
    pub stats: Arc<DestStats>,
}

/// One durable subscription, for the admin side.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DurableView {
    /// Its key (see `session::durable`).
    pub key: String,
    /// `user:LOGIN` or `anonymous`.
    pub owner: String,
    /// The topic or pattern it subscribes to.
    pub destination: String,
    /// Messages in its backlog.
    pub depth: usize,
    /// Bytes it holds.
    pub bytes: usize,
    /// Attached subscribers (0 or 1).
    pub consumers: usize,
}

/// Why a queue was not deleted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeleteError {
    /// No such queue.
    #[error("no such queue")]
    NotFound,
    /// Only `/queue/…` destinations can be deleted.
    #[error("only /queue/ destinations can be deleted")]
    NotAQueue,
    /// Consumers, unacknowledged deliveries or producers use it.
    #[error("the queue is in use (consumers, unacknowledged deliveries or producers)")]
    InUse,
}

#[cfg(test)]
mod tests;
