//! Bounded concurrency, the two shapes clusterup needs: a few workers over
//! a list (stacks, registry lookups), and a cap on how many of a kind of
//! thing run at once in the process (lookups per registry, Compose runs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

/// Runs `work` on each of `items`, `workers` at a time, and hands each
/// result with its index to `done` on the calling thread as it comes.
pub fn for_each<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    work: impl Fn(&T) -> R + Sync,
    mut done: impl FnMut(usize, R),
) {
    let next = AtomicUsize::new(0);
    let (finished, results) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..workers.min(items.len()) {
            let (finished, next, work) = (finished.clone(), &next, &work);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if finished.send((i, work(item))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(finished);
        for (i, result) in results {
            done(i, result);
        }
    });
}

/// At most `most` places taken at once per key; `take` waits for one.
pub struct Places {
    most: usize,
    taken: Mutex<BTreeMap<String, usize>>,
    freed: Condvar,
}

impl Places {
    pub const fn new(most: usize) -> Places {
        Places { most, taken: Mutex::new(BTreeMap::new()), freed: Condvar::new() }
    }

    pub fn take(&self, key: &str) -> Place<'_> {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        while taken.get(key).is_some_and(|n| *n >= self.most) {
            taken = self.freed.wait(taken).unwrap_or_else(PoisonError::into_inner);
        }
        *taken.entry(key.to_string()).or_default() += 1;
        Place { places: self, key: key.to_string() }
    }
}

/// A place held until dropped.
pub struct Place<'a> {
    places: &'a Places,
    key: String,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut taken = self.places.taken.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = taken.get_mut(&self.key) {
            *n -= 1;
        }
        self.places.freed.notify_all();
    }
}
