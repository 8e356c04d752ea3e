//! Group commit: one thread owns the store and applies what every connection submits
//! in batches, one write transaction (one fsync) per batch.
//!
//! A batch starts with the first request that arrives and takes everything else that
//! has arrived by then, up to `store.commit_batch` operations; with
//! `store.commit_interval_us` above zero it also waits that long for more. While a
//! batch is on disk the next one gathers, so under load batches grow by themselves
//! and an idle broker commits a lone message at once. Each request's completion runs
//! on this thread after its batch is on disk, in submission order: that is where a
//! persistent message is handed to its queue and its RECEIPT queued, so neither can
//! run ahead of the disk, and one connection's messages stay in its order.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Op, Store, StoreError};
use crate::metrics::Metrics;

/// What runs once a request's batch is on disk (or has failed).
pub type Done = Box<dyn FnOnce(Result<(), Arc<StoreError>>) + Send>;

enum Request {
    Work { ops: Vec<Op>, done: Option<Done> },
    Stop,
}

/// The handle every connection submits through; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Request>,
    path: PathBuf,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("path", &self.path)
            .finish()
    }
}

impl GroupCommit {
    /// Starts the writer thread, which owns `store` from now on.
    pub fn start(
        store: Store,
        interval: Duration,
        batch: usize,
        metrics: Arc<Metrics>,
    ) -> GroupCommit {
        let (tx, rx) = mpsc::channel::<Request>();
        let path = store.path().to_owned();
        let thread = std::thread::Builder::new()
            .name("stompbox-store".into())
            .spawn(move || run(store, rx, interval, batch.max(1), &metrics))
            .expect("spawn the store thread");
        GroupCommit {
            tx,
            path,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }

    /// Queues `ops` for the next batch; `done` runs on the writer thread once they
    /// are on disk (or failed). With no ops, `done` runs once everything submitted
    /// before is on disk: a barrier, for the RECEIPT of an ACK.
    pub fn submit(&self, ops: Vec<Op>, done: Option<Done>) {
        if let Err(mpsc::SendError(Request::Work {
            done: Some(done), ..
        })) = self.tx.send(Request::Work { ops, done })
        {
            done(Err(Arc::new(StoreError::Failed {
                path: self.path.clone(),
            })));
        }
    }

    /// [`GroupCommit::submit`], resolving once `ops` are on disk.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<(), Arc<StoreError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            ops,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        rx.await.unwrap_or_else(|_| {
            Err(Arc::new(StoreError::Failed {
                path: self.path.clone(),
            }))
        })
    }

    /// Finishes everything submitted so far, then stops the writer and closes the
    /// file. Later submissions fail.
    pub fn stop(&self) {
        let _ = self.tx.send(Request::Stop);
        let thread = self.thread.lock().expect("store handle poisoned").take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn run(store: Store, rx: mpsc::Receiver<Request>, interval: Duration, max: usize, m: &Metrics) {
    let mut failed: Option<Arc<StoreError>> = None;
    let mut ops: Vec<Op> = Vec::new();
    let mut dones: Vec<Done> = Vec::new();
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else { break };
        let take = |r: Request, ops: &mut Vec<Op>, dones: &mut Vec<Done>| match r {
            Request::Work { ops: o, done } => {
                ops.extend(o);
                dones.extend(done);
                true
            }
            Request::Stop => false,
        };
        stop = !take(first, &mut ops, &mut dones);
        let deadline = Instant::now() + interval;
        while !stop && ops.len() < max {
            let next = if interval.is_zero() {
                rx.try_recv().map_err(|e| matches!(e, TryRecvError::Empty))
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                rx.recv_timeout(left)
                    .map_err(|e| matches!(e, RecvTimeoutError::Timeout))
            };
            match next {
                Ok(r) => stop = !take(r, &mut ops, &mut dones),
                Err(_) => break,
            }
        }
        let result = match &failed {
            Some(e) => Err(e.clone()),
            None if ops.is_empty() => Ok(()),
            None => {
                let started = Instant::now();
                let r = store.apply(&ops).map_err(Arc::new);
                let took = started.elapsed();
                Metrics::inc(&m.store_commits);
                Metrics::add(&m.store_ops, ops.len());
                m.store_batch.observe(ops.len() as f64);
                m.store_commit_seconds.observe_duration(took, 1);
                if let Err(e) = &r {
                    Metrics::inc(&m.store_failures);
                    tracing::error!(error = %e, "store commit failed: persistent messages are refused until a restart");
                    failed = Some(Arc::new(StoreError::Failed {
                        path: store.path().to_owned(),
                    }));
                }
                r
            }
        };
        ops.clear();
        for done in dones.drain(..) {
            done(result.clone());
        }
    }
}
