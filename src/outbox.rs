//! The per-connection outbox: a bounded queue of encoded frames between whoever
//! produces them (the router, the session) and the connection's writer task.
//!
//! The router only ever calls [`OutboxTx::try_push`]: it must never wait on a consumer.
//! A full outbox (by frame count or by bytes) is the slow-consumer signal: queues stop
//! giving that subscription credit and register to be woken ([`Wake`]) once the writer
//! has drained the outbox below half; topics apply their configured policy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::router::AutoAck;

/// Why a connection is being closed; decides the WebSocket close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT (1000).
    Normal,
    /// The broker is shutting down or the peer went silent (1001).
    GoingAway,
    /// A STOMP protocol violation (1002).
    Protocol,
    /// Header bytes that are not UTF-8 (1007).
    InvalidData,
    /// Refused by policy: authentication, slow consumer (1008).
    Policy,
    /// A frame over a size limit (1009).
    TooBig,
}

impl CloseReason {
    /// The RFC 6455 close code.
    pub fn ws_code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::Protocol => 1002,
            CloseReason::InvalidData => 1007,
            CloseReason::Policy => 1008,
            CloseReason::TooBig => 1009,
        }
    }
}

/// One item for the writer.
#[derive(Debug)]
pub enum Outgoing {
    /// A complete encoded frame of the session's own (CONNECTED, RECEIPT, ERROR).
    Frame(Bytes),
    /// A MESSAGE: per-delivery head, then the tail shared by every subscriber.
    Message {
        /// `MESSAGE`, `subscription`, `ack`, redelivery headers.
        head: Bytes,
        /// The encoded-once rest of the frame.
        tail: Bytes,
        /// For auto-ack queue deliveries: settled once written, requeued if never written.
        auto: Option<AutoAck>,
    },
    /// From now on send a heart-beat after this much write silence.
    Heartbeat(Duration),
    /// Flush what is queued, close the connection, and stop.
    Close(CloseReason),
}

impl Outgoing {
    /// Bytes this item will put on the wire, for the outbox's byte budget.
    pub fn wire_len(&self) -> usize {
        match self {
            Outgoing::Frame(b) => b.len(),
            Outgoing::Message { head, tail, .. } => head.len() + tail.len(),
            Outgoing::Heartbeat(_) | Outgoing::Close(_) => 0,
        }
    }
}

/// Something to poke when an outbox it found full has room again.
pub trait Wake: Send + Sync {
    /// Called by the writer, outside any lock.
    fn wake(&self);
}

#[derive(Default)]
struct Shared {
    /// Bytes queued and not yet taken by the writer.
    bytes: AtomicUsize,
    /// Destinations that skipped this connection because the outbox was full.
    starved: Mutex<Vec<Weak<dyn Wake>>>,
}

/// The producing side; cheap to clone, held by the session and its subscriptions.
#[derive(Clone)]
pub struct OutboxTx {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    max_bytes: usize,
}

impl std::fmt::Debug for OutboxTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxTx")
            .field("queued_bytes", &self.shared.bytes.load(Ordering::Relaxed))
            .finish()
    }
}

/// The writer's side.
pub struct OutboxRx {
    rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    max_frames: usize,
    max_bytes: usize,
}

/// A bounded outbox of `max_frames` items and `max_bytes` bytes.
pub fn outbox(max_frames: usize, max_bytes: usize) -> (OutboxTx, OutboxRx) {
    let (tx, rx) = mpsc::channel(max_frames);
    let shared = Arc::new(Shared::default());
    (
        OutboxTx {
            tx,
            shared: shared.clone(),
            max_bytes,
        },
        OutboxRx {
            rx,
            shared,
            max_frames,
            max_bytes,
        },
    )
}

impl OutboxTx {
    /// Whether a push would currently succeed (used for queue credit).
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 0 && self.shared.bytes.load(Ordering::Relaxed) < self.max_bytes
    }

    /// Queues `item` unless the outbox is full or closed; gives the item back if not.
    pub fn try_push(&self, item: Outgoing) -> Result<(), Outgoing> {
        let len = item.wire_len();
        if self.shared.bytes.load(Ordering::Relaxed) + len > self.max_bytes && len > 0 {
            return Err(item);
        }
        match self.tx.try_send(item) {
            Ok(()) => {
                self.shared.bytes.fetch_add(len, Ordering::Relaxed);
                Ok(())
            }
            Err(
                mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item),
            ) => Err(item),
        }
    }

    /// Queues the session's own frame, waiting for room: only the session's own task
    /// waits here, so a client that does not read only slows itself. Returns false when
    /// the writer is gone.
    pub async fn push(&self, item: Outgoing) -> bool {
        let len = item.wire_len();
        self.shared.bytes.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(item).await.is_err() {
            self.shared.bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Asks to be woken when the writer has drained this outbox below half.
    pub fn wake_when_ready(&self, who: Weak<dyn Wake>) {
        let mut starved = self.shared.starved.lock().expect("outbox lock poisoned");
        if !starved.iter().any(|w| w.ptr_eq(&who)) {
            starved.push(who);
        }
    }

    /// Whether the writer has gone away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl OutboxRx {
    /// Waits for the next item.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.recv().await?;
        self.taken(&item);
        Some(item)
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.try_recv().ok()?;
        self.taken(&item);
        Some(item)
    }

    fn taken(&self, item: &Outgoing) {
        self.shared
            .bytes
            .fetch_sub(item.wire_len(), Ordering::Relaxed);
    }

    /// Wakes starved destinations once the outbox is below half full. Called by the
    /// writer after each batch, holding no lock.
    pub fn wake_if_drained(&self) {
        let frames_low = self.rx.len() <= self.max_frames / 2;
        let bytes_low = self.shared.bytes.load(Ordering::Relaxed) <= self.max_bytes / 2;
        if !(frames_low && bytes_low) {
            return;
        }
        let starved =
            std::mem::take(&mut *self.shared.starved.lock().expect("outbox lock poisoned"));
        for who in starved {
            if let Some(who) = who.upgrade() {
                who.wake();
            }
        }
    }

    /// Stops accepting items and returns what was never written, so queue deliveries
    /// can be requeued instead of lost.
    pub fn close_and_drain(&mut self) -> Vec<Outgoing> {
        self.rx.close();
        let mut left = Vec::new();
        while let Some(item) = self.try_recv() {
            left.push(item);
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_by_frames_or_bytes() {
        let (tx, mut rx) = outbox(2, 10);
        assert!(
            tx.try_push(Outgoing::Frame(Bytes::from_static(b"12345")))
                .is_ok()
        );
        assert!(
            tx.try_push(Outgoing::Frame(Bytes::from_static(b"123456")))
                .is_err()
        );
        assert!(
            tx.try_push(Outgoing::Frame(Bytes::from_static(b"12345")))
                .is_ok()
        );
        assert!(!tx.has_room());
        assert!(
            tx.try_push(Outgoing::Frame(Bytes::from_static(b"1")))
                .is_err()
        );
        assert!(rx.try_recv().is_some());
        assert!(tx.has_room());
    }

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn starved_destinations_woken_below_half() {
        let (tx, mut rx) = outbox(4, 1000);
        for _ in 0..4 {
            tx.try_push(Outgoing::Frame(Bytes::from_static(b"x")))
                .unwrap();
        }
        let flag = Arc::new(Flag(Default::default()));
        let weak: Weak<dyn Wake> = Arc::downgrade(&(flag.clone() as Arc<dyn Wake>));
        tx.wake_when_ready(weak);
        rx.try_recv();
        rx.wake_if_drained();
        assert!(
            !flag.0.load(Ordering::SeqCst),
            "3 of 4 queued is not below half"
        );
        rx.try_recv();
        rx.wake_if_drained();
        assert!(flag.0.load(Ordering::SeqCst));
    }
}
