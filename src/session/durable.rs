//! Which durable topic subscription a SUBSCRIBE or UNSUBSCRIBE names, in the three
//! dialects clients send (see `router::durable` for what one is):
//!
//! - RabbitMQ: `durable:true` (or its alias `persistent:true`) with `auto-delete:false`
//!   and the subscription `id`; the key is the id and the topic.
//! - ActiveMQ Classic: CONNECT `client-id` and `activemq.subscriptionName`.
//! - Artemis: CONNECT `client-id` and `durable-subscription-name` (or the older
//!   `durable-subscriber-name`).
//!
//! UNSUBSCRIBE with the same headers deletes the subscription and its backlog; a
//! plain UNSUBSCRIBE only detaches, and the backlog keeps growing (bounded by the
//! queue limits). Artemis may delete by name with no live subscription.

use super::{Session, SessionError};
use crate::frame::Frame;

/// The subscription-name headers, in Artemis's documented precedence.
const NAMES: [&str; 3] = [
    "durable-subscription-name",
    "durable-subscriber-name",
    "activemq.subscriptionName",
];

impl Session {
    /// The key of the durable subscription `frame` names by client id and name.
    pub(super) fn named_durable(&self, frame: &Frame) -> Result<Option<String>, SessionError> {
        let Some(name) = NAMES.iter().find_map(|h| frame.headers.get(h)) else {
            return Ok(None);
        };
        let client = self
            .client_id
            .as_deref()
            .ok_or(SessionError::DurableNeedsClientId)?;
        Ok(Some(format!("client/{client}/{name}")))
    }

    /// The key of the durable subscription a SUBSCRIBE (or UNSUBSCRIBE) of
    /// subscription `id` to `destination` names, if it names one: only topics have
    /// durable subscriptions.
    pub(super) fn durable_key(
        &self,
        frame: &Frame,
        destination: &str,
        id: &str,
    ) -> Result<Option<String>, SessionError> {
        if !destination.starts_with("/topic/") {
            return Ok(None);
        }
        if let Some(key) = self.named_durable(frame)? {
            return Ok(Some(key));
        }
        let yes = |h: &str| {
            frame
                .headers
                .get(h)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        };
        if (yes("durable") || yes("persistent")) && !yes("auto-delete") {
            return Ok(Some(format!("rabbitmq/{id}/{destination}")));
        }
        Ok(None)
    }
}
