//! The durable store: persistent queue messages in one redb file, written in batches.
//!
//! A message is stored under (queue id, its place in the queue), so a queue's messages
//! load back in queue order, which is every producer's order. Alongside: queue names
//! by id, and the redelivery count of a message that has one. The writer
//! ([`GroupCommit`]) turns the SENDs, ACKs and NACKs of every connection into one write
//! transaction, one fsync, per flush.
//!
//! redb commits with `Durability::Immediate`: when `apply` returns, the batch is on
//! disk, and a crash at any moment leaves either all of a batch or none of it. A
//! commit that fails leaves the file refusing writes until it is reopened: the store
//! then fails every later write, and the broker must be restarted.

mod record;
mod writer;

pub use record::{Record, RecordError, encode_head};
pub use writer::{Done, GroupCommit};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;

/// (queue id, place in the queue) → the encoded [`Record`].
const MESSAGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("messages");
/// (queue id, place in the queue) → redeliveries so far, for messages that have any.
const COUNTS: TableDefinition<(u64, u64), u32> = TableDefinition::new("redeliveries");
/// Queue id → queue name.
const QUEUES: TableDefinition<u64, &str> = TableDefinition::new("queues");
/// Durable subscription key → the topic (or pattern) it subscribes to.
const DURABLES: TableDefinition<&str, &str> = TableDefinition::new("durable_subscriptions");

/// `commit` → the number of the last commit, written in every commit.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const COMMIT_KEY: &str = "commit";

/// The file inside `store.data_dir`.
pub const FILE_NAME: &str = "stompbox.redb";
/// Beside it: the number of the last commit that returned, rewritten after each one
/// (no fsync of its own: a process crash keeps the page cache). At start, a store
/// whose own last commit is older than this fell back to an earlier commit (redb does
/// when the newest is damaged after a crash): acknowledged writes are gone, and the
/// start says so instead of running on silently with less.
pub const COMMIT_FILE: &str = "stompbox.commit";

/// Below this size the file is never compacted: the gain would be nothing.
const COMPACT_ABOVE: u64 = 64 * 1024 * 1024;

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
    /// The store holds an older commit than one that had returned: redb fell back to
    /// an earlier commit (the newest was damaged after a crash).
    #[error(
        "store {path} holds commit {found}, but commit {acknowledged} had been written: \
         its last {} commit(s) are lost (the file was damaged after a crash and fell back \
         to an earlier commit), so receipted messages may be missing or acknowledged ones \
         back. Set store.accept_rollback = true to start with what it holds.",
        acknowledged - found
    )]
    RolledBack {
        /// The file.
        path: PathBuf,
        /// The commit the store holds.
        found: u64,
        /// The last commit that had returned.
        acknowledged: u64,
    },
    /// An earlier commit failed; nothing more is written until a restart.
    #[error("store {path} failed earlier and refuses writes until the broker restarts")]
    Failed {
        /// The file.
        path: PathBuf,
    },
}

/// One change to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A queue's id and name (written once, before its first message).
    Queue {
        /// The queue's id.
        id: u64,
        /// Its name.
        name: String,
    },
    /// Store a message: the encoded [`Record`] is `head` then `body`, kept apart so
    /// that the body is shared with the message, not copied, until it is written.
    Put {
        /// The queue's id.
        queue: u64,
        /// Its place in the queue.
        seq: u64,
        /// The record without its body ([`Record::encode_head`]).
        head: Bytes,
        /// The body.
        body: Bytes,
    },
    /// A message's redelivery count.
    Count {
        /// The queue's id.
        queue: u64,
        /// Its place in the queue.
        seq: u64,
        /// Redeliveries so far.
        redeliveries: u32,
    },
    /// Forget a message (acknowledged, dead-lettered, expired, dropped).
    Delete {
        /// The queue's id.
        queue: u64,
        /// Its place in the queue.
        seq: u64,
    },
    /// Forget every message of a queue (its id is not reused).
    DeleteQueue {
        /// The queue's id.
        id: u64,
    },
    /// A durable subscription and what it subscribes to.
    Durable {
        /// Its key (see `router::durable`).
        key: String,
        /// The topic or pattern.
        destination: String,
    },
    /// Forget a durable subscription (its queue goes with [`Op::DeleteQueue`]).
    Undurable {
        /// Its key.
        key: String,
    },
}

/// A stored message, as loaded at start.
#[derive(Debug)]
pub struct Stored {
    /// Its place in its queue.
    pub seq: u64,
    /// The encoded [`Record`].
    pub record: Bytes,
    /// Redeliveries before the restart.
    pub redeliveries: u32,
}

/// A queue's stored messages, in queue order.
#[derive(Debug)]
pub struct StoredQueue {
    /// The queue's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its messages.
    pub messages: Vec<Stored>,
}

/// An open store file.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Write transactions committed (one fsync each), for tests and metrics.
    commits: AtomicU64,
    /// The number of the last commit (see [`COMMIT_FILE`]).
    seq: AtomicU64,
    /// [`COMMIT_FILE`], open for rewriting.
    marker: std::fs::File,
}

impl Store {
    /// Opens (creating it and its directory if needed) the store in `dir`, checking
    /// every page: a torn or corrupt file is an error naming it, never an empty store.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, false)
    }

    /// [`Store::open`]; with `accept_rollback` (`store.accept_rollback`), a store that
    /// fell back to an earlier commit is used as it is (logged as an error) instead of
    /// stopping the start with [`StoreError::RolledBack`].
    pub fn open_with(dir: &Path, accept_rollback: bool) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        // redb documents that opening a file corrupted outside it may panic unless the
        // integrity check is on; the check is on, and a panic is caught all the same.
        // A store file made now has no past: a commit marker beside it belongs to a
        // file that was removed (a reset), not to a lost commit.
        let fresh = !path.exists();
        let opened = std::panic::catch_unwind(|| {
            redb::Builder::new()
                .set_cache_size(64 * 1024 * 1024)
                .set_check_integrity_on_open(true)
                .create(&path)
        })
        .map_err(|_| open_error("the file is corrupt (redb panicked reading it)".into()))?;
        let db = opened.map_err(|e| {
            open_error(match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "in use by another process (another stompbox with the same data_dir?)".into()
                }
                e => e.to_string(),
            })
        })?;
        let found = {
            let txn = db.begin_read().map_err(|e| open_error(e.to_string()))?;
            match txn.open_table(META) {
                Ok(meta) => meta
                    .get(COMMIT_KEY)
                    .map_err(|e| open_error(e.to_string()))?
                    .map_or(0, |v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(open_error(e.to_string())),
            }
        };
        let marker_path = dir.join(COMMIT_FILE);
        let acknowledged = std::fs::read(&marker_path)
            .ok()
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(0, u64::from_le_bytes);
        if acknowledged > found && !fresh {
            if !accept_rollback {
                return Err(StoreError::RolledBack {
                    path,
                    found,
                    acknowledged,
                });
            }
            tracing::error!(
                path = %path.display(), found, acknowledged,
                "store fell back to an earlier commit: starting with what it holds (store.accept_rollback)"
            );
        }
        let marker = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&marker_path)
            .map_err(|e| open_error(format!("{}: {e}", marker_path.display())))?;
        let store = Store {
            db,
            path,
            commits: AtomicU64::new(0),
            seq: AtomicU64::new(found),
            marker,
        };
        // Create the tables, so that reads never meet a missing one.
        store.apply(&[])?;
        Ok(store)
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

    /// Applies `ops` in order in one write transaction: all of them are on disk when
    /// this returns Ok, none of them if it fails or the process dies before.
    pub fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        // Only commits that change something are numbered: the empty one at open (which
        // creates the tables) dirties no page, so it never stands in the way of a
        // compaction right after it.
        let seq = self.seq.load(Ordering::Relaxed) + u64::from(!ops.is_empty());
        {
            if !ops.is_empty() {
                let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
                meta.insert(COMMIT_KEY, seq).map_err(|e| self.io(e))?;
            }
            let mut queues = txn.open_table(QUEUES).map_err(|e| self.io(e))?;
            let mut messages = txn.open_table(MESSAGES).map_err(|e| self.io(e))?;
            let mut counts = txn.open_table(COUNTS).map_err(|e| self.io(e))?;
            let mut durables = txn.open_table(DURABLES).map_err(|e| self.io(e))?;
            // One record at a time is joined here, whatever the batch holds.
            let mut value = Vec::new();
            for op in ops {
                match op {
                    Op::Queue { id, name } => {
                        queues.insert(*id, name.as_str()).map_err(|e| self.io(e))?;
                    }
                    Op::Put {
                        queue,
                        seq,
                        head,
                        body,
                    } => {
                        value.clear();
                        value.extend_from_slice(head);
                        value.extend_from_slice(body);
                        messages
                            .insert((*queue, *seq), value.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                    Op::Count {
                        queue,
                        seq,
                        redeliveries,
                    } => {
                        counts
                            .insert((*queue, *seq), *redeliveries)
                            .map_err(|e| self.io(e))?;
                    }
                    Op::Delete { queue, seq } => {
                        messages.remove((*queue, *seq)).map_err(|e| self.io(e))?;
                        counts.remove((*queue, *seq)).map_err(|e| self.io(e))?;
                    }
                    Op::DeleteQueue { id } => {
                        let all = (*id, 0)..=(*id, u64::MAX);
                        messages
                            .retain_in(all.clone(), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        counts
                            .retain_in(all, |_, _| false)
                            .map_err(|e| self.io(e))?;
                        // The row stays until `tidy`, which keeps the highest: ids
                        // are never reused.
                    }
                    Op::Durable { key, destination } => {
                        durables
                            .insert(key.as_str(), destination.as_str())
                            .map_err(|e| self.io(e))?;
                    }
                    Op::Undurable { key } => {
                        durables.remove(key.as_str()).map_err(|e| self.io(e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.io(e))?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        if ops.is_empty() {
            return Ok(());
        }
        self.seq.store(seq, Ordering::Relaxed);
        // After the commit returned: the marker is never ahead of what is on disk.
        use std::os::unix::fs::FileExt as _;
        if let Err(e) = self.marker.write_all_at(&seq.to_le_bytes(), 0) {
            tracing::warn!(error = %e, "cannot record the last commit beside the store");
        }
        Ok(())
    }

    /// Every durable subscription: (key, destination).
    pub fn durables(&self) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(DURABLES).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.io(e))? {
            let (k, v) = entry.map_err(|e| self.io(e))?;
            out.push((k.value().to_owned(), v.value().to_owned()));
        }
        Ok(out)
    }

    /// Every queue with stored messages, each in queue order, and the highest queue
    /// id in use (so new ids never reuse one).
    pub fn load(&self) -> Result<(Vec<StoredQueue>, u64), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let queues = txn.open_table(QUEUES).map_err(|e| self.io(e))?;
        let messages = txn.open_table(MESSAGES).map_err(|e| self.io(e))?;
        let counts = txn.open_table(COUNTS).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        let mut max_id = 0;
        for entry in queues.iter().map_err(|e| self.io(e))? {
            let (id, name) = entry.map_err(|e| self.io(e))?;
            let id = id.value();
            max_id = max_id.max(id);
            let mut stored = Vec::new();
            for entry in messages
                .range((id, 0)..=(id, u64::MAX))
                .map_err(|e| self.io(e))?
            {
                let (key, value) = entry.map_err(|e| self.io(e))?;
                let key = key.value();
                let redeliveries = counts
                    .get(key)
                    .map_err(|e| self.io(e))?
                    .map_or(0, |c| c.value());
                stored.push(Stored {
                    seq: key.1,
                    record: Bytes::copy_from_slice(value.value()),
                    redeliveries,
                });
            }
            if !stored.is_empty() {
                out.push(StoredQueue {
                    id,
                    name: name.value().to_owned(),
                    messages: stored,
                });
            }
        }
        Ok((out, max_id))
    }

    /// Forgets queues that hold no message (their ids are never reused), redelivery
    /// counts whose message is gone, and messages whose queue is (neither can be
    /// reached any more), then compacts the file when it is over `ratio` times larger than the data it holds
    /// (and over 64 MiB). Run at start, before the writer: compaction needs the file
    /// to itself. Returns the file sizes before and after when it compacted.
    pub fn tidy(&mut self, ratio: u64) -> Result<Option<(u64, u64)>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        let live = {
            let mut queues = txn.open_table(QUEUES).map_err(|e| self.io(e))?;
            let mut messages = txn.open_table(MESSAGES).map_err(|e| self.io(e))?;
            let mut counts = txn.open_table(COUNTS).map_err(|e| self.io(e))?;
            let known: std::collections::HashSet<u64> = queues
                .iter()
                .map_err(|e| self.io(e))?
                .map(|e| e.map(|(id, _)| id.value()))
                .collect::<Result<_, _>>()
                .map_err(|e| self.io(e))?;
            messages
                .retain(|(queue, _), _| known.contains(&queue))
                .map_err(|e| self.io(e))?;
            let orphans: Vec<(u64, u64)> = counts
                .iter()
                .map_err(|e| self.io(e))?
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.io(e))?
                .into_iter()
                .filter(|k| !matches!(messages.get(*k), Ok(Some(_))))
                .collect();
            for k in orphans {
                counts.remove(k).map_err(|e| self.io(e))?;
            }
            let mut empty = Vec::new();
            for entry in queues.iter().map_err(|e| self.io(e))? {
                let id = entry.map_err(|e| self.io(e))?.0.value();
                let first = messages
                    .range((id, 0)..=(id, u64::MAX))
                    .map_err(|e| self.io(e))?
                    .next();
                if first.is_none() {
                    empty.push(id);
                }
            }
            // The highest id stays, so that ids keep growing.
            let last = queues
                .last()
                .map_err(|e| self.io(e))?
                .map(|(id, _)| id.value());
            for id in empty.into_iter().filter(|id| Some(*id) != last) {
                queues.remove(id).map_err(|e| self.io(e))?;
            }
            drop((queues, messages, counts));
            let stats = txn.stats().map_err(|e| self.io(e))?;
            stats.stored_bytes() + stats.metadata_bytes()
        };
        txn.commit().map_err(|e| self.io(e))?;
        let size = |s: &Store| std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0);
        let before = size(self);
        // A compaction cut short (the process killed between its passes) may leave the
        // file under the threshold but still mostly empty: a marker beside it says to
        // finish it at the next start, whatever the size.
        let marker = self.path.with_file_name("stompbox.compacting");
        let resuming = marker.exists();
        if !resuming && (before <= COMPACT_ABOVE || before <= live.saturating_mul(ratio)) {
            return Ok(None);
        }
        std::fs::write(&marker, b"").map_err(|e| self.io(e))?;
        while self.db.compact().map_err(|e| self.io(e))? {}
        std::fs::remove_file(&marker).map_err(|e| self.io(e))?;
        Ok(Some((before, size(self))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("stompbox-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn put(queue: u64, seq: u64, body: &'static str) -> Op {
        Op::Put {
            queue,
            seq,
            head: Bytes::from_static(&body.as_bytes()[..body.len() / 2]),
            body: Bytes::from_static(&body.as_bytes()[body.len() / 2..]),
        }
    }

    type Summary = Vec<(String, Vec<(u64, Bytes, u32)>)>;

    fn summary(store: &Store) -> Summary {
        let (queues, _) = store.load().unwrap();
        queues
            .into_iter()
            .map(|q| {
                let m = q.messages.into_iter();
                (
                    q.name,
                    m.map(|s| (s.seq, s.record, s.redeliveries)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn records_survive_reopening_in_queue_order() {
        let d = dir("reopen");
        {
            let store = Store::open(&d).unwrap();
            store
                .apply(&[
                    Op::Queue {
                        id: 1,
                        name: "/queue/a".into(),
                    },
                    Op::Queue {
                        id: 2,
                        name: "/queue/b".into(),
                    },
                    put(1, 2, "a2"),
                    put(1, 1, "a1"),
                    put(2, 7, "b7"),
                    Op::Count {
                        queue: 1,
                        seq: 2,
                        redeliveries: 3,
                    },
                ])
                .unwrap();
            store.apply(&[Op::Delete { queue: 2, seq: 7 }]).unwrap();
        }
        let store = Store::open(&d).unwrap();
        assert_eq!(
            summary(&store),
            vec![(
                "/queue/a".to_owned(),
                vec![(1, Bytes::from("a1"), 0), (2, Bytes::from("a2"), 3)]
            )]
        );
        assert_eq!(store.load().unwrap().1, 2, "highest queue id");
        drop(store);
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

    #[test]
    fn a_torn_file_is_an_error_naming_it() {
        let d = dir("torn");
        {
            let store = Store::open(&d).unwrap();
            let ops: Vec<Op> = (0..200).map(|i| put(1, i, "some message body")).collect();
            store.apply(&ops).unwrap();
        }
        let path = d.join(FILE_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 3).unwrap();
        drop(file);
        let err = Store::open(&d).unwrap_err().to_string();
        assert!(err.contains(FILE_NAME), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_second_broker_on_the_same_directory_is_refused() {
        let d = dir("twice");
        let _first = Store::open(&d).unwrap();
        let err = Store::open(&d).unwrap_err().to_string();
        assert!(err.contains("another process"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tidy_compacts_a_file_much_larger_than_its_data() {
        let d = dir("compact");
        let mut store = Store::open(&d).unwrap();
        store
            .apply(&[Op::Queue {
                id: 1,
                name: "/queue/big".into(),
            }])
            .unwrap();
        let body: &'static str = Box::leak("x".repeat(64 * 1024).into_boxed_str());
        for round in 0..24 {
            let ops: Vec<Op> = (0..64).map(|i| put(1, round * 64 + i, body)).collect();
            store.apply(&ops).unwrap();
        }
        let deletes: Vec<Op> = (0..24 * 64 - 1)
            .map(|seq| Op::Delete { queue: 1, seq })
            .collect();
        store.apply(&deletes).unwrap();
        let (before, after) = store.tidy(4).unwrap().expect("compacted");
        assert!(before > 64 << 20, "{before}");
        assert!(after < before / 4, "{before} -> {after}");
        drop(store);
        let store = Store::open(&d).unwrap();
        assert_eq!(
            summary(&store)[0].1.len(),
            1,
            "the live message survives compaction"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submits_share_commits_and_complete_in_order() {
        let d = dir("group");
        let metrics = Arc::new(Metrics::default());
        let store = Store::open(&d).unwrap();
        let writer = GroupCommit::start(store, Duration::from_millis(2), 512, metrics.clone());
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        writer.submit(
            vec![Op::Queue {
                id: 1,
                name: "/queue/g".into(),
            }],
            None,
        );
        let (all_done, done) = tokio::sync::oneshot::channel();
        let mut all_done = Some(all_done);
        for i in 0..200u64 {
            let order = order.clone();
            let last = if i == 199 { all_done.take() } else { None };
            writer.submit(
                vec![put(1, i, "x")],
                Some(Box::new(move |r| {
                    r.unwrap();
                    order.lock().unwrap().push(i);
                    if let Some(tx) = last {
                        tx.send(()).unwrap();
                    }
                })),
            );
        }
        done.await.unwrap();
        assert_eq!(*order.lock().unwrap(), (0..200).collect::<Vec<_>>());
        let commits = Metrics::get(&metrics.store_commits);
        assert!(commits < 50, "{commits} commits for 200 ops");
        writer.stop();
        writer.commit(vec![put(1, 999, "late")]).await.unwrap_err();
        let store = Store::open(&d).unwrap();
        let (queues, _) = store.load().unwrap();
        assert_eq!(
            queues[0].messages.len(),
            200,
            "nothing after stop was written"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
