//! Broker-side presence: who subscribes to a destination, published by the broker on
//! the system topic `/sys/presence` + the destination (`/sys/presence/topic/chat`).
//!
//! Clients cannot tell each other reliably that one of them is gone — a crashed tab
//! says nothing — but the broker sees every subscription end: UNSUBSCRIBE, DISCONNECT,
//! or the socket closing. So a subscriber of the presence topic gets, right after its
//! SUBSCRIBE, a `snapshot` of the members (from the connection list), then a
//! `subscribed` or `unsubscribed` event per change, each naming the member by session,
//! subscription id, login and the `presence-info` header it subscribed with.
//!
//! Events are published only while the presence topic has subscribers (one map
//! lookup otherwise), and never for subscriptions to system topics themselves.
//!
//! Ordering: a session updates the connection list before it publishes an event, and
//! a snapshot is built and handed over under the presence topic's lock (which every
//! publish on it takes), after its subscriber is attached. So every event a watcher
//! gets after its snapshot happened after it, and one racing the snapshot is at worst
//! repeated (a `subscribed` of a member the snapshot has, an `unsubscribed` of one it
//! has not): the watcher's set stays right. A watcher whose outbox cannot take an
//! event is disconnected (a slow consumer) instead of missing it.

use bytes::Bytes;
use serde_json::json;

use crate::connections::{Connections, SubInfo};
use crate::frame::Headers;
use crate::router::{Publisher, Router, SYSTEM};

/// The prefix of presence topics.
pub const PREFIX: &str = "/sys/presence";

/// The destination whose presence `topic` tells, if it is a presence topic.
pub fn watched(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(PREFIX)
        .filter(|d| d.starts_with('/') && !d.starts_with(SYSTEM))
}

/// Whether subscriptions to `destination` are announced.
pub fn announced(destination: &str) -> bool {
    !destination.starts_with(SYSTEM)
}

fn member(session: &str, login: Option<&str>, sub: &SubInfo) -> serde_json::Value {
    json!({
        "session": session,
        "subscription": sub.id,
        "login": login,
        "info": sub.info,
    })
}

/// The headers of presence messages.
pub fn message_headers() -> Headers {
    let mut h = Headers::new();
    h.push("content-type", "application/json");
    h
}

/// Publishes `event` (`subscribed` or `unsubscribed`) for one subscription, if anyone
/// watches its destination.
pub fn announce(router: &Router, event: &str, session: &str, login: Option<&str>, sub: &SubInfo) {
    if !announced(&sub.destination) {
        return;
    }
    let topic = format!("{PREFIX}{}", sub.destination);
    if !router.has_subscribers(&topic) {
        return;
    }
    let body = json!({
        "event": event,
        "destination": sub.destination,
        "member": member(session, login, sub),
    });
    let body = Bytes::from(body.to_string());
    // A watcher that cannot take an event now is disconnected rather than left with
    // a wrong list; it resubscribes and gets a fresh snapshot.
    router.publish_system(&topic, message_headers(), body, Publisher::Presence);
}

/// The body of the snapshot a new watcher of `destination` gets.
pub fn snapshot(connections: &Connections, destination: &str) -> Bytes {
    let members: Vec<serde_json::Value> = connections
        .subscribers_of(destination)
        .iter()
        .map(|(session, login, sub)| member(session, login.as_deref(), sub))
        .collect();
    let body = json!({
        "event": "snapshot",
        "destination": destination,
        "members": members,
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_topics_name_the_destination_they_watch() {
        assert_eq!(watched("/sys/presence/topic/chat"), Some("/topic/chat"));
        assert_eq!(watched("/sys/presence/queue/a"), Some("/queue/a"));
        assert_eq!(watched("/sys/presence"), None);
        assert_eq!(watched("/sys/presencex/topic/a"), None);
        assert_eq!(watched("/sys/presence/sys/stats"), None);
        assert!(announced("/topic/chat"));
        assert!(!announced("/sys/stats"));
    }
}
