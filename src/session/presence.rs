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
//! Ordering: the connection list is updated before an event is published, and a
//! snapshot is taken after its subscriber is attached, so an event racing a snapshot
//! is at worst repeated (a `subscribed` of a member the snapshot has, an
//! `unsubscribed` of one it has not) — the client's set stays right.

use bytes::Bytes;
use serde_json::json;

use crate::connections::{Connections, SubInfo};
use crate::frame::Headers;
use crate::router::{Router, SYSTEM};

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

fn headers() -> Headers {
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
    // A watcher with a full outbox is waited for as any topic subscriber is (up to
    // the slow-consumer grace), off this session's path.
    if let Some(wait) = router.publish_system(&topic, headers(), body) {
        tokio::spawn(wait);
    }
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

/// The headers of presence messages.
pub fn message_headers() -> Headers {
    headers()
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
