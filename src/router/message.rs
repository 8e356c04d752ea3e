//! A published message, shared by reference between every subscriber it reaches.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};

use std::sync::Arc;

use crate::frame::{Headers, MessageParts, Version};
use crate::memory::Memory;
use crate::outbox::{Hold, Outgoing, Ticket};
use crate::store::Record;

/// One published message. Held in an `Arc`: a fan-out to 1,000 subscribers, a queue's
/// backlog and a pending-ack list all point at the same allocation and the same body.
#[derive(Debug)]
pub struct Message {
    /// Unique per broker run.
    pub id: String,
    /// The destination the producer sent to (reported in MESSAGE's `destination`).
    pub destination: String,
    /// Producer headers passed through to MESSAGE, reserved ones removed.
    pub headers: Headers,
    /// The body, as received.
    pub body: Bytes,
    /// What the broker holds for it: body, headers, names; what queue byte limits and
    /// the memory gauge count.
    pub size: usize,
    /// Its `size` charged to the broker's memory gauge while anything holds it (a
    /// queue, outboxes, pending acks): once, however many subscribers share it.
    hold: Hold,
    /// Whether `body` has been copied out of its read buffer ([`Message::compact`]).
    compacted: bool,
    /// Kept in the store until settled: the queue it is in writes and deletes its
    /// record through the group commit (see `Queue`).
    pub persistent: bool,
    /// When it expires, in ms since the Unix epoch (0: never); an expired queue
    /// message is dead-lettered instead of delivered.
    pub expires_ms: u64,
    /// When it may be delivered, in ms since the Unix epoch (0: at once).
    pub deliver_at_ms: u64,
    /// When the broker accepted it (or loaded it from the store), for the
    /// publish-to-deliver latency histogram.
    pub published: std::time::Instant,
    /// The encoded MESSAGE headers for the first protocol version it is delivered
    /// in (usually the only one), built on first delivery. The body is not in it: it
    /// goes on the wire from `body` itself.
    tail: OnceLock<(Version, Bytes)>,
    /// Encodings for other versions and whole frames, allocated only if needed: a
    /// queued message carries one pointer for them, not their slots.
    encoded: OnceLock<Box<Encoded>>,
}

/// Bodies smaller than this are copied out of their read buffer when their message
/// waits in a queue; larger ones are most of the buffer they are a slice of.
const COMPACT_BELOW: usize = 8 * 1024;

/// The allocation compacted bodies are packed into: small enough that a long-lived
/// message keeps little else alive with it.
const ARENA_CHUNK: usize = 4 * 1024;

/// A message's encodings, per protocol version.
#[derive(Debug, Default)]
struct Encoded {
    /// The encoded MESSAGE headers per protocol version after the first, so a publish
    /// is encoded once per version present among its subscribers.
    tails: [OnceLock<Bytes>; 3],
    /// Per version, the whole frame (prefix + tail + body) for the first auto-ack
    /// subscription prefix seen, so that a fan-out to subscribers sharing a
    /// subscription id hands every one the same bytes: no per-delivery join, and over
    /// WebSocket no copy before tungstenite's own.
    whole: [OnceLock<(Bytes, Bytes)>; 3],
}

impl Message {
    /// A message ready to route.
    pub fn new(id: String, destination: String, headers: Headers, body: Bytes) -> Self {
        let size = body.len() + id.len() + destination.len() + headers.byte_len();
        Message {
            size,
            id,
            destination,
            headers,
            body,
            hold: None,
            compacted: false,
            persistent: false,
            expires_ms: 0,
            deliver_at_ms: 0,
            published: std::time::Instant::now(),
            tail: OnceLock::new(),
            encoded: OnceLock::new(),
        }
    }

    /// The same message, its size charged to `memory` for as long as it lives.
    pub fn charged(mut self, memory: &Arc<Memory>) -> Self {
        self.hold = Some(Arc::new(memory.charge(self.size)));
        self
    }

    /// The same message, marked persistent.
    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }

    /// Its stored form without the body ([`crate::store::encode_head`]).
    pub fn record_head(&self) -> Bytes {
        crate::store::encode_head(
            &self.id,
            &self.destination,
            &self.headers,
            self.expires_ms,
            self.deliver_at_ms,
        )
    }

    /// A persistent message read back from the store.
    pub fn from_record(record: Record) -> Self {
        let Record {
            id,
            destination,
            headers,
            body,
            expires_ms,
            deliver_at_ms,
        } = record;
        let mut m = Message::new(id, destination, headers, body).persistent();
        m.expires_ms = expires_ms;
        m.deliver_at_ms = deliver_at_ms;
        m
    }

    fn encoded(&self) -> &Encoded {
        self.encoded.get_or_init(Box::default)
    }

    /// Copies a small body out of the buffer it is a slice of (a connection's 16 KiB
    /// read buffer, say) into `arena`, so that a message that waits in a queue holds
    /// its own few bytes, not the whole buffer. The arena packs many bodies into one
    /// allocation (a copy of its own per body would cost two allocations each, which
    /// the profile showed). Done once, and only for waiting messages: one delivered
    /// at once never pays for the copy.
    pub fn compact(&mut self, arena: &mut BytesMut) {
        let len = self.body.len();
        if self.compacted || len >= COMPACT_BELOW {
            return;
        }
        if arena.capacity() < len {
            *arena = BytesMut::with_capacity(ARENA_CHUNK.max(len));
        }
        arena.extend_from_slice(&self.body);
        self.body = arena.split().freeze();
        self.compacted = true;
    }

    /// The same id with nothing else: what an unacknowledged topic delivery keeps.
    pub fn stub(&self) -> Message {
        Message::new(self.id.clone(), String::new(), Headers::new(), Bytes::new())
    }

    /// An auto-ack topic delivery: the cached whole frame when `prefix` is the one
    /// cached, otherwise `prefix` before the shared tail and body.
    pub fn frame_for(&self, prefix: &Bytes, version: Version) -> Outgoing {
        let (cached_prefix, whole) = self.encoded().whole[version.index()].get_or_init(|| {
            let tail = self.tail(version);
            let mut frame =
                BytesMut::with_capacity(prefix.len() + tail.len() + self.body.len() + 1);
            frame.extend_from_slice(prefix);
            frame.extend_from_slice(&tail);
            frame.extend_from_slice(&self.body);
            frame.extend_from_slice(b"\0");
            (prefix.clone(), frame.freeze())
        });
        if cached_prefix == prefix {
            Outgoing::Delivery(whole.clone(), self.hold.clone())
        } else {
            self.delivery(prefix.clone(), version, None)
        }
    }

    /// One delivery's outbox item: its own `head`, then the shared tail and body.
    pub fn delivery(&self, head: Bytes, version: Version, ticket: Option<Ticket>) -> Outgoing {
        Outgoing::Message {
            head,
            tail: self.tail(version),
            body: self.body.clone(),
            hold: self.hold.clone(),
            ticket,
        }
    }

    /// The encoded tail of the MESSAGE frame for subscribers speaking `version`.
    pub fn tail(&self, version: Version) -> Bytes {
        let encode = || {
            MessageParts::tail(
                &self.destination,
                &self.id,
                &self.headers,
                self.body.len(),
                version,
            )
        };
        let (first, tail) = self.tail.get_or_init(|| (version, encode()));
        if *first == version {
            return tail.clone();
        }
        self.encoded().tails[version.index()]
            .get_or_init(encode)
            .clone()
    }
}
