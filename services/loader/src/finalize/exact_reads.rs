//! Back-off of full reads of a run's outcomes: while a run's live counts overstate it, its
//! outcomes are read in full less and less often, so a run stuck that way is not read on every
//! poke and sweep by every replica.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How soon a run's outcomes may be read in full again while its live counts overstate it;
/// the wait doubles with each read that falls short, up to [`EXACT_READ_MAX_INTERVAL`].
const EXACT_READ_INTERVAL: Duration = Duration::from_secs(2);
/// The longest wait between two full reads of a run's outcomes.
const EXACT_READ_MAX_INTERVAL: Duration = Duration::from_secs(60);

/// When each run's outcomes may next be read in full. The first read is due at once; while
/// reads fall short (events counted twice in the live counts while others are outstanding,
/// which can last as long as redeliveries back off), each next read waits twice as long as the
/// last, from [`EXACT_READ_INTERVAL`] up to [`EXACT_READ_MAX_INTERVAL`]: a run stuck that way
/// is not read in full on every poke and sweep by every replica.
#[derive(Debug, Default)]
pub(super) struct ExactReads {
    /// Run id → (last read, wait before the next).
    runs: HashMap<String, (Instant, Duration)>,
}

impl ExactReads {
    /// Whether run `run_id` may be read in full at `now` (noting the read when it may).
    pub(super) fn due(&mut self, run_id: &str, now: Instant) -> bool {
        // Forget runs not read for a long while (finalized, or gone).
        self.runs.retain(|_, (last, _)| {
            now.saturating_duration_since(*last) < EXACT_READ_MAX_INTERVAL * 4
        });
        match self.runs.get_mut(run_id) {
            None => {
                self.runs
                    .insert(run_id.to_owned(), (now, EXACT_READ_INTERVAL));
                true
            }
            Some((last, wait)) if now.saturating_duration_since(*last) >= *wait => {
                *last = now;
                *wait = (*wait * 2).min(EXACT_READ_MAX_INTERVAL);
                true
            }
            Some(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_reads_of_a_run_that_falls_short_back_off() {
        let mut reads = ExactReads::default();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert!(reads.due("r1", at(0)), "the first read is at once");
        assert!(!reads.due("r1", at(1)));
        assert!(reads.due("r1", at(2)));
        assert!(!reads.due("r1", at(5)), "then after 4 s");
        assert!(reads.due("r1", at(6)));
        assert!(reads.due("r2", at(6)), "each run on its own");
        let mut now = 6;
        for _ in 0..10 {
            while !reads.due("r1", at(now)) {
                now += 1;
            }
        }
        let before = now;
        now += 1;
        while !reads.due("r1", at(now)) {
            now += 1;
        }
        assert_eq!(now - before, 60, "at most a minute apart");
    }
}
