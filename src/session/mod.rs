//! The per-connection STOMP state machine: CONNECT and version negotiation,
//! subscriptions, acknowledgements, transactions and receipts.
//!
//! [`Session::on_frame`] takes one parsed frame and either succeeds (pushing any reply
//! into the connection's outbox) or returns the [`SessionError`] that ends the
//! connection. The async loops around it live in `conn`.

mod conn;
mod durable;
pub use durable::ClientIds;
mod error;
pub mod heartbeat;
mod persist;
pub mod presence;
mod transaction;

pub use conn::{Accepted, serve};
pub use error::SessionError;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;
use tracing::Span;

use crate::acl::Permission;
use crate::config::Config;
use crate::frame::{Command, Frame, Headers, Version, encode};
use crate::outbox::{OutboxTx, Outgoing};
use crate::router::{AckMode, AckRef, LinkGuard, Pattern, Router, Subscription};
use heartbeat::Negotiated;
use transaction::Prepared;

/// What is shared by every session of a broker.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The destination router.
    pub router: Router,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    /// The users, to check logins against.
    pub verifier: Arc<crate::auth::Verifier>,
    /// Connections and failed logins per source address.
    pub peers: Arc<crate::peers::Peers>,
    /// Who may do what where.
    pub acl: crate::acl::Acl,
    /// Token verification, when `[auth.jwt]` has keys.
    pub jwt: Option<Arc<crate::jwt::Verifier>>,
    /// Every open connection, for the admin side and presence.
    pub connections: Arc<crate::connections::Connections>,
    /// CONNECT `client-id`s in use.
    pub client_ids: ClientIds,
}

impl Shared {
    /// Whether this login or these token roles are admins (`[admin] users`, `roles`).
    pub fn is_admin(&self, login: Option<&str>, roles: &[String]) -> bool {
        let admin = &self.config.admin;
        login.is_some_and(|l| admin.users.iter().any(|u| u == l))
            || roles.iter().any(|r| admin.roles.contains(r))
    }
}

/// The system topic of live statistics (admins only).
pub const STATS_TOPIC: &str = "/sys/stats";

pub use crate::router::is_reserved;

/// What the connection loop must do after a frame.
pub enum Flow {
    /// Keep reading.
    Continue,
    /// The frame was handed to the store; its RECEIPT goes out from there after the
    /// commit (see `persist`). Keep reading.
    Deferred,
    /// CONNECTED was sent: switch the parser to this version and watch heart-beats.
    Connected(Version, Negotiated),
    /// DISCONNECT was handled: stop reading frames and close.
    Disconnect,
    /// The frame waits for room (a full queue, a full subscriber outbox, or a COMMIT's
    /// reservations). The connection keeps reading: ACK, NACK and heart-beats are
    /// handled meanwhile, other frames are held behind it in order. When it resolves,
    /// [`Session::finish`] completes the frame.
    Wait(Waiting),
}

/// A frame in progress that waits; see [`Flow::Wait`].
pub struct Waiting {
    /// Resolves when the frame can be completed.
    pub until: Pin<Box<dyn Future<Output = Result<Done, SessionError>> + Send>>,
    /// The frame's `receipt`, sent once it is complete.
    pub receipt: Option<String>,
}

/// What a [`Waiting`] frame resolved to.
pub enum Done {
    /// The SEND has been handed on.
    Sent,
    /// Every reservation of a COMMIT holds: apply it.
    Commit(Prepared),
    /// The memory alarm cleared for a transactional SEND: hold it in its transaction.
    Hold(String, Frame),
}

struct Sub {
    sub: Arc<Subscription>,
    destination: String,
    /// What presence events say of it.
    info: crate::connections::SubInfo,
}

/// One connection's protocol state.
pub struct Session {
    shared: Arc<Shared>,
    /// Our `session` id, also the owner name of this connection's temp queues.
    id: Arc<str>,
    /// The highest version the transport allows (the WebSocket subprotocol, W5).
    cap: Version,
    /// `None` until CONNECTED is sent.
    version: Option<Version>,
    /// The version a CONNECT being handled would get: an ERROR refusing it is
    /// encoded in it (STOMP 1.0 has no header escapes).
    connecting: Option<Version>,
    outbox: OutboxTx,
    /// Cancelled to end the connection as a slow consumer.
    kill: CancellationToken,
    /// The router's record of this connection's subscriptions and deliveries; dropping
    /// the session (a panic included) closes it.
    link: LinkGuard,
    /// Live subscriptions by client id.
    subs: HashMap<String, Sub>,
    next_key: u64,
    /// Open transactions and the frames they hold until COMMIT.
    txs: HashMap<String, transaction::Open>,
    /// Persistent SENDs and receipted ACKs waiting for the disk.
    inflight: Arc<persist::Inflight>,
    /// CONNECT's `client-id`: with a subscription name, it names a durable
    /// subscription (ActiveMQ, Artemis).
    client_id: Option<String>,
    /// This connection's hold on its `client-id`.
    client_claim: Option<durable::ClientIdClaim>,
    /// The client's address, for the failed-login limit.
    pub peer: Option<std::net::IpAddr>,
    /// The user its verified TLS client certificate names (mutual TLS).
    pub cert_user: Option<String>,
    /// The login it authenticated as, for ACLs (`None`: anonymous).
    login: Option<String>,
    /// Its token's roles, for ACLs.
    roles: Vec<String>,
    /// Whether `login` was verified by its passcode: only such a login is one of
    /// `admin.users` (a token's `sub` or a certificate's name could spell the same).
    by_passcode: bool,
    /// Accepted by the admin listener: CONNECT must be an admin's.
    pub admins_only: bool,
    /// When its token (if it logged in with one) has expired past the grace.
    token_deadline: Option<std::time::Instant>,
    /// Its entry in the connection list (none for sessions run without a listener).
    pub conn: Option<Arc<crate::connections::Conn>>,
}

/// Whether a destination is a wildcard topic subscription.
fn is_wildcard(destination: &str) -> bool {
    destination
        .strip_prefix("/topic/")
        .is_some_and(|name| Pattern::parse(name).is_some())
}

fn header<'a>(frame: &'a Frame, name: &'static str) -> Result<&'a str, SessionError> {
    frame
        .headers
        .get(name)
        .ok_or_else(|| SessionError::missing(frame.command, name))
}

impl Session {
    /// A session for a new connection whose transport allows at most `cap`.
    pub fn new(
        shared: Arc<Shared>,
        id: Arc<str>,
        link: LinkGuard,
        cap: Version,
        outbox: OutboxTx,
        kill: CancellationToken,
    ) -> Self {
        Session {
            shared,
            id,
            cap,
            version: None,
            connecting: None,
            outbox,
            kill,
            link,
            subs: HashMap::new(),
            next_key: 0,
            txs: HashMap::new(),
            inflight: Arc::default(),
            client_id: None,
            client_claim: None,
            peer: None,
            cert_user: None,
            login: None,
            roles: Vec::new(),
            by_passcode: false,
            admins_only: false,
            token_deadline: None,
            conn: None,
        }
    }

    /// Whether `frame` may be handled while an earlier frame waits: a non-transactional
    /// ACK or NACK settles something already delivered and may free the very room the
    /// waiting SEND needs. Everything else stays behind in order.
    pub fn may_overtake(frame: &Frame) -> bool {
        matches!(frame.command, Command::Ack | Command::Nack)
            && frame.headers.get("transaction").is_none()
    }

    /// Completes a frame whose wait resolved, then sends its receipt (after
    /// everything it caused). A COMMIT applies here, with no await in between.
    pub async fn finish(
        &mut self,
        done: Done,
        receipt: Option<String>,
    ) -> Result<Flow, SessionError> {
        let flow = match done {
            Done::Sent => Flow::Continue,
            Done::Commit(prepared) => self.apply(prepared),
            Done::Hold(tx, frame) => {
                self.hold(tx, frame)?;
                Flow::Continue
            }
        };
        self.receipt(flow, receipt).await
    }

    /// Sends `receipt` now, or hands it to the wait that `flow` still has to do.
    async fn receipt(&self, flow: Flow, receipt: Option<String>) -> Result<Flow, SessionError> {
        match flow {
            Flow::Wait(mut waiting) => {
                waiting.receipt = receipt;
                return Ok(Flow::Wait(waiting));
            }
            Flow::Deferred => return Ok(Flow::Continue),
            _ => {}
        }
        // S13: the receipt follows everything the frame caused, MESSAGEs included,
        // because the router pushed those into outboxes before we got here.
        if let Some(id) = receipt {
            self.reply(Frame::new(Command::Receipt).header("receipt-id", id))
                .await;
        }
        Ok(flow)
    }

    /// The negotiated version; before CONNECTED, the one the CONNECT being refused
    /// asked for, or 1.2 (for encoding early ERRORs).
    pub fn version(&self) -> Version {
        self.version.or(self.connecting).unwrap_or(Version::V1_2)
    }

    /// Encodes and queues one of our own frames, waiting for outbox room if needed.
    /// Encoding happens before the returned future, so only the small push future
    /// lives in the session's state while it waits.
    pub fn reply(&self, frame: Frame) -> impl Future<Output = bool> + '_ {
        let mut buf = BytesMut::new();
        encode(&frame, self.version(), &mut buf);
        self.outbox.push(Outgoing::Frame(buf.freeze()))
    }

    /// Whether the next frame must first go through [`Session::before_frame`]:
    /// persistent work of this connection is in flight, or failed.
    pub fn waits_for_store(&self) -> bool {
        self.version.is_some() && self.inflight.busy()
    }

    /// Handles one frame from the client (after [`Session::before_frame`] when
    /// [`Session::waits_for_store`]).
    pub async fn on_frame(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        let command = frame.command;
        if !command.may_have_body() && !frame.body.is_empty() {
            return Err(SessionError::BodyNotAllowed(command.as_str()));
        }
        if matches!(
            command,
            Command::Connected | Command::Message | Command::Receipt | Command::Error
        ) {
            return Err(SessionError::ServerFrame(command.as_str()));
        }
        if self.version.is_none() && !matches!(command, Command::Connect | Command::Stomp) {
            return Err(SessionError::NotConnected(command.as_str()));
        }
        let receipt = frame.headers.get("receipt").map(str::to_owned);
        let flow = match command {
            Command::Connect | Command::Stomp => return self.connect(&frame).await,
            Command::Send => self.send(frame)?,
            Command::Subscribe => self.subscribe(&frame).map(|_| Flow::Continue)?,
            Command::Unsubscribe => self.unsubscribe(&frame).map(|_| Flow::Continue)?,
            Command::Ack | Command::Nack => {
                let in_tx = frame.headers.get("transaction").is_some();
                self.ack(frame)?;
                if in_tx {
                    Flow::Continue
                } else {
                    self.receipt_after_disk(receipt.clone(), false)
                }
            }
            Command::Begin => self.begin(&frame).map(|_| Flow::Continue)?,
            Command::Commit => self.commit(&frame)?,
            Command::Abort => self.abort(&frame).map(|_| Flow::Continue)?,
            // No delivery after the RECEIPT: the client stops reading once it has it.
            Command::Disconnect => {
                self.link.detach_all();
                Flow::Disconnect
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                unreachable!()
            }
        };
        self.receipt(flow, receipt).await
    }

    async fn connect(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        if self.version.is_some() {
            return Err(SessionError::AlreadyConnected);
        }
        // C2: highest common version; no header means 1.0. W5: never above the cap.
        let offered: Vec<Version> = match frame.headers.get("accept-version") {
            None => vec![Version::V1_0],
            Some(list) => list.split(',').filter_map(Version::parse).collect(),
        };
        let version = offered
            .into_iter()
            .filter(|v| *v <= self.cap)
            .max()
            .ok_or_else(|| SessionError::UnsupportedVersion {
                supported: Version::ALL
                    .iter()
                    .filter(|v| **v <= self.cap)
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            })?;
        self.connecting = Some(version);
        let client_hb = match frame.headers.get("heart-beat") {
            None => (0, 0),
            Some(v) => {
                heartbeat::parse(v).ok_or_else(|| SessionError::BadHeartbeat(v.to_owned()))?
            }
        };
        self.authenticate(frame).await?;
        if self.admins_only && !self.is_admin() {
            return Err(SessionError::AdminsOnly);
        }
        let login = self.login.clone();
        let hb = &self.shared.config.heartbeat;
        let negotiated =
            heartbeat::negotiate(client_hb, (hb.send_ms, hb.recv_ms), hb.min_ms.max(1));
        self.version = Some(version);
        if let Some(client) = frame.headers.get("client-id") {
            let owner = durable::owner(self.proven_login());
            let claim = self
                .shared
                .client_ids
                .claim(&owner, client)
                .ok_or_else(|| SessionError::ClientIdInUse(client.to_owned()))?;
            self.client_claim = Some(claim);
            self.client_id = Some(client.to_owned());
        }
        let span = Span::current();
        span.record("session", &*self.id);
        if let Some(login) = &login {
            span.record("login", login.as_str());
        }
        // H5: we advertise what makes the client arrive at the intervals we use, and the
        // writer really sends at the negotiated rate.
        let connected = Frame::new(Command::Connected)
            .header("version", version.as_str())
            .header(
                "heart-beat",
                format!("{},{}", negotiated.header.0, negotiated.header.1),
            )
            .header("session", &*self.id)
            .header("server", concat!("stompbox/", env!("CARGO_PKG_VERSION")));
        self.reply(connected).await;
        if let Some(conn) = &self.conn {
            conn.connected(version, login);
        }
        if let Some(every) = negotiated.send {
            self.outbox.push(Outgoing::Heartbeat(every)).await;
        }
        tracing::debug!(version = version.as_str(), "connected");
        Ok(Flow::Connected(version, negotiated))
    }

    /// C6: with users configured, a `login` must match one and its passcode the
    /// user's argon2 hash (checked off the async threads, see `auth`); without
    /// `login`, `auth.allow_anonymous` decides. With no users configured any login is
    /// accepted as a name only.
    ///
    /// An address with `auth.max_failed_logins` failures in its window (checks in
    /// flight counted as failures until they succeed) is refused without a check. A
    /// failure is logged with the login (never the passcode); the
    /// connection's span carries the address.
    ///
    /// With `[auth.jwt]` keys, a `token` header or a passcode that is a JWT is checked
    /// as a token instead: the user and roles come from its claims.
    async fn authenticate(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let login = frame.headers.get("login");
        let passcode = frame.headers.get("passcode").unwrap_or("");
        // Dropped on a failure path, the attempt counts as a failed login.
        let attempt = self
            .shared
            .peers
            .login_attempt(self.peer)
            .ok_or(SessionError::TooManyFailedLogins)?;
        // Mutual TLS: the certificate is the credential (a CONNECT may still name
        // the same login, as clients often must).
        if let Some(user) = &self.cert_user
            && login.is_none_or(|l| l == user)
        {
            self.login = Some(user.clone());
            attempt.release();
            return Ok(());
        }
        let token = frame
            .headers
            .get("token")
            .or_else(|| Some(passcode).filter(|p| crate::jwt::looks_like_token(p)));
        if let (Some(jwt), Some(token)) = (&self.shared.jwt, token) {
            match jwt.verify(token) {
                Ok(identity) => {
                    self.accept_token(identity);
                    attempt.release();
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "token login failed");
                    return Err(SessionError::Token(e.to_string()));
                }
            }
        }
        if self.shared.verifier.check(login, passcode).await {
            self.login = login.map(str::to_owned);
            self.by_passcode = login.is_some();
            attempt.release();
            return Ok(());
        }
        tracing::warn!(login = login.unwrap_or(""), "login failed");
        Err(SessionError::AuthFailed)
    }

    /// Takes a verified token's user, roles and expiry (plus `auth.jwt.expiry_grace_ms`).
    fn accept_token(&mut self, identity: crate::jwt::Identity) {
        let grace = std::time::Duration::from_millis(self.shared.config.auth.jwt.expiry_grace_ms);
        let now_s = crate::router::now_ms() / 1000;
        let left = std::time::Duration::from_secs(identity.exp.saturating_sub(now_s));
        self.token_deadline = Some(std::time::Instant::now() + left + grace);
        self.login = Some(identity.user);
        self.roles = identity.roles;
    }

    /// When the connection's token, not refreshed, ends it.
    pub fn token_deadline(&self) -> Option<std::time::Instant> {
        self.token_deadline
    }

    /// SEND to `/sys/auth`: the body (or a `token` header) is a new token for the same
    /// user, replacing the old one.
    fn refresh_token(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let Some(jwt) = self.shared.jwt.clone() else {
            return Err(SessionError::Token(
                "no token authentication configured".into(),
            ));
        };
        let token = match frame.headers.get("token") {
            Some(t) => t.to_owned(),
            None => String::from_utf8_lossy(&frame.body).trim().to_owned(),
        };
        let identity = jwt
            .verify(&token)
            .map_err(|e| SessionError::Token(e.to_string()))?;
        if self.token_deadline.is_none() || Some(&identity.user) != self.login.as_ref() {
            return Err(SessionError::Token(
                "token refused: a refresh must be for the user the connection logged in as with a token".into(),
            ));
        }
        self.accept_token(identity);
        Ok(())
    }

    /// `permission` on `destination` (see `acl`), and `create` too when it is a queue
    /// that does not exist yet: its first use creates it.
    fn authorize_use(&self, permission: Permission, destination: &str) -> Result<(), SessionError> {
        let acl = &self.shared.acl;
        if acl.is_open() {
            return Ok(());
        }
        let user = self.login.as_deref();
        let denied = |permission| SessionError::PermissionDenied {
            permission,
            destination: destination.to_owned(),
        };
        if !acl.allows_with_roles(user, &self.roles, permission, destination) {
            return Err(denied(permission));
        }
        if destination.starts_with("/queue/")
            && !self.shared.router.has_queue(destination)
            && !acl.allows_with_roles(user, &self.roles, Permission::Create, destination)
        {
            return Err(denied(Permission::Create));
        }
        Ok(())
    }

    /// `/temp-queue/NAME` (no further `/`) is this connection's own temp queue, routed
    /// as `/temp-queue/<session>/NAME`; longer names are already routable.
    fn resolve(&self, destination: &str) -> String {
        match destination.strip_prefix("/temp-queue/") {
            Some(name) if !name.is_empty() && !name.contains('/') => {
                format!("/temp-queue/{}/{name}", self.id)
            }
            _ => destination.to_owned(),
        }
    }

    fn send(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        let named = header(&frame, "destination")?;
        if named == "/sys/auth" {
            self.refresh_token(&frame)?;
            return Ok(Flow::Continue);
        }
        // The broker's own topics are for the broker to publish on.
        if named.starts_with(crate::router::SYSTEM) {
            return Err(SessionError::PermissionDenied {
                permission: Permission::Write,
                destination: named.to_owned(),
            });
        }
        let destination = self.resolve(named);
        self.authorize_use(Permission::Write, &destination)?;
        if let Some(tx) = frame.headers.get("transaction") {
            // Checked now, so that a bad destination fails the SEND, not the COMMIT;
            // outside a transaction, routing checks it.
            self.shared.router.check_destination(&destination)?;
            let tx = tx.to_owned();
            // Held bytes are held memory: above the watermark a transactional SEND
            // waits and is then refused like any other.
            if self.shared.router.memory().is_high() {
                let router = self.shared.router.clone();
                return Ok(Flow::Wait(Waiting {
                    until: Box::pin(async move {
                        router.memory_room().await?;
                        Ok(Done::Hold(tx, frame))
                    }),
                    receipt: None,
                }));
            }
            self.hold(tx, frame)?;
            return Ok(Flow::Continue);
        }
        let receipt = frame.headers.get("receipt").map(str::to_owned);
        let message = self.message(destination, frame)?;
        // Persistence was decided with the message (see `router::publish`).
        if message.persistent && message.destination.starts_with("/queue/") {
            return self.send_persistent(message, receipt);
        }
        // Its RECEIPT waits until it is in every durable subscription's store.
        let stored = message.persistent;
        Ok(
            match self.shared.router.route(message, Some(self.link.quota()))? {
                None if stored => self.receipt_after_disk(receipt, true),
                None => Flow::Continue,
                Some(wait) => {
                    let store = self.shared.router.store().filter(|_| stored).cloned();
                    Flow::Wait(Waiting {
                        until: Box::pin(async move {
                            wait.await?;
                            if let Some(store) = store {
                                persist::on_disk(&store).await?;
                            }
                            Ok(Done::Sent)
                        }),
                        receipt: None,
                    })
                }
            },
        )
    }

    /// The message a SEND publishes: its headers minus the reserved ones, with a
    /// `reply-to` naming our own temp queue rewritten to its routable name (the queue
    /// is created now, so that early replies are kept).
    fn message(
        &self,
        destination: String,
        frame: Frame,
    ) -> Result<crate::router::Message, SessionError> {
        let mut headers: Headers = frame.headers;
        if let Some(reply_to) = headers.get("reply-to").map(str::to_owned) {
            let routable = self.resolve(&reply_to);
            if routable != reply_to {
                self.shared
                    .router
                    .ensure_temp_queue(&routable, &self.id, self.link.quota())?;
                headers.set_first("reply-to", routable);
            }
        }
        Ok(self
            .shared
            .router
            .client_message(destination, headers, frame.body)?)
    }

    /// The login, when something proved it (a configured user's passcode, a token or a
    /// certificate); a login taken as a name only owns nothing: durable subscriptions
    /// and client ids of unproven logins are the anonymous user's.
    fn proven_login(&self) -> Option<&str> {
        let proven = self.token_deadline.is_some()
            || (self.cert_user.is_some() && self.cert_user == self.login)
            || (self.by_passcode && self.shared.verifier.proves_logins());
        self.login.as_deref().filter(|_| proven)
    }

    /// Whether this session is an admin's (`[admin] users` by passcode, or `roles`).
    pub fn is_admin(&self) -> bool {
        let login = self.login.as_deref().filter(|_| self.by_passcode);
        self.shared.is_admin(login, &self.roles)
    }

    /// Read permission for a system topic: `/sys/stats` is for admins, a presence
    /// topic for those who may read the destination it watches; nothing else is.
    fn authorize_system(&self, destination: &str) -> Result<(), SessionError> {
        let allowed = if destination == STATS_TOPIC {
            self.is_admin()
        } else if let Some(watched) = presence::watched(destination) {
            let acl = &self.shared.acl;
            acl.is_open()
                || acl.allows_with_roles(
                    self.login.as_deref(),
                    &self.roles,
                    Permission::Read,
                    watched,
                )
        } else {
            false
        };
        if allowed {
            Ok(())
        } else {
            Err(SessionError::PermissionDenied {
                permission: Permission::Read,
                destination: destination.to_owned(),
            })
        }
    }

    fn subscribe(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let destination = self.resolve(header(frame, "destination")?);
        let system = destination.starts_with(crate::router::SYSTEM);
        if system {
            self.authorize_system(&destination)?;
        } else {
            self.authorize_use(Permission::Read, &destination)?;
        }
        // STOMP 1.0 made `id` optional; such subscriptions are known by destination.
        let id = match (frame.headers.get("id"), self.version()) {
            (Some(id), _) => id.to_owned(),
            (None, Version::V1_0) => destination.clone(),
            (None, _) => return Err(SessionError::missing(frame.command, "id")),
        };
        if self.subs.contains_key(&id) {
            return Err(SessionError::DuplicateSubscription(id));
        }
        let limits = &self.shared.config.limits;
        // Unsubscribed ones whose deliveries can still be acked count too.
        if self.link.len() >= limits.max_subscriptions {
            return Err(SessionError::TooManySubscriptions(limits.max_subscriptions));
        }
        if is_wildcard(&destination) {
            let max = limits.max_wildcard_subscriptions;
            if self
                .subs
                .values()
                .filter(|s| is_wildcard(&s.destination))
                .count()
                >= max
            {
                return Err(SessionError::TooManyWildcards(max));
            }
        }
        let ack = match frame.headers.get("ack") {
            None => AckMode::Auto,
            Some(v) => AckMode::parse(v).ok_or_else(|| SessionError::BadAckMode(v.to_owned()))?,
        };
        // System topics are live feeds: nothing to acknowledge.
        if system && ack != AckMode::Auto {
            return Err(SessionError::SystemAck);
        }
        let prefetch = match frame.headers.get("prefetch-count") {
            None => self.shared.config.queues.prefetch,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| SessionError::BadPrefetch(v.to_owned()))?
                // What a client may hold unacknowledged is the broker's to bound.
                .min(self.shared.config.queues.max_prefetch),
        };
        let key = self.next_key;
        self.next_key += 1;
        let sub = Arc::new(Subscription::new(
            self.id.clone(),
            key,
            id.clone(),
            ack,
            prefetch,
            self.version(),
            self.outbox.clone(),
            self.kill.clone(),
        ));
        match self.durable_key(frame, &destination, &id)? {
            Some(key) => self
                .link
                .subscribe_durable(&key, &destination, sub.clone())?,
            None => self.link.subscribe(&destination, sub.clone())?,
        }
        let info = crate::connections::SubInfo {
            id: id.clone(),
            destination: destination.clone(),
            ack: ack.as_str(),
            info: frame.headers.get("presence-info").map(str::to_owned),
        };
        if let Some(conn) = &self.conn {
            conn.subscribed(info.clone());
            presence::announce(
                &self.shared.router,
                "subscribed",
                &self.id,
                self.login.as_deref(),
                &info,
            );
        }
        if let Some(watched) = presence::watched(&destination) {
            // Built and handed over under the topic's lock (see `presence`).
            let router = &self.shared.router;
            router.deliver_first(&sub, || {
                let body = presence::snapshot(&self.shared.connections, watched);
                router.message(destination.clone(), presence::message_headers(), body)
            });
        }
        self.subs.insert(
            id,
            Sub {
                sub,
                destination,
                info,
            },
        );
        Ok(())
    }

    /// Tells presence watchers that a subscription ended, and forgets it in the
    /// connection list.
    fn announce_gone(&self, sub: &Sub) {
        if let Some(conn) = &self.conn {
            conn.unsubscribed(&sub.info.id);
            presence::announce(
                &self.shared.router,
                "unsubscribed",
                &self.id,
                self.login.as_deref(),
                &sub.info,
            );
        }
    }

    fn unsubscribe(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let id = match (
            frame.headers.get("id"),
            frame.headers.get("destination"),
            self.version(),
        ) {
            (Some(id), _, _) => id.to_owned(),
            (None, Some(dest), Version::V1_0) => {
                let dest = self.resolve(dest);
                self.subs
                    .iter()
                    .find(|(_, s)| s.destination == dest)
                    .map_or(dest, |(id, _)| id.clone())
            }
            _ => return Err(SessionError::missing(frame.command, "id")),
        };
        let Some(sub) = self.subs.remove(&id) else {
            // Artemis deletes a durable subscription by name with no live one.
            if let Some(key) = self.named_durable(frame)? {
                self.delete_durable(&key)?;
                return Ok(());
            }
            return Err(SessionError::UnknownSubscription(id));
        };
        self.link.unsubscribe(&sub.sub);
        self.announce_gone(&sub);
        // With the durable headers it subscribed with, UNSUBSCRIBE also deletes the
        // durable subscription; without them it only detaches (the backlog grows).
        if let Some(key) = self.durable_key(frame, &sub.destination, &id)? {
            self.delete_durable(&key)?;
        }
        Ok(())
    }

    /// Deletes this connection's owner's durable subscription `key`, which needs read
    /// permission on its topic, as creating and consuming it do.
    fn delete_durable(&self, key: &str) -> Result<(), SessionError> {
        if let Some(destination) = self.shared.router.durable_destination(key) {
            self.authorize_use(Permission::Read, &destination)?;
            self.shared.router.delete_durable(key);
        }
        Ok(())
    }

    /// Finds the pending delivery an ACK/NACK names: `id` (1.2), or `message-id` (1.0,
    /// 1.1). A `subscription` that does not hold that message is no error: as RabbitMQ
    /// does, the delivery is found by `message-id` among all of this connection's,
    /// unsubscribed ones included.
    ///
    /// With `pending_now`, an ack id must name a delivery pending now (a transaction
    /// checks at once); otherwise [`crate::router::Link::settle`] checks it, saving a
    /// second lookup on every ACK.
    fn find_ack(&self, frame: &Frame, pending_now: bool) -> Result<AckRef, SessionError> {
        if let Some(id) = frame.headers.get("id") {
            let found = Subscription::parse_ack_id(id)
                .and_then(|(key, seq)| {
                    if pending_now {
                        self.link.find(key, seq)
                    } else {
                        self.link.locate(key, seq)
                    }
                })
                .or_else(|| self.link.find_message_id(None, id));
            return found.ok_or_else(|| SessionError::UnknownAck(id.to_owned()));
        }
        let message_id = frame.headers.get("message-id").ok_or_else(|| {
            let name = if self.version() >= Version::V1_2 {
                "id"
            } else {
                "message-id"
            };
            SessionError::missing(frame.command, name)
        })?;
        let first = frame
            .headers
            .get("subscription")
            .and_then(|sid| self.subs.get(sid))
            .map(|s| &s.sub);
        self.link
            .find_message_id(first, message_id)
            .ok_or_else(|| SessionError::UnknownAck(message_id.to_owned()))
    }

    /// ACK or NACK (NACK on 1.0 too: RabbitMQ accepts it, and clients rely on that).
    /// In a transaction the id is checked at once and the frame held until COMMIT.
    fn ack(&mut self, frame: Frame) -> Result<(), SessionError> {
        let nack = frame.command == Command::Nack;
        let in_tx = frame.headers.get("transaction").is_some();
        let found = self.find_ack(&frame, in_tx)?;
        if let Some(tx) = frame.headers.get("transaction") {
            return self.hold(tx.to_owned(), frame);
        }
        // S10: after a NACK, queue messages are redelivered (then dead-lettered);
        // topic messages are dropped, since topics keep nothing.
        if !self.link.settle(&found, nack) {
            let id = frame.headers.get("id").or(frame.headers.get("message-id"));
            return Err(SessionError::UnknownAck(id.unwrap_or_default().to_owned()));
        }
        Ok(())
    }

    /// Holds a transactional SEND until COMMIT, within `limits.max_tx_frames` for the
    /// transaction and `limits.max_tx_bytes` for all of the connection's open
    /// transactions together (one client's share of the broker's memory).
    fn hold(&mut self, tx: String, frame: Frame) -> Result<(), SessionError> {
        let limits = &self.shared.config.limits;
        let open: usize = self.txs.values().map(|t| t.charge.bytes()).sum();
        let held = self
            .txs
            .get_mut(&tx)
            .ok_or_else(|| SessionError::UnknownTransaction(tx.clone()))?;
        if held.frames.len() >= limits.max_tx_frames {
            return Err(SessionError::TransactionTooLarge(tx, limits.max_tx_frames));
        }
        let size = frame.size();
        if open + size > limits.max_tx_bytes {
            return Err(SessionError::TransactionTooManyBytes(
                tx,
                limits.max_tx_bytes,
            ));
        }
        held.charge.grow(size);
        held.frames.push(frame);
        Ok(())
    }

    fn begin(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let tx = header(frame, "transaction")?;
        if self.txs.contains_key(tx) {
            return Err(SessionError::DuplicateTransaction(tx.to_owned()));
        }
        let max = self.shared.config.limits.max_transactions;
        if self.txs.len() >= max {
            return Err(SessionError::TooManyTransactions(max));
        }
        let open = transaction::Open {
            frames: Vec::new(),
            charge: self.shared.router.memory().charge(0),
        };
        self.txs.insert(tx.to_owned(), open);
        Ok(())
    }

    fn abort(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let tx = header(frame, "transaction")?;
        self.txs
            .remove(tx)
            .ok_or_else(|| SessionError::UnknownTransaction(tx.to_owned()))?;
        Ok(())
    }

    /// Resolves when a persistent SEND of this connection failed to commit.
    pub async fn store_failed(&self) -> SessionError {
        self.inflight.failed().await
    }

    /// Stops deliveries to this connection (its read side has ended); what is still
    /// unsettled is returned when the session is dropped, after the writer is done.
    pub fn stop_deliveries(&mut self) {
        // The client id is free for a reconnect at once, not after the linger.
        self.client_claim = None;
        self.txs.clear();
        self.link.detach_all();
        for sub in std::mem::take(&mut self.subs).into_values() {
            self.announce_gone(&sub);
        }
    }

    /// The frame to send for a fatal error: `message`, `receipt-id` when the failing frame
    /// asked for a receipt (E1), `version` for C3, and a short plain-text body.
    pub fn error_frame(
        &self,
        message: &str,
        receipt: Option<String>,
        versions: Option<&str>,
    ) -> Frame {
        let mut frame = Frame::new(Command::Error).header("message", message);
        if let Some(id) = receipt {
            frame = frame.header("receipt-id", id);
        }
        if let Some(v) = versions {
            frame = frame.header("version", v);
        }
        frame
            .header("content-type", "text/plain")
            .body(Bytes::from(format!("{message}\n")))
    }
}
