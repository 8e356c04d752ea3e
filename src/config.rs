//! Broker configuration, read from `broker.toml`.
//!
//! Every limit the broker enforces is a field here with its default in one place
//! (`Default` impls), and the top-level `broker.toml` lists every key with that default;
//! a unit test keeps the two in step. Unknown keys and bad values are errors that name
//! the key, never panics.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::frame::Limits;

/// The commented default configuration, embedded so the binary runs without a file.
pub const DEFAULT_TOML: &str = include_str!("../broker.toml");

/// Why a configuration could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type; the text names the key.
    #[error(transparent)]
    Parse(#[from] toml::de::Error),
    /// A value of the right type but out of range.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// Dotted key path, e.g. `limits.max_headers`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen.
    pub listeners: Listeners,
    /// Protection against hostile or broken peers.
    pub limits: LimitsConfig,
    /// Heart-beat negotiation.
    pub heartbeat: Heartbeat,
    /// Queue behaviour.
    pub queues: Queues,
    /// Topic behaviour.
    pub topics: Topics,
    /// Per-connection outgoing buffer.
    pub outbox: Outbox,
    /// Authentication.
    pub auth: Auth,
    /// Graceful shutdown.
    pub shutdown: Shutdown,
    /// The WebSocket port's plain-HTTP features.
    pub http: Http,
    /// The broker-wide memory bound.
    pub memory: Memory,
    /// The async runtime (read by the binary).
    pub runtime: Runtime,
    /// Where persistent messages are kept.
    pub store: Store,
    /// The TLS listeners' certificate.
    pub tls: Tls,
    /// The admin listener: health, metrics, API, dashboard.
    pub admin: Admin,
}

/// `[admin]`: the admin listener (see `admin`), its own port, loopback by default.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Its address, e.g. `127.0.0.1:15680`; empty: off. Reach it from elsewhere
    /// through an SSH tunnel rather than opening it: the dashboard needs only this port.
    pub listen: String,
    /// Logins (each one of `[[auth.users]]`, so with an argon2 passcode hash) that may
    /// use the API, `/metrics` and the dashboard, and read `/sys/stats`.
    pub users: Vec<String>,
    /// Token roles (`auth.jwt.roles_claim`) that are admins as well.
    pub roles: Vec<String>,
    /// The dashboard's directory (relative to the working directory), served at `/`
    /// and `/dashboard/`; its libraries are installed there with `npm ci --prefix
    /// dashboard`.
    pub dashboard_dir: std::path::PathBuf,
    /// Serve `/metrics` without credentials (for a Prometheus that scrapes over a
    /// network you trust). Off: scrape with `basic_auth` as an admin.
    pub public_metrics: bool,
    /// How often `/sys/stats` gets a snapshot and rates are computed.
    pub stats_interval_ms: u64,
    /// Rows of destinations and of connections in a `/sys/stats` snapshot, at most.
    pub stats_max_rows: usize,
    /// Destinations with their own `destination` label in `/metrics`; the ones seen
    /// later share the label `other`, so clients that invent names cannot grow it.
    pub max_destination_labels: usize,
    /// Bytes of each body logged when a connection's frames are traced.
    pub trace_body_bytes: usize,
    /// HTTP connections open at once on the admin listener: its own pool, so clients
    /// of the public listeners cannot keep `/healthz` or the API from answering.
    pub max_connections: usize,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: "127.0.0.1:15680".into(),
            users: Vec::new(),
            roles: Vec::new(),
            dashboard_dir: "dashboard".into(),
            public_metrics: false,
            stats_interval_ms: 1_000,
            stats_max_rows: 500,
            max_destination_labels: 100,
            trace_body_bytes: 256,
            max_connections: 64,
        }
    }
}

impl Admin {
    /// `listen`, parsed (`None` when off).
    pub fn addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                key: "admin.listen",
                reason: format!("{:?} is not an address like 127.0.0.1:15680", self.listen),
            })
    }
}

/// `[listeners]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// STOMP over plain TCP.
    pub tcp: SocketAddr,
    /// STOMP over WebSocket.
    pub ws: SocketAddr,
    /// The HTTP path WebSocket clients upgrade on.
    pub ws_path: String,
    /// WebSocket message type for outgoing frames.
    pub ws_message_type: WsMessageType,
    /// Browser origins allowed to open a WebSocket (`Origin` header, e.g.
    /// `https://app.example.com`); empty allows any. Requests without `Origin` come from
    /// non-browser clients and are always allowed.
    pub ws_allowed_origins: Vec<String>,
    /// STOMP over TLS (`[tls]` certificate), e.g. `0.0.0.0:61614`; empty: off.
    pub tcp_tls: String,
    /// STOMP over WebSocket over TLS (`wss://`), e.g. `0.0.0.0:15673`; empty: off.
    pub wss: String,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            tcp: ([127, 0, 0, 1], 61613).into(),
            ws: ([127, 0, 0, 1], 15674).into(),
            ws_path: "/ws".into(),
            ws_message_type: WsMessageType::Binary,
            ws_allowed_origins: Vec::new(),
            tcp_tls: String::new(),
            wss: String::new(),
        }
    }
}

impl Listeners {
    /// `tcp_tls` and `wss`, parsed (`None` when off).
    pub fn tls_addrs(&self) -> Result<(Option<SocketAddr>, Option<SocketAddr>), ConfigError> {
        let parse = |key: &'static str, v: &str| -> Result<Option<SocketAddr>, ConfigError> {
            if v.is_empty() {
                return Ok(None);
            }
            v.parse().map(Some).map_err(|_| ConfigError::Invalid {
                key,
                reason: format!("{v:?} is not an address like 0.0.0.0:61614"),
            })
        };
        Ok((
            parse("listeners.tcp_tls", &self.tcp_tls)?,
            parse("listeners.wss", &self.wss)?,
        ))
    }
}

/// `[tls]`: the certificate of the TLS listeners.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain, PEM, leaf first.
    pub cert_chain: String,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// How often the two files are checked for a renewal (they are also reloaded on
    /// SIGHUP).
    pub reload_check_ms: u64,
    /// CA certificates (PEM) that sign client certificates: a client presenting one
    /// it signed is the user named by its subject's common name (mutual TLS); clients
    /// without a certificate still log in as usual. "" = no client certificates.
    pub client_ca: String,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert_chain: String::new(),
            key: String::new(),
            reload_check_ms: 5_000,
            client_ca: String::new(),
        }
    }
}

/// How outgoing STOMP frames are carried over WebSocket.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WsMessageType {
    /// Always binary messages: any body, byte for byte.
    Binary,
    /// Text messages when the frame is valid UTF-8, binary otherwise.
    Text,
}

/// `[limits]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections across both listeners; further clients wait in the backlog.
    pub max_connections: usize,
    /// Time for the WebSocket HTTP upgrade to complete.
    pub handshake_timeout_ms: u64,
    /// Time from accept to a complete CONNECT/STOMP frame.
    pub connect_timeout_ms: u64,
    /// Header lines per frame.
    pub max_headers: usize,
    /// Bytes per command or header line.
    pub max_header_line_bytes: usize,
    /// Bytes per frame body.
    pub max_body_bytes: usize,
    /// Queues in the broker (temp and dead-letter queues included): clients create
    /// queues by naming them, so their number is bounded like everything else.
    pub max_queues: usize,
    /// Subscriptions per connection, counting unsubscribed ones whose deliveries can
    /// still be acknowledged.
    pub max_subscriptions: usize,
    /// Open transactions per connection.
    pub max_transactions: usize,
    /// Frames buffered in one open transaction.
    pub max_tx_frames: usize,
    /// Bytes (headers and bodies) buffered in a connection's open transactions, all
    /// together: a client cannot make the broker hold more than this before COMMIT.
    pub max_tx_bytes: usize,
    /// A frame that has started arriving must be complete within this long, heart-beats
    /// or not: a half-sent frame does not hold its buffer forever.
    pub frame_timeout_ms: u64,
    /// Words (`.`-separated) in a topic name or pattern: every publish walks its words
    /// through the wildcard index.
    pub max_destination_words: usize,
    /// Wildcard topic subscriptions per connection.
    pub max_wildcard_subscriptions: usize,
    /// Words in the broker's wildcard index (the distinct words of all wildcard
    /// patterns, shared prefixes counted once; live and durable subscriptions each): a
    /// publish visits each at most once, so this bounds what one publish can cost.
    pub max_wildcard_words: usize,
    /// Queues one connection may create (that still exist): one client cannot use up
    /// `max_queues` for everyone.
    pub max_queues_per_connection: usize,
    /// Connections (STOMP over TCP and WebSocket) from one source address; past it the
    /// new connection gets ERROR and is closed. 0: unlimited.
    pub max_connections_per_address: usize,
    /// Frames a connection may send per second (over any one second, heart-beats
    /// aside); past it the client gets ERROR and is closed. 0: unlimited.
    pub max_frames_per_second: u32,
    /// Durable topic subscriptions in the broker: each keeps a queue while its
    /// subscriber is away, and every publish to a topic checks the wildcard ones.
    pub max_durable_subscriptions: usize,
    /// Durable topic subscriptions one user may hold (all anonymous clients are one
    /// user), so one user cannot use up `max_durable_subscriptions` for everyone.
    pub max_durable_subscriptions_per_user: usize,
    /// A durable subscription nobody has attached to for this long is deleted with its
    /// backlog (0: never, as RabbitMQ and ActiveMQ by default).
    pub durable_subscription_expiry_ms: u64,
    /// Frames read and held, in order, behind a frame that waits for room (ACK, NACK
    /// and heart-beats are still handled meanwhile). At this many, or once the held
    /// frames (headers and bodies) reach `max_body_bytes`, the connection stops reading
    /// until the wait ends.
    pub max_held_frames: usize,
    /// After an ERROR, how long to keep reading (and discarding) before closing, so the
    /// peer's unread bytes do not turn our close into a reset that loses the ERROR.
    pub linger_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let frame = Limits::default();
        LimitsConfig {
            max_connections: 10_000,
            handshake_timeout_ms: 5_000,
            connect_timeout_ms: 10_000,
            max_headers: frame.max_headers,
            max_header_line_bytes: frame.max_header_line_bytes,
            max_body_bytes: frame.max_body_bytes,
            max_queues: 100_000,
            max_subscriptions: 1_024,
            max_transactions: 16,
            max_tx_frames: 10_000,
            max_tx_bytes: 16 * 1024 * 1024,
            frame_timeout_ms: 30_000,
            max_destination_words: 64,
            max_wildcard_subscriptions: 128,
            max_wildcard_words: 100_000,
            max_queues_per_connection: 1_000,
            max_durable_subscriptions: 10_000,
            max_durable_subscriptions_per_user: 100,
            durable_subscription_expiry_ms: 0,
            max_connections_per_address: 1_000,
            max_frames_per_second: 0,
            max_held_frames: 128,
            linger_ms: 1_000,
        }
    }
}

/// `[heartbeat]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Heartbeat {
    /// Smallest interval at which we offer to send heart-beats (0 = never).
    pub send_ms: u64,
    /// Interval at which we ask clients to send heart-beats (0 = don't ask).
    pub recv_ms: u64,
    /// A client is dropped after `grace` × the negotiated interval of silence.
    pub grace: f64,
    /// A client asking for beats more often than `send_ms`/`recv_ms` gets what it asks
    /// for, but never more often than this (stompjs `heartbeatIncoming: 1000`).
    pub min_ms: u64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            send_ms: 10_000,
            recv_ms: 10_000,
            grace: 1.5,
            min_ms: 1_000,
        }
    }
}

/// `[queues]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Queues {
    /// Messages held per queue (delivered-but-unacked included).
    pub max_depth: usize,
    /// How long a producer waits for room in a full queue before it gets ERROR.
    pub send_timeout_ms: u64,
    /// Unacknowledged messages in flight per subscription unless `prefetch-count` says.
    pub prefetch: usize,
    /// Deliveries after the first before a message is dead-lettered.
    pub max_redeliveries: u32,
    /// Dead letters of `/queue/NAME` go to `/queue/<prefix>NAME`.
    pub dead_letter_prefix: String,
    /// Bytes (headers and bodies) held per queue, unacknowledged ones included.
    pub max_bytes: usize,
    /// What a SEND to a queue at `max_depth` or `max_bytes` gets.
    pub overflow: OverflowPolicy,
    /// Highest `prefetch-count` a client may ask for (a larger one is lowered to this).
    pub max_prefetch: usize,
    /// An empty queue with no consumers and no producer waiting is deleted after this
    /// long unused (0 = never). Temp queues go with their connection instead.
    pub idle_delete_ms: u64,
    /// Messages to queues are persistent (kept in the store until acknowledged) even
    /// without `persistent:true`; `persistent:false` still opts a message out.
    pub persistent_by_default: bool,
    /// Queue messages expire this long after they arrive (0: never), like RabbitMQ's
    /// `x-message-ttl`; an earlier `expires` header still wins. Expired messages go to
    /// the dead-letter queue with `dead-letter-reason:expired`.
    pub message_ttl_ms: u64,
    /// Per-queue settings, like RabbitMQ's policies: the first whose `pattern`
    /// matches a queue's name overrides `message_ttl_ms` and `persistent_by_default`
    /// for it.
    pub policies: Vec<QueuePolicy>,
}

/// `[[queues.policies]]`: settings for the queues whose name matches `pattern`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueuePolicy {
    /// The queue name after `/queue/`, with the topic wildcards: `orders.*` (one
    /// word), `audit.#` (any number of words), or an exact name.
    pub pattern: String,
    /// Overrides `queues.message_ttl_ms` (0: no TTL).
    #[serde(default)]
    pub message_ttl_ms: Option<u64>,
    /// Overrides `queues.persistent_by_default`.
    #[serde(default)]
    pub persistent_by_default: Option<bool>,
}

/// What a queue that is full (by depth or bytes) does with one more message.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// The producer waits up to `send_timeout_ms` for room, then gets ERROR.
    #[default]
    Reject,
    /// The oldest waiting messages are dropped (counted) to make room.
    DropOldest,
}

impl Default for Queues {
    fn default() -> Self {
        Queues {
            max_depth: 100_000,
            send_timeout_ms: 5_000,
            prefetch: 100,
            max_redeliveries: 5,
            dead_letter_prefix: "DLQ.".into(),
            max_bytes: 64 * 1024 * 1024,
            overflow: OverflowPolicy::Reject,
            max_prefetch: 1_000,
            idle_delete_ms: 300_000,
            persistent_by_default: false,
            message_ttl_ms: 0,
            policies: Vec::new(),
        }
    }
}

/// `[topics]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// What to do with a topic message for a subscriber still full after the grace.
    pub slow_consumer: SlowConsumerPolicy,
    /// How long a publisher waits for room in a subscriber's full outbox before that
    /// subscriber counts as slow (and nobody waits for it until it drains below half).
    pub slow_consumer_grace_ms: u64,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            slow_consumer: SlowConsumerPolicy::Drop,
            slow_consumer_grace_ms: 1_000,
        }
    }
}

/// Topic policy for a subscriber that cannot keep up.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Drop the message for that subscriber and count it.
    #[default]
    Drop,
    /// Send ERROR `slow consumer` and close that connection.
    Disconnect,
}

/// `[outbox]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Outbox {
    /// Frames waiting to be written per connection.
    pub max_frames: usize,
    /// Bytes waiting to be written per connection. An empty outbox admits one item of
    /// any size, so no `limits.max_body_bytes` makes a message undeliverable.
    pub max_bytes: usize,
    /// A connection whose socket accepts no byte for this long is closed. Measured
    /// from the last write that moved bytes, not per batch: a reader that is slow but
    /// steady is never cut.
    pub write_timeout_ms: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            max_frames: 1_024,
            max_bytes: 8 * 1024 * 1024,
            write_timeout_ms: 10_000,
        }
    }
}

/// `[auth]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Accept CONNECT frames without a `login` header.
    pub allow_anonymous: bool,
    /// Known users; a CONNECT with a `login` must match one of them.
    pub users: Vec<User>,
    /// Failed logins one source address may make per `failed_login_window_ms`; then
    /// its CONNECTs get ERROR without being checked until the window ends.
    pub max_failed_logins: u32,
    /// The window of `max_failed_logins`.
    pub failed_login_window_ms: u64,
    /// Who may read (SUBSCRIBE), write (SEND) and create (first use of a queue)
    /// which destinations; empty: everyone may do everything (see `acl`).
    pub acls: Vec<AclRule>,
    /// JSON Web Tokens as credentials (see `jwt`).
    pub jwt: Jwt,
}

/// `[auth.jwt]`: tokens in CONNECT's `passcode` (or a `token` header), verified
/// against these keys; off while no key is configured.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Jwt {
    /// HS256 shared secrets.
    pub hs256_secrets: Vec<String>,
    /// RS256 or ES256 public keys: PEM files.
    pub public_key_files: Vec<String>,
    /// A JWKS file (`{"keys": [...]}`, as identity providers publish at their
    /// `jwks_uri`) with RS256 or ES256 keys; "" for none. Re-read at start.
    pub jwks_file: String,
    /// Required `aud` ("": not checked).
    pub audience: String,
    /// Required `iss` ("": not checked).
    pub issuer: String,
    /// The claim naming the user.
    pub user_claim: String,
    /// The claim listing the user's roles (matched by `[[auth.acls]] roles`).
    pub roles_claim: String,
    /// How long a connection stays up after its token expires without a refresh
    /// (SEND to `/sys/auth`), before ERROR `token expired`.
    pub expiry_grace_ms: u64,
}

impl Jwt {
    /// Whether any key is configured (token logins are on).
    pub fn has_keys(&self) -> bool {
        !self.hs256_secrets.is_empty()
            || !self.public_key_files.is_empty()
            || !self.jwks_file.is_empty()
    }
}

impl Default for Jwt {
    fn default() -> Self {
        Jwt {
            hs256_secrets: Vec::new(),
            public_key_files: Vec::new(),
            jwks_file: String::new(),
            audience: String::new(),
            issuer: String::new(),
            user_claim: "sub".into(),
            roles_claim: "roles".into(),
            expiry_grace_ms: 30_000,
        }
    }
}

/// Hand-written so that secrets never reach a log line.
impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("hs256_secrets", &self.hs256_secrets.len())
            .field("public_key_files", &self.public_key_files)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// `[[auth.acls]]`: what some users may do on some destinations.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Logins the rule is for; `"*"` is anyone, anonymous included.
    #[serde(default)]
    pub users: Vec<String>,
    /// Destination patterns they may SUBSCRIBE to (`/topic/prices.#`).
    #[serde(default)]
    pub read: Vec<String>,
    /// Destination patterns they may SEND to.
    #[serde(default)]
    pub write: Vec<String>,
    /// Queue patterns they may create by first use.
    #[serde(default)]
    pub create: Vec<String>,
    /// Token roles the rule is also for (`auth.jwt.roles_claim`).
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            allow_anonymous: true,
            users: Vec::new(),
            max_failed_logins: 10,
            failed_login_window_ms: 60_000,
            acls: Vec::new(),
            jwt: Jwt::default(),
        }
    }
}

/// `[[auth.users]]`
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The `login` header value.
    pub login: String,
    /// The argon2id hash of the passcode, as `stompbox hash-password` prints it
    /// (`$argon2id$v=19$m=19456,t=2,p=1$…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passcode_hash: Option<String>,
    /// A plain-text passcode: refused at start (the key is read only to say so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passcode: Option<String>,
}

/// Hand-written so that passcodes and their hashes never reach a log line.
impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("login", &self.login)
            .field("passcode_hash", &"<redacted>")
            .finish()
    }
}

/// `[http]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// Serve `POST /api/publish?destination=…` on the WebSocket port. Off by default:
    /// any web page can make a browser POST to localhost, so turn it on only where
    /// that is acceptable or credentials are required.
    pub publish: bool,
    /// Serve the files under this directory (relative to the working directory) on the
    /// WebSocket port, so a browser app and its STOMP connection share one origin and
    /// need no separate web server; `/` is `index.html`. Empty (the default) serves
    /// nothing: a broker should not expose files until someone chooses which.
    pub static_dir: PathBuf,
    /// HTTP connections (not yet upgraded to WebSocket) open at once on the WebSocket
    /// listeners. HTTP has its own pool, apart from `limits.max_connections`: stalled
    /// HTTP requests never lock STOMP clients out, nor the reverse; the admin listener
    /// has a pool of its own (`admin.max_connections`). Called `max_requests` before,
    /// which still loads.
    #[serde(alias = "max_requests")]
    pub max_connections: usize,
    /// HTTP connections from one source address at once (0: no limit), so a few
    /// clients cannot take the whole pool.
    pub max_connections_per_address: usize,
    /// How long an HTTP connection may stay open without upgrading, however it keeps
    /// itself alive (a trickle of bytes included); then it finishes the request in
    /// flight and closes. A WebSocket upgrade ends the HTTP phase.
    pub max_connection_ms: u64,
    /// Time to receive a whole request body; a connection that moves no byte for
    /// twice this (a response nobody reads, an idle keep-alive) is closed.
    pub body_timeout_ms: u64,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            publish: false,
            static_dir: PathBuf::new(),
            max_connections: 256,
            max_connections_per_address: 32,
            max_connection_ms: 60_000,
            body_timeout_ms: 10_000,
        }
    }
}

/// `[memory]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Memory {
    /// Bytes the broker holds for clients at most: queued messages, outboxes, open
    /// transactions and partly read frames. Above it SENDs wait (up to
    /// `queues.send_timeout_ms`) and are then refused with ERROR, as RabbitMQ's memory
    /// alarm does; the alarm is logged and counted. Must be larger than
    /// `limits.max_body_bytes` (a SEND is charged while it is routed).
    pub high_watermark_bytes: usize,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            high_watermark_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// `[store]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    /// Directory of the store file (`stompbox.redb`), created on start. Empty: no
    /// store, every message is kept in memory only and `persistent:true` is ignored.
    pub data_dir: String,
    /// How long the store writer waits for more work after the first operation of a
    /// batch, in microseconds. 0: it commits at once whatever has gathered while the
    /// previous commit was on disk (which is already a batch under load).
    pub commit_interval_us: u64,
    /// Operations (message writes, acknowledgements, redelivery counts) per commit at
    /// most: one fsync each.
    pub commit_batch: usize,
    /// Persistent SENDs one connection may have waiting for their commit before it
    /// stops reading: the receipts and messages waiting for the disk are bounded too.
    pub max_inflight_per_connection: usize,
    /// The store file is compacted at start when it is this many times larger than
    /// the data it holds (and over 64 MiB).
    pub compact_ratio: u64,
    /// Start even when the store fell back to an earlier commit after a crash (its
    /// newest was damaged), running with what it holds; off, such a start stops with
    /// an error saying how many commits are lost.
    pub accept_rollback: bool,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            data_dir: "./stompbox-data".into(),
            commit_interval_us: 0,
            commit_batch: 1024,
            max_inflight_per_connection: 1024,
            compact_ratio: 4,
            accept_rollback: false,
        }
    }
}

/// `[runtime]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Runtime {
    /// Threads that run connections; 0 means one per CPU. The default is 1: on the
    /// 2-core machines we measure on, one thread delivered 1.8x the queue throughput
    /// and 1.3x the fan-out per CPU-second of two, because waking a task on another
    /// thread costs more than the parallelism gives back (BENCHMARKS.md).
    pub worker_threads: usize,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime { worker_threads: 1 }
    }
}

/// `[shutdown]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Shutdown {
    /// How long sessions get to flush their final ERROR before they are dropped.
    pub drain_ms: u64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { drain_ms: 2_000 }
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Config {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Checks ranges that the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, u64); 39] = [
            ("admin.stats_interval_ms", self.admin.stats_interval_ms),
            ("admin.stats_max_rows", self.admin.stats_max_rows as u64),
            (
                "auth.max_failed_logins",
                u64::from(self.auth.max_failed_logins),
            ),
            (
                "auth.failed_login_window_ms",
                self.auth.failed_login_window_ms,
            ),
            ("store.commit_batch", self.store.commit_batch as u64),
            (
                "store.max_inflight_per_connection",
                self.store.max_inflight_per_connection as u64,
            ),
            ("store.compact_ratio", self.store.compact_ratio),
            ("limits.max_tx_bytes", self.limits.max_tx_bytes as u64),
            ("limits.frame_timeout_ms", self.limits.frame_timeout_ms),
            (
                "limits.max_destination_words",
                self.limits.max_destination_words as u64,
            ),
            (
                "limits.max_wildcard_subscriptions",
                self.limits.max_wildcard_subscriptions as u64,
            ),
            (
                "limits.max_wildcard_words",
                self.limits.max_wildcard_words as u64,
            ),
            (
                "limits.max_durable_subscriptions",
                self.limits.max_durable_subscriptions as u64,
            ),
            (
                "limits.max_durable_subscriptions_per_user",
                self.limits.max_durable_subscriptions_per_user as u64,
            ),
            (
                "limits.max_queues_per_connection",
                self.limits.max_queues_per_connection as u64,
            ),
            ("queues.max_bytes", self.queues.max_bytes as u64),
            ("queues.max_prefetch", self.queues.max_prefetch as u64),
            ("http.max_connections", self.http.max_connections as u64),
            ("http.max_connection_ms", self.http.max_connection_ms),
            ("admin.max_connections", self.admin.max_connections as u64),
            ("http.body_timeout_ms", self.http.body_timeout_ms),
            (
                "memory.high_watermark_bytes",
                self.memory.high_watermark_bytes as u64,
            ),
            ("limits.max_queues", self.limits.max_queues as u64),
            ("limits.max_connections", self.limits.max_connections as u64),
            (
                "limits.handshake_timeout_ms",
                self.limits.handshake_timeout_ms,
            ),
            ("limits.connect_timeout_ms", self.limits.connect_timeout_ms),
            ("limits.max_headers", self.limits.max_headers as u64),
            (
                "limits.max_header_line_bytes",
                self.limits.max_header_line_bytes as u64,
            ),
            (
                "limits.max_subscriptions",
                self.limits.max_subscriptions as u64,
            ),
            ("limits.max_tx_frames", self.limits.max_tx_frames as u64),
            ("limits.max_held_frames", self.limits.max_held_frames as u64),
            ("queues.max_depth", self.queues.max_depth as u64),
            ("queues.send_timeout_ms", self.queues.send_timeout_ms),
            ("queues.prefetch", self.queues.prefetch as u64),
            ("outbox.max_frames", self.outbox.max_frames as u64),
            ("outbox.max_bytes", self.outbox.max_bytes as u64),
            ("outbox.write_timeout_ms", self.outbox.write_timeout_ms),
            ("heartbeat.min_ms", self.heartbeat.min_ms),
            ("shutdown.drain_ms", self.shutdown.drain_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be greater than 0".into(),
                });
            }
        }
        // A SEND is charged while it is routed: one the size of the watermark could
        // never get under it.
        if self.memory.high_watermark_bytes <= self.limits.max_body_bytes {
            return Err(ConfigError::Invalid {
                key: "memory.high_watermark_bytes",
                reason: format!(
                    "must be larger than limits.max_body_bytes ({})",
                    self.limits.max_body_bytes
                ),
            });
        }
        // tokio's semaphore (queue depth) holds at most usize::MAX >> 3 permits.
        if self.queues.max_depth > usize::MAX >> 3 {
            return Err(ConfigError::Invalid {
                key: "queues.max_depth",
                reason: format!("must be at most {}", usize::MAX >> 3),
            });
        }
        if !self.heartbeat.grace.is_finite() || self.heartbeat.grace < 1.0 {
            return Err(ConfigError::Invalid {
                key: "heartbeat.grace",
                reason: format!("must be a number >= 1.0, got {}", self.heartbeat.grace),
            });
        }
        if !self.listeners.ws_path.starts_with('/') {
            return Err(ConfigError::Invalid {
                key: "listeners.ws_path",
                reason: "must start with '/'".into(),
            });
        }
        if self.queues.dead_letter_prefix.is_empty() || self.queues.dead_letter_prefix.contains('/')
        {
            return Err(ConfigError::Invalid {
                key: "queues.dead_letter_prefix",
                reason: "must be non-empty and contain no '/'".into(),
            });
        }
        for p in &self.queues.policies {
            let words = p.pattern.split('.').count();
            if p.pattern.is_empty() || words > self.limits.max_destination_words {
                return Err(ConfigError::Invalid {
                    key: "queues.policies",
                    reason: format!(
                        "pattern {:?} must be a non-empty queue name or pattern of at most \
                         limits.max_destination_words words",
                        p.pattern
                    ),
                });
            }
        }
        self.admin.addr()?;
        if let Some(u) = self
            .admin
            .users
            .iter()
            .find(|u| !self.auth.users.iter().any(|x| &x.login == *u))
        {
            return Err(ConfigError::Invalid {
                key: "admin.users",
                reason: format!("{u:?} is not one of [[auth.users]]: admins log in like users"),
            });
        }
        let (tcp_tls, wss) = self.listeners.tls_addrs()?;
        if (tcp_tls.is_some() || wss.is_some())
            && (self.tls.cert_chain.is_empty() || self.tls.key.is_empty())
        {
            return Err(ConfigError::Invalid {
                key: "tls.cert_chain",
                reason: "listeners.tcp_tls and listeners.wss need tls.cert_chain and tls.key"
                    .into(),
            });
        }
        for rule in &self.auth.acls {
            let bad = rule
                .read
                .iter()
                .chain(&rule.write)
                .chain(&rule.create)
                .find(|p| !crate::acl::Acl::valid_pattern(p));
            if (rule.users.is_empty() && rule.roles.is_empty()) || bad.is_some() {
                return Err(ConfigError::Invalid {
                    key: "auth.acls",
                    reason: format!(
                        "every rule needs users, and patterns like /queue/NAME or /topic/a.* \
                         (got users {:?}, pattern {:?})",
                        rule.users, bad
                    ),
                });
            }
        }
        for u in &self.auth.users {
            if u.passcode.is_some() {
                return Err(ConfigError::Invalid {
                    key: "auth.users.passcode",
                    reason: format!(
                        "plain-text passcodes are refused (user {:?}): put the output of \
                         `stompbox hash-password` in passcode_hash instead",
                        u.login
                    ),
                });
            }
            if !u
                .passcode_hash
                .as_deref()
                .is_some_and(crate::auth::is_valid_hash)
            {
                return Err(ConfigError::Invalid {
                    key: "auth.users.passcode_hash",
                    reason: format!(
                        "user {:?} needs an argon2 PHC string from `stompbox hash-password`",
                        u.login
                    ),
                });
            }
        }
        let mut logins: Vec<&str> = self.auth.users.iter().map(|u| u.login.as_str()).collect();
        logins.sort_unstable();
        if let Some(w) = logins.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid {
                key: "auth.users",
                reason: format!("login {:?} appears twice", w[0]),
            });
        }
        Ok(())
    }

    /// The parser limits derived from `[limits]`.
    pub fn frame_limits(&self) -> Limits {
        Limits {
            max_headers: self.limits.max_headers,
            max_header_line_bytes: self.limits.max_header_line_bytes,
            max_body_bytes: self.limits.max_body_bytes,
        }
    }

    /// `limits.handshake_timeout_ms` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        ms(self.limits.handshake_timeout_ms)
    }
    /// `limits.connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        ms(self.limits.connect_timeout_ms)
    }
    /// `limits.linger_ms` as a duration.
    pub fn linger(&self) -> Duration {
        ms(self.limits.linger_ms)
    }
    /// `queues.send_timeout_ms` as a duration.
    pub fn send_timeout(&self) -> Duration {
        ms(self.queues.send_timeout_ms)
    }
    /// `outbox.write_timeout_ms` as a duration.
    pub fn write_timeout(&self) -> Duration {
        ms(self.outbox.write_timeout_ms)
    }
    /// `limits.frame_timeout_ms` as a duration.
    pub fn frame_timeout(&self) -> Duration {
        ms(self.limits.frame_timeout_ms)
    }
    /// `shutdown.drain_ms` as a duration.
    pub fn drain(&self) -> Duration {
        ms(self.shutdown.drain_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in table {
            let path = format!("{prefix}{k}");
            match v {
                toml::Value::Table(t) => keys(&format!("{path}."), t, out),
                _ => out.push(path),
            }
        }
    }

    /// `http.max_requests` was renamed to what it limits; old files still load.
    #[test]
    fn http_max_requests_still_loads_as_max_connections() {
        let c = Config::from_toml("[http]\nmax_requests = 7\n").unwrap();
        assert_eq!(c.http.max_connections, 7);
    }

    #[test]
    fn broker_toml_is_the_defaults_and_lists_every_key() {
        assert_eq!(Config::from_toml(DEFAULT_TOML).unwrap(), Config::default());
        let mut documented = Vec::new();
        keys("", &toml::from_str(DEFAULT_TOML).unwrap(), &mut documented);
        let mut all = Vec::new();
        keys(
            "",
            &toml::Table::try_from(Config::default()).unwrap(),
            &mut all,
        );
        documented.sort();
        all.sort();
        assert_eq!(documented, all);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = Config::from_toml("[limits]\nmax_hedaers = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_hedaers"), "{err}");
        let err = Config::from_toml("[nope]\n").unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let err = Config::from_toml("[queues]\nprefetch = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("queues.prefetch"), "{err}");
        let err = Config::from_toml("[heartbeat]\ngrace = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat.grace"), "{err}");
        let err = Config::from_toml("[listeners]\ntcp = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tcp"), "{err}");
        let err = Config::from_toml("[topics]\nslow_consumer = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("slow_consumer"), "{err}");
        for (toml, key) in [
            ("[heartbeat]\nmin_ms = 0\n", "heartbeat.min_ms"),
            ("[limits]\nmax_held_frames = 0\n", "limits.max_held_frames"),
            (
                "[memory]\nhigh_watermark_bytes = 4194304\n",
                "memory.high_watermark_bytes",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let err = Config::from_toml("[queues]\nmax_depth = 18446744073709551615\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("queues.max_depth"), "{err}");
        // A body limit above the outbox budget is valid: such a message still goes out.
        let big = "[limits]\nmax_body_bytes = 33554432\n[outbox]\nmax_bytes = 1024\n";
        assert!(Config::from_toml(big).is_ok());
    }

    #[test]
    fn passcodes_are_redacted_in_debug() {
        let user = User {
            login: "a".into(),
            passcode_hash: Some("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into()),
            passcode: Some("hunter2".into()),
        };
        let shown = format!("{user:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("argon2"),
            "{shown}"
        );
    }

    #[test]
    fn plain_text_passcodes_are_refused_naming_the_key() {
        let plain = "[[auth.users]]\nlogin = \"guest\"\npasscode = \"guest\"\n";
        let err = Config::from_toml(plain).unwrap_err().to_string();
        assert!(err.contains("auth.users.passcode"), "{err}");
        assert!(err.contains("hash-password"), "{err}");
        let bad = "[[auth.users]]\nlogin = \"guest\"\npasscode_hash = \"guest\"\n";
        let err = Config::from_toml(bad).unwrap_err().to_string();
        assert!(err.contains("auth.users.passcode_hash"), "{err}");
        let hash = crate::auth::hash_with("guest", argon2::Params::new(8, 1, 1, None).unwrap());
        let good = format!("[[auth.users]]\nlogin = \"guest\"\npasscode_hash = \"{hash}\"\n");
        assert!(Config::from_toml(&good).is_ok());
    }
}
