//! Keeping events this replica holds from being redelivered while they wait. An event is
//! tracked from the moment it is pulled (the intake asks for a fetch only when it can take all
//! of it at once, so no delivered event waits untracked in the client's buffer) until it is
//! acked or nak'ed (its [`Tracked`] handle is
//! dropped with it); every third of the ack wait, events held longer than that get a progress
//! ack (`+WPI`), which restarts the server's ack timer. So a batch that queues behind slow
//! requests, or retries, stays with this replica instead of being handed to another one and
//! posted twice — whatever stage it is waiting in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Subject;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

/// Held events by ticket: an entry is added and removed for every event, and tickets need no
/// protection from crafted keys, so the cheaper hasher.
type Held = Arc<Mutex<foldhash::HashMap<u64, (Subject, Instant)>>>;

/// The events this replica holds, by ticket.
#[derive(Clone, Default)]
pub struct InProgress {
    held: Held,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for InProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProgress")
            .field("held", &self.len())
            .finish()
    }
}

/// An event being held; dropping it stops its progress acks.
pub struct Tracked {
    id: u64,
    held: Held,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").field("id", &self.id).finish()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&self.id);
        }
    }
}

impl InProgress {
    /// Starts tracking the event whose ack subject is `reply` (none: nothing to keep alive).
    pub fn track(&self, reply: Option<&Subject>) -> Option<Tracked> {
        let reply = reply?.clone();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.held.lock().ok()?.insert(id, (reply, Instant::now()));
        Some(Tracked {
            id,
            held: self.held.clone(),
        })
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.held.lock().map_or(0, |held| held.len())
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ack subjects of events held longer than `age` at `now`, marked as refreshed.
    fn due(&self, age: Duration, now: Instant) -> Vec<Subject> {
        let Ok(mut held) = self.held.lock() else {
            return Vec::new();
        };
        held.values_mut()
            .filter(|(_, since)| now.saturating_duration_since(*since) >= age)
            .map(|(reply, since)| {
                *since = now;
                reply.clone()
            })
            .collect()
    }

    /// Sends progress acks for events held longer than a third of `ack_wait`, every third of
    /// it, until `stop`.
    pub async fn keep_alive(
        self,
        client: async_nats::Client,
        ack_wait: Duration,
        stop: CancellationToken,
    ) {
        let period = (ack_wait / 3).max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let due = self.due(period, Instant::now());
            if due.is_empty() {
                continue;
            }
            tracing::debug!(
                events = due.len(),
                "events still held; sending progress acks"
            );
            for reply in due {
                if let Err(err) = client.publish(reply, Bytes::from_static(b"+WPI")).await {
                    tracing::debug!(error = %err, "progress ack failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_kept_alive_until_dropped() {
        let progress = InProgress::default();
        let subject = Subject::from("$JS.ACK.S.C.1.1.1.0.0");
        let first = progress.track(Some(&subject));
        let second = progress.track(Some(&subject));
        assert!(progress.track(None).is_none(), "nothing to keep alive");
        assert_eq!(progress.len(), 2);
        let start = Instant::now();
        let period = Duration::from_secs(10);
        assert!(progress.due(period, start).is_empty(), "just pulled");
        assert_eq!(progress.due(period, start + period).len(), 2);
        assert!(
            progress
                .due(period, start + period + Duration::from_secs(1))
                .is_empty(),
            "refreshed a moment ago"
        );
        drop(first);
        assert_eq!(progress.due(period, start + period * 2).len(), 1);
        drop(second);
        assert!(progress.is_empty());
    }
}
