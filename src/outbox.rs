//! The per-connection outbox: a bounded queue of encoded frames between whoever
//! produces them (the router, the session) and the connection's writer task.
//!
//! The router only ever calls [`OutboxTx::try_push`] under its locks: it never waits on
//! a consumer there. A full outbox (by frame count or by bytes) is the slow-consumer
//! signal: queues stop giving that subscription credit and register to be woken
//! ([`Wake`]) once the writer has drained the outbox below half; a topic publisher
//! waits for room outside every lock ([`OutboxTx::room_for`]) for a bounded grace, and
//! marks the outbox *slow* ([`OutboxTx::mark_slow`]) when the grace runs out, so that
//! nobody waits for it again until it has drained below half.
//!
//! The outbox knows nothing of queues or acks: a delivery rides in it with an opaque
//! [`Ticket`], which the writer reports back (written, or maybe written) to whoever
//! owns the delivery's state — the router.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::memory::{Charge, Memory};

/// Why a connection is being closed; decides the WebSocket close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT (1000).
    Normal,
    /// The broker is shutting down or the peer went silent (1001).
    GoingAway,
    /// A STOMP protocol violation (1002).
    Protocol,
    /// Header bytes that are not UTF-8 (1007).
    InvalidData,
    /// Refused by policy: authentication, slow consumer (1008).
    Policy,
    /// A frame over a size limit (1009).
    TooBig,
    /// The broker could not do what it must (a store write failed) (1011).
    Internal,
}

impl CloseReason {
    /// Its slot in `Metrics::errors` (labels: `metrics::ERROR_REASONS`).
    pub fn metric_index(self) -> usize {
        match self {
            CloseReason::Normal => 0,
            CloseReason::GoingAway => 1,
            CloseReason::Protocol => 2,
            CloseReason::InvalidData => 3,
            CloseReason::Policy => 4,
            CloseReason::TooBig => 5,
            CloseReason::Internal => 6,
        }
    }

    /// The RFC 6455 close code.
    pub fn ws_code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::Protocol => 1002,
            CloseReason::InvalidData => 1007,
            CloseReason::Policy => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::Internal => 1011,
        }
    }
}

/// Names one delivery for the router: the subscription's key and the delivery's
/// sequence number within it. Plain data, so the outbox stays below the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket {
    /// The subscription's connection-local key.
    pub sub: u64,
    /// The delivery's sequence number within the subscription.
    pub seq: u64,
}

/// One item for the writer.
#[derive(Debug)]
pub enum Outgoing {
    /// A complete encoded frame of the session's own (CONNECTED, RECEIPT, ERROR).
    Frame(Bytes),
    /// An auto-ack topic delivery as one whole encoded frame, shared with every
    /// subscriber of the same subscription id: untracked, but taken back like a
    /// delivery when its connection ends.
    Delivery(Bytes, Hold),
    /// A MESSAGE: per-delivery head, then the headers and body shared by every
    /// subscriber, then a NUL. Nothing is joined or copied until the writer writes it.
    Message {
        /// `MESSAGE`, `subscription`, `ack`, redelivery headers.
        head: Bytes,
        /// The encoded-once rest of the headers, blank line included.
        tail: Bytes,
        /// The message's body, shared with the message itself.
        body: Bytes,
        /// Keeps the message's memory charge while the delivery waits to be written.
        hold: Hold,
        /// Deliveries whose state the router tracks (queue deliveries, client-ack
        /// subscriptions): reported back once written, returned if never written.
        ticket: Option<Ticket>,
    },
    /// From now on send a heart-beat after this much write silence.
    Heartbeat(Duration),
    /// Flush what is queued, close the connection, and stop.
    Close(CloseReason),
}

impl Outgoing {
    /// Bytes this item will put on the wire, for the outbox's byte budget.
    pub fn wire_len(&self) -> usize {
        match self {
            Outgoing::Frame(b) | Outgoing::Delivery(b, _) => b.len(),
            Outgoing::Message {
                head, tail, body, ..
            } => head.len() + tail.len() + body.len() + 1,
            Outgoing::Heartbeat(_) | Outgoing::Close(_) => 0,
        }
    }

    /// Bytes only this item holds, for the broker's memory gauge: the session's own
    /// frames. A delivery's body and shared encoding belong to its message, charged
    /// once through its [`Hold`] however many outboxes hold it; its own head (tens of
    /// bytes, at most `outbox.max_frames` of them) is left out, so that a delivery
    /// costs the gauge nothing.
    fn owned_len(&self) -> usize {
        match self {
            Outgoing::Frame(b) => b.len(),
            _ => 0,
        }
    }
}

/// A message's memory charge, shared by the message and every delivery of it still
/// waiting to be written: its bytes are counted once, for as long as anything holds
/// them (a topic message is gone from the router as soon as it is fanned out, but its
/// body lives on in the outboxes).
pub type Hold = Option<Arc<Charge>>;

/// Something to poke when an outbox it found full has room again.
pub trait Wake: Send + Sync {
    /// Called by the writer, outside any lock.
    fn wake(&self);
}

#[derive(Default)]
struct State {
    items: VecDeque<Outgoing>,
    /// Wire bytes of `items`.
    bytes: usize,
    /// Bytes of `items` not shared with a message ([`Outgoing::owned_len`]): what is
    /// charged to the memory gauge.
    owned: usize,
    /// Set when the writer is gone: pushes fail from then on.
    closed: bool,
    /// Set when a publisher waited a whole grace for room in vain; cleared once the
    /// writer has drained below half. While set, topics apply their slow-consumer
    /// policy to this connection at once instead of waiting.
    slow: bool,
    /// Destinations that skipped this connection because the outbox was full.
    starved: Vec<Weak<dyn Wake>>,
    /// `bytes`, charged to the broker's memory gauge.
    charge: Option<Charge>,
}

/// A plain mutex-protected deque rather than a channel: the writer takes everything
/// queued with one lock (a swap of deques), producers never wait, and an idle
/// connection's outbox holds no preallocated slots.
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer when the outbox goes from empty to non-empty.
    writer: Notify,
    /// Wakes a session waiting in [`OutboxTx::push`], and publishers waiting in
    /// [`OutboxTx::room_for`], once the writer took a batch.
    room: Notify,
    max_frames: usize,
    max_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("outbox lock poisoned")
    }

    /// Keeps the memory charge equal to the bytes only this outbox holds.
    fn account(&self, st: &mut State) {
        if let Some(charge) = &mut st.charge {
            charge.set(st.owned);
        }
    }

    /// Below half full: where the slow mark clears and starved destinations wake.
    fn drained(&self, st: &State) -> bool {
        st.items.len() <= self.max_frames / 2 && st.bytes <= self.max_bytes / 2
    }
}

/// Adds `who` to the destinations to wake, once.
fn register(st: &mut State, who: Weak<dyn Wake>) {
    if !st.starved.iter().any(|w| w.ptr_eq(&who)) {
        st.starved.push(who);
    }
}

/// The producing side; cheap to clone, held by the session and its subscriptions.
#[derive(Clone)]
pub struct OutboxTx(Arc<Shared>);

impl std::fmt::Debug for OutboxTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.0.lock();
        f.debug_struct("OutboxTx")
            .field("frames", &st.items.len())
            .field("bytes", &st.bytes)
            .finish()
    }
}

/// The writer's side. Dropping it closes the outbox, so that nobody waits for room
/// that a writer which is gone (a panic included) will never make.
pub struct OutboxRx(Arc<Shared>);

impl Drop for OutboxRx {
    fn drop(&mut self) {
        self.close_and_drain();
    }
}

/// A bounded outbox of `max_frames` items and `max_bytes` bytes. The batch the writer
/// is currently writing is not counted: at most the same amount again is in flight.
pub fn outbox(max_frames: usize, max_bytes: usize) -> (OutboxTx, OutboxRx) {
    outbox_charged(max_frames, max_bytes, None)
}

/// [`outbox`], with what is queued charged to `memory`.
pub fn outbox_charged(
    max_frames: usize,
    max_bytes: usize,
    memory: Option<&Arc<Memory>>,
) -> (OutboxTx, OutboxRx) {
    let state = State {
        charge: memory.map(|m| m.charge(0)),
        ..State::default()
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        writer: Notify::new(),
        room: Notify::new(),
        max_frames,
        max_bytes,
    });
    (OutboxTx(shared.clone()), OutboxRx(shared))
}

impl OutboxTx {
    /// Whether a push would currently succeed (used for queue credit).
    pub fn has_room(&self) -> bool {
        let st = self.0.lock();
        !st.closed && st.items.len() < self.0.max_frames && st.bytes < self.0.max_bytes
    }

    /// Whether an item of `len` wire bytes fits now. An empty outbox admits one item
    /// however large: a message bigger than the whole byte budget (allowed by
    /// `limits.max_body_bytes`) must still be deliverable; the budget bounds what
    /// queues up behind it.
    fn fits(&self, st: &State, len: usize) -> bool {
        !st.closed
            && st.items.len() < self.0.max_frames
            && (len == 0 || st.items.is_empty() || st.bytes + len <= self.0.max_bytes)
    }

    /// Queues `item` unless the outbox is full or closed; gives the item back if not.
    // The item comes back by value to be retried or returned; boxing it would cost an
    // allocation per delivery on the hot path.
    #[allow(clippy::result_large_err)]
    pub fn try_push(&self, item: Outgoing) -> Result<(), Outgoing> {
        self.try_push_or_register(item, None)
    }

    /// [`OutboxTx::try_push`], registering `who` to be woken when the writer has
    /// drained the outbox if the item does not fit — under the same lock, so no drain
    /// can fall between the failed push and the registration (a refused push means the
    /// outbox is not empty, so the writer will drain it and wake `who`).
    #[allow(clippy::result_large_err)]
    pub fn try_push_or_register(
        &self,
        item: Outgoing,
        who: Option<&Weak<dyn Wake>>,
    ) -> Result<(), Outgoing> {
        let len = item.wire_len();
        let mut st = self.0.lock();
        if !self.fits(&st, len) {
            if let Some(who) = who.filter(|_| !st.closed) {
                register(&mut st, who.clone());
            }
            return Err(item);
        }
        let was_empty = st.items.is_empty();
        st.owned += item.owned_len();
        st.items.push_back(item);
        st.bytes += len;
        self.0.account(&mut st);
        drop(st);
        if was_empty {
            self.0.writer.notify_one();
        }
        Ok(())
    }

    /// Queues the session's own frame, waiting for room: only the session's own task
    /// waits here, so a client that does not read only slows itself. Only the frame
    /// count is checked, so small control frames are never refused for bytes. Returns
    /// false when the writer is gone.
    pub async fn push(&self, item: Outgoing) -> bool {
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let st = self.0.lock();
                if st.closed {
                    return false;
                }
                if st.items.len() < self.0.max_frames {
                    self.enqueue(st, item);
                    return true;
                }
            }
            room.await;
        }
    }

    /// Queues the session's own frame now, whatever the outbox holds; false when the
    /// writer is gone. For the RECEIPTs that the store's thread sends after a commit,
    /// which cannot wait. The session hands one over only while its outbox has room,
    /// so they are bounded by `store.max_inflight_per_connection` past the outbox's
    /// own bound.
    pub fn push_now(&self, item: Outgoing) -> bool {
        let st = self.0.lock();
        if st.closed {
            return false;
        }
        self.enqueue(st, item);
        true
    }

    /// Appends `item` (room already decided) and wakes the writer if it was idle.
    fn enqueue(&self, mut st: MutexGuard<'_, State>, item: Outgoing) {
        let was_empty = st.items.is_empty();
        st.bytes += item.wire_len();
        st.owned += item.owned_len();
        st.items.push_back(item);
        self.0.account(&mut st);
        drop(st);
        if was_empty {
            self.0.writer.notify_one();
        }
    }

    /// Waits until an item of `len` bytes would fit; false if the writer is gone. Call
    /// it holding no lock, under a deadline: a reader that never reads never makes room.
    pub async fn room_for(&self, len: usize) -> bool {
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let st = self.0.lock();
                if st.closed {
                    return false;
                }
                if self.fits(&st, len) {
                    return true;
                }
            }
            room.await;
        }
    }

    /// Frames and bytes waiting to be written, for the admin side.
    pub fn depth(&self) -> (usize, usize) {
        let st = self.0.lock();
        (st.items.len(), st.bytes)
    }

    /// Marks the connection a slow consumer (see the module docs); returns whether it
    /// was not marked already.
    pub fn mark_slow(&self) -> bool {
        !std::mem::replace(&mut self.0.lock().slow, true)
    }

    /// Whether the connection is marked slow.
    pub fn is_slow(&self) -> bool {
        self.0.lock().slow
    }

    /// Takes every delivery not yet handed to the writer out of the outbox (control
    /// frames stay) and returns their tickets: a connection that is ending without a
    /// reader must not have them written into a dead socket and counted as seen.
    pub fn take_deliveries(&self) -> Vec<Ticket> {
        self.take_where(|_| true)
    }

    /// Takes the tracked deliveries of one subscription (UNSUBSCRIBE) out of the outbox.
    pub fn take_deliveries_of(&self, sub: u64) -> Vec<Ticket> {
        self.take_where(|t| t.is_some_and(|t| t.sub == sub))
    }

    fn take_where(&self, mut take: impl FnMut(Option<Ticket>) -> bool) -> Vec<Ticket> {
        let mut st = self.0.lock();
        let mut tickets = Vec::new();
        let (mut bytes, mut owned) = (st.bytes, st.owned);
        let before = bytes;
        st.items.retain(|item| {
            let taken = match item {
                Outgoing::Message { ticket, .. } => take(*ticket),
                Outgoing::Delivery(..) => take(None),
                _ => false,
            };
            if taken {
                bytes -= item.wire_len();
                owned -= item.owned_len();
                if let Outgoing::Message {
                    ticket: Some(t), ..
                } = item
                {
                    tickets.push(*t);
                }
            }
            !taken
        });
        st.bytes = bytes;
        st.owned = owned;
        self.0.account(&mut st);
        drop(st);
        if bytes < before {
            // Publishers waiting for room must see it now, not at the writer's next batch.
            self.0.room.notify_waiters();
        }
        tickets
    }

    /// Asks to be woken when the writer has drained this outbox below half, unless it
    /// is below half already: then nothing is registered and it returns true, for the
    /// caller to look again.
    /// Checked under the outbox's lock, so a writer that drained it just before can
    /// not leave the caller waiting for a wake-up that already happened.
    pub fn wake_when_ready_or_now(&self, who: Weak<dyn Wake>) -> bool {
        let mut st = self.0.lock();
        if !st.closed && self.0.drained(&st) {
            return true;
        }
        register(&mut st, who);
        false
    }

    /// Whether the writer has gone away.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

impl OutboxRx {
    /// Waits until something is queued, then moves all of it into `batch` (which must
    /// be empty). Cancel-safe: nothing is taken before the wait completes.
    pub async fn recv_batch(&mut self, batch: &mut VecDeque<Outgoing>) {
        debug_assert!(batch.is_empty());
        loop {
            let notified = self.0.writer.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.0.lock();
                if !st.items.is_empty() {
                    std::mem::swap(&mut st.items, batch);
                    st.bytes = 0;
                    st.owned = 0;
                    self.0.account(&mut st);
                    drop(st);
                    self.0.room.notify_waiters();
                    return;
                }
            }
            notified.await;
        }
    }

    /// Once the outbox is below half full, clears the slow mark and wakes starved
    /// destinations. Called by the writer after each batch, holding no lock.
    pub fn wake_if_drained(&self) {
        let starved = {
            let mut st = self.0.lock();
            if !self.0.drained(&st) {
                return;
            }
            st.slow = false;
            if st.starved.is_empty() {
                return;
            }
            std::mem::take(&mut st.starved)
        };
        for who in starved {
            if let Some(who) = who.upgrade() {
                who.wake();
            }
        }
    }

    /// Stops accepting items and returns what was never written, so its deliveries
    /// can be returned instead of lost.
    pub fn close_and_drain(&mut self) -> Vec<Outgoing> {
        let left = {
            let mut st = self.0.lock();
            st.closed = true;
            st.bytes = 0;
            st.owned = 0;
            self.0.account(&mut st);
            st.starved.clear();
            std::mem::take(&mut st.items)
        };
        self.0.room.notify_waiters();
        left.into()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn frame(bytes: &'static [u8]) -> Outgoing {
        Outgoing::Frame(Bytes::from_static(bytes))
    }

    fn take(rx: &mut OutboxRx) -> VecDeque<Outgoing> {
        let mut batch = VecDeque::new();
        futures_util::FutureExt::now_or_never(rx.recv_batch(&mut batch)).expect("items queued");
        batch
    }

    #[test]
    fn full_by_frames_or_bytes() {
        let (tx, mut rx) = outbox(2, 10);
        assert!(tx.try_push(frame(b"12345")).is_ok());
        assert!(tx.try_push(frame(b"123456")).is_err());
        assert!(tx.try_push(frame(b"12345")).is_ok());
        assert!(!tx.has_room());
        assert!(tx.try_push(frame(b"1")).is_err());
        assert_eq!(take(&mut rx).len(), 2);
        assert!(tx.has_room());
    }

    #[tokio::test]
    async fn push_waits_for_room_and_fails_once_closed() {
        let (tx, mut rx) = outbox(1, 1000);
        assert!(tx.push(frame(b"a")).await);
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.push(frame(b"b")).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(take(&mut rx).len(), 1);
        assert!(waiting.await.unwrap());
        assert_eq!(rx.close_and_drain().len(), 1);
        assert!(!tx.push(frame(b"c")).await);
        assert!(tx.try_push(frame(b"c")).is_err());
    }

    /// A shared whole-frame topic delivery is a delivery: taken back when the
    /// connection ends (so an ERROR goes out next), left alone by UNSUBSCRIBE of
    /// another subscription. Found in review: it was taken for a control frame.
    #[test]
    fn whole_frame_deliveries_are_taken_back() {
        let (tx, mut rx) = outbox(8, 1000);
        tx.try_push(Outgoing::Delivery(Bytes::from_static(b"MESSAGE"), None))
            .unwrap();
        tx.try_push(frame(b"RECEIPT")).unwrap();
        assert!(tx.take_deliveries_of(7).is_empty());
        assert_eq!(tx.take_deliveries(), Vec::new(), "untracked: no ticket");
        let left = take(&mut rx);
        assert_eq!(left.len(), 1);
        assert!(matches!(&left[0], Outgoing::Frame(b) if &b[..] == b"RECEIPT"));
    }

    #[test]
    fn an_empty_outbox_admits_one_item_of_any_size() {
        let (tx, mut rx) = outbox(4, 10);
        assert!(tx.try_push(frame(b"0123456789abcdef")).is_ok());
        assert!(
            tx.try_push(frame(b"1")).is_err(),
            "the budget holds behind it"
        );
        take(&mut rx);
        assert!(tx.try_push(frame(b"1")).is_ok());
    }

    #[tokio::test]
    async fn room_for_waits_for_the_writer_and_slow_clears_below_half() {
        let (tx, mut rx) = outbox(2, 100);
        tx.try_push(frame(b"a")).unwrap();
        tx.try_push(frame(b"b")).unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.room_for(1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert!(tx.mark_slow());
        assert!(!tx.mark_slow(), "marked once");
        take(&mut rx);
        assert!(waiting.await.unwrap());
        assert!(tx.is_slow());
        rx.wake_if_drained();
        assert!(!tx.is_slow());
    }

    #[tokio::test]
    async fn taking_deliveries_back_wakes_publishers_waiting_for_room() {
        let (tx, _rx) = outbox(1, 100);
        tx.try_push(Outgoing::Message {
            head: Bytes::from_static(b"h"),
            tail: Bytes::from_static(b"t"),
            body: Bytes::new(),
            hold: None,
            ticket: Some(Ticket { sub: 1, seq: 0 }),
        })
        .unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.room_for(1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        tx.take_deliveries_of(1);
        let woke = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(woke.expect("woken without a writer batch").unwrap());
    }

    #[tokio::test]
    async fn a_dropped_writer_side_fails_every_wait() {
        let (tx, rx) = outbox(1, 100);
        assert!(tx.push(frame(b"a")).await);
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.push(frame(b"b")).await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        let pushed = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(
            !pushed
                .expect("no writer: the push fails, never hangs")
                .unwrap()
        );
        assert!(!tx.room_for(1).await);
    }

    #[test]
    fn a_drained_outbox_says_so_instead_of_registering() {
        let (tx, mut rx) = outbox(4, 1000);
        for _ in 0..4 {
            tx.try_push(frame(b"x")).unwrap();
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let weak: Weak<dyn Wake> = Arc::downgrade(&(flag.clone() as Arc<dyn Wake>));
        assert!(!tx.wake_when_ready_or_now(weak.clone()), "full: registered");
        take(&mut rx);
        // The writer drained it before a second caller looked: no wake-up would come.
        assert!(tx.wake_when_ready_or_now(weak));
        rx.wake_if_drained();
        assert!(
            flag.0.load(Ordering::SeqCst),
            "the first registration is still woken"
        );
    }

    #[test]
    fn take_deliveries_keeps_control_frames() {
        let (tx, mut rx) = outbox(8, 1000);
        let msg = |seq| Outgoing::Message {
            head: Bytes::from_static(b"h"),
            tail: Bytes::from_static(b"t"),
            body: Bytes::new(),
            hold: None,
            ticket: Some(Ticket { sub: 1, seq }),
        };
        tx.try_push(msg(0)).unwrap();
        tx.try_push(frame(b"RECEIPT")).unwrap();
        tx.try_push(msg(1)).unwrap();
        assert_eq!(
            tx.take_deliveries(),
            vec![Ticket { sub: 1, seq: 0 }, Ticket { sub: 1, seq: 1 }]
        );
        let left = take(&mut rx);
        assert_eq!(left.len(), 1);
        assert!(matches!(&left[0], Outgoing::Frame(b) if &b[..] == b"RECEIPT"));
    }

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn starved_destinations_woken_below_half() {
        let (tx, mut rx) = outbox(4, 1000);
        for _ in 0..4 {
            tx.try_push(frame(b"x")).unwrap();
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let weak: Weak<dyn Wake> = Arc::downgrade(&(flag.clone() as Arc<dyn Wake>));
        assert!(!tx.wake_when_ready_or_now(weak), "full: registered");
        rx.wake_if_drained();
        assert!(!flag.0.load(Ordering::SeqCst), "full is not below half");
        take(&mut rx);
        for _ in 0..3 {
            tx.try_push(frame(b"x")).unwrap();
        }
        rx.wake_if_drained();
        assert!(
            !flag.0.load(Ordering::SeqCst),
            "3 of 4 queued is not below half"
        );
        take(&mut rx);
        rx.wake_if_drained();
        assert!(flag.0.load(Ordering::SeqCst));
    }

    /// Finding 7 of issue 9: a refused push and the waker's registration happen under
    /// one lock, so a writer that drains right after the refusal still wakes the
    /// destination (before, the credit check and the registration took the lock
    /// twice, leaving a window in between).
    #[test]
    fn a_refused_push_registers_its_waker_under_the_same_lock() {
        let (tx, mut rx) = outbox(2, 1000);
        tx.try_push(frame(b"a")).unwrap();
        tx.try_push(frame(b"b")).unwrap();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let weak: Weak<dyn Wake> = Arc::downgrade(&(flag.clone() as Arc<dyn Wake>));
        assert!(tx.try_push_or_register(frame(b"c"), Some(&weak)).is_err());
        // The writer drains at once: the registration is already there to be woken.
        take(&mut rx);
        rx.wake_if_drained();
        assert!(flag.0.load(Ordering::SeqCst));
        // An accepted push registers nothing.
        let other = Arc::new(Flag(AtomicBool::new(false)));
        let weak: Weak<dyn Wake> = Arc::downgrade(&(other.clone() as Arc<dyn Wake>));
        tx.try_push_or_register(frame(b"d"), Some(&weak)).unwrap();
        take(&mut rx);
        rx.wake_if_drained();
        assert!(!other.0.load(Ordering::SeqCst));
    }
}
