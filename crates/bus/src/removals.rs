//! The removal state the extractor keeps per integration (KV `peoplesync_state`, key
//! `removals.<integration>`; [`Bus::removals`]): which run's seen list is the baseline the next
//! full run is compared with, and which run's removals are held for approval. Also the
//! [`Decision`] a run takes about removals, kept in its [`crate::checkpoint::Checkpoint`].

use serde::{Deserialize, Serialize};

use crate::document::PerIntegration;
use crate::{Bus, BusError, names};

/// What a finished listing does about workers that disappeared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "removals")]
pub enum Decision {
    /// No earlier full run to compare with: this run becomes the baseline.
    FirstRun,
    /// Publish these removals (possibly none) with the run.
    Publish {
        /// Workers no longer listed.
        count: u64,
    },
    /// Too many: hold them for approval.
    Held {
        /// Workers no longer listed.
        count: u64,
        /// Workers the baseline listed.
        baseline: u64,
    },
    /// The lists could not be compared (ids out of order); publish none, keep the baseline.
    Skipped {
        /// Why.
        reason: String,
    },
    /// The baseline's list is gone (older than the seen stream keeps, or cut by a crash), so
    /// who left since it cannot be known: publish none, and this run becomes the baseline.
    Rebased {
        /// Why.
        reason: String,
    },
}

impl Decision {
    /// Why removals were not computed, for a decision that did not compute them.
    pub fn not_computed(&self) -> Option<&str> {
        match self {
            Decision::Skipped { reason } | Decision::Rebased { reason } => Some(reason),
            _ => None,
        }
    }

    /// Removals held for approval.
    pub fn held(&self) -> u64 {
        match self {
            Decision::Held { count, .. } => *count,
            _ => 0,
        }
    }
}

/// Removals waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRemovals {
    /// The run that found them (its list is the new state of the org).
    pub run_id: String,
    /// How many.
    pub count: u64,
    /// The run that publishes them once approved, chosen before it starts so a retried
    /// approval reuses it.
    #[serde(default)]
    pub release_run: Option<String>,
    /// The source filter the holding run listed with (`""` for none).
    #[serde(default)]
    pub filter: String,
}

/// Per integration: the baseline list and any held removals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovalState {
    /// The run whose list the next full run is compared with.
    pub baseline: Option<String>,
    /// Removals held for approval, if any.
    pub held: Option<HeldRemovals>,
    /// The source filter the baseline listed with (`""` for none; `None` when not recorded).
    /// A run listing with another filter sees workers "disappear" that merely fall outside
    /// the new filter, so its removals are always held for approval.
    #[serde(default)]
    pub baseline_filter: Option<String>,
    /// Upsert events the baseline run published (`None` when not recorded): zero tells an
    /// empty org from a baseline whose list is gone, even after the run's record has been
    /// removed at the end of its retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_published: Option<u64>,
}

/// The removal state of every integration.
#[derive(Debug, Clone)]
pub struct Removals {
    states: PerIntegration<RemovalState>,
}

impl Bus {
    /// The removal state of every integration.
    pub fn removals(&self) -> Removals {
        Removals {
            states: PerIntegration::new(self.state.clone(), "removal state", names::removals_key),
        }
    }
}

impl Removals {
    /// The removal state of `integration` (the default when none is stored).
    pub async fn load(&self, integration: &str) -> Result<RemovalState, BusError> {
        Ok(self.states.get(integration).await?.unwrap_or_default())
    }

    /// Stores `value` as the removal state of `integration`.
    pub async fn save(&self, integration: &str, value: &RemovalState) -> Result<(), BusError> {
        self.states.put(integration, value).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_serialise_for_the_checkpoint() {
        let decision = Decision::Held {
            count: 60,
            baseline: 1000,
        };
        let text = serde_json::to_string(&decision).unwrap();
        assert_eq!(text, r#"{"removals":"held","count":60,"baseline":1000}"#);
        assert_eq!(serde_json::from_str::<Decision>(&text).unwrap(), decision);
        assert_eq!(decision.held(), 60);
    }
}
