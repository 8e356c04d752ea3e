//! A subscription as destinations see it: where to deliver, how acks work, and the
//! deliveries still waiting for an ACK.
//!
//! Pending acks live here, behind the subscription's own small mutex, rather than in
//! the session: the destination records a delivery at the moment it pushes it, and the
//! session settles ACK/NACK without taking any destination lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{Message, Queue};
use crate::frame::{MessageParts, Version};
use crate::outbox::{OutboxTx, Outgoing};

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

/// A delivery waiting for ACK or NACK.
#[derive(Debug)]
pub struct Unacked {
    /// Sequence number within the subscription (the second half of the ack id).
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// How many times it had been redelivered before this delivery.
    pub redeliveries: u32,
    /// For queue messages: the queue-depth permit, released when settled.
    pub permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, Default)]
struct Pending {
    next_seq: u64,
    items: VecDeque<Unacked>,
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
    /// `MESSAGE\nsubscription:<id>\n`, encoded once.
    prefix: Bytes,
    /// Deliveries counted against `prefetch`.
    in_flight: AtomicUsize,
    pending: Mutex<Pending>,
}

/// What a failed delivery hands back to the destination.
pub struct Undelivered {
    /// The message.
    pub message: Arc<Message>,
    /// Its queue-depth permit, if any.
    pub permit: Option<OwnedSemaphorePermit>,
}

impl Subscription {
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
            in_flight: AtomicUsize::new(0),
            pending: Mutex::new(Pending::default()),
        }
    }

    /// Whether a queue may hand this subscription another message now.
    pub fn has_credit(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) < self.prefetch && self.outbox.has_room()
    }

    /// Whether the prefetch window (not the outbox) is what stops deliveries.
    pub fn window_full(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) >= self.prefetch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().expect("subscription lock poisoned")
    }

    /// Pushes one delivery into the outbox. For client modes the delivery is recorded as
    /// pending first; for auto-ack queue deliveries `queue` makes the writer settle it.
    /// On a full outbox everything is undone and the message handed back.
    pub fn deliver(
        self: &Arc<Self>,
        message: Arc<Message>,
        redeliveries: u32,
        permit: Option<OwnedSemaphorePermit>,
        queue: Option<&Arc<Queue>>,
    ) -> Result<(), Undelivered> {
        if self.ack == AckMode::Auto && queue.is_none() && redeliveries == 0 {
            // Topic fan-out: subscribers that share a subscription id (every stompjs
            // client's first one is `sub-0`) get the very same frame bytes.
            let (head, tail) = message.frame_for(&self.prefix, self.version);
            return self
                .outbox
                .try_push(Outgoing::Message {
                    head,
                    tail,
                    auto: None,
                })
                .map_err(|_| Undelivered {
                    message,
                    permit: None,
                });
        }
        let tail = message.tail(self.version);
        if self.ack == AckMode::Auto {
            let auto = queue.map(|q| AutoAck {
                queue: q.clone(),
                sub: self.clone(),
                message: message.clone(),
                redeliveries,
                permit,
            });
            if auto.is_some() {
                self.in_flight.fetch_add(1, Ordering::AcqRel);
            }
            let head = MessageParts::head(&self.prefix, None, redeliveries);
            return match self.outbox.try_push(Outgoing::Message { head, tail, auto }) {
                Ok(()) => Ok(()),
                Err(Outgoing::Message { auto: Some(a), .. }) => {
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                    Err(Undelivered {
                        message: a.message,
                        permit: a.permit,
                    })
                }
                Err(_) => Err(Undelivered {
                    message,
                    permit: None,
                }),
            };
        }
        let mut pending = self.lock();
        let seq = pending.next_seq;
        let ack_id = format!("{}-{}", self.key, seq);
        let head = MessageParts::head(&self.prefix, Some(&ack_id), redeliveries);
        match self.outbox.try_push(Outgoing::Message {
            head,
            tail,
            auto: None,
        }) {
            Ok(()) => {
                pending.next_seq += 1;
                pending.items.push_back(Unacked {
                    seq,
                    message,
                    redeliveries,
                    permit,
                });
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(_) => Err(Undelivered { message, permit }),
        }
    }

    /// Settles the delivery `seq` (and, in `client` mode, every earlier one). `None`
    /// when no such delivery is pending: unknown or already settled.
    pub fn settle(&self, seq: u64) -> Option<Vec<Unacked>> {
        let mut pending = self.lock();
        let pos = pending.items.iter().position(|u| u.seq == seq)?;
        Some(self.take(&mut pending, pos))
    }

    /// Settles by `message-id`, for STOMP 1.0/1.1 clients that ack that way.
    pub fn settle_message_id(&self, message_id: &str) -> Option<Vec<Unacked>> {
        let mut pending = self.lock();
        let pos = pending
            .items
            .iter()
            .position(|u| u.message.id == message_id)?;
        Some(self.take(&mut pending, pos))
    }

    fn take(&self, pending: &mut Pending, pos: usize) -> Vec<Unacked> {
        let taken: Vec<Unacked> = match self.ack {
            AckMode::Client => pending.items.drain(..=pos).collect(),
            _ => pending.items.remove(pos).into_iter().collect(),
        };
        self.in_flight.fetch_sub(taken.len(), Ordering::AcqRel);
        taken
    }

    /// Everything still pending, for requeueing when the subscription ends.
    pub fn take_all_pending(&self) -> Vec<Unacked> {
        let mut pending = self.lock();
        let taken: Vec<Unacked> = pending.items.drain(..).collect();
        self.in_flight.fetch_sub(taken.len(), Ordering::AcqRel);
        taken
    }

    /// Parses an ack id we handed out into (subscription key, sequence).
    pub fn parse_ack_id(id: &str) -> Option<(u64, u64)> {
        let (key, seq) = id.split_once('-')?;
        Some((key.parse().ok()?, seq.parse().ok()?))
    }
}

/// An auto-ack queue delivery riding in the outbox. The writer calls [`AutoAck::written`]
/// once the frame is on the wire; one that is never written is requeued with
/// [`AutoAck::unwritten`], so a connection dying with a full outbox loses nothing.
#[derive(Debug)]
pub struct AutoAck {
    queue: Arc<Queue>,
    sub: Arc<Subscription>,
    message: Arc<Message>,
    redeliveries: u32,
    permit: Option<OwnedSemaphorePermit>,
}

impl AutoAck {
    /// The frame was written: free the queue slot and, if this subscription's window was
    /// full, let the queue deliver more.
    pub fn written(self) {
        let before = self.sub.in_flight.fetch_sub(1, Ordering::AcqRel);
        drop(self.permit);
        if before >= self.sub.prefetch {
            self.queue.dispatch();
        }
    }

    /// The frame was never written: put the message back at the head of its queue.
    pub fn unwritten(self) {
        self.sub.in_flight.fetch_sub(1, Ordering::AcqRel);
        let item = Unacked {
            seq: 0,
            message: self.message,
            redeliveries: self.redeliveries,
            permit: self.permit,
        };
        self.queue.requeue(vec![item], false);
    }
}
