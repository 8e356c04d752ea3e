//! The broker's list of open connections, for the admin side: who is connected, over
//! what, with which subscriptions and how full their outbox is; and the two handles
//! an administrator has on one — close it, and trace its frames.
//!
//! A session registers when its connection starts and is removed when its
//! [`Registered`] guard drops, however the session ends. Nothing on the message path
//! reads this list: it changes on CONNECT, SUBSCRIBE and UNSUBSCRIBE only, and the
//! per-frame cost of tracing is one relaxed load of [`Conn::trace`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use crate::frame::Version;
use crate::outbox::OutboxTx;

/// One subscription, as the admin side and presence events see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubInfo {
    /// The client's subscription id.
    pub id: String,
    /// Its destination (or pattern).
    pub destination: String,
    /// `auto`, `client` or `client-individual`.
    pub ack: &'static str,
    /// The SUBSCRIBE's `presence-info` header: what others see of this subscriber.
    pub info: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    version: Option<Version>,
    login: Option<String>,
    subs: Vec<SubInfo>,
}

/// One open connection.
#[derive(Debug)]
pub struct Conn {
    /// The session id (CONNECTED's `session` header).
    pub id: Arc<str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    /// When it connected, in ms since the epoch.
    pub connected_at_ms: u64,
    /// Log every frame of this connection (switched by the admin API).
    pub trace: AtomicBool,
    /// Cancelled by an administrator to close the connection.
    pub close: CancellationToken,
    outbox: OutboxTx,
    state: Mutex<State>,
}

/// What the admin side reports of a connection.
#[derive(Clone, Debug)]
pub struct ConnView {
    /// See [`Conn::id`].
    pub id: Arc<str>,
    /// See [`Conn::peer`].
    pub peer: SocketAddr,
    /// See [`Conn::transport`].
    pub transport: &'static str,
    /// The negotiated STOMP version, once CONNECTED.
    pub version: Option<Version>,
    /// The login it authenticated as.
    pub login: Option<String>,
    /// See [`Conn::connected_at_ms`].
    pub connected_at_ms: u64,
    /// Its subscriptions.
    pub subscriptions: Vec<SubInfo>,
    /// Frames waiting in its outbox.
    pub outbox_frames: usize,
    /// Bytes waiting in its outbox.
    pub outbox_bytes: usize,
    /// Marked a slow consumer.
    pub slow: bool,
    /// Frame tracing on.
    pub trace: bool,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("connection state lock poisoned")
    }

    /// Records the outcome of CONNECT.
    pub fn connected(&self, version: Version, login: Option<String>) {
        let mut st = self.lock();
        st.version = Some(version);
        st.login = login;
    }

    /// Records a new subscription.
    pub fn subscribed(&self, sub: SubInfo) {
        self.lock().subs.push(sub);
    }

    /// Forgets the subscription `id`.
    pub fn unsubscribed(&self, id: &str) {
        self.lock().subs.retain(|s| s.id != id);
    }

    /// Forgets every subscription (the connection is ending) and returns them.
    pub fn take_subscriptions(&self) -> Vec<SubInfo> {
        std::mem::take(&mut self.lock().subs)
    }

    /// Whether its frames are logged.
    pub fn tracing(&self) -> bool {
        self.trace.load(Ordering::Relaxed)
    }

    /// Its login, if it authenticated.
    pub fn login(&self) -> Option<String> {
        self.lock().login.clone()
    }

    /// A consistent picture of the connection now.
    pub fn view(&self) -> ConnView {
        let (outbox_frames, outbox_bytes) = self.outbox.depth();
        let st = self.lock();
        ConnView {
            id: self.id.clone(),
            peer: self.peer,
            transport: self.transport,
            version: st.version,
            login: st.login.clone(),
            connected_at_ms: self.connected_at_ms,
            subscriptions: st.subs.clone(),
            outbox_frames,
            outbox_bytes,
            slow: self.outbox.is_slow(),
            trace: self.tracing(),
        }
    }
}

/// Every open connection, by session id.
#[derive(Debug, Default)]
pub struct Connections {
    map: Mutex<HashMap<Arc<str>, Arc<Conn>>>,
}

/// Removes its connection from the list when dropped.
#[derive(Debug)]
pub struct Registered {
    list: Arc<Connections>,
    conn: Arc<Conn>,
}

impl std::ops::Deref for Registered {
    type Target = Arc<Conn>;
    fn deref(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.list.lock().remove(&self.conn.id);
    }
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Conn>>> {
        self.map.lock().expect("connection list lock poisoned")
    }

    /// Adds a connection; it stays listed while the returned guard lives.
    pub fn register(
        self: &Arc<Self>,
        id: Arc<str>,
        peer: SocketAddr,
        transport: &'static str,
        outbox: OutboxTx,
    ) -> Registered {
        let conn = Arc::new(Conn {
            id: id.clone(),
            peer,
            transport,
            connected_at_ms: crate::router::now_ms(),
            trace: AtomicBool::new(false),
            close: CancellationToken::new(),
            outbox,
            state: Mutex::new(State::default()),
        });
        self.lock().insert(id, conn.clone());
        Registered {
            list: self.clone(),
            conn,
        }
    }

    /// The connection with session id `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Conn>> {
        self.lock().get(id).cloned()
    }

    /// Every open connection (cloned out, so no lock is held while they are read).
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.lock().values().cloned().collect()
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The subscriptions to exactly `destination`, with their session and login: the
    /// members a presence snapshot lists.
    pub fn subscribers_of(&self, destination: &str) -> Vec<(Arc<str>, Option<String>, SubInfo)> {
        let mut out = Vec::new();
        for conn in self.all() {
            let st = conn.lock();
            for s in st.subs.iter().filter(|s| s.destination == destination) {
                out.push((conn.id.clone(), st.login.clone(), s.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_listed_while_its_guard_lives() {
        let list = Arc::new(Connections::default());
        let (tx, _rx) = crate::outbox::outbox(8, 1024);
        let reg = list.register("s1".into(), "127.0.0.1:5000".parse().unwrap(), "tcp", tx);
        reg.connected(Version::V1_2, Some("bob".into()));
        reg.subscribed(SubInfo {
            id: "0".into(),
            destination: "/topic/a".into(),
            ack: "auto",
            info: Some("x".into()),
        });
        assert_eq!(list.len(), 1);
        let members = list.subscribers_of("/topic/a");
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].1.as_deref(), Some("bob"));
        assert!(list.subscribers_of("/topic/b").is_empty());
        reg.unsubscribed("0");
        assert!(list.subscribers_of("/topic/a").is_empty());
        drop(reg);
        assert!(list.is_empty());
    }
}
