//! COMMIT in two steps, so that a transaction applies all of its frames or none.
//!
//! *Prepare* resolves every SEND's destination and reserves room in its queue, and
//! finds every ACK/NACK's delivery; any waiting (a full queue, up to
//! `queues.send_timeout_ms`) happens here, while the connection keeps handling other
//! ACKs. *Apply* then hands every message on and settles every ack with no await in
//! between and nothing that can fail. A failed prepare drops what it reserved, applies
//! nothing, and the client gets ERROR naming the frame.

use std::collections::HashSet;

use super::{Done, Flow, Session, SessionError, Waiting, header};
use crate::frame::{Command, Frame};
use crate::memory::Charge;
use crate::router::{AckRef, Message, Reservation, StoreOps};

/// An open transaction: its frames, held until COMMIT, and their bytes charged to the
/// memory gauge (at most `limits.max_tx_bytes`).
pub(super) struct Open {
    pub frames: Vec<Frame>,
    pub charge: Charge,
}

/// One frame of a transaction, ready to apply.
enum Step {
    Send {
        reservation: Reservation,
        message: Box<Message>,
        /// 1-based position in the transaction, for the error.
        index: usize,
        /// Kept in the store: applied after the transaction's batch is on disk.
        persistent: bool,
    },
    Ack {
        found: AckRef,
        nack: bool,
    },
}

/// A transaction whose every frame has been checked, with queue room still to take
/// for some SENDs (see [`Prepared::fill`]).
pub struct Prepared {
    tx: String,
    steps: Vec<Step>,
}

impl Prepared {
    fn is_ready(&self) -> bool {
        self.steps.iter().all(|s| match s {
            Step::Send { reservation, .. } => reservation.is_ready(),
            Step::Ack { .. } => true,
        })
    }

    /// Waits for room in every full queue; the first that stays full fails it all.
    async fn fill(mut self) -> Result<Done, SessionError> {
        for step in &mut self.steps {
            if let Step::Send {
                reservation, index, ..
            } = step
            {
                reservation
                    .fill()
                    .await
                    .map_err(|e| SessionError::InTransaction {
                        tx: self.tx.clone(),
                        index: *index,
                        command: "SEND",
                        source: Box::new(e.into()),
                    })?;
            }
        }
        Ok(Done::Commit(self))
    }
}

impl Session {
    /// COMMIT: prepare, then apply at once or after the wait for queue room.
    pub(super) fn commit(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let tx = header(frame, "transaction")?.to_owned();
        let held = self
            .txs
            .remove(&tx)
            .ok_or_else(|| SessionError::UnknownTransaction(tx.clone()))?;
        let Open { frames, charge } = held;
        let prepared = self.prepare(tx, frames)?;
        // The prepared messages are charged now: the held frames' charge goes.
        drop(charge);
        let router = self.shared.router.clone();
        if prepared.is_ready() && !router.memory().is_high() {
            return Ok(self.apply(prepared));
        }
        Ok(Flow::Wait(Waiting {
            until: Box::pin(async move {
                router.memory_room().await?;
                prepared.fill().await
            }),
            receipt: None,
        }))
    }

    fn prepare(&self, tx: String, held: Vec<Frame>) -> Result<Prepared, SessionError> {
        let mut steps = Vec::with_capacity(held.len());
        let mut acked = HashSet::new();
        for (i, mut frame) in held.into_iter().enumerate() {
            let index = i + 1;
            let command = frame.command.as_str();
            let fail = |e: SessionError| SessionError::InTransaction {
                tx: tx.clone(),
                index,
                command,
                source: Box::new(e),
            };
            frame.headers.retain(|k, _| k != "transaction");
            match frame.command {
                Command::Send => {
                    let destination = self.resolve(header(&frame, "destination").map_err(fail)?);
                    let persistent = self
                        .shared
                        .router
                        .persists(&destination, frame.headers.get("persistent"));
                    let message = self.message(destination, frame).map_err(fail)?;
                    let reservation = self
                        .shared
                        .router
                        .reserve(&message.destination, message.size, Some(self.link.quota()))
                        .map_err(|e| fail(e.into()))?;
                    steps.push(Step::Send {
                        reservation,
                        message: Box::new(message),
                        index,
                        persistent,
                    });
                }
                _ => {
                    let found = self.find_ack(&frame, true).map_err(fail)?;
                    if !acked.insert((found.sub.key, found.seq)) {
                        let id = frame.headers.get("id").unwrap_or_default().to_owned();
                        return Err(fail(SessionError::UnknownAck(id)));
                    }
                    steps.push(Step::Ack {
                        found,
                        nack: frame.command == Command::Nack,
                    });
                }
            }
        }
        Ok(Prepared { tx, steps })
    }

    /// Applies a prepared transaction in frame order, with no await in between: every
    /// queue message is enqueued and every ack settled before this returns. Topic
    /// SENDs may still wait for room in full subscriber outboxes (flow control); then
    /// the topic SENDs after the first one that waits are published after it, in
    /// order, and the receipt follows them all.
    ///
    /// Persistent SENDs take their places in their queues in frame order, are written
    /// together in one store batch (all or none of them survive a crash), and are
    /// enqueued once it is on disk. The receipt waits for that batch, and for the
    /// deletes of what the transaction's ACKs settled (submitted before it), and for
    /// persistent topic SENDs to reach their durable subscriptions.
    pub(super) fn apply(&mut self, prepared: Prepared) -> Flow {
        let router = self.shared.router.clone();
        let mut first_wait = None;
        let mut later = Vec::new();
        let mut staged = Vec::new();
        // With persistent SENDs, every queue SEND is enqueued after the batch, in
        // frame order: a later one to the same queue must not overtake them.
        let staging = prepared.steps.iter().any(|s| {
            matches!(
                s,
                Step::Send {
                    persistent: true,
                    ..
                }
            )
        });
        // Whether the receipt must wait for the disk.
        let mut stored = false;
        // The ACKs' store deletes, written with the SENDs in one request.
        let mut deferred = StoreOps::default();
        for step in prepared.steps {
            match step {
                Step::Send {
                    reservation: reservation @ Reservation::Queue { .. },
                    message,
                    persistent,
                    ..
                } if staging => {
                    staged.extend(router.stage(reservation, *message, persistent));
                    stored = true;
                }
                Step::Send {
                    reservation: Reservation::Topic,
                    message,
                    ..
                } if first_wait.is_some() => {
                    stored |= message.persistent;
                    later.push(message);
                }
                Step::Send {
                    reservation,
                    message,
                    ..
                } => {
                    stored |= message.persistent;
                    if let Some(wait) = router.commit(reservation, *message) {
                        first_wait = Some(wait);
                    }
                }
                // An earlier cumulative ACK of the same transaction may have settled
                // it already: the outcome is the same.
                Step::Ack { found, nack } => {
                    self.link.settle_in(&found, nack, &mut deferred);
                    stored = true;
                }
            }
        }
        let on_disk = router.store().filter(|_| stored).map(|_| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            router.persist_staged_with(deferred, staged, move |r| {
                let _ = tx.send(r);
            });
            rx
        });
        if first_wait.is_none() && on_disk.is_none() {
            return Flow::Continue;
        }
        let store = router.store().filter(|_| !later.is_empty()).cloned();
        Flow::Wait(Waiting {
            until: Box::pin(async move {
                if let Some(rx) = on_disk {
                    match rx.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(SessionError::Store(e.to_string())),
                        Err(_) => return Err(SessionError::Store("store writer stopped".into())),
                    }
                }
                if let Some(first_wait) = first_wait {
                    first_wait.await?;
                }
                for message in later {
                    if let Some(wait) = router.commit(Reservation::Topic, *message) {
                        wait.await?;
                    }
                }
                // Topic SENDs published after the wait wrote to durable subscriptions.
                if let Some(store) = store {
                    super::persist::on_disk(&store).await?;
                }
                Ok(Done::Sent)
            }),
            receipt: None,
        })
    }
}
