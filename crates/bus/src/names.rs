//! The names of every stream, subject, consumer and bucket peoplesync uses, in one place so
//! the extractor, the loaders and the control plane cannot disagree.

/// Work-queue stream of `WorkerEvent`s, one per worker per run.
pub const WORKERS_STREAM: &str = "PEOPLESYNC_WORKERS";
/// Stream of `RunEvent`s (started, completed, failed), kept 30 days.
pub const RUNS_STREAM: &str = "PEOPLESYNC_RUNS";
/// Stream of events that could not be loaded, with the reason in headers, kept 30 days.
pub const DLQ_STREAM: &str = "PEOPLESYNC_DLQ";
/// Stream of per-event outcomes (written, unchanged, ...), deduplicated by event, from which
/// run counts are read exactly even when events are redelivered.
pub const OUTCOMES_STREAM: &str = "PEOPLESYNC_OUTCOMES";
/// Stream capturing the server's max-deliveries advisories for worker events, so events the
/// server gives up on are dead-lettered durably (advisories themselves are at-most-once).
pub const ADVISORIES_STREAM: &str = "PEOPLESYNC_ADVISORIES";
/// The durable consumer on [`ADVISORIES_STREAM`] shared by every loader replica.
pub const ADVISORY_CONSUMER: &str = "dead-letter-capture";
/// Subjects of max-deliveries advisories of the loader consumers.
pub const MAX_DELIVERIES_ADVISORIES: &str =
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.PEOPLESYNC_WORKERS.*";

/// The durable pull consumer on [`WORKERS_STREAM`] of one integration, shared by every loader
/// replica. One per integration, so one integration can be paused (and scaled on its own
/// backlog) without holding up another.
pub fn loader_consumer(integration: &str) -> String {
    format!("loader-{integration}")
}
/// KV bucket of integration configs (TOML), revisioned.
pub const CONFIG_BUCKET: &str = "peoplesync_config";
/// KV bucket of extractor checkpoints, run records, leases and pause flags.
pub const STATE_BUCKET: &str = "peoplesync_state";
/// KV bucket of per-worker hashes of the record last written to Oomnitza.
pub const APPLIED_BUCKET: &str = "peoplesync_applied";

/// KV key (state bucket) of the extractor's checkpoint of `integration`.
pub fn checkpoint_key(integration: &str) -> String {
    format!("checkpoint.{integration}")
}

/// KV key (state bucket) of the planned start of `integration`'s schedule that the scheduler
/// lease holder last fired.
pub fn schedule_key(integration: &str) -> String {
    format!("schedule.{integration}")
}

/// KV key (state bucket) of the removal state (baseline, held removals) of `integration`.
pub fn removals_key(integration: &str) -> String {
    format!("removals.{integration}")
}

/// KV key (state bucket) of the sync keys shared in the last full run of `integration`.
pub fn sync_keys_key(integration: &str) -> String {
    format!("synckeys.{integration}")
}

/// Stream of the worker ids each full extractor run listed (one chunk per page), and of the
/// upserts of listed workers who have left; created by the extractor, its only user.
pub const SEEN_STREAM: &str = "PEOPLESYNC_SEEN";
/// The subjects of [`SEEN_STREAM`].
pub const SEEN_SUBJECTS: &str = "peoplesync.*.seen.>";

/// Subject of page `page` of the seen list of `run_id` of `integration`.
pub fn seen_chunk_subject(integration: &str, run_id: &str, page: u64) -> String {
    format!("peoplesync.{integration}.seen.{run_id}.{page}")
}

/// Filter matching every chunk of the seen list of `run_id`.
pub fn seen_run_filter(integration: &str, run_id: &str) -> String {
    format!("peoplesync.{integration}.seen.{run_id}.*")
}

/// The subject token of a worker id: the id itself when it is a safe token, else `x` and its
/// hex (ids are Salesforce ids, so the second form is for bad data only).
fn worker_token(worker_id: &str) -> String {
    if !worker_id.is_empty()
        && worker_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        worker_id.to_owned()
    } else {
        format!("x{}", hex::encode(worker_id))
    }
}

/// The subject the kept upsert of `worker_id`, listed by `run_id` as having left, is stored on.
pub fn seen_kept_subject(integration: &str, run_id: &str, worker_id: &str) -> String {
    format!(
        "peoplesync.{integration}.seen.{run_id}.ended.{}",
        worker_token(worker_id)
    )
}

/// The dedup id of the kept upsert of `worker_id` in `run_id`.
pub fn seen_kept_msg_id(run_id: &str, worker_id: &str) -> String {
    format!("{run_id}.ended.{}", worker_token(worker_id))
}

/// Filter matching every kept upsert of `run_id`.
pub fn seen_kept_filter(integration: &str, run_id: &str) -> String {
    format!("peoplesync.{integration}.seen.{run_id}.ended.*")
}

/// Stream of the leavers reports: one entry per leaver a loader handled, kept 90 days.
pub const LEAVERS_STREAM: &str = "PEOPLESYNC_LEAVERS";
/// The subjects of [`LEAVERS_STREAM`].
pub const LEAVERS_SUBJECTS: &str = "peoplesync.*.leavers.>";

/// Subject of the entries of `worker_id` in the leavers report of `run_id`: one subject per
/// worker, so that a worker's last entry is one direct read.
pub fn leaver_subject(integration: &str, run_id: &str, worker_id: &str) -> String {
    format!(
        "peoplesync.{integration}.leavers.{run_id}.{}",
        worker_token(worker_id)
    )
}

/// Filter matching every entry of the leavers report of `run_id`.
pub fn leavers_run_filter(integration: &str, run_id: &str) -> String {
    format!("peoplesync.{integration}.leavers.{run_id}.*")
}

/// Subject of worker events of `integration`.
pub fn workers_subject(integration: &str) -> String {
    format!("peoplesync.{integration}.workers")
}

/// The integration a `peoplesync.<integration>.…` subject belongs to.
pub fn integration_of_subject(subject: &str) -> Option<&str> {
    let mut tokens = subject.split('.');
    (tokens.next() == Some("peoplesync"))
        .then(|| tokens.next())
        .flatten()
        .filter(|t| !t.is_empty())
}

/// Subject of run events of `integration`.
pub fn runs_subject(integration: &str) -> String {
    format!("peoplesync.{integration}.runs")
}

/// Subject of one dead letter of `integration` across runs; `key` is
/// [`crate::dlq::letter_key`] (worker, stage and reason).
pub fn dlq_letter_subject(integration: &str, key: &str) -> String {
    format!("peoplesync.{integration}.dlq.{key}")
}

/// Filter matching every dead letter of `integration` in [`DLQ_STREAM`]. Only
/// meaningful on that stream, which holds nothing but dead-letter subjects.
pub fn dlq_filter(integration: &str) -> String {
    format!("peoplesync.{integration}.>")
}

/// Subject of a message holding `events` outcomes of one kind of one run.
pub fn outcome_subject(integration: &str, run_id: &str, outcome: &str, events: usize) -> String {
    format!("peoplesync.{integration}.outcomes.{run_id}.{outcome}.{events}")
}

/// Filter matching every outcome subject of one run.
pub fn outcomes_filter(integration: &str, run_id: &str) -> String {
    format!("peoplesync.{integration}.outcomes.{run_id}.>")
}

/// Subject of an extractor command for `integration` (request/reply).
pub fn control_subject(integration: &str, command: &str) -> String {
    format!("peoplesync.control.extractor.{integration}.{command}")
}

/// The dedup id (`Nats-Msg-Id`) of a worker's event in a run.
pub fn event_msg_id(run_id: &str, worker_id: &str) -> String {
    // Built for every event the loader decodes; concatenation skips the formatting machinery.
    [run_id, ".", worker_id].concat()
}

/// The dedup id of a worker's `ended` event in a run: apart from [`event_msg_id`], since with
/// leaver action `none` the same run also publishes the worker's upsert.
pub fn ended_msg_id(run_id: &str, worker_id: &str) -> String {
    [run_id, ".", worker_id, ".ended"].concat()
}

/// The dedup id of an event of `kind` (see [`event_msg_id`] and [`ended_msg_id`]).
pub fn msg_id_of(run_id: &str, worker_id: &str, ended: bool) -> String {
    if ended {
        ended_msg_id(run_id, worker_id)
    } else {
        event_msg_id(run_id, worker_id)
    }
}

/// The run id under which events that cannot be attributed to a run are dead-lettered (an
/// undecodable payload, or a run or worker id that cannot be a subject token or KV key).
pub const INVALID_RUN: &str = "invalid";

/// Checks that `id` (a run or worker id from an event) can be a subject token and a KV key
/// part: 1 to 128 letters, digits, `-` or `_`. `what` names it in the message.
pub fn validate_event_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!("{what} {id:?} must be 1 to 128 characters long"));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(c) => Err(format!(
            "{what} {id:?} contains {c:?}; only letters, digits, '-' and '_' can be used in \
             subjects and keys"
        )),
        None => Ok(()),
    }
}

/// Checks that `id` can be an integration id: it becomes a subject token and a KV key part, so
/// only letters, digits, `-` and `_` are allowed.
pub fn validate_integration_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!(
            "integration id {id:?} must be 1 to 64 characters long"
        ));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(c) => Err(format!(
            "integration id {id:?} contains {c:?}; use only letters, digits, '-' and '_'"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_integration_is_read_back_from_its_subjects() {
        assert_eq!(
            integration_of_subject(&workers_subject("acme")),
            Some("acme")
        );
        assert_eq!(integration_of_subject("other.acme.workers"), None);
        assert_eq!(integration_of_subject("peoplesync"), None);
    }

    #[test]
    fn worker_ids_become_safe_subject_tokens() {
        assert_eq!(
            seen_kept_subject("acme", "r1", "a2G7E000000LlIDUA0"),
            "peoplesync.acme.seen.r1.ended.a2G7E000000LlIDUA0"
        );
        assert_eq!(worker_token("a.b"), "x612e62");
        assert_eq!(worker_token(""), "x");
    }

    #[test]
    fn seen_subjects_of_one_run_match_its_filter() {
        let subject = seen_chunk_subject("acme", "r1", 12);
        assert_eq!(subject, "peoplesync.acme.seen.r1.12");
        assert_eq!(seen_run_filter("acme", "r1"), "peoplesync.acme.seen.r1.*");
    }

    #[test]
    fn integration_ids_that_would_break_subjects_are_refused() {
        assert!(validate_integration_id("sage-people_2").is_ok());
        assert!(validate_integration_id("").is_err());
        assert!(validate_integration_id("a.b").is_err());
        assert!(validate_integration_id("a b").is_err());
        assert!(validate_integration_id("a*").is_err());
    }
}
