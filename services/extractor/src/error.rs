//! Why a run stopped early, typed so the caller knows what follows: a configuration problem
//! the operator must fix, a quota stop the next run resumes, a NATS failure, or an interruption
//! (shutdown, lost lease) another replica or the next start resumes.
//!
//! One error type, [`RunError`]: which run (integration and run id) and why it stopped
//! ([`Stop`]). The run's code works with [`Stop`], which NATS and Sage People errors convert
//! into with `?`; the run adds the integration and run id once, where it hands the error out.

use peoplesync_bus::{BusError, RunState};
use peoplesync_sage_people::{ApiUsage, ErrorKind};

/// Why a run stopped early (see [`RunError`] for which run).
#[derive(Debug)]
pub enum Stop {
    /// Sage People refused or failed; its message says what to fix.
    Source(peoplesync_sage_people::Error),
    /// The quota guard stopped the run before the org's usage passed the configured share.
    QuotaGuard {
        /// The usage that stopped it.
        usage: ApiUsage,
        /// The explanation.
        message: String,
    },
    /// The integration's settings cannot be used (credential set, filter, stored config); the
    /// message says what to fix.
    Settings {
        /// What to fix.
        message: String,
        /// The run was taken up from its checkpoint, which it keeps: the pages it read are not
        /// read again once the settings are fixed. A new run has nothing worth keeping.
        checkpoint_kept: bool,
    },
    /// NATS failed; the run's checkpoint is kept.
    Bus(BusError),
    /// The run was stopped (shutdown, or this replica lost the scheduler lease) between pages;
    /// its checkpoint is kept.
    Interrupted,
}

impl Stop {
    /// The state the run record is left in.
    pub fn state(&self) -> RunState {
        match self {
            Stop::Source(source) if source.kind() == ErrorKind::QuotaExhausted => {
                RunState::QuotaExhausted
            }
            Stop::QuotaGuard { .. } => RunState::QuotaExhausted,
            Stop::Bus(_) | Stop::Interrupted => RunState::Running,
            _ => RunState::Failed,
        }
    }

    /// Whether the next run resumes this one (its checkpoint is kept). A Sage People failure
    /// is when it may pass: an exhausted quota, an outage, or answers that could not be decoded
    /// for the whole retry budget (a proxy serving its own page, say), which are resumed like
    /// an outage within the automatic resume's own limits. An answer that decoded but broke
    /// the listing's contract ([`ErrorKind::InvalidResponse`]) is not: it would fail the same
    /// way at the same page on every resume, and no run would ever complete, so the next run
    /// starts afresh and loads the pages before it. A settings problem is when it stopped a run
    /// taken up from its checkpoint: fixing the settings lets it go on where it was.
    pub fn resumable(&self) -> bool {
        match self {
            Stop::Source(source) => matches!(
                source.kind(),
                ErrorKind::QuotaExhausted | ErrorKind::Transient | ErrorKind::Undecodable
            ),
            Stop::QuotaGuard { .. } | Stop::Bus(_) | Stop::Interrupted => true,
            Stop::Settings {
                checkpoint_kept, ..
            } => *checkpoint_kept,
        }
    }
}

impl From<BusError> for Stop {
    fn from(err: BusError) -> Self {
        Stop::Bus(err)
    }
}

impl From<peoplesync_sage_people::Error> for Stop {
    fn from(err: peoplesync_sage_people::Error) -> Self {
        Stop::Source(err)
    }
}

/// A run that stopped early: which one, and why.
#[derive(Debug)]
pub struct RunError {
    integration: String,
    run_id: Option<String>,
    /// Boxed: errors are rare, and results carrying one stay small.
    stop: Box<Stop>,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let integration = &self.integration;
        // A run stopped before it got an id is "the run of" its integration.
        let run = match self.run_id.as_deref() {
            Some(run_id) => format!("run {run_id} of {integration}"),
            None => format!("run of {integration}"),
        };
        match &*self.stop {
            Stop::Source(source) => write!(f, "{run}: {source}"),
            Stop::QuotaGuard { message, .. } | Stop::Settings { message, .. } => {
                write!(f, "{run}: {message}")
            }
            // Without an id the run stopped while it was being started or taken up: the next
            // trigger starts one, or takes up the interrupted one, once NATS answers.
            Stop::Bus(source) if self.run_id.is_none() => write!(
                f,
                "{run}: {source}; the next trigger starts the run, or resumes the interrupted one, once NATS is reachable"
            ),
            Stop::Bus(source) => write!(
                f,
                "{run}: {source}; the run resumes from its checkpoint once NATS is reachable"
            ),
            Stop::Interrupted => write!(f, "{run} was interrupted; it resumes from its checkpoint"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.stop {
            Stop::Source(source) => Some(source),
            Stop::Bus(source) => Some(source),
            _ => None,
        }
    }
}

impl RunError {
    /// Run `run_id` (when it has one yet) of `integration` stopped because of `stop`.
    pub fn new(integration: &str, run_id: Option<&str>, stop: Stop) -> RunError {
        RunError {
            integration: integration.to_owned(),
            run_id: run_id.map(str::to_owned),
            stop: Box::new(stop),
        }
    }

    /// Why the run stopped.
    pub fn stop(&self) -> &Stop {
        &self.stop
    }

    /// Whether the run was interrupted between pages (shutdown, lost lease).
    pub fn is_interrupted(&self) -> bool {
        matches!(*self.stop, Stop::Interrupted)
    }

    /// The state the run record is left in.
    pub fn state(&self) -> RunState {
        self.stop.state()
    }

    /// Whether the next run resumes this one (its checkpoint is kept).
    pub fn resumable(&self) -> bool {
        self.stop.resumable()
    }

    /// The outcome label of the runs metric.
    pub fn outcome(&self) -> &'static str {
        match self.state() {
            RunState::QuotaExhausted => "quota_exhausted",
            RunState::Running => "interrupted",
            _ => "failed",
        }
    }

    /// The run, when its record can be relied on: never for a NATS failure, which may come
    /// before the record was written (its message still names the run id when there is one).
    pub fn run_id(&self) -> Option<&str> {
        match *self.stop {
            Stop::Bus(_) => None,
            _ => self.run_id.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(kind: ErrorKind) -> Stop {
        Stop::Source(peoplesync_sage_people::Error::new(kind, "m"))
    }

    #[test]
    fn only_sage_failures_that_may_pass_keep_the_checkpoint() {
        use ErrorKind::*;
        for kind in [QuotaExhausted, Transient, Undecodable] {
            assert!(source(kind).resumable(), "{kind}");
        }
        for kind in [
            Configuration,
            Authentication,
            InvalidMarker,
            InvalidResponse,
        ] {
            assert!(!source(kind).resumable(), "{kind}");
        }
    }
}
