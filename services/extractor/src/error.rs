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
    Source {
        /// What Sage People answered.
        error: peoplesync_sage_people::Error,
        /// Sage People refused the integration's configuration or credentials to a run taken
        /// up from its checkpoint: the run keeps it, so once an operator fixes the cause the
        /// pages it read are not read again. Never set for the other kinds, whose rule is
        /// fixed.
        checkpoint_kept: bool,
    },
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
            Stop::Source { error, .. } if error.kind() == ErrorKind::QuotaExhausted => {
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
    /// starts afresh and loads the pages before it. A settings problem, or Sage People refusing
    /// the configuration or credentials, is when it stopped a run taken up from its checkpoint:
    /// fixing the cause lets it go on where it was.
    pub fn resumable(&self) -> bool {
        match self {
            Stop::Source {
                error,
                checkpoint_kept,
            } => match error.kind() {
                ErrorKind::QuotaExhausted | ErrorKind::Transient | ErrorKind::Undecodable => true,
                ErrorKind::Configuration | ErrorKind::Authentication => *checkpoint_kept,
                ErrorKind::InvalidMarker | ErrorKind::InvalidResponse => false,
            },
            Stop::QuotaGuard { .. } | Stop::Bus(_) | Stop::Interrupted => true,
            Stop::Settings {
                checkpoint_kept, ..
            } => *checkpoint_kept,
        }
    }

    /// Whether only an operator can clear what stopped the run: the integration's settings, or
    /// Sage People refusing its configuration or credentials. Trying again unchanged fails the
    /// same way, so the automatic resume does not.
    pub fn awaits_operator(&self) -> bool {
        match self {
            Stop::Settings { .. } => true,
            Stop::Source { error, .. } => refused_setup(error.kind()),
            _ => false,
        }
    }

    /// This stop of a run taken up from its checkpoint (`resumed`): where Sage People refused
    /// the configuration or credentials, the run keeps its checkpoint.
    pub(crate) fn of_run(self, resumed: bool) -> Stop {
        match self {
            Stop::Source { error, .. } if refused_setup(error.kind()) => Stop::Source {
                error,
                checkpoint_kept: resumed,
            },
            stop => stop,
        }
    }

    /// What the run record and the log say about a stop that ends the run's attempt (not a
    /// NATS failure or an interruption, whose messages are built where they are reported).
    pub(crate) fn message(&self) -> Option<String> {
        match self {
            Stop::Source {
                error,
                checkpoint_kept,
            } => Some(until_fixed(error.to_string(), *checkpoint_kept)),
            Stop::QuotaGuard { message, .. } | Stop::Settings { message, .. } => {
                Some(message.clone())
            }
            Stop::Bus(_) | Stop::Interrupted => None,
        }
    }
}

/// Whether Sage People refused the integration's configuration or credentials: only an
/// operator can fix that.
fn refused_setup(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Configuration | ErrorKind::Authentication)
}

/// `message` about what an operator must fix, saying so when the run keeps its checkpoint
/// (`kept`) until then.
pub(crate) fn until_fixed(message: String, kept: bool) -> String {
    match kept {
        true => format!(
            "{message} (the run keeps its checkpoint: once this is fixed, the next scheduled or manual run resumes it)"
        ),
        false => message,
    }
}

impl From<BusError> for Stop {
    fn from(err: BusError) -> Self {
        Stop::Bus(err)
    }
}

impl From<peoplesync_sage_people::Error> for Stop {
    fn from(err: peoplesync_sage_people::Error) -> Self {
        Stop::Source {
            error: err,
            checkpoint_kept: false,
        }
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
            // Without an id the run stopped while it was being started or taken up: the next
            // trigger starts one, or takes up the interrupted one, once NATS answers.
            Stop::Bus(source) if self.run_id.is_none() => write!(
                f,
                "{run}: {source}; the next trigger starts the run, or resumes the interrupted one, once NATS is reachable"
            ),
            Stop::Bus(source) => write!(
                f,
                "{run}: {source}; its checkpoint is kept, and once NATS is reachable it resumes \
                 from there (the lease holder's automatic resume, or the next scheduled, manual \
                 or --once run)"
            ),
            Stop::Interrupted => write!(f, "{run} was interrupted; it resumes from its checkpoint"),
            stop => write!(f, "{run}: {}", stop.message().unwrap_or_default()),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.stop {
            Stop::Source { error, .. } => Some(error),
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

    fn source(kind: ErrorKind, checkpoint_kept: bool) -> Stop {
        Stop::Source {
            error: peoplesync_sage_people::Error::new(kind, "m"),
            checkpoint_kept,
        }
    }

    #[test]
    fn sage_failures_that_may_pass_or_that_an_operator_fixes_keep_the_checkpoint() {
        use ErrorKind::*;
        for kind in [QuotaExhausted, Transient, Undecodable] {
            assert!(source(kind, false).resumable(), "{kind}");
            assert!(!source(kind, false).awaits_operator(), "{kind}");
        }
        // A refused configuration or credential keeps the checkpoint only of a run taken up
        // from it, and waits for an operator either way.
        for kind in [Configuration, Authentication] {
            assert!(!source(kind, false).resumable(), "{kind}");
            assert!(source(kind, true).resumable(), "{kind}");
            assert!(source(kind, false).awaits_operator(), "{kind}");
        }
        for kind in [InvalidMarker, InvalidResponse] {
            for kept in [false, true] {
                assert!(!source(kind, kept).resumable(), "{kind}");
                assert!(!source(kind, kept).awaits_operator(), "{kind}");
            }
        }
    }

    #[test]
    fn a_refusal_that_keeps_the_checkpoint_says_so() {
        let kept = RunError::new("acme", Some("r1"), source(ErrorKind::Authentication, true));
        assert!(
            kept.to_string()
                .ends_with("m (the run keeps its checkpoint: once this is fixed, the next scheduled or manual run resumes it)"),
            "{kept}"
        );
        let dropped = RunError::new("acme", Some("r1"), source(ErrorKind::Authentication, false));
        assert_eq!(dropped.to_string(), "run r1 of acme: m");
    }
}
