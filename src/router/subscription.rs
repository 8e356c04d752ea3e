//! A subscription as destinations see it: where to deliver, how acks work, and (in
//! [`super::delivery`]) the deliveries whose fate is not settled yet.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::delivery::{Delivery, Pending};
use super::queue::Permit;
use super::{Message, Target};
use crate::frame::{MessageParts, Version};
use crate::outbox::{OutboxTx, Ticket, Wake};

/// The SUBSCRIBE `ack` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Delivered means acknowledged.
    Auto,
    /// ACK/NACK are cumulative per subscription.
    Client,
    /// ACK/NACK settle exactly one message.
    ClientIndividual,
}

impl AckMode {
    /// The `ack` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }

    /// Parses the header value; `None` for anything but the three spec values.
    pub fn parse(v: &str) -> Option<AckMode> {
        match v {
            "auto" => Some(AckMode::Auto),
            "client" => Some(AckMode::Client),
            "client-individual" => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }
}

/// One SUBSCRIBE of one session.
#[derive(Debug)]
pub struct Subscription {
    /// The owning session's id (temp-queue ownership, logging).
    pub session: Arc<str>,
    /// Session-local number, the first half of every ack id this subscription hands out.
    pub key: u64,
    /// The client's subscription `id`.
    pub id: String,
    /// The ack mode.
    pub ack: AckMode,
    /// Most deliveries in flight (unacked, or for auto mode unwritten) at once.
    pub prefetch: usize,
    /// The subscriber's protocol version, for encoding.
    pub version: Version,
    /// Where deliveries go.
    pub outbox: OutboxTx,
    /// Cancelled to disconnect the session when it is a slow topic consumer.
    pub kill: CancellationToken,
    /// What it is attached to, set once by `Router::attach`.
    pub(super) target: OnceLock<Target>,
    /// Set once detached from its destination (UNSUBSCRIBE, or the connection ending).
    pub(super) detached: AtomicBool,
    /// `MESSAGE\nsubscription:<id>\n`, encoded once.
    prefix: Bytes,
    /// Deliveries counted against `prefetch`.
    in_flight: AtomicUsize,
    /// Deliveries not settled yet; see [`super::delivery`].
    pending: Mutex<Pending>,
}

/// What a failed delivery hands back to the queue.
pub struct Undelivered {
    /// The message.
    pub message: Arc<Message>,
    /// Its queue-depth permit, if any.
    pub permit: Option<Permit>,
}

impl Subscription {
    /// The counters of what it is attached to (none for a wildcard pattern).
    pub(super) fn stats(&self) -> Option<&Arc<super::DestStats>> {
        match self.target.get()? {
            Target::Queue(q) => Some(&q.stats),
            Target::Topic(t) => Some(&t.stats),
            Target::Wildcard(_) => None,
        }
    }

    /// A new subscription; `kill` is the session's slow-consumer signal.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        session: Arc<str>,
        key: u64,
        id: String,
        ack: AckMode,
        prefetch: usize,
        version: Version,
        outbox: OutboxTx,
        kill: CancellationToken,
    ) -> Self {
        Subscription {
            prefix: MessageParts::prefix(&id, version),
            session,
            key,
            id,
            ack,
            prefetch,
            version,
            outbox,
            kill,
            target: OnceLock::new(),
            detached: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            pending: Mutex::new(Pending::default()),
        }
    }

    /// Whether it has been detached from its destination (UNSUBSCRIBE, or the end).
    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Acquire)
    }

    /// An upper bound of the wire size of one delivery of `message`: the prefix, an
    /// `ack` header, and the shared tail. What a publisher waits for room for.
    pub fn delivery_len(&self, message: &Message) -> usize {
        self.prefix.len() + message.tail(self.version).len() + message.body.len() + 65
    }

    /// Whether a queue may hand this subscription another message now.
    pub fn has_credit(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) < self.prefetch && self.outbox.has_room()
    }

    /// Whether the prefetch window (not the outbox) is what stops deliveries.
    pub fn window_full(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) >= self.prefetch
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().expect("subscription lock poisoned")
    }

    /// Frees `n` units of prefetch credit; returns the count before.
    pub(super) fn release_credit(&self, n: usize) -> usize {
        self.in_flight.fetch_sub(n, Ordering::AcqRel)
    }

    /// Delivers a system topic's first message to an auto-ack subscription whatever its
    /// outbox holds (one per SUBSCRIBE: bounded by `limits.max_subscriptions`); false
    /// if the connection is gone or the subscription is not auto-ack.
    pub fn deliver_now(&self, message: &Arc<Message>) -> bool {
        self.ack == AckMode::Auto
            && !self.is_detached()
            && self
                .outbox
                .push_now(message.frame_for(&self.prefix, self.version))
    }

    /// One topic delivery. Auto-ack subscriptions are not tracked: their frame is the
    /// whole, shared encoding (subscribers that share a subscription id, as every
    /// stompjs client's first one is `sub-0`, get the very same bytes). Client-ack ones
    /// are tracked for their ack ids and window. On a full outbox nothing is recorded
    /// and it returns false.
    pub fn deliver_topic(self: &Arc<Self>, message: &Arc<Message>) -> bool {
        if self.ack == AckMode::Auto {
            if self.is_detached() {
                return false;
            }
            return self
                .outbox
                .try_push(message.frame_for(&self.prefix, self.version))
                .is_ok();
        }
        self.deliver(message.clone(), 0, None, 0, None).is_ok()
    }

    /// Pushes one tracked delivery into the outbox (queue messages in every ack mode,
    /// topic messages in client modes): recorded as pending with a [`Ticket`] the writer
    /// reports back. `qseq` is the message's place in its queue's order. On a full
    /// outbox nothing is recorded, the message is handed back, and `waker` (the queue)
    /// is registered to be woken once the outbox drains.
    pub fn deliver(
        self: &Arc<Self>,
        message: Arc<Message>,
        redeliveries: u32,
        permit: Option<Permit>,
        qseq: u64,
        waker: Option<&Weak<dyn Wake>>,
    ) -> Result<(), Undelivered> {
        let mut pending = self.lock();
        // Checked under the pending lock, which UNSUBSCRIBE takes after detaching: a
        // delivery is either refused here or found and taken back there.
        if self.is_detached() {
            return Err(Undelivered { message, permit });
        }
        let seq = pending.next_seq();
        let ack_id = (self.ack != AckMode::Auto).then(|| format!("{}-{}", self.key, seq));
        let head = MessageParts::head(&self.prefix, ack_id.as_deref(), redeliveries);
        let ticket = Some(Ticket { sub: self.key, seq });
        match self
            .outbox
            .try_push_or_register(message.delivery(head, self.version, ticket), waker)
        {
            Ok(()) => {
                // Topics keep nothing: an unacknowledged topic delivery needs only its
                // id for ACK/NACK, not the body (the outbox has the frame to write).
                let message = match self.target.get() {
                    Some(Target::Queue(_)) => message,
                    _ => Arc::new(message.stub()),
                };
                pending.record(Delivery {
                    seq,
                    message,
                    redeliveries,
                    permit,
                    qseq,
                    written: false,
                });
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(_) => Err(Undelivered { message, permit }),
        }
    }

    /// Parses an ack id we handed out into (subscription key, sequence).
    pub fn parse_ack_id(id: &str) -> Option<(u64, u64)> {
        let (key, seq) = id.split_once('-')?;
        Some((key.parse().ok()?, seq.parse().ok()?))
    }
}
