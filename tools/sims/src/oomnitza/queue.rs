//! The records Oomnitza has accepted but not yet applied: a first-in, first-out queue of
//! batches, each due after the processing delay. The background worker ([`super::worker`])
//! takes records from its front in bounded chunks, so one huge batch cannot hold the store lock
//! for long and records of one portion are applied in the order they were accepted.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

use super::validate::Envelope;

/// One accepted batch: its envelope (without records) and the records still to process.
#[derive(Debug)]
struct Job {
    env: Arc<Envelope>,
    records: std::vec::IntoIter<Value>,
    due: Instant,
}

/// Accepted batches in order of acceptance.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    jobs: VecDeque<Job>,
    /// Records in `jobs`, kept so that reading it costs nothing.
    records: u64,
}

impl Queue {
    /// Queues `records` of the batch `env` to be processed from `due` on.
    pub(crate) fn push(&mut self, env: Arc<Envelope>, records: Vec<Value>, due: Instant) {
        self.records += records.len() as u64;
        self.jobs.push_back(Job {
            env,
            records: records.into_iter(),
            due,
        });
    }

    /// Records accepted and not processed yet, over all portions.
    pub(crate) fn len(&self) -> u64 {
        self.records
    }

    /// When the oldest batch is due, or `None` if nothing waits.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.jobs.front().map(|job| job.due)
    }

    /// Up to `max` records from the front, all from one batch that is due at `now`, with that
    /// batch's envelope; empty if the front batch is not due yet.
    pub(crate) fn take_due(
        &mut self,
        now: Instant,
        max: usize,
    ) -> Option<(Arc<Envelope>, Vec<Value>)> {
        let job = self.jobs.front_mut().filter(|job| job.due <= now)?;
        let taken: Vec<Value> = job.records.by_ref().take(max).collect();
        let env = Arc::clone(&job.env);
        if job.records.len() == 0 {
            self.jobs.pop_front();
        }
        self.records -= taken.len() as u64;
        Some((env, taken))
    }

    /// Removes every queued record of `portion`; returns how many there were.
    pub(crate) fn discard(&mut self, portion: &str) -> u64 {
        let mut discarded = 0;
        self.jobs.retain(|job| {
            let keep = job.env.portion != portion;
            if !keep {
                discarded += job.records.len() as u64;
            }
            keep
        });
        self.records -= discarded;
        discarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::time::Duration;

    fn env(portion: &str) -> Arc<Envelope> {
        Arc::new(Envelope {
            portion: portion.into(),
            ..Envelope::default()
        })
    }

    #[test]
    fn records_come_out_in_order_in_chunks_once_due() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.push(env("a"), (0..5).map(|n| json!(n)).collect(), now);
        q.push(env("b"), vec![json!(9)], now + Duration::from_secs(60));
        assert_eq!(q.len(), 6);
        let (e, first) = q.take_due(now, 3).expect("due");
        assert_eq!(
            (e.portion.as_str(), first),
            ("a", vec![json!(0), json!(1), json!(2)])
        );
        let (_, rest) = q.take_due(now, 3).expect("due");
        assert_eq!(rest, [json!(3), json!(4)]);
        assert!(q.take_due(now, 3).is_none(), "b is not due yet");
        assert_eq!(q.next_due(), Some(now + Duration::from_secs(60)));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn discarding_a_portion_keeps_the_others() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.push(env("a"), vec![json!(1), json!(2)], now);
        q.push(env("b"), vec![json!(3)], now);
        q.push(env("a"), vec![json!(4)], now);
        assert_eq!(q.discard("a"), 3);
        assert_eq!(q.len(), 1);
        let (e, records) = q.take_due(now, 10).expect("due");
        assert_eq!((e.portion.as_str(), records), ("b", vec![json!(3)]));
        assert_eq!(q.next_due(), None);
    }
}
