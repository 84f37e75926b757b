//! Why a run stopped early, typed so the caller knows what follows: a configuration problem
//! the operator must fix, a quota stop the next run resumes, a NATS failure, or an interruption
//! (shutdown, lost lease) another replica or the next start resumes.

use peoplesync_bus::{BusError, RunState};
use peoplesync_sage_people::{ApiUsage, ErrorKind};

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Sage People refused or failed; its message says what to fix.
    #[error("run {run_id} of {integration}: {source}")]
    Source {
        /// The integration.
        integration: String,
        /// The run.
        run_id: String,
        /// Sage People's error.
        source: peoplesync_sage_people::Error,
    },
    /// The quota guard stopped the run before the org's usage passed the configured share.
    #[error("run {run_id} of {integration}: {message}")]
    QuotaGuard {
        /// The integration.
        integration: String,
        /// The run.
        run_id: String,
        /// The usage that stopped it.
        usage: ApiUsage,
        /// The explanation.
        message: String,
    },
    /// The integration's settings cannot be used (credential set, filter, stored config).
    #[error("run {run_id} of {integration}: {message}")]
    Settings {
        /// The integration.
        integration: String,
        /// The run recorded as failed.
        run_id: String,
        /// What to fix.
        message: String,
    },
    /// NATS failed; the run's checkpoint is kept.
    #[error(
        "run of {integration}: {source}; the run resumes from its checkpoint once NATS is reachable"
    )]
    Bus {
        /// The integration.
        integration: String,
        /// The bus error.
        source: BusError,
    },
    /// The run was stopped (shutdown, or this replica lost the scheduler lease) between pages;
    /// its checkpoint is kept.
    #[error("run {run_id} of {integration} was interrupted; it resumes from its checkpoint")]
    Interrupted {
        /// The integration.
        integration: String,
        /// The run.
        run_id: String,
    },
}

impl RunError {
    /// The state the run record is left in.
    pub fn state(&self) -> RunState {
        match self {
            RunError::Source { source, .. } if source.kind() == ErrorKind::QuotaExhausted => {
                RunState::QuotaExhausted
            }
            RunError::QuotaGuard { .. } => RunState::QuotaExhausted,
            RunError::Bus { .. } | RunError::Interrupted { .. } => RunState::Running,
            _ => RunState::Failed,
        }
    }

    /// Whether the next run resumes this one (its checkpoint is kept).
    pub fn resumable(&self) -> bool {
        match self {
            RunError::Source { source, .. } => matches!(
                source.kind(),
                ErrorKind::QuotaExhausted | ErrorKind::Transient
            ),
            RunError::QuotaGuard { .. } | RunError::Bus { .. } | RunError::Interrupted { .. } => {
                true
            }
            RunError::Settings { .. } => false,
        }
    }

    /// The outcome label of the runs metric.
    pub fn outcome(&self) -> &'static str {
        match self.state() {
            RunState::QuotaExhausted => "quota_exhausted",
            RunState::Running => "interrupted",
            _ => "failed",
        }
    }

    /// The run, when one was recorded.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            RunError::Source { run_id, .. }
            | RunError::QuotaGuard { run_id, .. }
            | RunError::Settings { run_id, .. }
            | RunError::Interrupted { run_id, .. } => Some(run_id),
            RunError::Bus { .. } => None,
        }
    }
}
