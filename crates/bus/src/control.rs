//! The extractor's command protocol over NATS request/reply, shared by the extractor (which
//! answers) and the control plane (which asks). Subject:
//! `peoplesync.control.extractor.<integration>.<command>`; bodies are JSON. Every reply is
//! either the command's reply type or a [`CommandError`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names;

/// Command: start a full run now. Reply: [`RunStarted`].
pub const RUN: &str = "run";
/// Command: read one worker from Sage People and publish it as a single-worker run.
/// Request: [`WorkerRequest`]; reply: [`WorkerSynced`].
pub const WORKER: &str = "worker";
/// Command: read one worker from Sage People without publishing it (for previews).
/// Request: [`WorkerRequest`]; reply: [`WorkerFetched`].
pub const FETCH: &str = "fetch";
/// How long the control plane waits for the extractor's answer to [`WORKER`] or [`FETCH`]
/// (reading one worker from Sage People: token, request, retries). The extractor fits its Sage
/// People calls for these commands inside it, so that its answer is Sage People's own.
pub const WORKER_WAIT: Duration = Duration::from_secs(60);
/// Command: report the current run's progress. Reply: [`Progress`].
pub const PROGRESS: &str = "progress";
/// Command: release removals held for approval. Request: [`ApproveRemovals`]; reply:
/// [`RemovalsReleased`].
pub const APPROVE_REMOVALS: &str = "approve-removals";
/// Command: make the run holding removals the baseline without publishing any of them (after a
/// deliberate `source_filter` change). Request: [`ApproveRemovals`]; reply:
/// [`RemovalsReleased`] (0 released). A subject of its own, not a flag on
/// [`APPROVE_REMOVALS`]: an extractor older than the command does not answer it, where it would
/// take a flag it does not know for an approval and publish every held removal.
pub const REBASELINE_REMOVALS: &str = "rebaseline-removals";

/// Command: list the leavers held for approval (removed and ended workers of the held run).
/// Reply: [`HeldLeavers`].
pub const HELD_LEAVERS: &str = "held-leavers";

/// Most leavers a [`HELD_LEAVERS`] reply lists (the count is always complete).
pub const MAX_HELD_LISTED: usize = 2_000;

/// Reply of [`HELD_LEAVERS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLeavers {
    /// The run whose leavers are held (none when nothing is held).
    pub run_id: Option<String>,
    /// How many are held.
    pub count: u64,
    /// The held leavers (action `held`), at most [`MAX_HELD_LISTED`].
    pub leavers: Vec<crate::leavers::LeaverEntry>,
}

/// Command: check the integration's Sage People side (token, one page, field access) and
/// report one line per check. Reply: [`SageChecked`].
pub const CHECK: &str = "check";
/// How long the control plane waits for the extractor's answer to [`CHECK`]; past it, the Sage
/// People checks show as one line saying the extractor did not answer. The extractor fits its
/// Sage People calls for a check inside it.
pub const CHECK_WAIT: Duration = Duration::from_secs(45);

/// The subject of `command` for `integration`.
pub fn subject(integration: &str, command: &str) -> String {
    names::control_subject(integration, command)
}

/// Request of [`RUN`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// What asked for it (`manual`, `grpc`, ...), recorded on the run.
    #[serde(default)]
    pub trigger: String,
    /// Send every record even when identical to what was last written (drift repair).
    #[serde(default)]
    pub resend_all: bool,
}

/// Reply of [`RUN`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStarted {
    /// The new run, or the run already going.
    pub run_id: String,
    /// True when a run was already going (no new run was started).
    pub already_running: bool,
}

/// Request of [`WORKER`] and [`FETCH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRequest {
    /// The Sage People employee id.
    pub id: String,
}

/// Reply of [`WORKER`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSynced {
    /// Whether Sage People has the worker.
    pub found: bool,
    /// The single-worker run it was published in (when found).
    pub run_id: Option<String>,
}

/// Reply of [`FETCH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerFetched {
    /// Whether Sage People has the worker.
    pub found: bool,
    /// The record as Sage People returned it.
    pub raw: Option<serde_json::Value>,
    /// The credential set used ("Connect: Credentials").
    pub credentials: String,
    /// The Sage People host ("Connect: Hostname").
    pub hostname: String,
}

/// Reply of [`PROGRESS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Whether a run is going in this extractor.
    pub running: bool,
    /// The run going, if any.
    pub run_id: Option<String>,
    /// Events published so far in it.
    pub published: u64,
    /// Pages read so far in it.
    pub pages: u64,
}

/// Request of [`APPROVE_REMOVALS`] and [`REBASELINE_REMOVALS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproveRemovals {
    /// The run whose held removals to publish (or, rebaselining, whose list becomes the
    /// baseline).
    pub run_id: String,
}

/// Reply of [`APPROVE_REMOVALS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovalsReleased {
    /// Removed events published.
    pub released: u64,
}

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// All is well.
    Passed,
    /// A setting or credential is wrong: the operator must fix it.
    Misconfigured,
    /// A service did not answer, or failed in a way that may pass.
    Unreachable,
    /// The check cannot be made; the detail says why.
    NotCheckable,
    /// Nothing is wrong, but runs wait (loading is paused); the detail says what ends it.
    Waiting,
}

/// One line of a check report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckLine {
    /// What was checked (`sage_people.token`, ...).
    pub name: String,
    /// How it ended.
    pub state: CheckState,
    /// What was found; on failure, what is wrong and how to fix it.
    pub detail: String,
}

/// Reply of [`CHECK`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SageChecked {
    /// One line per check, in the order they ran.
    pub checks: Vec<CheckLine>,
    /// The extractor replica that ran them (`PEOPLESYNC_REPLICA`): any replica may answer, and
    /// each checks with its own secrets. Empty from an extractor that does not say.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
}

/// A command that could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CommandError {
    /// `invalid` (bad request), `not_found`, `unavailable` (e.g. not the scheduler),
    /// `failed` (Sage People or NATS failed).
    pub code: String,
    /// For an operator.
    pub message: String,
}

/// A reply on the wire: the command's result or its error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply<T> {
    /// The command's error (tried first: it has the distinctive `code` and `message`).
    Err {
        /// The error.
        error: CommandError,
    },
    /// The command's result.
    Ok(T),
}

impl<T> Reply<T> {
    /// As a `Result`.
    pub fn into_result(self) -> Result<T, CommandError> {
        match self {
            Reply::Ok(value) => Ok(value),
            Reply::Err { error } => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_as_result_or_error() {
        let ok: Reply<RunStarted> = serde_json::from_str(
            &serde_json::to_string(&Reply::Ok(RunStarted {
                run_id: "r".into(),
                already_running: true,
            }))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(ok.into_result().unwrap().run_id, "r");
        let err: Reply<RunStarted> =
            serde_json::from_str(r#"{"error":{"code":"not_found","message":"no such worker"}}"#)
                .unwrap();
        assert_eq!(err.into_result().unwrap_err().code, "not_found");
    }
}
