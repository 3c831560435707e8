//! The memory backend's queue of push expiries: the members (request key hashes) by the time
//! they come due; a claim moves a member that far ahead by its lease, as the Redis backend's
//! sorted set does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use super::waiters::IdHash;

#[derive(Default)]
pub(super) struct DueQueue {
    inner: Mutex<Due>,
}

#[derive(Default)]
struct Due {
    by_time: BTreeSet<(u64, IdHash)>,
    at: HashMap<IdHash, u64>,
}

impl Due {
    fn remove(&mut self, h: &IdHash) {
        if let Some(t) = self.at.remove(h) {
            self.by_time.remove(&(t, *h));
        }
    }

    fn insert(&mut self, h: IdHash, t: u64) {
        self.remove(&h);
        self.by_time.insert((t, h));
        self.at.insert(h, t);
    }
}

impl DueQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Due> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn watch(&self, h: IdHash, due_ms: u64) {
        self.lock().insert(h, due_ms);
    }

    /// Up to `max` members due at `now_ms`, each moved `lease_ms` ahead.
    pub(super) fn claim(&self, now_ms: u64, max: usize, lease_ms: u64) -> Vec<IdHash> {
        let mut due = self.lock();
        let claimed: Vec<IdHash> = due
            .by_time
            .iter()
            .take_while(|(t, _)| *t <= now_ms)
            .take(max)
            .map(|(_, h)| *h)
            .collect();
        for h in &claimed {
            due.insert(*h, now_ms.saturating_add(lease_ms));
        }
        claimed
    }

    pub(super) fn settle(&self, h: &IdHash) {
        self.lock().remove(h);
    }
}
