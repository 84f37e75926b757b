//! Portions as Oomnitza runs them: a posted batch is *accepted* into its portion (counted as
//! processing and queued), and its records are *processed* later, in the order accepted, when
//! each one is checked, planned and applied (or, in a test run, only planned) and counted in
//! the run log. Canceling a portion discards what it still had queued and everything posted to
//! it afterwards; finalizing it lets the queue drain, after which the run is finished.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::store::{Outcome, Store};
use super::validate::{self, Checks, Envelope, scalar_text};
use super::{FailedRecord, PortionState};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl PortionState {
    /// Records the end of the run once it is canceled, or finalized with nothing processing.
    fn settle(&mut self) {
        if self.ended_at_ms.is_none() && (self.canceled || (self.finalized && self.processing == 0))
        {
            self.ended_at_ms = Some(now_ms());
        }
    }

    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Added => self.added += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
    }
}

/// The run-log message of a failed record: who it is (username, e-mail and sync values, as far
/// as the record has them) and why it failed.
pub(crate) fn failure_message(record: &Value, sync_field: &[String], reason: &str) -> String {
    let text = |k: &str| {
        record
            .get(k)
            .and_then(scalar_text)
            .filter(|s| !s.trim().is_empty())
    };
    let mut who: Vec<String> = Vec::new();
    for field in ["USER", "EMAIL"]
        .into_iter()
        .chain(sync_field.iter().map(String::as_str))
    {
        if let Some(value) = text(field) {
            let named = format!("{field} '{value}'");
            if !who.contains(&named) {
                who.push(named);
            }
        }
    }
    if who.is_empty() {
        format!("a record without USER, EMAIL or sync value: {reason}")
    } else {
        format!("{}: {reason}", who.join(", "))
    }
}

impl Store {
    /// Accepts a batch whose envelope is valid into its open portion; its records are processed
    /// from `due` on. A canceled portion takes the batch and discards its records, or processes
    /// them as usual with `apply_if_canceled` (Oomnitza does not publish which). Returns the
    /// number of records accepted (a client-reported failure without records counts as one).
    /// The portion must not be finalized.
    pub(crate) fn accept(
        &mut self,
        mut env: Envelope,
        due: Instant,
        peer: &str,
        apply_if_canceled: bool,
    ) -> u64 {
        let mut records = std::mem::take(&mut env.records);
        if env.error.is_some() && records.is_empty() {
            records.push(Value::Null);
        }
        let n = records.len() as u64;
        if !env.test_run {
            self.counters.bulk_records += n;
        }
        let portion = self.portion_mut(&env.portion);
        portion.started_at_ms.get_or_insert_with(now_ms);
        if portion.connector.is_empty() {
            portion.connector.clone_from(&env.connector);
        }
        portion.ipv4_address = peer.to_owned();
        portion.test_run |= env.test_run;
        if portion.canceled && !apply_if_canceled {
            portion.canceled_records += n;
            portion.canceled_messages.push(format!(
                "{n} records posted after the run was canceled were discarded"
            ));
            self.counters.canceled += n;
            return n;
        }
        portion.processing += n;
        self.queue.push(Arc::new(env), records, due);
        n
    }

    /// Processes up to `max` due records from the front of the queue (all of one batch);
    /// returns their outcomes, empty when nothing is due. A canceled portion has nothing queued
    /// unless the tenant applies posts after a cancel: its queue is discarded when it is
    /// canceled, and later posts are discarded when accepted.
    pub(crate) fn process_due(
        &mut self,
        now: Instant,
        max: usize,
        checks: Checks<'_>,
    ) -> Vec<Outcome> {
        let Some((env, records)) = self.queue.take_due(now, max) else {
            return Vec::new();
        };
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            let outcome = self.process(&env, record, checks);
            let portion = self.portion_mut(&env.portion);
            portion.processing = portion.processing.saturating_sub(1);
            portion.count(&outcome);
            let c = &mut self.counters;
            match &outcome {
                _ if env.test_run => c.test_run_records += 1,
                Outcome::Added => c.created += 1,
                Outcome::Updated => c.updated += 1,
                Outcome::Unchanged => c.unchanged += 1,
                Outcome::Skipped => c.skipped += 1,
                Outcome::Failed(_) => c.failed += 1,
            }
            outcomes.push(outcome);
        }
        self.counters.last_bulk_at_ms = Some(now_ms());
        self.portion_mut(&env.portion).settle();
        outcomes
    }

    /// Processes one record: checks it, plans it, and applies it unless this is a test run.
    fn process(&mut self, env: &Envelope, record: Value, checks: Checks<'_>) -> Outcome {
        let (reason, record) = match self.try_process(env, record, checks) {
            Ok(outcome) => return outcome,
            Err(failure) => failure,
        };
        let message = failure_message(&record, &env.sync_field, &reason);
        let outcome = Outcome::Failed(reason.clone());
        if env.test_run {
            self.test_payload(env, record.clone(), &outcome);
        }
        let portion = self.portion_mut(&env.portion);
        if env.fatal {
            portion.fatal_errors.push(message.clone());
        }
        portion.failed_records.push(FailedRecord {
            record,
            reason,
            message,
        });
        outcome
    }

    /// The outcome of a record that does not fail, or why it fails and the record as received.
    fn try_process(
        &mut self,
        env: &Envelope,
        record: Value,
        checks: Checks<'_>,
    ) -> Result<Outcome, (String, Value)> {
        let mut fields = match (&env.error, record) {
            (Some(reason), record) => return Err((reason.clone(), record)),
            (None, Value::Object(fields)) => fields,
            (None, other) => return Err(("the record is not a JSON object".into(), other)),
        };
        if let Err(reason) = validate::record(&fields, checks) {
            return Err((reason, Value::Object(fields)));
        }
        checks.stored(&mut fields);
        // Only a test run reports the record it checked; a real one need not copy it.
        let reported = env.test_run.then(|| Value::Object(fields.clone()));
        let plan = self
            .plan(env, fields)
            .map_err(|(reason, fields)| (reason, Value::Object(fields)))?;
        Ok(match reported {
            Some(record) => {
                let outcome = plan.outcome();
                self.test_payload(env, record, &outcome);
                outcome
            }
            None => self.commit(plan),
        })
    }

    /// Adds a test run's verdict on one record to its portion's `test_run_payload`.
    fn test_payload(&mut self, env: &Envelope, record: Value, outcome: &Outcome) {
        let mut entry = json!({"result": outcome.name(), "record": record});
        if let Outcome::Failed(reason) = outcome {
            entry["reason"] = Value::String(reason.clone());
        }
        self.portion_mut(&env.portion).test_run_payload.push(entry);
    }

    /// Cancels portion `id` as an administrator would (creating it if unknown): what it still
    /// had queued is discarded and counted as canceled.
    pub(crate) fn cancel(&mut self, id: &str) -> PortionState {
        let discarded = self.queue.discard(id);
        self.counters.canceled += discarded;
        let portion = self.portion_mut(id);
        portion.canceled = true;
        if discarded > 0 {
            portion.processing = portion.processing.saturating_sub(discarded);
            portion.canceled_records += discarded;
            portion.canceled_messages.push(format!(
                "{discarded} records still processing when the run was canceled were discarded"
            ));
        }
        portion.started_at_ms.get_or_insert_with(now_ms);
        portion.settle();
        portion.clone()
    }

    /// Marks portion `id` finalized; it is finished once nothing of it is processing.
    pub(crate) fn finalize(&mut self, id: &str) {
        let portion = self.portion_mut(id);
        portion.finalized = true;
        portion.started_at_ms.get_or_insert_with(now_ms);
        portion.settle();
    }

    /// Accepts a batch and processes it at once with only the tenant's built-in checks: what a
    /// post followed by processing does, for the store's unit tests.
    #[cfg(test)]
    pub(crate) fn apply(&mut self, env: Envelope) -> Vec<Outcome> {
        let now = Instant::now();
        let roles = ["25".to_string()];
        let checks = Checks {
            roles: &roles,
            rules: &[],
            lower_case_identities: false,
        };
        self.accept(env, now, "127.0.0.1", false);
        let mut outcomes = Vec::new();
        loop {
            let chunk = self.process_due(now, 2, checks);
            if chunk.is_empty() {
                return outcomes;
            }
            outcomes.extend(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(portion: &str, records: Vec<Value>) -> Envelope {
        Envelope {
            portion: portion.into(),
            sync_field: vec!["EMAIL".into()],
            records,
            ..Envelope::default()
        }
    }

    fn user(n: u32) -> Value {
        let email = format!("u{n}@example.com");
        json!({"USER": email, "EMAIL": email})
    }

    /// A store in which `USER` is unique.
    fn store() -> Store {
        Store::new(vec!["USER".into()])
    }

    /// No roles (the test records carry none), no rules.
    fn checks() -> Checks<'static> {
        Checks {
            roles: &[],
            rules: &[],
            lower_case_identities: false,
        }
    }

    #[test]
    fn accepted_records_are_processing_until_processed_in_order() {
        let mut s = store();
        let now = Instant::now();
        assert_eq!(
            s.accept(
                env("p", vec![user(1), user(2), user(1)]),
                now,
                "peer",
                false
            ),
            3
        );
        assert!(s.users().is_empty(), "nothing is applied when accepted");
        assert_eq!(s.portions["p"].processing, 3);
        let first = s.process_due(now, 2, checks());
        assert_eq!(first, [Outcome::Added, Outcome::Added]);
        assert_eq!(s.portions["p"].processing, 1);
        assert_eq!(s.process_due(now, 2, checks()), [Outcome::Unchanged]);
        assert_eq!((s.portions["p"].processing, s.queue.len()), (0, 0));
        assert_eq!(s.portions["p"].ipv4_address, "peer");
    }

    #[test]
    fn failures_are_found_when_processing_and_logged_with_who_and_why() {
        let mut s = store();
        let mut bad_role = user(2);
        bad_role["PERMISSIONS_ID"] = json!("999");
        let out = s.apply(env(
            "p",
            vec![user(1), bad_role, json!({"EMAIL": "x@example.com"})],
        ));
        assert_eq!(out[0], Outcome::Added);
        assert!(matches!(&out[1], Outcome::Failed(r) if r.contains("PERMISSIONS_ID")));
        let p = &s.portions["p"];
        assert_eq!((p.added, p.failed), (1, 2));
        assert_eq!(
            p.failed_records[0].message,
            "USER 'u2@example.com', EMAIL 'u2@example.com': PERMISSIONS_ID \"999\" is not a role of this Oomnitza"
        );
        assert!(
            p.failed_records[1]
                .message
                .starts_with("EMAIL 'x@example.com': USER")
        );
    }

    #[test]
    fn a_test_run_reports_what_processing_would_do_and_applies_nothing() {
        let mut s = store();
        s.apply(env("p0", vec![user(1)]));
        let mut changed = user(1);
        changed["POSITION"] = json!("CTO");
        let mut test = env(
            "t",
            vec![changed, user(2), json!({"EMAIL": "x@example.com"})],
        );
        test.test_run = true;
        let out = s.apply(test);
        assert_eq!(out[..2], [Outcome::Updated, Outcome::Added]);
        assert!(matches!(out[2], Outcome::Failed(_)));
        assert_eq!(s.users().len(), 1);
        assert!(s.users()[0].get("POSITION").is_none());
        let p = &s.portions["t"];
        assert!(p.test_run);
        let results: Vec<&str> = p
            .test_run_payload
            .iter()
            .filter_map(|e| e["result"].as_str())
            .collect();
        assert_eq!(results, ["updated", "added", "failed"]);
        assert!(p.test_run_payload[2]["reason"].is_string());
        assert_eq!((s.counters.created, s.counters.test_run_records), (1, 3));
    }

    #[test]
    fn canceling_discards_what_is_queued_and_what_comes_after() {
        let mut s = store();
        let now = Instant::now();
        s.accept(env("p", vec![user(1), user(2)]), now, "peer", false);
        s.accept(env("q", vec![user(3)]), now, "peer", false);
        let canceled = s.cancel("p");
        assert_eq!((canceled.processing, canceled.canceled_records), (0, 2));
        assert!(canceled.ended_at_ms.is_some());
        assert_eq!(s.accept(env("p", vec![user(4)]), now, "peer", false), 1);
        assert_eq!(s.portions["p"].canceled_records, 3);
        assert_eq!(s.process_due(now, 10, checks()), [Outcome::Added]);
        assert_eq!(s.users().len(), 1, "only q's record is applied");
        assert_eq!(s.counters.canceled, 3);
    }

    #[test]
    fn a_tenant_that_applies_posts_after_a_cancel_processes_them() {
        let mut s = store();
        let now = Instant::now();
        s.accept(env("p", vec![user(1)]), now, "peer", true);
        s.cancel("p");
        assert_eq!(s.accept(env("p", vec![user(2)]), now, "peer", true), 1);
        assert_eq!(
            s.portions["p"].canceled_records, 1,
            "only the queued record"
        );
        assert_eq!(s.process_due(now, 10, checks()), [Outcome::Added]);
        assert_eq!(
            s.users().len(),
            1,
            "the record posted after the cancel is applied"
        );
    }

    #[test]
    fn a_finalized_portion_finishes_when_nothing_is_processing() {
        let mut s = store();
        let now = Instant::now();
        s.accept(env("p", vec![user(1)]), now, "peer", false);
        s.finalize("p");
        assert!(s.portions["p"].ended_at_ms.is_none());
        s.process_due(now, 10, checks());
        assert!(s.portions["p"].ended_at_ms.is_some());
    }

    #[test]
    fn a_fatal_client_reported_failure_is_logged_as_fatal() {
        let mut s = store();
        let mut e = env("p", vec![]);
        e.error = Some("Sage People refused the credentials".into());
        e.fatal = true;
        let out = s.apply(e);
        assert_eq!(out.len(), 1);
        let p = &s.portions["p"];
        assert_eq!(p.failed, 1);
        assert_eq!(p.fatal_errors.len(), 1);
        assert!(p.fatal_errors[0].contains("refused the credentials"));
    }
}
