//! Persistent SENDs, pipelined through the store's group commit.
//!
//! A persistent SEND to a queue reserves its room, is handed to the store, and the
//! session goes on reading: its RECEIPT is sent, and the message handed to the queue,
//! by the store's thread once the batch is on disk ([`Router::persist`]). So one
//! producer that sends with receipts keeps many messages in one commit instead of one
//! commit per message. Order is kept by a barrier: a frame that does not join the
//! pipeline (see [`Session::pipelines`]) first waits until everything before it is on
//! disk, so receipts come in frame order and a later non-persistent SEND cannot
//! overtake an earlier persistent one. At most `store.max_inflight_per_connection`
//! may be waiting for the disk at once, and the store's thread pushes a RECEIPT only
//! for a frame handed over while the outbox had room (otherwise the frame waits, and
//! its receipt is queued like any other), so a client that does not read cannot make
//! receipts pile up.
//!
//! ACK and NACK settle at once and join the pipeline; with a `receipt`, the RECEIPT
//! waits until the batch that deletes (or counts) the settled records is on disk, so a
//! receipted ACK is never undone by a crash. A persistent topic SEND publishes at once
//! and joins the pipeline too: its receipt waits for its durable subscriptions'
//! writes.
//!
//! A failed commit fails the connection with ERROR naming the failure: the message was
//! not accepted.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::sync::Notify;

use super::{Done, Flow, Session, SessionError, Waiting};
use crate::frame::{Command, Frame, Version, encode};
use crate::outbox::{OutboxTx, Outgoing};
use crate::router::Message;
use crate::store::{GroupCommit, StoreError};

/// One connection's persistent SENDs (and receipted ACKs) waiting for the disk.
#[derive(Debug, Default)]
pub(super) struct Inflight {
    count: AtomicUsize,
    changed: Notify,
    /// The first store failure, with the receipt id of the frame it failed.
    failed: Mutex<Option<String>>,
    /// Whether `failed` is set: checked before every frame without the lock.
    has_failed: AtomicBool,
}

/// One entry in [`Inflight`]; dropping it (after the commit) leaves.
pub(super) struct Token(Arc<Inflight>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

impl Token {
    fn fail(&self, error: &StoreError, receipt: Option<&str>) {
        let mut failed = self.0.failed.lock().expect("inflight lock poisoned");
        if failed.is_none() {
            *failed = Some(match receipt {
                Some(id) => format!("{error} (receipt {id})"),
                None => error.to_string(),
            });
        }
        drop(failed);
        self.0.has_failed.store(true, Ordering::Release);
        self.0.changed.notify_waiters();
    }
}

impl Inflight {
    fn enter(self: &Arc<Self>) -> Token {
        self.count.fetch_add(1, Ordering::AcqRel);
        Token(self.clone())
    }

    fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until fewer than `n` are in flight.
    async fn below(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.len() < n {
                return;
            }
            changed.await;
        }
    }

    /// Whether the next frame must wait or fail: something is in flight, or a commit
    /// failed. The common case, nothing, costs two loads.
    pub(super) fn busy(&self) -> bool {
        self.len() > 0 || self.has_failed.load(Ordering::Acquire)
    }

    /// The store failure, if one happened.
    pub(super) fn failure(&self) -> Option<SessionError> {
        if !self.has_failed.load(Ordering::Acquire) {
            return None;
        }
        let failed = self.failed.lock().expect("inflight lock poisoned");
        failed.clone().map(SessionError::Store)
    }

    /// Resolves when a commit of this connection fails.
    pub(super) async fn failed(&self) -> SessionError {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(e) = self.failure() {
                return e;
            }
            changed.await;
        }
    }
}

fn receipt_frame(id: &str, version: Version) -> Outgoing {
    let mut buf = BytesMut::new();
    encode(
        &Frame::new(Command::Receipt).header("receipt-id", id),
        version,
        &mut buf,
    );
    Outgoing::Frame(buf.freeze())
}

/// What the store's thread runs after the commit: the RECEIPT, or the failure.
fn complete(
    token: Token,
    outbox: OutboxTx,
    receipt: Option<String>,
    version: Version,
) -> impl FnOnce(Result<(), Arc<StoreError>>) + Send + 'static {
    move |result| match result {
        Ok(()) => {
            if let Some(id) = receipt {
                outbox.push_now(receipt_frame(&id, version));
            }
            drop(token);
        }
        Err(e) => token.fail(&e, receipt.as_deref()),
    }
}

impl Session {
    /// Whether `frame` may be handled while persistent SENDs (or receipted ACKs) are
    /// in flight without waiting for them: another persistent SEND outside a
    /// transaction, which joins the pipeline behind them (to a queue, or to a topic:
    /// published at once, written to its durable subscriptions in order), or an ACK
    /// or NACK outside a transaction, which settles at once; their receipts follow.
    fn pipelines(&self, frame: &Frame) -> bool {
        if frame.headers.get("transaction").is_some() {
            return false;
        }
        match frame.command {
            Command::Ack | Command::Nack => true,
            Command::Send => frame.headers.get("destination").is_some_and(|d| {
                let router = &self.shared.router;
                let persistent = frame.headers.get("persistent");
                // A persistent topic SEND publishes at once; only its receipt waits.
                router.persists(&self.resolve(d), persistent)
                    || (d.starts_with("/topic/")
                        && router.store().is_some()
                        && persistent.is_some_and(|v| v.eq_ignore_ascii_case("true")))
            }),
            _ => false,
        }
    }

    /// Before a frame: the barrier (see the module docs), and a failed commit ends the
    /// connection.
    pub async fn before_frame(&self, frame: &Frame) -> Result<(), SessionError> {
        let n = self.inflight.len();
        if n > 0 && !self.pipelines(frame) {
            self.inflight.below(1).await;
        } else if n >= self.shared.config.store.max_inflight_per_connection {
            self.inflight
                .below(self.shared.config.store.max_inflight_per_connection)
                .await;
        }
        match self.inflight.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A persistent SEND outside a transaction: handed to the store now when its queue
    /// has room ([`Flow::Deferred`]: the store's thread sends the receipt); otherwise it
    /// waits for room like any SEND, then for its commit.
    pub(super) fn send_persistent(
        &mut self,
        message: Message,
        receipt: Option<String>,
    ) -> Result<Flow, SessionError> {
        let router = self.shared.router.clone();
        // Above the memory watermark the drop-oldest policy drops nothing until the
        // wait is over: the SEND may yet be refused.
        let quota = Some(self.link.quota());
        let mut reservation = if router.memory().is_high() {
            router.reserve(&message.destination, message.size, quota)?
        } else {
            router.reserve_evicting(&message.destination, message.size, quota)?
        };
        let cap = self.shared.config.store.max_inflight_per_connection;
        // Its receipt is pushed from the store's thread whatever the outbox holds:
        // only while there is room, so a client that does not read cannot pile them up.
        if reservation.is_ready()
            && !router.memory().is_high()
            && self.inflight.len() < cap
            && self.outbox.has_room()
        {
            let done = complete(
                self.inflight.enter(),
                self.outbox.clone(),
                receipt,
                self.version(),
            );
            router.persist(vec![(reservation, message)], done);
            return Ok(Flow::Deferred);
        }
        let inflight = self.inflight.clone();
        Ok(Flow::Wait(Waiting {
            until: Box::pin(async move {
                router.memory_room().await?;
                reservation.evict();
                reservation.fill().await?;
                inflight.below(cap).await;
                let (tx, rx) = tokio::sync::oneshot::channel();
                router.persist(vec![(reservation, message)], move |r| {
                    let _ = tx.send(r);
                });
                match rx.await {
                    Ok(Ok(())) => Ok(Done::Sent),
                    Ok(Err(e)) => Err(SessionError::Store(e.to_string())),
                    Err(_) => Err(SessionError::Store("store writer stopped".into())),
                }
            }),
            receipt: None,
        }))
    }

    /// The RECEIPT of an ACK or NACK (or a persistent topic SEND): with a store, once
    /// what it settled (or stored) is on disk. With `barrier`, later frames wait for
    /// that even without a receipt (a persistent topic SEND: what the same client
    /// sends next must not reach a durable subscription first).
    pub(super) fn receipt_after_disk(&self, receipt: Option<String>, barrier: bool) -> Flow {
        let Some(store) = self.shared.router.store() else {
            return Flow::Continue;
        };
        if receipt.is_none() && !barrier {
            return Flow::Continue;
        }
        if receipt.is_some() && !self.outbox.has_room() {
            // A client that does not read gets no more receipts pushed past its
            // outbox's bound: this frame waits for the disk, and its receipt for room.
            let store = store.clone();
            return Flow::Wait(Waiting {
                until: Box::pin(async move {
                    on_disk(&store).await?;
                    Ok(Done::Sent)
                }),
                receipt: None,
            });
        }
        let done = complete(
            self.inflight.enter(),
            self.outbox.clone(),
            receipt,
            self.version(),
        );
        store.submit(Vec::new(), Some(Box::new(done)));
        Flow::Deferred
    }

    /// Waits until everything this connection settled or sent before is on disk (for
    /// a receipt held while a frame waited).
    pub async fn on_disk(&self) -> Result<(), SessionError> {
        match self.shared.router.store() {
            Some(store) => on_disk(store).await,
            None => Ok(()),
        }
    }
}

/// Waits until everything submitted to `store` before is on disk.
pub(super) async fn on_disk(store: &GroupCommit) -> Result<(), SessionError> {
    store
        .commit(Vec::new())
        .await
        .map_err(|e| SessionError::Store(e.to_string()))
}
