//! The durable store: persistent queue messages in one redb file, written in batches.
//!
//! Work in progress for the durable-queues issue (not wired into the router yet): the
//! file format, the operations, and the group-commit writer that turns the SENDs,
//! ACKs and NACKs of every connection into one write transaction (one fsync) per
//! flush. A record is keyed by (queue id, the message's place in its queue), so a
//! queue's messages load back in queue order.
//!
//! redb commits with `Durability::Immediate`: when `apply` returns, the batch is on
//! disk, and a crash at any moment leaves either all of a batch or none of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// (queue id, place in the queue) → the encoded record.
const MESSAGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("messages");
/// Queue name → queue id.
const QUEUES: TableDefinition<&str, u64> = TableDefinition::new("queues");

/// One queue's stored messages: (place in the queue, encoded record), in order.
pub type Records = Vec<(u64, Vec<u8>)>;

/// The file inside `store.data_dir`.
pub const FILE_NAME: &str = "stompbox.redb";

/// Why the store could not be used; every variant names the file.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file could not be opened: locked by another process, torn or corrupt.
    #[error("cannot open store {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
    /// A read or write failed.
    #[error("store {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
}

/// One change to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Store a message (or replace it: a new redelivery count).
    Put {
        /// The queue's name.
        queue: String,
        /// Its place in the queue.
        seq: u64,
        /// The encoded message.
        record: Vec<u8>,
    },
    /// Forget a message (acknowledged, dead-lettered, expired).
    Delete {
        /// The queue's name.
        queue: String,
        /// Its place in the queue.
        seq: u64,
    },
}

/// An open store file.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Write transactions committed (one fsync each), for tests and metrics.
    commits: AtomicU64,
}

impl Store {
    /// Opens (creating it and its directory if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| StoreError::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Store {
            db,
            path,
            commits: AtomicU64::new(0),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Applies `ops` in one write transaction: all of them are on disk when this
    /// returns Ok, none of them if it fails or the process dies before.
    pub fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut queues = txn.open_table(QUEUES).map_err(|e| self.io(e))?;
            let mut messages = txn.open_table(MESSAGES).map_err(|e| self.io(e))?;
            let mut ids: HashMap<&str, u64> = HashMap::new();
            let mut next_id = queues
                .iter()
                .map_err(|e| self.io(e))?
                .filter_map(Result::ok)
                .map(|(_, id)| id.value() + 1)
                .max()
                .unwrap_or(0);
            for op in ops {
                let queue = match op {
                    Op::Put { queue, .. } | Op::Delete { queue, .. } => queue.as_str(),
                };
                let id = match ids.get(queue) {
                    Some(id) => *id,
                    None => {
                        let existing = queues
                            .get(queue)
                            .map_err(|e| self.io(e))?
                            .map(|v| v.value());
                        let id = match existing {
                            Some(id) => id,
                            None => {
                                let id = next_id;
                                next_id += 1;
                                queues.insert(queue, id).map_err(|e| self.io(e))?;
                                id
                            }
                        };
                        ids.insert(queue, id);
                        id
                    }
                };
                match op {
                    Op::Put { seq, record, .. } => {
                        messages
                            .insert((id, *seq), record.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                    Op::Delete { seq, .. } => {
                        messages.remove((id, *seq)).map_err(|e| self.io(e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.io(e))?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Every stored message, per queue name, in queue order.
    pub fn load(&self) -> Result<Vec<(String, Records)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let queues = match txn.open_table(QUEUES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let messages = txn.open_table(MESSAGES).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for entry in queues.iter().map_err(|e| self.io(e))? {
            let (name, id) = entry.map_err(|e| self.io(e))?;
            let id = id.value();
            let mut records = Vec::new();
            for entry in messages
                .range((id, 0)..=(id, u64::MAX))
                .map_err(|e| self.io(e))?
            {
                let (key, value) = entry.map_err(|e| self.io(e))?;
                records.push((key.value().1, value.value().to_vec()));
            }
            if !records.is_empty() {
                out.push((name.value().to_owned(), records));
            }
        }
        Ok(out)
    }
}

/// An op and where to answer once it is on disk.
type Submitted = (Op, oneshot::Sender<Result<(), Arc<StoreError>>>);

/// The group-commit writer: ops from every connection, applied in batches. A batch is
/// committed when `batch` ops have gathered or `interval` has passed since its first
/// one; each submitter is answered once its op is on disk.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Submitted>,
}

impl GroupCommit {
    /// Starts the writer on its own thread (commits block on fsync).
    pub fn start(store: Arc<Store>, interval: Duration, batch: usize) -> GroupCommit {
        let (tx, mut rx) = mpsc::unbounded_channel::<Submitted>();
        std::thread::Builder::new()
            .name("stompbox-store".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let deadline = Instant::now() + interval;
                    let mut pending = vec![first];
                    while pending.len() < batch {
                        match rx.try_recv() {
                            Ok(item) => pending.push(item),
                            Err(mpsc::error::TryRecvError::Empty) => {
                                let left = deadline.saturating_duration_since(Instant::now());
                                if left.is_zero() {
                                    break;
                                }
                                std::thread::sleep(left.min(Duration::from_micros(50)));
                            }
                            Err(mpsc::error::TryRecvError::Disconnected) => break,
                        }
                    }
                    let (ops, replies): (Vec<Op>, Vec<_>) = pending.into_iter().unzip();
                    let result = store.apply(&ops).map_err(Arc::new);
                    for reply in replies {
                        let _ = reply.send(result.clone());
                    }
                }
            })
            .expect("spawn the store thread");
        GroupCommit { tx }
    }

    /// Queues `op` for the next batch; resolves once it is on disk.
    pub async fn submit(&self, op: Op) -> Result<(), Arc<StoreError>> {
        let (reply, done) = oneshot::channel();
        if self.tx.send((op, reply)).is_err() {
            return Err(Arc::new(StoreError::Io {
                path: PathBuf::new(),
                reason: "store writer stopped".into(),
            }));
        }
        done.await.unwrap_or_else(|_| {
            Err(Arc::new(StoreError::Io {
                path: PathBuf::new(),
                reason: "store writer stopped".into(),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("stompbox-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn put(queue: &str, seq: u64, body: &str) -> Op {
        Op::Put {
            queue: queue.into(),
            seq,
            record: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn records_survive_reopening_in_queue_order() {
        let d = dir("reopen");
        {
            let store = Store::open(&d).unwrap();
            store
                .apply(&[
                    put("/queue/a", 2, "a2"),
                    put("/queue/a", 1, "a1"),
                    put("/queue/b", 7, "b7"),
                ])
                .unwrap();
            store
                .apply(&[Op::Delete {
                    queue: "/queue/b".into(),
                    seq: 7,
                }])
                .unwrap();
            assert_eq!(store.commits(), 2);
        }
        let store = Store::open(&d).unwrap();
        assert_eq!(
            store.load().unwrap(),
            vec![(
                "/queue/a".to_owned(),
                vec![(1, b"a1".to_vec()), (2, b"a2".to_vec())]
            )]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let d = dir("corrupt");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(FILE_NAME), vec![0x5a; 8192]).unwrap();
        let err = Store::open(&d).unwrap_err().to_string();
        assert!(err.contains(FILE_NAME), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submits_share_commits() {
        let d = dir("group");
        let store = Arc::new(Store::open(&d).unwrap());
        let writer = GroupCommit::start(store.clone(), Duration::from_millis(2), 512);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.submit(put("/queue/g", i, "x")).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let loaded = store.load().unwrap();
        assert_eq!(loaded[0].1.len(), 200);
        assert!(
            store.commits() < 50,
            "{} commits for 200 ops",
            store.commits()
        );
        drop(writer);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
