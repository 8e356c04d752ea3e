//! Queues: each message goes to exactly one consumer, round-robin among the consumers
//! that have credit, and waits in the queue while none has.
//!
//! Depth and bytes are bounded by a semaphore and a byte budget whose permits travel
//! with the messages (a [`Permit`]; the message itself is charged to the broker's memory
//! gauge): a permit is
//! taken by the producer *before* any lock (waiting up to `send_timeout` when the queue
//! is full, which pauses only that producer's connection) and released when the message
//! is acknowledged, written (auto-ack) or dead-lettered. With `queues.overflow =
//! "drop-oldest"` a full queue drops its oldest waiting messages instead (counted).
//!
//! Lifecycle: a queue nobody references but the router's map — no consumer, no
//! producer holding a reservation, no delivery in flight — that has been empty and
//! unused for `queues.idle_delete_ms` is deleted by [`Queue::idle_for`]'s caller, the
//! router's sweep.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::budget::{Budget, BytePermit};
use super::schedule::now_ms;
use super::{Message, RouteError, RouterInner, Subscription};
use crate::config::OverflowPolicy;
use crate::metrics::Metrics;
use crate::outbox::Wake;
use crate::store::{GroupCommit, Op};

/// Room for one message in a queue: one of its depth and its size in the queue's
/// bytes. Dropping it frees both.
#[derive(Debug)]
pub struct Permit {
    _depth: OwnedSemaphorePermit,
    _bytes: BytePermit,
}

#[derive(Debug)]
struct Ready {
    message: Arc<Message>,
    redeliveries: u32,
    permit: Option<Permit>,
    /// The message's place in this queue: the order it is delivered in, kept when it
    /// comes back.
    qseq: u64,
}

/// What the admin side reports of a queue ([`Queue::view`]).
#[derive(Debug, Clone, Copy)]
pub struct QueueView {
    /// Messages waiting, delayed ones included.
    pub depth: usize,
    /// Bytes held: waiting and unsettled messages.
    pub bytes: usize,
    /// Delivered and not yet settled (or being written).
    pub unacked: usize,
    /// Consumers.
    pub consumers: usize,
}

/// A delivery coming back unsettled (see `delivery`).
#[derive(Debug)]
pub(super) struct Returned {
    pub message: Arc<Message>,
    /// Redeliveries before the delivery that is coming back.
    pub redeliveries: u32,
    /// Whether the client may have seen it: then it counts as a redelivery.
    pub seen: bool,
    pub permit: Option<Permit>,
    pub qseq: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting messages, ordered by `qseq`.
    ready: VecDeque<Ready>,
    consumers: Vec<Arc<Subscription>>,
    /// Round-robin cursor into `consumers`.
    next: usize,
    /// The next message's `qseq`.
    next_qseq: u64,
    /// Bytes (`Message::size`) of the messages in `ready`.
    ready_bytes: usize,
    /// Where the small bodies of waiting messages are packed (`Message::compact`).
    arena: bytes::BytesMut,
    /// When the sweep first saw the queue idle, and `next_qseq` then: idle since, as
    /// long as no message has come since and no consumer came or went.
    idle_since: Option<(std::time::Instant, u64)>,
    /// Messages not to be delivered before a time (`delay`), by (due time, place).
    /// They hold their permits: they count in the queue's depth and bytes.
    delayed: std::collections::BTreeMap<(u64, u64), Ready>,
    /// Expired messages found while dispatching, dead-lettered once the lock is
    /// released (dead-lettering takes other locks).
    expired: Vec<Ready>,
}

impl State {
    fn pop_front(&mut self) -> Option<Ready> {
        let r = self.ready.pop_front()?;
        self.ready_bytes -= r.message.size;
        Some(r)
    }
}

/// One queue (`/queue/…`, or a connection's `/temp-queue/…`).
#[derive(Debug)]
pub struct Queue {
    /// The full destination name.
    pub name: String,
    /// For temp queues: the owning session's id.
    pub owner: Option<Arc<str>>,
    /// Depth permits: `queues.max_depth` in total.
    depth: Arc<Semaphore>,
    /// `queues.max_bytes`.
    bytes: Arc<Budget>,
    max_bytes: usize,
    max_depth: usize,
    overflow: OverflowPolicy,
    state: Mutex<State>,
    /// To reach the dead-letter queue; weak so destinations don't keep the router alive.
    router: Weak<RouterInner>,
    /// Ourselves, to register for outbox wake-ups.
    me: Weak<Queue>,
    /// The queue's id in the store, given when its first persistent message arrives
    /// (or loaded at start).
    store_id: OnceLock<u64>,
    /// Its counters (shared `other` ones past the label cap).
    pub stats: Arc<super::DestStats>,
}

impl Queue {
    pub(super) fn new(
        name: String,
        owner: Option<Arc<str>>,
        limits: &super::RouterConfig,
        router: Weak<RouterInner>,
        stats: Arc<super::DestStats>,
    ) -> Arc<Queue> {
        Arc::new_cyclic(|me| Queue {
            name,
            owner,
            depth: Arc::new(Semaphore::new(limits.max_depth)),
            bytes: Budget::new(limits.max_bytes),
            max_bytes: limits.max_bytes,
            max_depth: limits.max_depth,
            overflow: limits.overflow,
            state: Mutex::new(State::default()),
            router,
            me: me.clone(),
            store_id: OnceLock::new(),
            stats,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("queue lock poisoned")
    }

    /// Whether a message of `size` bytes can ever fit.
    pub fn check_size(&self, size: usize) -> Result<(), RouteError> {
        if size > self.max_bytes {
            return Err(RouteError::TooLargeForQueue(
                self.name.clone(),
                self.max_bytes,
            ));
        }
        Ok(())
    }

    fn permit(depth: OwnedSemaphorePermit, bytes: BytePermit) -> Permit {
        Permit {
            _depth: depth,
            _bytes: bytes,
        }
    }

    /// Waits up to `timeout` for room for one more message of `size` bytes.
    pub async fn reserve(&self, size: usize, timeout: Duration) -> Result<Permit, RouteError> {
        self.check_size(size)?;
        let wait = async {
            let depth = self.depth.clone().acquire_owned().await.ok()?;
            let bytes = self.bytes.take(size).await;
            Some(Self::permit(depth, bytes))
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(permit)) => Ok(permit),
            _ => Err(RouteError::QueueFull(self.name.clone())),
        }
    }

    /// Room for one more message of `size` bytes right now, without waiting. With the
    /// drop-oldest policy and `evict`, the oldest waiting messages make room — only
    /// when dropping them can make enough (room held by unacknowledged deliveries is
    /// not theirs to free). A transaction reserves without `evict`, so a COMMIT that
    /// fails has dropped nothing.
    pub fn try_reserve(&self, size: usize, evict: bool) -> Option<Permit> {
        let attempt = || {
            let depth = self.depth.clone().try_acquire_owned().ok()?;
            let bytes = self.bytes.try_take(size)?;
            Some(Self::permit(depth, bytes))
        };
        if let Some(permit) = attempt() {
            return Some(permit);
        }
        if !evict || self.overflow != OverflowPolicy::DropOldest || size > self.max_bytes {
            return None;
        }
        loop {
            // Checked again before every drop, under the lock that takes it: a
            // consumer may have taken ready messages meanwhile. Producers already
            // waiting for bytes go first: no drop for a newcomer.
            let dropped = {
                let mut st = self.lock();
                let depth_possible = self.depth.available_permits() + st.ready.len() >= 1;
                let bytes_possible =
                    !self.bytes.has_waiters() && self.bytes.available() + st.ready_bytes >= size;
                if !(depth_possible && bytes_possible) {
                    return None;
                }
                st.pop_front()?
            };
            // Its permit goes with it, outside the queue's lock.
            self.forget([(&*dropped.message, dropped.qseq)]);
            drop(dropped);
            Metrics::inc(&self.stats.dropped);
            if let Some(router) = self.router.upgrade() {
                Metrics::inc(&router.metrics.overflow_drops);
            }
            if let Some(permit) = attempt() {
                return Some(permit);
            }
        }
    }

    /// Enqueues a message holding its permit and delivers what can be delivered.
    pub fn push(self: &Arc<Self>, message: Arc<Message>, permit: Permit) {
        let mut st = self.lock();
        let qseq = st.next_qseq;
        self.insert_locked(&mut st, message, Some(permit), qseq, 0);
        self.unlock(st);
    }

    /// Takes the next place in the queue for a message pushed later with
    /// [`Queue::push_at`]: a persistent one, once it is on disk, keyed in the store by
    /// this place.
    pub(super) fn take_seq(&self) -> u64 {
        let mut st = self.lock();
        st.next_qseq += 1;
        st.next_qseq - 1
    }

    /// Enqueues a message at a place taken with [`Queue::take_seq`] (or loaded from
    /// the store, with its redeliveries), and delivers what can be delivered. A
    /// message loaded beyond the queue's limits has no permit: nothing accepted is
    /// dropped for a limit lowered since.
    pub(super) fn push_at(
        self: &Arc<Self>,
        message: Arc<Message>,
        permit: Option<Permit>,
        qseq: u64,
        redeliveries: u32,
    ) {
        let mut st = self.lock();
        self.insert_locked(&mut st, message, permit, qseq, redeliveries);
        self.unlock(st);
    }

    fn insert_locked(
        self: &Arc<Self>,
        st: &mut State,
        message: Arc<Message>,
        permit: Option<Permit>,
        qseq: u64,
        redeliveries: u32,
    ) {
        st.next_qseq = st.next_qseq.max(qseq + 1);
        let at = message.deliver_at_ms;
        let ready = Ready {
            message,
            redeliveries,
            permit,
            qseq,
        };
        if at > 0 && at > now_ms() {
            st.delayed.insert((at, qseq), ready);
            if let Some(router) = self.router.upgrade() {
                router.schedule.add(at, self.me.clone());
            }
            return;
        }
        st.ready_bytes += ready.message.size;
        // Usually the newest: at the back, O(1) (a search costs a deep queue ~6% of
        // the broker's CPU in the queue benchmark).
        if st.ready.back().is_none_or(|last| last.qseq < qseq) {
            st.ready.push_back(ready);
        } else {
            let at = st.ready.partition_point(|x| x.qseq < qseq);
            st.ready.insert(at, ready);
        }
        self.dispatch_locked(st);
        // Not delivered at once: it waits, so it should not keep its read buffer.
        let State { ready, arena, .. } = st;
        let waiting = match ready.back_mut() {
            Some(last) if last.qseq == qseq => Some(last),
            Some(last) if last.qseq > qseq => {
                let at = ready.partition_point(|x| x.qseq < qseq);
                ready.get_mut(at).filter(|r| r.qseq == qseq)
            }
            _ => None,
        };
        if let Some(r) = waiting
            && let Some(m) = Arc::get_mut(&mut r.message)
        {
            m.compact(arena);
        }
    }

    /// The queue's id in the store. The first call registers it there, inside the
    /// initialisation, so the registration is submitted before any other thread can
    /// see the id and submit a message under it: it is never committed after one.
    pub(super) fn store_id(&self, store: &GroupCommit, router: &RouterInner) -> u64 {
        *self.store_id.get_or_init(|| {
            let id = router.next_queue_id.fetch_add(1, Ordering::Relaxed);
            store.submit(
                vec![Op::Queue {
                    id,
                    name: self.name.clone(),
                }],
                None,
            );
            id
        })
    }

    /// The queue's id in the store, if it has one.
    pub(super) fn stored_id(&self) -> Option<u64> {
        self.store_id.get().copied()
    }

    /// Sets the id of a queue loaded from the store.
    pub(super) fn set_store_id(&self, id: u64) {
        let _ = self.store_id.set(id);
    }

    /// The deletes of [`Queue::forget`], added to `ops` for the caller to submit.
    pub(super) fn forget_into<'a>(
        &self,
        settled: impl IntoIterator<Item = (&'a Message, u64)>,
        ops: &mut Vec<Op>,
    ) {
        let Some(id) = self.store_id.get() else {
            return;
        };
        ops.extend(
            settled
                .into_iter()
                .filter(|(m, _)| m.persistent)
                .map(|(_, seq)| Op::Delete { queue: *id, seq }),
        );
    }

    /// Deletes the records of these settled (or dropped) messages, as `(message,
    /// place)`; only persistent ones have one.
    pub(super) fn forget<'a>(&self, settled: impl IntoIterator<Item = (&'a Message, u64)>) {
        let mut ops = Vec::new();
        self.forget_into(settled, &mut ops);
        if ops.is_empty() {
            return;
        }
        if let Some(store) = self.router.upgrade().and_then(|r| r.store.clone()) {
            store.submit(ops, None);
        }
    }

    /// Adds a consumer and gives it whatever is waiting.
    pub fn add_consumer(self: &Arc<Self>, sub: Arc<Subscription>) {
        let mut st = self.lock();
        st.consumers.push(sub);
        st.idle_since = None;
        self.dispatch_locked(&mut st);
        self.unlock(st);
    }

    /// Removes a consumer. Its deliveries are the link's to settle or return.
    pub fn remove_consumer(&self, sub: &Arc<Subscription>) {
        let mut st = self.lock();
        st.consumers.retain(|c| !Arc::ptr_eq(c, sub));
        st.idle_since = None;
        if st.next >= st.consumers.len() {
            st.next = 0;
        }
    }

    /// For the idle sweep, called only while nothing but the router's map references
    /// this queue: how long it has been empty with no message arriving and no
    /// consumer coming or going, as far as sweeps have seen (`None`: not idle).
    pub(super) fn idle_for(&self, now: std::time::Instant) -> Option<Duration> {
        let mut st = self.lock();
        // Delayed messages are held only here (the schedule keeps a weak reference).
        if !st.ready.is_empty() || !st.delayed.is_empty() {
            st.idle_since = None;
            return None;
        }
        match st.idle_since {
            Some((since, qseq)) if qseq == st.next_qseq => Some(now - since),
            _ => {
                st.idle_since = Some((now, st.next_qseq));
                Some(Duration::ZERO)
            }
        }
    }

    /// Depth, bytes, unacknowledged deliveries and consumers, for the admin side.
    pub fn view(&self) -> QueueView {
        let st = self.lock();
        let waiting = st.ready.len() + st.delayed.len();
        let consumers = st.consumers.len();
        drop(st);
        // Every message the queue holds has a depth permit: waiting, delivered and
        // unsettled, or being written (auto-ack).
        let held = self.max_depth - self.depth.available_permits().min(self.max_depth);
        QueueView {
            depth: waiting,
            bytes: self.max_bytes - self.bytes.available().min(self.max_bytes),
            unacked: held.saturating_sub(waiting),
            consumers,
        }
    }

    /// Drops every waiting message (delayed ones too) and deletes their records;
    /// returns how many.
    pub fn purge(&self) -> usize {
        let (ready, delayed) = {
            let mut st = self.lock();
            st.ready_bytes = 0;
            (
                std::mem::take(&mut st.ready),
                std::mem::take(&mut st.delayed),
            )
        };
        let n = ready.len() + delayed.len();
        self.forget(
            ready
                .iter()
                .chain(delayed.values())
                .map(|r| (&*r.message, r.qseq)),
        );
        // Their permits go with them, outside the lock.
        drop((ready, delayed));
        n
    }

    /// Number of messages waiting for a consumer (not counting unacked ones).
    pub fn ready_len(&self) -> usize {
        self.lock().ready.len()
    }

    /// Takes messages back, each into its original place in the queue order, so that
    /// per-producer order holds however and whenever they come back. One the client
    /// may have seen counts as a redelivery, and one past `max_redeliveries` is
    /// dead-lettered instead (messages in a dead-letter queue, or a temp queue, stay).
    pub(super) fn requeue(self: &Arc<Self>, items: Vec<Returned>) {
        let Some(router) = self.router.upgrade() else {
            return;
        };
        let is_dlq = router.is_dead_letter_queue(&self.name);
        let store_id = self.store_id.get().copied();
        // Redelivery counts and dead-letter moves of persistent messages, in one batch.
        let mut ops = Vec::new();
        let mut dead = Vec::new();
        let mut back = Vec::with_capacity(items.len());
        for item in items {
            let redeliveries = item.redeliveries + u32::from(item.seen);
            let stored = store_id.filter(|_| item.message.persistent);
            if item.seen
                && !is_dlq
                && self.owner.is_none()
                && redeliveries > router.config.max_redeliveries
            {
                drop(item.permit);
                let from = stored.map(|id| (id, item.qseq));
                dead.extend(router.dead_letter(&self.name, &item.message, from, &mut ops, None));
                continue;
            }
            if item.seen {
                Metrics::inc(&router.metrics.redeliveries);
                Metrics::inc(&self.stats.redelivered);
                if let Some(queue) = stored {
                    ops.push(Op::Count {
                        queue,
                        seq: item.qseq,
                        redeliveries,
                    });
                }
            }
            back.push(Ready {
                message: item.message,
                redeliveries,
                permit: item.permit,
                qseq: item.qseq,
            });
        }
        submit_then_deliver(&router, ops, dead);
        back.sort_unstable_by_key(|r| r.qseq);
        let mut st = self.lock();
        // Usually everything returned is older than everything waiting: then each
        // insert is at the front, O(1).
        for mut r in back.into_iter().rev() {
            // Back to wait: it should not keep its read buffer either.
            if let Some(m) = Arc::get_mut(&mut r.message) {
                m.compact(&mut st.arena);
            }
            let at = st.ready.partition_point(|x| x.qseq < r.qseq);
            st.ready_bytes += r.message.size;
            st.ready.insert(at, r);
        }
        self.dispatch_locked(&mut st);
        self.unlock(st);
    }

    /// Delivers what can be delivered (after credit was freed elsewhere).
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.lock();
        self.dispatch_locked(&mut st);
        self.unlock(st);
    }

    /// Moves the delayed messages due by `now` (ms since the epoch) into the queue, in
    /// their places, and delivers what can be delivered.
    pub(super) fn release_due(self: &Arc<Self>, now: u64) {
        let mut st = self.lock();
        let later = st.delayed.split_off(&(now + 1, 0));
        let due = std::mem::replace(&mut st.delayed, later);
        for (_, r) in due {
            let at = st.ready.partition_point(|x| x.qseq < r.qseq);
            st.ready_bytes += r.message.size;
            st.ready.insert(at, r);
        }
        if let (Some(((next, _), _)), Some(router)) =
            (st.delayed.first_key_value(), self.router.upgrade())
        {
            router.schedule.add(*next, self.me.clone());
        }
        self.dispatch_locked(&mut st);
        self.unlock(st);
    }

    /// Releases the lock, then dead-letters what dispatching found expired: with
    /// `dead-letter-reason:expired`, or discarded from a dead-letter or temp queue.
    fn unlock(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        if st.expired.is_empty() {
            return;
        }
        let expired = std::mem::take(&mut st.expired);
        drop(st);
        let Some(router) = self.router.upgrade() else {
            return;
        };
        let is_dlq = router.is_dead_letter_queue(&self.name);
        let store_id = self.store_id.get().copied();
        let mut ops = Vec::new();
        let mut dead = Vec::new();
        for r in expired {
            Metrics::inc(&router.metrics.expired);
            Metrics::inc(&self.stats.expired);
            drop(r.permit);
            let stored = store_id
                .filter(|_| r.message.persistent)
                .map(|id| (id, r.qseq));
            if is_dlq || self.owner.is_some() {
                ops.extend(stored.map(|(queue, seq)| Op::Delete { queue, seq }));
                Metrics::inc(&router.metrics.discarded);
                continue;
            }
            dead.extend(router.dead_letter(
                &self.name,
                &r.message,
                stored,
                &mut ops,
                Some("expired"),
            ));
        }
        submit_then_deliver(&router, ops, dead);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut State) {
        let mut now = None;
        // One clock read per dispatch, for the publish-to-deliver latency of all it
        // hands out.
        let mut handed_at = None;
        while !st.ready.is_empty() {
            let n = st.consumers.len();
            let Some(offset) = (0..n).find(|i| st.consumers[(st.next + i) % n].has_credit()) else {
                // Nobody has credit. Those held back by a full outbox (not by their
                // prefetch window) will wake us when their writer catches up; one whose
                // writer drained it since the credit check has room now: look again.
                let mut drained = false;
                for c in &st.consumers {
                    if !c.window_full() {
                        let me: Weak<dyn Wake> = self.me.clone();
                        drained |= c.outbox.wake_when_ready_or_now(me);
                    }
                }
                if drained {
                    continue;
                }
                return;
            };
            let idx = (st.next + offset) % n;
            st.next = (idx + 1) % n;
            let consumer = st.consumers[idx].clone();
            let r = st.pop_front().expect("checked non-empty");
            let expires = r.message.expires_ms;
            if expires != 0 && expires <= *now.get_or_insert_with(now_ms) {
                // Never delivered: dead-lettered once the lock is released. The
                // cursor goes back: this consumer did not get a message.
                st.next = idx;
                st.expired.push(r);
                continue;
            }
            let me: Weak<dyn Wake> = self.me.clone();
            // First deliveries of messages not held back on purpose: a redelivery's or a
            // delayed message's wait is not the broker's latency.
            let timed = (r.redeliveries == 0 && r.message.deliver_at_ms == 0)
                .then_some(r.message.published);
            if let Err(back) =
                consumer.deliver(r.message, r.redeliveries, r.permit, r.qseq, Some(&me))
            {
                // Lost a race with the outbox filling up (or with the consumer being
                // detached): keep the message first in line.
                st.ready_bytes += back.message.size;
                st.ready.push_front(Ready {
                    message: back.message,
                    redeliveries: r.redeliveries,
                    permit: back.permit,
                    qseq: r.qseq,
                });
                if consumer.is_detached() {
                    st.consumers.retain(|c| !Arc::ptr_eq(c, &consumer));
                    st.next = 0;
                    continue;
                }
                // Registered by the refused push, under the outbox's lock: its writer
                // wakes us once it has drained. Until then stop here rather than spin
                // on a consumer whose credit check raced its outbox.
                return;
            } else if let Some(router) = self.router.upgrade() {
                Metrics::inc(&router.metrics.messages_out);
                Metrics::inc(&self.stats.delivered);
                if let Some(published) = timed {
                    let at = *handed_at.get_or_insert_with(std::time::Instant::now);
                    router
                        .metrics
                        .publish_to_deliver_seconds
                        .observe_duration(at.saturating_duration_since(published), 1);
                }
            }
        }
    }
}

/// Submits the store operations of a batch of returns or expiries, then hands its dead
/// letters to their queues: after, so that an ACK of one is written after its record.
fn submit_then_deliver(router: &RouterInner, ops: Vec<Op>, dead: Vec<super::DeadLetter>) {
    if let (false, Some(store)) = (ops.is_empty(), &router.store) {
        store.submit(ops, None);
    }
    dead.into_iter().for_each(super::DeadLetter::deliver);
}

impl Wake for Queue {
    fn wake(&self) {
        if let Some(me) = self.me.upgrade() {
            me.dispatch();
        }
    }
}
