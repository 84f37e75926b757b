//! How the extractor guards and restarts runs: the accidental-deletion guard that holds a
//! run's removals for approval (`[removals]`), and the resuming of runs that stopped part-way
//! (`[run_retry]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The accidental-deletion guard: a full run whose removals exceed either limit publishes
/// none of them and holds them until an operator approves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemovalPolicy {
    /// Hold when more than this many workers disappeared (default 50).
    pub hold_above_count: u64,
    /// Hold when more than this share (0..1) of the previously listed workers disappeared
    /// (default 0.05).
    pub hold_above_share: f64,
}

impl Default for RemovalPolicy {
    fn default() -> Self {
        RemovalPolicy {
            hold_above_count: 50,
            hold_above_share: 0.05,
        }
    }
}

impl RemovalPolicy {
    /// Whether `removed` out of `previously_listed` workers must wait for approval.
    pub fn holds(&self, removed: u64, previously_listed: u64) -> bool {
        removed > self.hold_above_count
            || removed as f64 > self.hold_above_share * previously_listed as f64
    }
}

/// Retrying runs that stopped part-way but can resume from their checkpoint (NATS
/// unreachable, Sage People failing for longer than its two-minute retry budget): the scheduling
/// replica resumes them after `first_delay_secs`, doubling the pause after each further failure
/// up to `max_delay_secs`, at most `max_attempts` times. A run stopped by a configuration
/// problem or by the API quota is not retried (the first needs a fix, the second the next
/// scheduled run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunRetry {
    /// Retry at all (default true).
    pub enabled: bool,
    /// Pause before the first retry, in seconds (default 10).
    pub first_delay_secs: u64,
    /// Longest pause between retries, in seconds (default 900).
    pub max_delay_secs: u64,
    /// Retries of one run before waiting for the next scheduled or manual run (default 10).
    pub max_attempts: u32,
}

impl Default for RunRetry {
    fn default() -> Self {
        RunRetry {
            enabled: true,
            first_delay_secs: 10,
            max_delay_secs: 900,
            max_attempts: 10,
        }
    }
}

impl RunRetry {
    /// The pause before retry number `attempt` (0 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u64.saturating_pow(attempt.min(32));
        Duration::from_secs(
            self.first_delay_secs
                .saturating_mul(factor)
                .min(self.max_delay_secs),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_held_above_either_limit() {
        let policy = RemovalPolicy::default();
        assert!(!policy.holds(3, 1000));
        assert!(!policy.holds(50, 10_000));
        assert!(policy.holds(51, 10_000));
        assert!(policy.holds(6, 100));
        assert!(!policy.holds(5, 100));
    }
}
