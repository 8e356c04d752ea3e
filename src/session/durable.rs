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
//!
//! **Owned.** A key is scoped by who the connection authenticated as
//! (`user:LOGIN/…`; every anonymous client is the one `anonymous` owner, having no
//! identity to tell them apart): another user cannot name, attach to, replace or
//! delete it, whatever ids they choose. Its parts are escaped (`%` → `%25`, `/` →
//! `%2F`), so no two different (owner, dialect, parts) spell one key. The RabbitMQ
//! dialect includes CONNECT's `client-id` when there is one, so two apps of one user
//! that both use stompjs's default ids (`sub-0`) keep apart by their client ids.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{Session, SessionError};
use crate::frame::Frame;

/// The client ids live connections use, per owner. As ActiveMQ and Artemis do, a
/// second connection with a client id in use is refused, so two clients never share
/// one named durable subscription; per owner, so a stranger cannot lock a user's
/// client id out by taking it first.
#[derive(Debug, Default)]
pub struct ClientIds(Arc<Mutex<HashSet<String>>>);

/// A client id held by a connection; given back when dropped.
#[derive(Debug)]
pub(super) struct ClientIdClaim {
    ids: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl ClientIds {
    /// Takes `client` for `owner`, unless a live connection holds it.
    pub(super) fn claim(&self, owner: &str, client: &str) -> Option<ClientIdClaim> {
        let key = format!("{owner}/{}", escape(client));
        let mut ids = self.0.lock().expect("client ids lock poisoned");
        ids.insert(key.clone()).then(|| ClientIdClaim {
            ids: self.0.clone(),
            key,
        })
    }
}

impl Drop for ClientIdClaim {
    fn drop(&mut self) {
        self.ids
            .lock()
            .expect("client ids lock poisoned")
            .remove(&self.key);
    }
}

/// `part` with `%` and `/` escaped, so that `/` only ever separates parts.
fn escape(part: &str) -> Cow<'_, str> {
    if part.contains(['%', '/']) {
        Cow::Owned(part.replace('%', "%25").replace('/', "%2F"))
    } else {
        Cow::Borrowed(part)
    }
}

/// The owner scope of durable subscriptions made by `login` (`None`: anonymous).
pub(super) fn owner(login: Option<&str>) -> String {
    match login {
        Some(login) => format!("user:{}", escape(login)),
        None => "anonymous".to_owned(),
    }
}

/// The key of `owner`'s durable subscription in `dialect`, named by `parts`.
fn key(owner: &str, dialect: &str, parts: &[&str]) -> String {
    let mut key = format!("{owner}/{dialect}");
    for part in parts {
        key.push('/');
        key.push_str(&escape(part));
    }
    key
}

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
        Ok(Some(key(
            &owner(self.proven_login()),
            "client",
            &[client, name],
        )))
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
            let client = self.client_id.as_deref().unwrap_or("");
            return Ok(Some(key(
                &owner(self.proven_login()),
                "rabbitmq",
                &[client, id, destination],
            )));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 19: `client/{client-id}/{name}` let `a/b` + `c` and `a` + `b/c` meet.
    #[test]
    fn keys_are_unambiguous_and_owned() {
        let alice = owner(Some("alice"));
        assert_ne!(
            key(&alice, "client", &["a/b", "c"]),
            key(&alice, "client", &["a", "b/c"])
        );
        assert_ne!(
            key(&alice, "client", &["a%2Fb", "c"]),
            key(&alice, "client", &["a/b", "c"])
        );
        assert_eq!(
            key(&alice, "rabbitmq", &["", "sub-0", "/topic/x"]),
            "user:alice/rabbitmq//sub-0/%2Ftopic%2Fx"
        );
        assert_ne!(owner(Some("anonymous")), owner(None));
        assert_ne!(owner(Some("a/b")), owner(Some("a")));
        assert_ne!(
            key(&owner(Some("mallory")), "client", &["c", "n"]),
            key(&alice, "client", &["c", "n"])
        );
    }
}
