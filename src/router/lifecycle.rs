//! Queue lifecycle: the queues each connection created (its quota, and the temp queues
//! to delete when it closes), and the sweep that deletes queues nobody uses.

use std::sync::{Arc, Mutex, Weak};

use super::{Queue, RouteError};

/// The queues one connection created that still exist, at most
/// `limits.max_queues_per_connection`: one client cannot use up `limits.max_queues`
/// for everyone. A queue deleted (idle, or a temp queue with its connection) no longer
/// counts.
#[derive(Debug)]
pub struct Quota {
    max: usize,
    created: Mutex<Vec<Weak<Queue>>>,
}

impl Quota {
    /// An empty quota of `max` queues.
    pub fn new(max: usize) -> Quota {
        Quota {
            max,
            created: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Queue>>> {
        self.created.lock().expect("quota lock poisoned")
    }

    /// Whether one more queue may be created; forgets deleted ones first when full.
    pub(super) fn check(&self) -> Result<(), RouteError> {
        let mut created = self.lock();
        if created.len() >= self.max {
            created.retain(|q| q.strong_count() > 0);
            if created.len() >= self.max {
                return Err(RouteError::TooManyQueuesForConnection(self.max));
            }
        }
        Ok(())
    }

    /// Counts a queue just created.
    pub(super) fn note(&self, queue: &Arc<Queue>) {
        self.lock().push(Arc::downgrade(queue));
    }

    /// The temp queues among those created (still existing), taken out of the list.
    pub(super) fn take_temp_queues(&self) -> Vec<Arc<Queue>> {
        let mut temps = Vec::new();
        self.lock().retain(|q| match q.upgrade() {
            Some(q) if q.owner.is_some() => {
                temps.push(q);
                false
            }
            Some(_) => true,
            None => false,
        });
        temps
    }
}
