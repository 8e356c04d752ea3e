//! The JSON shapes of the admin API and of `/sys/stats` snapshots, as
//! `admin/openapi.json` describes them.

use std::collections::HashMap;

use serde::Serialize;

use super::AdminState;
use crate::connections::ConnView;
use crate::metrics::Metrics;

/// `GET /api/overview`.
#[derive(Debug, Serialize)]
pub struct Overview {
    version: &'static str,
    uptime_ms: u64,
    connections: Connections,
    messages: Messages,
    rates: Rates,
    slow_consumer_events: u64,
    memory: Memory,
    store: Store,
    listeners: Listeners,
}

#[derive(Debug, Serialize)]
struct Connections {
    open: usize,
    total: u64,
    by_transport: HashMap<&'static str, usize>,
}

#[derive(Debug, Serialize)]
struct Messages {
    published: u64,
    delivered: u64,
    acked: u64,
    nacked: u64,
    redelivered: u64,
    expired: u64,
    dead_lettered: u64,
    dropped: u64,
}

/// Rates per second over the last stats interval.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Rates {
    /// Messages accepted per second.
    pub published_per_s: f64,
    /// Deliveries per second.
    pub delivered_per_s: f64,
}

#[derive(Debug, Serialize)]
struct Memory {
    used_bytes: usize,
    high_watermark_bytes: usize,
}

#[derive(Debug, Serialize)]
struct Store {
    enabled: bool,
    commits: u64,
    ops: u64,
}

/// The bound addresses, so that a client of the API learns where STOMP is.
#[derive(Clone, Debug, Serialize)]
pub struct Listeners {
    /// STOMP over TCP.
    pub tcp: String,
    /// STOMP over WebSocket.
    pub ws: String,
    /// Its path.
    pub ws_path: String,
    /// STOMP over TLS, if on.
    pub tcp_tls: Option<String>,
    /// `wss://`, if on.
    pub wss: Option<String>,
    /// This listener.
    pub admin: String,
}

/// One connection.
#[derive(Debug, Serialize)]
pub struct Connection {
    id: String,
    peer: String,
    transport: &'static str,
    version: Option<&'static str>,
    login: Option<String>,
    connected_at_ms: u64,
    subscriptions: Vec<Subscription>,
    outbox_frames: usize,
    outbox_bytes: usize,
    slow: bool,
    trace: bool,
}

#[derive(Debug, Serialize)]
struct Subscription {
    id: String,
    destination: String,
    ack: &'static str,
}

impl From<ConnView> for Connection {
    fn from(v: ConnView) -> Connection {
        Connection {
            id: v.id.to_string(),
            peer: v.peer.to_string(),
            transport: v.transport,
            version: v.version.map(|v| v.as_str()),
            login: v.login,
            connected_at_ms: v.connected_at_ms,
            subscriptions: v
                .subscriptions
                .into_iter()
                .map(|s| Subscription {
                    id: s.id,
                    destination: s.destination,
                    ack: s.ack,
                })
                .collect(),
            outbox_frames: v.outbox_frames,
            outbox_bytes: v.outbox_bytes,
            slow: v.slow,
            trace: v.trace,
        }
    }
}

/// One destination. Counters and rates are `null` for a destination without a
/// label of its own (past `admin.max_destination_labels`, or a temp queue).
#[derive(Debug, Serialize)]
pub struct Destination {
    name: String,
    kind: &'static str,
    depth: usize,
    bytes: usize,
    unacked: usize,
    consumers: usize,
    published: Option<u64>,
    delivered: Option<u64>,
    published_per_s: Option<f64>,
    delivered_per_s: Option<f64>,
}

/// A `/sys/stats` message.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    at_ms: u64,
    overview: Overview,
    destinations: Vec<Destination>,
    connections: Vec<Connection>,
    truncated: bool,
}

pub(super) fn overview(state: &AdminState) -> Overview {
    let router = &state.shared.router;
    let m = router.metrics();
    let mut by_transport: HashMap<&'static str, usize> = ["tcp", "ws", "tls", "wss"]
        .into_iter()
        .map(|t| (t, 0))
        .collect();
    let conns = state.shared.connections.all();
    for c in &conns {
        *by_transport.entry(c.transport).or_default() += 1;
    }
    let mut messages = Messages {
        published: 0,
        delivered: 0,
        acked: 0,
        nacked: 0,
        redelivered: 0,
        expired: 0,
        dead_lettered: 0,
        dropped: 0,
    };
    for (_, s) in router.stats().all() {
        messages.acked += Metrics::get(&s.acked);
        messages.nacked += Metrics::get(&s.nacked);
        messages.dropped += Metrics::get(&s.dropped);
        messages.dead_lettered += Metrics::get(&s.dead_lettered);
    }
    messages.published = Metrics::get(&m.messages_in);
    messages.delivered = Metrics::get(&m.messages_out);
    messages.redelivered = Metrics::get(&m.redeliveries);
    messages.expired = Metrics::get(&m.expired);
    Overview {
        version: env!("CARGO_PKG_VERSION"),
        uptime_ms: state.started.elapsed().as_millis() as u64,
        connections: Connections {
            open: conns.len(),
            total: Metrics::get(&m.connections_total),
            by_transport,
        },
        messages,
        rates: state.rates().0,
        slow_consumer_events: Metrics::get(&m.slow_consumer_graces)
            + Metrics::get(&m.slow_consumer_drops)
            + Metrics::get(&m.slow_consumer_disconnects),
        memory: Memory {
            used_bytes: router.memory().used(),
            high_watermark_bytes: state.shared.config.memory.high_watermark_bytes,
        },
        store: Store {
            enabled: router.store().is_some(),
            commits: Metrics::get(&m.store_commits),
            ops: Metrics::get(&m.store_ops),
        },
        listeners: state.listeners.clone(),
    }
}

pub(super) fn connections(state: &AdminState) -> Vec<Connection> {
    let mut views: Vec<ConnView> = state
        .shared
        .connections
        .all()
        .iter()
        .map(|c| c.view())
        .collect();
    views.sort_by(|a, b| (a.connected_at_ms, &a.id).cmp(&(b.connected_at_ms, &b.id)));
    views.into_iter().map(Connection::from).collect()
}

pub(super) fn destinations(state: &AdminState) -> Vec<Destination> {
    let router = &state.shared.router;
    let (_, per_dest) = state.rates();
    router
        .destinations()
        .into_iter()
        .map(|d| {
            let own = !router.stats().is_other(&d.stats);
            let rates = per_dest.get(&d.name).copied().unwrap_or_default();
            Destination {
                published: own.then(|| Metrics::get(&d.stats.published)),
                delivered: own.then(|| Metrics::get(&d.stats.delivered)),
                published_per_s: own.then_some(rates.published_per_s),
                delivered_per_s: own.then_some(rates.delivered_per_s),
                name: d.name,
                kind: d.kind,
                depth: d.depth,
                bytes: d.bytes,
                unacked: d.unacked,
                consumers: d.consumers,
            }
        })
        .collect()
}

pub(super) fn snapshot(state: &AdminState, max_rows: usize) -> Snapshot {
    let mut destinations = destinations(state);
    let mut connections = connections(state);
    let truncated = destinations.len() > max_rows || connections.len() > max_rows;
    if destinations.len() > max_rows {
        // The deepest first: those are the ones to look at.
        destinations.sort_by(|a, b| b.depth.cmp(&a.depth).then_with(|| a.name.cmp(&b.name)));
        destinations.truncate(max_rows);
        destinations.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if connections.len() > max_rows {
        // Slow consumers and full outboxes first: those are the ones to look at.
        connections.sort_by_key(|c| std::cmp::Reverse((c.slow, c.outbox_bytes)));
        connections.truncate(max_rows);
    }
    Snapshot {
        at_ms: crate::router::now_ms(),
        overview: overview(state),
        destinations,
        connections,
        truncated,
    }
}
