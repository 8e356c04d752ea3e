//! Settlement: the one place that decides what happens to a delivery.
//!
//! A delivery is a message handed to one subscription. Its life:
//!
//! ```text
//! handed (in the outbox, with a Ticket) ──written──> written ──ACK / auto──> settled
//!      │                                      │
//!      └──never written──┐                    └──NACK / connection gone──┐
//!                        v                                               v
//!               returned as it was                  returned, redelivered:true, count + 1
//!                        └──────────> requeued in original order, or dead-lettered
//! ```
//!
//! Every queue delivery, and every client-ack topic delivery, is recorded here at the
//! moment the destination pushes it into the subscriber's outbox. The session and the
//! writer only report events to the connection's [`Link`] — `written`,
//! `maybe_written` (a write failed midway), `settle` (ACK/NACK), `detach`
//! (UNSUBSCRIBE) and `close` (the connection is gone) — and the link decides: settle
//! and free the queue slot, requeue (original order kept by each message's place in
//! its queue, `redelivered` and `redelivery-count` set whenever the client may have
//! seen it), or dead-letter. Nothing below the router calls back up: the outbox carries
//! an opaque [`Ticket`] and knows no queue type.
//!
//! Auto-ack topic deliveries are not recorded: topics keep nothing, so there is
//! nothing to settle or return.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::queue::{Permit, Returned};
use super::{AckMode, Message, Quota, Router, StoreOps, Subscription, Target};
use crate::metrics::Metrics;
use crate::outbox::Ticket;

/// One delivery that is not settled yet.
#[derive(Debug)]
pub(super) struct Delivery {
    /// Sequence number within the subscription (the second half of the ack id).
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// How many times it had been redelivered before this delivery.
    pub redeliveries: u32,
    /// For queue messages: the queue-depth permit, released when settled.
    pub permit: Option<Permit>,
    /// For queue messages: the message's place in its queue's order.
    pub qseq: u64,
    /// Whether the client may have seen it: written, or in a write that failed midway.
    /// Set when it is taken out to be returned (see [`Pending::seen_upto`]).
    pub written: bool,
}

/// A subscription's unsettled deliveries, in delivery order.
#[derive(Debug, Default)]
pub(super) struct Pending {
    next_seq: u64,
    items: VecDeque<Delivery>,
    /// Every delivery with a lower `seq` may have been seen by the client. The writer
    /// writes a subscription's deliveries in `seq` order (they enter the outbox under
    /// this lock, in that order), so one watermark replaces a flag per delivery and a
    /// batch's report costs one store, not a search per delivery.
    seen_upto: u64,
}

impl Pending {
    pub(super) fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub(super) fn record(&mut self, delivery: Delivery) {
        self.items.push_back(delivery);
    }

    fn position(&self, seq: u64) -> Option<usize> {
        let i = self.items.partition_point(|d| d.seq < seq);
        (self.items.get(i)?.seq == seq).then_some(i)
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every delivery up to `seq` may have been seen.
    fn seen_through(&mut self, seq: u64) {
        self.seen_upto = self.seen_upto.max(seq.saturating_add(1));
    }

    /// Takes every delivery out, each marked with whether it may have been seen.
    fn take_all(&mut self) -> Vec<Delivery> {
        let upto = self.seen_upto;
        self.items
            .drain(..)
            .map(|mut d| {
                d.written = d.seq < upto;
                d
            })
            .collect()
    }
}

/// What an ACK or NACK named, found but not yet settled.
#[derive(Clone, Debug)]
pub struct AckRef {
    /// The subscription that holds the delivery.
    pub sub: Arc<Subscription>,
    /// The delivery's sequence number.
    pub seq: u64,
}

#[derive(Debug, Default)]
struct LinkState {
    /// Every subscription with something to settle: the live ones, and unsubscribed
    /// ones whose deliveries may still be ACKed or NACKed until the connection closes.
    subs: HashMap<u64, Arc<Subscription>>,
    closed: bool,
}

/// The router's side of one connection: its subscriptions and their deliveries. The
/// session and the writer report events here; see the module docs.
#[derive(Debug)]
pub struct Link {
    router: Router,
    /// The queues this connection created: its quota, and the temp queues `close`
    /// deletes (only those: a close touches nothing it does not own).
    quota: Quota,
    state: Mutex<LinkState>,
}

impl Link {
    /// The link of a new connection, owned by the returned guard.
    pub fn open(router: Router) -> LinkGuard {
        LinkGuard(Arc::new(Link {
            quota: Quota::new(router.inner.config.max_queues_per_connection),
            router,
            state: Mutex::default(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().expect("link lock poisoned")
    }

    /// Subscriptions tracked: live ones and unsubscribed ones with deliveries left.
    pub fn len(&self) -> usize {
        self.lock().subs.len()
    }

    /// Whether no subscription is tracked.
    pub fn is_empty(&self) -> bool {
        self.lock().subs.is_empty()
    }

    fn sub(&self, key: u64) -> Option<Arc<Subscription>> {
        self.lock().subs.get(&key).cloned()
    }

    /// Attaches `sub` to `destination` (see `Router::attach`) and tracks it.
    pub fn subscribe(
        &self,
        destination: &str,
        sub: Arc<Subscription>,
    ) -> Result<(), super::RouteError> {
        self.track(sub, |sub| self.router.attach(destination, sub, &self.quota))
    }

    /// [`Link::subscribe`] to the durable subscription `key` to `destination` (see
    /// `router::durable`).
    pub fn subscribe_durable(
        &self,
        key: &str,
        destination: &str,
        sub: Arc<Subscription>,
    ) -> Result<(), super::RouteError> {
        self.track(sub, |sub| self.router.attach_durable(key, destination, sub))
    }

    /// Tracks `sub`, then `attach`es it.
    fn track(
        &self,
        sub: Arc<Subscription>,
        attach: impl FnOnce(Arc<Subscription>) -> Result<(), super::RouteError>,
    ) -> Result<(), super::RouteError> {
        {
            let mut st = self.lock();
            if st.closed {
                return Ok(());
            }
            // Tracked before it can receive anything, so that the writer's reports find
            // it; attached without holding the link's lock (see the lock order).
            st.subs.insert(sub.key, sub.clone());
        }
        if let Err(e) = attach(sub.clone()) {
            self.lock().subs.remove(&sub.key);
            return Err(e);
        }
        if self.lock().closed {
            // Closed meanwhile (the writer ended): `close` drained it before it was
            // attached, possibly flagging it detached already, so remove it from its
            // destination whatever the flag says.
            self.router.detach(&sub);
            self.router.remove_from_destination(&sub);
        }
        Ok(())
    }

    /// The queues this connection created, for the router to count new ones against.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// Whether the link has been closed: the connection is ending.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// UNSUBSCRIBE: no more deliveries. Those still in the outbox are taken back and
    /// returned as never seen; written ones stay ACK-able until the connection closes.
    pub fn unsubscribe(&self, sub: &Arc<Subscription>) {
        self.router.detach(sub);
        let unwritten = sub.outbox.take_deliveries_of(sub.key);
        let returned = {
            let mut pending = sub.lock();
            let mut returned = Vec::new();
            for t in unwritten {
                if let Some(i) = pending.position(t.seq) {
                    returned.extend(pending.items.remove(i));
                }
            }
            self.forget_if_done(sub, &pending);
            returned
        };
        give_back(sub, returned, false);
    }

    /// The writer wrote these deliveries: auto-ack ones are settled (their queue slot
    /// freed), client-ack ones now count as seen.
    pub fn written(&self, tickets: &[Ticket]) {
        self.each_sub(tickets, |sub, last| {
            let settled: Vec<Delivery> = {
                let mut pending = sub.lock();
                pending.seen_through(last);
                let mut settled = Vec::new();
                if sub.ack == AckMode::Auto {
                    // Everything up to `last` still pending was in this batch: earlier
                    // ones were settled by earlier batches, and deliveries taken back
                    // out of the outbox left the pending list with them.
                    while pending.items.front().is_some_and(|d| d.seq <= last) {
                        settled.extend(pending.items.pop_front());
                    }
                }
                self.forget_if_done(sub, &pending);
                settled
            };
            settle(sub, settled, None);
        });
    }

    /// A write failed with these deliveries in it: the client may have seen any of them.
    pub fn maybe_written(&self, tickets: &[Ticket]) {
        self.each_sub(tickets, |sub, last| sub.lock().seen_through(last));
    }

    /// Runs `f` once per run of tickets of one subscription, with the run's last
    /// sequence number (a subscription's tickets come in increasing order).
    fn each_sub(&self, tickets: &[Ticket], mut f: impl FnMut(&Arc<Subscription>, u64)) {
        let mut rest = tickets;
        while let Some(first) = rest.first() {
            let n = rest.iter().take_while(|t| t.sub == first.sub).count();
            if let Some(sub) = self.sub(first.sub) {
                f(&sub, rest[n - 1].seq);
            }
            rest = &rest[n..];
        }
    }

    /// Stops tracking an unsubscribed subscription once nothing of it is left to settle.
    /// Called holding its pending lock (which comes before the link's).
    fn forget_if_done(&self, sub: &Subscription, pending: &Pending) {
        if pending.is_empty() && sub.is_detached() {
            self.lock().subs.remove(&sub.key);
        }
    }

    /// The delivery an ack id (`key-seq`) names, if its subscription is a client-ack
    /// one of this connection, without checking that it is still pending: for an ACK
    /// applied at once, whose [`Link::settle`] checks that.
    pub fn locate(&self, key: u64, seq: u64) -> Option<AckRef> {
        let sub = self.sub(key)?;
        (sub.ack != AckMode::Auto).then_some(AckRef { sub, seq })
    }

    /// Finds the pending delivery an ack id (`key-seq`) names.
    pub fn find(&self, key: u64, seq: u64) -> Option<AckRef> {
        self.locate(key, seq)
            .filter(|r| r.sub.lock().position(seq).is_some())
    }

    /// Finds a pending delivery by `message-id` (STOMP 1.0/1.1 acks): in `first` if it
    /// holds it, otherwise in any subscription of this connection — RabbitMQ settles by
    /// `message-id` alone, and its clients rely on that.
    pub fn find_message_id(
        &self,
        first: Option<&Arc<Subscription>>,
        message_id: &str,
    ) -> Option<AckRef> {
        let lookup = |sub: &Arc<Subscription>| {
            if sub.ack == AckMode::Auto {
                return None;
            }
            let pending = sub.lock();
            let d = pending.items.iter().find(|d| d.message.id == message_id)?;
            Some(AckRef {
                sub: sub.clone(),
                seq: d.seq,
            })
        };
        if let Some(found) = first.and_then(lookup) {
            return Some(found);
        }
        let subs: Vec<Arc<Subscription>> = self.lock().subs.values().cloned().collect();
        subs.iter().find_map(lookup)
    }

    /// ACK or NACK of the delivery `r` (and, in `client` mode, every earlier one of its
    /// subscription). ACK frees the queue slots; NACK requeues queue messages as
    /// redeliveries (or dead-letters them) and drops topic ones. False if `r` is no
    /// longer pending.
    pub fn settle(&self, r: &AckRef, nack: bool) -> bool {
        self.settle_deferring(r, nack, None)
    }

    /// [`Link::settle`] for a COMMIT: an ACK's store deletes go into `deferred`, to be
    /// written in one request with the transaction's persistent SENDs
    /// ([`Router::persist_staged_with`]), so that a crash keeps both or neither.
    pub fn settle_in(&self, r: &AckRef, nack: bool, deferred: &mut StoreOps) -> bool {
        self.settle_deferring(r, nack, Some(deferred))
    }

    fn settle_deferring(&self, r: &AckRef, nack: bool, deferred: Option<&mut StoreOps>) -> bool {
        let sub = &r.sub;
        let taken: Vec<Delivery> = {
            let mut pending = sub.lock();
            let Some(pos) = pending.position(r.seq) else {
                return false;
            };
            let taken = match sub.ack {
                AckMode::Client => pending.items.drain(..=pos).collect(),
                _ => pending.items.remove(pos).into_iter().collect(),
            };
            self.forget_if_done(sub, &pending);
            taken
        };
        let count = |s: &super::DestStats, n: usize| {
            Metrics::add(if nack { &s.nacked } else { &s.acked }, n);
        };
        match sub.stats() {
            Some(stats) => count(stats, taken.len()),
            // A wildcard subscription's deliveries count where they were published.
            None => {
                for d in &taken {
                    count(&self.router.stats().existing(&d.message.destination), 1);
                }
            }
        }
        if nack {
            give_back(sub, taken, true);
        } else {
            settle(sub, taken, deferred);
        }
        true
    }

    /// Stops every delivery to this connection without settling anything: detaches all
    /// subscriptions from their destinations. Called when the read side ends, before
    /// the last frames are flushed.
    pub fn detach_all(&self) {
        let subs: Vec<Arc<Subscription>> = self.lock().subs.values().cloned().collect();
        for sub in &subs {
            self.router.detach(sub);
        }
    }

    /// The connection is gone: every subscription detached, every unsettled delivery
    /// returned (redelivered if the client may have seen it), temp queues deleted.
    /// Idempotent.
    pub fn close(&self) {
        self.close_with(false);
    }

    /// `close`, where `seen_all` counts every delivery as possibly seen: when the writer
    /// may still be writing (a panic unwinding the session), a delivery not yet
    /// reported written may be on the wire all the same.
    fn close_with(&self, seen_all: bool) {
        let subs: Vec<Arc<Subscription>> = {
            let mut st = self.lock();
            if st.closed {
                Vec::new()
            } else {
                st.closed = true;
                st.subs.drain().map(|(_, s)| s).collect()
            }
        };
        let mut subs = subs;
        subs.sort_by_key(|s| s.key);
        for sub in &subs {
            self.router.detach(sub);
            let all = sub.lock().take_all();
            give_back(sub, all, seen_all);
        }
        // A temp queue created after an earlier close is removed by the guard's.
        self.router
            .remove_temp_queues(self.quota.take_temp_queues());
    }
}

/// Owns a connection's [`Link`]: dropping it closes the link, so a session that ends
/// in any way — a panic included — leaves no subscription registered and no delivery
/// unreturned.
#[derive(Debug)]
pub struct LinkGuard(Arc<Link>);

impl LinkGuard {
    /// A handle for the writer's reports; it does not keep the link open.
    pub fn handle(&self) -> Arc<Link> {
        self.0.clone()
    }
}

impl std::ops::Deref for LinkGuard {
    type Target = Link;
    fn deref(&self) -> &Link {
        &self.0
    }
}

impl Drop for LinkGuard {
    /// On the normal path the writer has closed the link already and this only removes
    /// temp queues created since. Otherwise (a panic) the writer may still be mid-write,
    /// so everything returned is marked as possibly seen.
    fn drop(&mut self) {
        self.0.close_with(true);
    }
}

/// Settled: free the queue slots and the credit, and delete the records of persistent
/// messages. Only a subscription whose prefetch
/// window was full can have held its queue back (a full outbox wakes the queue through
/// the outbox), so only then is the queue asked to deliver more.
fn settle(sub: &Arc<Subscription>, settled: Vec<Delivery>, deferred: Option<&mut StoreOps>) {
    if settled.is_empty() {
        return;
    }
    let before = sub.release_credit(settled.len());
    let Some(Target::Queue(queue)) = sub.target.get() else {
        return;
    };
    // Persistent ones leave the store in the next batch (a COMMIT's, with its SENDs).
    let settled_at = settled.iter().map(|d| (&*d.message, d.qseq));
    match deferred {
        Some(ops) => queue.forget_into(settled_at, &mut ops.0),
        None => queue.forget(settled_at),
    }
    drop(settled);
    if before >= sub.prefetch {
        queue.dispatch();
    }
}

/// Returned unsettled: queue messages go back to their queue in their original order
/// (`seen` = NACKed: every one counts as a redelivery; otherwise those the client may
/// have seen do); topic messages are dropped, since topics keep nothing.
fn give_back(sub: &Arc<Subscription>, items: Vec<Delivery>, seen: bool) {
    if items.is_empty() {
        return;
    }
    sub.release_credit(items.len());
    let Some(Target::Queue(queue)) = sub.target.get() else {
        return;
    };
    let returned = items
        .into_iter()
        .map(|d| Returned {
            message: d.message,
            redeliveries: d.redeliveries,
            seen: seen || d.written,
            permit: d.permit,
            qseq: d.qseq,
        })
        .collect();
    queue.requeue(returned);
}
