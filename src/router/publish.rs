//! One publish path. A STOMP SEND, an HTTP `POST /api/publish` and the admin API's
//! `POST /api/messages` all make their message with [`Router::client_message`]: the
//! headers the broker owns removed, persistence (`persistent`, `queues.persistent_by_default`
//! and `[[queues.policies]]`), the TTL of its queue or policy, and its expiry and delay
//! headers, decided here once. HTTP and the admin API then hand it on with
//! [`Router::publish`], which waits as a SEND does: for the memory alarm, for room in
//! a full queue (the drop-oldest policy making room only after the memory wait), and
//! for the disk when the message is persistent. A STOMP connection hands its messages
//! on through the same router calls, pipelined (see `session::persist`).
//!
//! Who may publish where (ACLs) is the caller's to check: each path knows its client.

use bytes::Bytes;

use super::{Message, Quota, RouteError, Router, TOPIC, now_ms, timing};
use crate::frame::Headers;

/// Headers a producer may not pass through to MESSAGE: the broker sets them, or they
/// only mean something on the SEND itself.
const RESERVED: [&str; 11] = [
    "destination",
    "receipt",
    "transaction",
    "content-length",
    "message-id",
    "subscription",
    "ack",
    "redelivered",
    "redelivery-count",
    // Set when a message is dead-lettered: a producer must not forge where it came
    // from or why it died.
    "original-destination",
    "dead-letter-reason",
];

/// Whether a producer header is one the broker sets or drops (see `RESERVED`).
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name)
}

impl Router {
    /// The message a client publishes to `destination` (checked by the caller) with
    /// `headers` and `body`, whichever path it came by.
    pub fn client_message(
        &self,
        destination: String,
        mut headers: Headers,
        body: Bytes,
    ) -> Result<Message, RouteError> {
        headers.retain(|k, _| !is_reserved(k));
        // It lives as long as the message: no room for the removed ones.
        headers.shrink_to_fit();
        let queue = destination.starts_with("/queue/");
        let (expires_ms, deliver_at_ms) = if queue {
            timing::timing(&headers, now_ms, self.message_ttl_ms(&destination))?
        } else {
            (0, 0)
        };
        let persistent = if queue {
            self.persists(&destination, headers.get("persistent"))
        } else {
            // A persistent topic message is stored in the durable subscriptions it feeds.
            destination.starts_with(TOPIC)
                && self.store().is_some()
                && headers
                    .get("persistent")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        };
        let mut message = self.message(destination, headers, body);
        message.expires_ms = expires_ms;
        message.deliver_at_ms = deliver_at_ms;
        message.persistent = persistent;
        Ok(message)
    }

    /// Hands on a message from [`Router::client_message`] and waits until it is
    /// accepted — for a persistent one, until it is on disk. A queue it creates counts
    /// against `quota`.
    pub async fn publish(&self, message: Message, quota: Option<&Quota>) -> Result<(), RouteError> {
        let stored = message.persistent;
        if !(stored && message.destination.starts_with("/queue/")) {
            if let Some(wait) = self.route(message, quota)? {
                wait.await?;
            }
            // A persistent topic message: its copies in durable subscriptions.
            return if stored { self.on_disk().await } else { Ok(()) };
        }
        let high = self.memory().is_high();
        let mut reservation = if high {
            self.reserve(&message.destination, message.size, quota)?
        } else {
            self.reserve_evicting(&message.destination, message.size, quota)?
        };
        self.memory_room().await?;
        reservation.evict();
        reservation.fill().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.persist(vec![(reservation, message)], move |r| {
            let _ = tx.send(r);
        });
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RouteError::Store(e.to_string())),
            Err(_) => Err(RouteError::Store("the store stopped".into())),
        }
    }

    /// A quota of `limits.max_queues_per_connection` queues, for one client
    /// connection (HTTP ones too).
    pub fn connection_quota(&self) -> Quota {
        Quota::new(self.inner.config.max_queues_per_connection)
    }

    /// Waits until everything submitted to the store before is on disk.
    pub async fn on_disk(&self) -> Result<(), RouteError> {
        match self.store() {
            Some(store) => store
                .commit(Vec::new())
                .await
                .map_err(|e| RouteError::Store(e.to_string())),
            None => Ok(()),
        }
    }
}
