//! Poison-tolerant locking and in-flight accounting shared by both simulators.
//!
//! A panic in one request must not turn every later request into a panic, so locks recover
//! the data of a poisoned mutex; simulator state stays usable because every update is a
//! single step under the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, recovering the data if another thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks `l`, recovering from poisoning.
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks `l`, recovering from poisoning.
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Counts requests being served now and the highest such count seen.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    current: AtomicU64,
    max: AtomicU64,
}

impl Flight {
    /// Marks one request as started; the returned guard marks it finished when dropped,
    /// also when the client goes away and the request future is cancelled.
    pub(crate) fn enter(self: &Arc<Self>) -> FlightGuard {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        FlightGuard(Arc::clone(self))
    }

    /// The highest number of requests served at the same time so far.
    pub(crate) fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }
}

/// One request in flight; see [`Flight::enter`].
#[derive(Debug)]
pub(crate) struct FlightGuard(Arc<Flight>);

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flight_tracks_the_peak() {
        let f = Arc::new(Flight::default());
        let a = f.enter();
        let b = f.enter();
        drop(a);
        let c = f.enter();
        drop((b, c));
        let _d = f.enter();
        assert_eq!(f.max(), 2);
    }
}
