//! stompbox: a STOMP 1.0/1.1/1.2 message broker over TCP and WebSocket.
//!
//! # Module map
//!
//! One SEND travels: `transport` (TCP bytes, or WebSocket message payloads) →
//! `frame::Parser` (nom, streaming, limits) → `session` (the per-connection state
//! machine) → `router` (destination lookup) → a `Queue` (one consumer) or `Topic`
//! (every subscriber) → each subscriber's bounded `outbox` → its writer task → socket.
//!
//! - [`config`] — `broker.toml`, every limit with its default.
//! - [`frame`] — frames, parser, encoder; pure, no I/O.
//! - [`transport`] — TCP and WebSocket (subprotocol negotiation), reduced to one
//!   source/sink pair.
//! - `listener` — accept loops, connection permits, one tracing span per connection.
//! - `http` — the WebSocket port's HTTP side (hyper): the upgrade, the optional
//!   `POST /api/publish`, and optional static files (`http.static_dir`).
//! - [`session`] — CONNECT, subscriptions, acks, transactions, receipts, heart-beats; the
//!   reader and writer tasks of a connection.
//! - [`router`] — queues (credit, prefetch, redelivery, dead letters, byte bounds,
//!   idle deletion), topics (the wildcard trie `router::Sublist`, flow control,
//!   slow-consumer policy), temp queues, per-connection queue quotas, and settlement
//!   (`router::Link`): the one place that decides each delivery's fate.
//!   Also expiry, delayed delivery (`router::schedule`, one timer) and durable topic
//!   subscriptions (`router::durable`, each a queue of its own, owned by the user who
//!   made it). `router::publish` is the one publish path: every client's message
//!   (STOMP SEND, HTTP publish, the admin API) is made there, and HTTP and admin
//!   publishes are handed on there. The wildcard trie holds patterns with at most one
//!   `#`, so a publish visits each of its nodes at most once (`limits.max_wildcard_words`).
//! - [`store`] — persistent messages in one redb file, written by the group-commit
//!   thread (`store::GroupCommit`) in one transaction per batch; loaded at start.
//! - [`memory`] — the broker-wide gauge of held bytes and its high watermark.
//! - [`outbox`] — the bounded per-connection queue the router `try`-pushes into.
//! - [`metrics`] — counters and histograms; per-destination counters live with their
//!   queue or topic (`router::StatsIndex`, a bounded label set).
//! - [`connections`] — the list of open connections (peer, transport, login,
//!   subscriptions, outbox depth) and an administrator's handles on each: close, trace.
//! - [`admin`] — the admin listener (axum, on the same HTTP front as the WebSocket
//!   listener): health, readiness, Prometheus `/metrics`, the JSON API
//!   (`admin/openapi.json`), the dashboard's files, and the `/sys/stats` tick. System
//!   topics (`/sys/stats`, `/sys/presence/…`) are published by the broker only.
//!
//! The import graph is a tree: `session → router → outbox`, `router → store`,
//! `transport → outbox` (for close reasons), `session → connections`, and `admin →
//! session, router, connections` (the HTTP front only hands requests to `admin`). Nothing below the router calls back up into it: a delivery
//! rides in the outbox as an opaque `Ticket`, and the writer reports tickets to the
//! connection's `Link`.
//!
//! # Settlement: one path for every delivery
//!
//! A delivery is *handed* (pushed into an outbox, recorded in the subscription's
//! pending list with a ticket) → *written* (the writer reports its ticket after a
//! successful flush; an auto-ack delivery is settled there) → *settled* (ACK) or
//! *returned* (NACK; the connection gone; or never written). A returned queue message
//! goes back to its original place in the queue (`qseq`), counted as a redelivery
//! (`redelivered:true`) when the client may have seen it — written, or in a write that
//! failed midway — and dead-lettered past `queues.max_redeliveries`. The session owns
//! its `Link` through a guard whose `Drop` returns everything, so a session that dies
//! in any way leaves no consumer registered and no message held.
//!
//! Persistent messages take the same path, each step also written through the store
//! in the next batch: a persistent SEND reaches its queue (and its RECEIPT its client)
//! only from the store thread once its batch is on disk; settling deletes its record,
//! a redelivery writes its count, dead-lettering moves it (both in one batch).
//!
//! # Vocabulary
//!
//! - *session*: one client connection after CONNECT.
//! - *subscription*: one SUBSCRIBE; it has an ack mode and a prefetch window.
//! - *outbox*: the frames waiting to be written to one connection.
//! - *credit*: a queue may hand a subscription a message only while the subscription
//!   has fewer than `prefetch` deliveries in flight and its outbox has room.
//! - *slow consumer*: a connection whose outbox stayed full for a whole
//!   `topics.slow_consumer_grace_ms` while a publisher waited for it; it stays one until
//!   its outbox drains below half.
//! - *delivery*: one message handed to one subscription; *settlement* decides its fate.
//! - *link*: the router's record of one connection's subscriptions and deliveries.
//!
//! # Lock order
//!
//! Durable subscriptions (`RwLock`) → `router` maps (`RwLock`) → a connection's queue quota (`Mutex`) → a destination
//! (`Mutex`: queue state or topic subscriber list) → a subscription's pending deliveries (`Mutex`) → a link's subscription map
//! (`Mutex`) → an outbox (`Mutex`). Locks are std mutexes held for a few
//! instructions; nothing awaits while holding one. The awaits on the publish path —
//! room in a full queue (before the queue's lock is taken) and room in a topic
//! subscriber's full outbox (after the topic's lock is released) — hold none. A session is never locked from outside: it is owned by its
//! task. The delay schedule's mutex is a leaf, and so are the set of client ids in use
//! and a durable subscription's unattached-since time, and the admin side's: the
//! per-destination stats index, the connection list and each connection's state in it
//! (taken under a topic's lock when a presence snapshot is built), and the rates. Store completions run on the store's
//! thread holding no lock, and take the locks above in this order; a queue never
//! dead-letters (which takes the router maps) while holding its own lock.

#![warn(missing_docs)]

pub mod acl;
pub mod admin;
pub mod auth;
pub mod config;
pub mod connections;
pub mod frame;
mod http;
pub mod jwt;
mod listener;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod peers;
pub mod router;
pub mod session;
pub mod store;
pub mod tls;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use listener::Which;
use metrics::Metrics;
use router::{Router, RouterConfig};
use session::Shared;
use transport::Kind;
use transport::ws::WsSettings;

/// Why the broker could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr} for {listener}: {source}")]
    Bind {
        /// Which listener, with the setting and flag that move it.
        listener: listener::Which,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// `http.static_dir` is set but is not a directory we can read; failing at start
    /// beats a broker that answers every page with 404.
    #[error("http.static_dir {path:?} is not a readable directory: {reason}")]
    StaticDir {
        /// The configured path.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The store in `store.data_dir` could not be opened or read: the broker does not
    /// start without the messages it promised to keep.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A listener setting is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// An `[auth.jwt]` key could not be loaded.
    #[error("auth.jwt: {0}")]
    Jwt(String),
    /// A stored message could not be read back.
    #[error("store {path}: {source}")]
    Record {
        /// The store file.
        path: std::path::PathBuf,
        /// What is wrong with the record.
        source: store::RecordError,
    },
}

/// An opened store: its writer, what it held, and its file.
struct Opened {
    writer: store::GroupCommit,
    queues: Vec<store::StoredQueue>,
    durables: Vec<(String, String)>,
    max_id: u64,
    path: std::path::PathBuf,
}

/// Opens the store in `store.data_dir` (none when it is empty), compacting it if it
/// needs it, and loads what it holds.
fn open_store(config: &Config, metrics: &Arc<Metrics>) -> Result<Option<Opened>, StartError> {
    let c = &config.store;
    if c.data_dir.is_empty() {
        return Ok(None);
    }
    let mut db = store::Store::open_with(std::path::Path::new(&c.data_dir), c.accept_rollback)?;
    if let Some((before, after)) = db.tidy(c.compact_ratio)? {
        tracing::info!(path = %db.path().display(), before, after, "store compacted");
    }
    let (queues, max_id) = db.load()?;
    let durables = db.durables()?;
    let path = db.path().to_owned();
    let writer = store::GroupCommit::start(
        db,
        Duration::from_micros(c.commit_interval_us),
        c.commit_batch,
        metrics.clone(),
    );
    Ok(Some(Opened {
        writer,
        queues,
        durables,
        max_id,
        path,
    }))
}

/// Whether the WebSocket listener at `ws_addr` can be reached from other machines
/// while every browser origin may connect: worth a warning at start.
fn exposed_to_any_origin(ws_addr: SocketAddr, any_origin: bool) -> bool {
    any_origin && !ws_addr.ip().is_loopback()
}

/// Starts brokers.
pub struct Broker;

impl Broker {
    /// Binds both listeners (port 0 picks a free port) and starts serving.
    pub async fn start(config: Config) -> Result<BrokerHandle, StartError> {
        let static_dir = http::static_dir(&config.http.static_dir)?;
        use listener::Which;
        let (tcp, tcp_addr) = listener::bind(config.listeners.tcp, Which::Tcp)?;
        let admin_listener = match config.admin.addr()? {
            Some(addr) => Some(listener::bind(addr, Which::Admin)?),
            None => None,
        };
        let (ws, ws_addr) = listener::bind(config.listeners.ws, Which::Ws)?;
        let config_allows_any_origin = config.listeners.ws_allowed_origins.is_empty();
        // The TLS listeners, when configured: bound now, served below.
        let (tcp_tls, wss) = config.listeners.tls_addrs()?;
        let tls = match (tcp_tls, wss) {
            (None, None) => None,
            _ => Some(tls::Tls::load(
                std::path::Path::new(&config.tls.cert_chain),
                std::path::Path::new(&config.tls.key),
                Some(std::path::Path::new(&config.tls.client_ca))
                    .filter(|p| !p.as_os_str().is_empty()),
            )?),
        };
        let bind_tls = |addr: Option<SocketAddr>, which| -> Result<_, StartError> {
            addr.map(|addr| listener::bind(addr, which)).transpose()
        };
        let tcp_tls = bind_tls(tcp_tls, Which::TcpTls)?;
        let wss = bind_tls(wss, Which::Wss)?;
        let tls_reload = Duration::from_millis(config.tls.reload_check_ms);
        let metrics = Arc::new(Metrics::default());
        let opened = open_store(&config, &metrics)?;
        let (store, stored) = match opened {
            Some(o) => (
                Some(o.writer),
                Some((o.queues, o.durables, o.max_id, o.path)),
            ),
            None => (None, None),
        };
        let router = Router::with_store(RouterConfig::new(&config), metrics.clone(), store);
        if let Some((queues, durables, max_id, path)) = stored {
            router.recover_durables(durables);
            let n = router
                .recover(queues, max_id)
                .map_err(|source| StartError::Record {
                    path: path.clone(),
                    source,
                })?;
            tracing::info!(path = %path.display(), messages = n, "store loaded");
        }
        let limits = &config.limits;
        let ws_settings = Arc::new(WsSettings {
            path: config.listeners.ws_path.clone(),
            message_type: config.listeners.ws_message_type,
            allowed_origins: config.listeners.ws_allowed_origins.clone(),
            // A whole frame at its limits, plus room for EOLs.
            max_message_bytes: limits.max_body_bytes
                + (limits.max_headers + 2) * (limits.max_header_line_bytes + 2)
                + 64,
            handshake_timeout: config.handshake_timeout(),
        });
        let shutdown = CancellationToken::new();
        let verifier = Arc::new(auth::Verifier::new(&config.auth));
        tracing::info!("authentication: {}", verifier.describe());
        let permits = Arc::new(Semaphore::new(config.limits.max_connections));
        let http_permits = Arc::new(Semaphore::new(config.http.max_connections));
        let peers = peers::Peers::new(
            config.limits.max_connections_per_address,
            config.auth.max_failed_logins,
            Duration::from_millis(config.auth.failed_login_window_ms),
        );
        let http = Arc::new(http::HttpSide {
            stomp_permits: permits.clone(),
            body_timeout: Duration::from_millis(config.http.body_timeout_ms),
            max_connection: Duration::from_millis(config.http.max_connection_ms),
            send_timeout: config.send_timeout(),
            // Failed logins are counted in `peers`; this one counts connections only.
            http_peers: peers::Peers::new(
                config.http.max_connections_per_address,
                0,
                Duration::ZERO,
            ),
            ws: ws_settings,
            router: router.clone(),
            publish: config.http.publish,
            verifier: verifier.clone(),
            peers: peers.clone(),
            acl: acl::Acl::new(&config.auth.acls),
            max_body_bytes: limits.max_body_bytes,
            static_dir,
            shutdown: shutdown.clone(),
            admin: None,
        });
        let drain = config.drain();
        let acl = acl::Acl::new(&config.auth.acls);
        let connections = Arc::new(connections::Connections::default());
        let jwt = jwt::Verifier::new(&config.auth.jwt)
            .map_err(StartError::Jwt)?
            .map(Arc::new);
        let shared = Arc::new(Shared {
            config,
            router: router.clone(),
            shutdown: shutdown.clone(),
            verifier,
            peers,
            acl: acl.clone(),
            jwt,
            connections: connections.clone(),
            client_ids: session::ClientIds::default(),
        });
        let tracker = TaskTracker::new();
        let admin_addr = admin_listener.as_ref().map(|(_, a)| *a);
        if let Some((l, bound)) = admin_listener {
            let state = admin::AdminState::new(
                shared.clone(),
                admin::Listeners {
                    tcp: tcp_addr.to_string(),
                    ws: ws_addr.to_string(),
                    ws_path: shared.config.listeners.ws_path.clone(),
                    tcp_tls: tcp_tls.as_ref().map(|(_, a)| a.to_string()),
                    wss: wss.as_ref().map(|(_, a)| a.to_string()),
                    admin: bound.to_string(),
                },
            );
            if shared.config.admin.users.is_empty() && shared.config.admin.roles.is_empty() {
                tracing::info!(
                    %bound,
                    "admin listener on, but admin.users is empty: only /healthz, /readyz and the \
                     dashboard's files answer; add an [[auth.users]] login to admin.users"
                );
            }
            // Its WebSocket is always `/ws`, for its own pages only (same origin,
            // checked by the HTTP side) and for admins only (checked at CONNECT).
            let ws = WsSettings {
                path: "/ws".into(),
                allowed_origins: Vec::new(),
                ..(*http.ws).clone()
            };
            let side = Arc::new(http::HttpSide {
                stomp_permits: permits.clone(),
                body_timeout: http.body_timeout,
                max_connection: http.max_connection,
                send_timeout: http.send_timeout,
                http_peers: http.http_peers.clone(),
                ws: Arc::new(ws),
                router: router.clone(),
                publish: false,
                verifier: http.verifier.clone(),
                peers: http.peers.clone(),
                acl: http.acl.clone(),
                max_body_bytes: http.max_body_bytes,
                static_dir: None,
                shutdown: shutdown.clone(),
                admin: Some(admin::app(state.clone())),
            });
            tracker.spawn(admin::run_stats(state, shutdown.clone()));
            // Its own pool: the public listeners' clients cannot starve it.
            let admin_permits = Arc::new(Semaphore::new(shared.config.admin.max_connections));
            tracker.spawn(listener::accept_loop(
                l,
                Kind::Ws,
                shared.clone(),
                admin_permits,
                tracker.clone(),
                Some(side),
                None,
            ));
        }
        tracker.spawn(router.clone().sweep_idle_until(shutdown.clone()));
        tracker.spawn(router.clone().schedule_until(shutdown.clone()));
        tracker.spawn(listener::accept_loop(
            tcp,
            Kind::Tcp,
            shared.clone(),
            permits.clone(),
            tracker.clone(),
            None,
            None,
        ));
        let tcp_tls_addr = tcp_tls.as_ref().map(|(_, a)| *a);
        let wss_addr = wss.as_ref().map(|(_, a)| *a);
        if let (Some((l, _)), Some(tls)) = (tcp_tls, &tls) {
            tracker.spawn(listener::accept_loop(
                l,
                Kind::Tcp,
                shared.clone(),
                permits.clone(),
                tracker.clone(),
                None,
                Some(tls.clone()),
            ));
        }
        if let (Some((l, _)), Some(tls)) = (wss, &tls) {
            tracker.spawn(listener::accept_loop(
                l,
                Kind::Ws,
                shared.clone(),
                http_permits.clone(),
                tracker.clone(),
                Some(http.clone()),
                Some(tls.clone()),
            ));
        }
        if let Some(tls) = tls {
            tracker.spawn(tls.watch(tls_reload, shutdown.clone()));
        }
        tracker.spawn(listener::accept_loop(
            ws,
            Kind::Ws,
            shared,
            http_permits,
            tracker.clone(),
            Some(http),
            None,
        ));
        if exposed_to_any_origin(ws_addr, config_allows_any_origin) {
            // Any web page a visitor opens could then use the visitor's browser to
            // connect (cross-site WebSocket hijacking).
            tracing::warn!(
                %ws_addr,
                "the WebSocket listener is not on loopback and listeners.ws_allowed_origins is empty: \
                 pages from any origin may connect; list the origins of your web apps"
            );
        }
        tracing::info!(%tcp_addr, %ws_addr, ?tcp_tls_addr, ?wss_addr, ?admin_addr, "stompbox listening");
        Ok(BrokerHandle {
            tcp_addr,
            ws_addr,
            tcp_tls_addr,
            wss_addr,
            admin_addr,
            shutdown,
            tracker,
            router,
            drain,
        })
    }
}

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    /// The bound STOMP/TCP address.
    pub tcp_addr: SocketAddr,
    /// The bound WebSocket address (path from `listeners.ws_path`).
    pub ws_addr: SocketAddr,
    /// The bound STOMP-over-TLS address, if `listeners.tcp_tls` is set.
    pub tcp_tls_addr: Option<SocketAddr>,
    /// The bound `wss://` address, if `listeners.wss` is set.
    pub wss_addr: Option<SocketAddr>,
    /// The bound admin address, if `admin.listen` is set.
    pub admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    router: Router,
    drain: Duration,
}

impl BrokerHandle {
    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        self.router.metrics()
    }

    /// The router, for in-process inspection.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Stops accepting, sends every session ERROR `broker shutting down` (WebSocket
    /// clients also get Close 1001), and waits up to `shutdown.drain_ms` (plus a
    /// second of slack) for connections to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.drain + Duration::from_secs(1), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish draining in time");
        }
        // Everything submitted is committed before the file is closed.
        if let Some(store) = self.router.store() {
            store.stop();
        }
        let m = self.router.metrics();
        tracing::info!(
            connections = Metrics::get(&m.connections_total),
            messages_in = Metrics::get(&m.messages_in),
            messages_out = Metrics::get(&m.messages_out),
            slow_consumer_drops = Metrics::get(&m.slow_consumer_drops),
            redeliveries = Metrics::get(&m.redeliveries),
            dead_letters = Metrics::get(&m.dead_letters),
            expired = Metrics::get(&m.expired),
            store_commits = Metrics::get(&m.store_commits),
            store_ops = Metrics::get(&m.store_ops),
            "stompbox stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::exposed_to_any_origin;

    #[test]
    fn a_non_loopback_websocket_listener_without_an_origin_allowlist_is_flagged() {
        let addr = |a: &str| a.parse().unwrap();
        assert!(exposed_to_any_origin(addr("0.0.0.0:15674"), true));
        assert!(exposed_to_any_origin(addr("[::]:15674"), true));
        assert!(exposed_to_any_origin(addr("192.0.2.7:15674"), true));
        assert!(!exposed_to_any_origin(addr("0.0.0.0:15674"), false));
        assert!(!exposed_to_any_origin(addr("127.0.0.1:15674"), true));
        assert!(!exposed_to_any_origin(addr("[::1]:15674"), true));
    }
}
