//! Resuming a run that stopped part-way, on a timer, by the replica that holds the scheduler
//! lease: a run stopped by NATS (its record still `running`) or by a Sage People failure that
//! outlasted the client's retry budget (`failed`, its checkpoint kept) is resumed from its
//! checkpoint after a growing pause ([`RunRetry`]), so nobody has to type `syncctl run` after an
//! outage. Every wait and every attempt is logged, and shown on `/readyz` as a note
//! `run_retry.<integration>`. A run stopped by what only an operator can fix (the integration's
//! settings, or Sage People refusing its configuration or credentials) is not tried again: it
//! keeps its checkpoint for the next scheduled or manual run.

use std::time::Duration;

use peoplesync_bus::{Bus, RunState};
use peoplesync_runtime::Readiness;
use tokio::time::Instant;

use crate::config::RunRetry;
use crate::journal::Journal;
use crate::runner::Runner;

/// How often the lease holder looks for a run to resume.
pub const POLL: Duration = Duration::from_secs(5);

/// A run that stopped part-way and can resume from its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumable {
    /// The run.
    pub run_id: String,
    /// Its recorded state (`running` after a NATS failure, `failed` after a Sage People one).
    pub state: RunState,
    /// The recorded error, if any.
    pub error: Option<String>,
}

/// The run of `integration` that stopped part-way, if any. `None` too when NATS cannot be read
/// (the next look tries again).
pub async fn resumable_run(bus: &Bus, integration: &str) -> Option<Resumable> {
    let checkpoint = bus.checkpoints().load(integration).await.ok()??;
    let record = Journal::new(bus, integration, true)
        .record(&checkpoint.run_id)
        .await
        .ok()??;
    matches!(record.state, RunState::Running | RunState::Failed).then(|| Resumable {
        run_id: checkpoint.run_id,
        state: record.state,
        error: record.error,
    })
}

/// The retry bookkeeping of one integration on the lease holder.
#[derive(Debug)]
pub struct Retrier {
    policy: RunRetry,
    integration: String,
    readiness: Option<Readiness>,
    current: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    run_id: String,
    attempts: u32,
    next_at: Instant,
    /// Set when these retries gave up on the run: the runner's count of runs started then.
    gave_up_at: Option<u64>,
}

impl Retrier {
    /// Retries of `integration`'s runs under `policy`, noted on `readiness` when given.
    pub fn new(policy: RunRetry, integration: &str, readiness: Option<Readiness>) -> Retrier {
        Retrier {
            policy,
            integration: integration.to_owned(),
            readiness,
            current: None,
        }
    }

    fn note_key(&self) -> String {
        format!("run_retry.{}", self.integration)
    }

    fn note(&self, text: Option<String>) {
        if let Some(readiness) = &self.readiness {
            readiness.note(&self.note_key(), text);
        }
    }

    /// Gives up on `run_id` until a run is started again (the runner's count is `started` now),
    /// saying why in `text`.
    fn wait_for_fix(&mut self, run_id: &str, started: u64, text: String) {
        self.current = Some(Pending {
            run_id: run_id.to_owned(),
            attempts: self.policy.max_attempts,
            next_at: Instant::now(),
            gave_up_at: Some(started),
        });
        tracing::error!(integration = %self.integration, "{text}");
        self.note(Some(text));
    }

    /// This replica stopped scheduling the integration (it lost the lease): its retries and
    /// their `/readyz` note go, since the new lease holder keeps its own.
    pub fn stand_down(&mut self) {
        self.current = None;
        self.note(None);
    }

    /// One look: resumes the stopped run when its pause is over.
    pub async fn step(&mut self, runner: &Runner, bus: &Bus) {
        if !self.policy.enabled || runner.running().await.is_some() {
            return;
        }
        let integration = self.integration.clone();
        let Some(stopped) = resumable_run(bus, &integration).await else {
            if self.current.take().is_some() {
                self.note(None);
            }
            return;
        };
        let failure = runner.last_failure(&stopped.run_id);
        let why = failure
            .as_ref()
            .map(|failure| failure.message.clone())
            .or(stopped.error.clone())
            .unwrap_or_else(|| "it stopped part-way".into());
        let started = runner.runs_started();
        // Resuming it would fail the same way until an operator fixed the cause; a run this
        // replica did not see stop is found out by one resume, as a settings refusal is.
        if failure.is_some_and(|failure| failure.awaits_operator) {
            let waiting = self.current.as_ref().is_some_and(|pending| {
                pending.run_id == stopped.run_id && pending.gave_up_at == Some(started)
            });
            if !waiting {
                let text = format!(
                    "run {} cannot resume until what Sage People refused is fixed ({why})",
                    stopped.run_id
                );
                self.wait_for_fix(&stopped.run_id, started, text);
            }
            return;
        }
        // A run these retries gave up on that was taken up again since (by the schedule or an
        // operator) and stopped again gets a fresh count.
        let fresh = match &self.current {
            Some(pending) if pending.run_id == stopped.run_id => {
                pending.gave_up_at.is_some_and(|then| started > then)
            }
            _ => true,
        };
        if fresh {
            let delay = self.policy.delay(0);
            tracing::warn!(%integration, run_id = %stopped.run_id, reason = %why,
                delay_secs = delay.as_secs(), "the run stopped part-way; resuming it from its checkpoint after a pause");
            self.current = Some(Pending {
                run_id: stopped.run_id.clone(),
                attempts: 0,
                next_at: Instant::now() + delay,
                gave_up_at: None,
            });
        }
        let Some(pending) = self.current.as_mut() else {
            return;
        };
        if pending.attempts >= self.policy.max_attempts {
            if pending.gave_up_at.is_none() {
                pending.gave_up_at = Some(started);
                let text = format!(
                    "run {} stopped ({why}) and failed {} retries; the next scheduled or manual run resumes it",
                    stopped.run_id, pending.attempts
                );
                tracing::error!(%integration, "{text}");
                self.note(Some(text));
            }
            return;
        }
        let now = Instant::now();
        if now < pending.next_at {
            let text = format!(
                "run {} stopped ({why}); resuming it in {} s (retry {} of {})",
                stopped.run_id,
                (pending.next_at - now).as_secs(),
                pending.attempts + 1,
                self.policy.max_attempts
            );
            self.note(Some(text));
            return;
        }
        pending.attempts += 1;
        pending.next_at = now + self.policy.delay(pending.attempts);
        let attempt = pending.attempts;
        let run_id = stopped.run_id.clone();
        match runner.start("retry").await {
            Ok(started) => {
                tracing::info!(%integration, run_id = %started.run_id, attempt,
                    max_attempts = self.policy.max_attempts, "resuming the stopped run");
                self.note(Some(format!(
                    "run {run_id} stopped ({why}); resumed it (retry {attempt} of {})",
                    self.policy.max_attempts
                )));
            }
            // Settings do not mend with time: the run waits, with its checkpoint, for the next
            // scheduled or manual run after the operator fixed them.
            Err(err) if err.stop().awaits_operator() => {
                let text =
                    format!("run {run_id} cannot resume until its settings are fixed ({err})");
                self.wait_for_fix(&run_id, runner.runs_started(), text);
            }
            Err(err) => {
                tracing::warn!(%integration, %run_id, attempt, "the retry could not start: {err}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_down_drops_the_note_of_a_run_it_no_longer_resumes() {
        let readiness = Readiness::new();
        let mut retrier = Retrier::new(RunRetry::default(), "acme", Some(readiness.clone()));
        retrier.wait_for_fix("r1", 1, "run r1 cannot resume until …".to_owned());
        assert!(readiness.status().notes.contains_key("run_retry.acme"));
        retrier.stand_down();
        assert!(readiness.status().notes.is_empty());
        assert!(retrier.current.is_none());
    }
}
