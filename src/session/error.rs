//! Session-level protocol errors. Each one ends the connection with an ERROR frame whose
//! `message` header is the variant's text.

use thiserror::Error;

use crate::frame::Command;
use crate::outbox::CloseReason;
use crate::router::RouteError;

/// Why a session refuses a frame.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SessionError {
    /// C7: frames before CONNECT.
    #[error("not connected: send CONNECT or STOMP first (got {0})")]
    NotConnected(&'static str),
    /// C8: a second CONNECT.
    #[error("already connected")]
    AlreadyConnected,
    /// S14: a server frame sent by the client.
    #[error("{0} is a server frame; clients may not send it")]
    ServerFrame(&'static str),
    /// A required header is absent.
    #[error("{command} frame requires a '{header}' header")]
    MissingHeader {
        /// The frame's command.
        command: &'static str,
        /// The missing header.
        header: &'static str,
    },
    /// C3: no common version; `supported` goes in the ERROR's `version` header.
    #[error("supported protocol versions are {supported}")]
    UnsupportedVersion {
        /// Comma list of the versions we would accept on this connection.
        supported: String,
    },
    /// C6: bad login or passcode.
    #[error("authentication failed: bad login or passcode")]
    AuthFailed,
    /// A token was refused or expired; the text says which.
    #[error("{0}")]
    Token(String),
    /// `auth.max_failed_logins` reached for this address.
    #[error("too many failed logins from your address: try again later")]
    TooManyFailedLogins,
    /// H1: malformed `heart-beat` header.
    #[error("invalid heart-beat header {0:?}: expected two integers 'cx,cy'")]
    BadHeartbeat(String),
    /// F8: body on a frame that must not have one.
    #[error("{0} frames must not have a body")]
    BodyNotAllowed(&'static str),
    /// S6: unknown ack mode.
    #[error("invalid ack mode {0:?}: use auto, client or client-individual")]
    BadAckMode(String),
    /// A CONNECT on the admin listener by someone who is not an admin.
    #[error(
        "this is the admin listener: log in as one of admin.users (or with an admin.roles token)"
    )]
    AdminsOnly,
    /// A SUBSCRIBE to a system topic (`/sys/…`) with an ack mode other than auto.
    #[error("system topics (/sys/...) take ack:auto: they are live feeds")]
    SystemAck,
    /// Malformed `prefetch-count`.
    #[error("invalid prefetch-count {0:?}: expected a positive integer")]
    BadPrefetch(String),
    /// S5: subscription id reused.
    #[error("subscription id {0:?} is already in use on this connection")]
    DuplicateSubscription(String),
    /// S8: unknown subscription id.
    #[error("no subscription with id {0:?}")]
    UnknownSubscription(String),
    /// Too many subscriptions on one connection.
    #[error("too many subscriptions (limit {0})")]
    TooManySubscriptions(usize),
    /// Too many wildcard subscriptions on one connection.
    #[error("too many wildcard subscriptions (limit {0})")]
    TooManyWildcards(usize),
    /// S9: ack id unknown or already settled.
    #[error("no unacknowledged message with ack id {0:?}")]
    UnknownAck(String),
    /// S11: duplicate BEGIN.
    #[error("transaction {0:?} is already open")]
    DuplicateTransaction(String),
    /// S11: COMMIT/ABORT/use of an unknown transaction.
    #[error("no open transaction {0:?}")]
    UnknownTransaction(String),
    /// Too many open transactions on one connection.
    #[error("too many open transactions (limit {0})")]
    TooManyTransactions(usize),
    /// Too many frames in one transaction.
    #[error("transaction {0:?} has too many frames (limit {1})")]
    TransactionTooLarge(String, usize),
    /// Too many bytes in the connection's open transactions.
    #[error("transaction {0:?} holds too many bytes (limit {1} for all open transactions)")]
    TransactionTooManyBytes(String, usize),
    /// A COMMIT failed on one of its frames; nothing of the transaction was applied.
    #[error("transaction {tx:?} not committed: frame {index} ({command}): {source}")]
    InTransaction {
        /// The transaction id.
        tx: String,
        /// The failing frame's 1-based position in the transaction.
        index: usize,
        /// Its command.
        command: &'static str,
        /// Why it failed.
        source: Box<SessionError>,
    },
    /// The router refused a destination or a full queue timed out.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// An ACL refused the frame.
    #[error("permission denied: {permission} on {destination}")]
    PermissionDenied {
        /// What the frame asked.
        permission: crate::acl::Permission,
        /// Where.
        destination: String,
    },
    /// CONNECT's `client-id` is held by another live connection of the same user.
    #[error("client-id {0:?} is in use by another connection")]
    ClientIdInUse(String),
    /// A durable subscription name without CONNECT's `client-id`.
    #[error("a durable subscription name needs a client-id header on CONNECT")]
    DurableNeedsClientId,
    /// A persistent message could not be written to the store: it was not accepted.
    #[error("persistent message not stored: {0}")]
    Store(String),
}

impl SessionError {
    /// The WebSocket close code that fits.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            SessionError::AuthFailed
            | SessionError::AdminsOnly
            | SessionError::Token(_)
            | SessionError::TooManyFailedLogins
            | SessionError::PermissionDenied { .. } => CloseReason::Policy,
            SessionError::Route(
                RouteError::QueueFull(_)
                | RouteError::MemoryHigh
                | RouteError::TooManyQueues(_)
                | RouteError::TooManyQueuesForConnection(_),
            ) => CloseReason::Policy,
            SessionError::Route(
                RouteError::TooLargeForQueue(..) | RouteError::TooManyWords(..),
            )
            | SessionError::TransactionTooManyBytes(..) => CloseReason::TooBig,
            SessionError::InTransaction { source, .. } => source.close_reason(),
            SessionError::Store(_) => CloseReason::Internal,
            _ => CloseReason::Protocol,
        }
    }

    /// `MissingHeader` for `command`.
    pub fn missing(command: Command, header: &'static str) -> Self {
        SessionError::MissingHeader {
            command: command.as_str(),
            header,
        }
    }
}
