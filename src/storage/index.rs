//! The lock-free task index: task id → shared task, read and written from every core.
//!
//! Shared because any core may accept a request for any task; lock-free (a crossbeam skiplist) so a
//! lookup on one core never waits for another core's insert. Single-flight comes from
//! `get_or_insert_with`: of two racing requests for one id, exactly one creates the entry.

use std::sync::Arc;

use crossbeam_skiplist::SkipMap;

pub struct Index<T> {
    map: SkipMap<String, Arc<T>>,
}

impl<T: Send + Sync + 'static> Default for Index<T> {
    fn default() -> Self {
        Index { map: SkipMap::new() }
    }
}

impl<T: Send + Sync + 'static> Index<T> {
    pub fn get(&self, id: &str) -> Option<Arc<T>> {
        self.map.get(id).map(|e| e.value().clone())
    }

    /// Returns the entry for `id`, creating it with `make` when absent; the bool is true when this
    /// call created it (the caller then owns starting the work).
    pub fn get_or_create(&self, id: &str, make: impl FnOnce() -> Arc<T>) -> (Arc<T>, bool) {
        let mut created = None;
        let entry = self.map.get_or_insert_with(id.to_string(), || {
            let t = make();
            created = Some(t.clone());
            t
        });
        let value = entry.value().clone();
        let is_new = created.is_some_and(|c| Arc::ptr_eq(&c, &value));
        (value, is_new)
    }

    /// Removes `id` only if it still maps to `expected` (a newer task under the same id stays).
    pub fn remove_if_same(&self, id: &str, expected: &Arc<T>) -> bool {
        if let Some(entry) = self.map.get(id) {
            if Arc::ptr_eq(entry.value(), expected) {
                entry.remove();
                return true;
            }
        }
        false
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn values(&self) -> Vec<Arc<T>> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_flight_under_contention() {
        let index: Arc<Index<u64>> = Arc::new(Index::default());
        let created: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let index = index.clone();
                    s.spawn(move || index.get_or_create("t", || Arc::new(i)).1)
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(created.iter().filter(|c| **c).count(), 1);
        let t = index.get("t").unwrap();
        assert!(!index.remove_if_same("t", &Arc::new(99)));
        assert!(index.remove_if_same("t", &t));
        assert!(index.is_empty());
    }
}
