//! A published message, shared by reference between every subscriber it reaches.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};

use crate::frame::{Headers, MessageParts, Version};

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
    /// The encoded MESSAGE tail per protocol version, built on first use, so a publish
    /// is encoded once per version present among its subscribers.
    tails: [OnceLock<Bytes>; 3],
    /// Per version, the whole frame (prefix + tail) for the first auto-ack subscription
    /// prefix seen, so that a fan-out to subscribers sharing a subscription id hands
    /// every one the same bytes: no per-delivery join, and over WebSocket no copy
    /// before tungstenite's own.
    whole: [OnceLock<(Bytes, Bytes)>; 3],
}

impl Message {
    /// A message ready to route.
    pub fn new(id: String, destination: String, headers: Headers, body: Bytes) -> Self {
        Message {
            id,
            destination,
            headers,
            body,
            tails: Default::default(),
            whole: Default::default(),
        }
    }

    /// An auto-ack topic delivery as (head, tail): the cached whole frame with an empty
    /// tail when `prefix` is the one cached, otherwise `prefix` and the shared tail.
    pub fn frame_for(&self, prefix: &Bytes, version: Version) -> (Bytes, Bytes) {
        let (cached_prefix, whole) = self.whole[version.index()].get_or_init(|| {
            let tail = self.tail(version);
            let mut frame = BytesMut::with_capacity(prefix.len() + tail.len());
            frame.extend_from_slice(prefix);
            frame.extend_from_slice(&tail);
            (prefix.clone(), frame.freeze())
        });
        if cached_prefix == prefix {
            (whole.clone(), Bytes::new())
        } else {
            (prefix.clone(), self.tail(version))
        }
    }

    /// The encoded tail of the MESSAGE frame for subscribers speaking `version`.
    pub fn tail(&self, version: Version) -> Bytes {
        self.tails[version.index()]
            .get_or_init(|| {
                MessageParts::tail(
                    &self.destination,
                    &self.id,
                    &self.headers,
                    &self.body,
                    version,
                )
            })
            .clone()
    }
}
