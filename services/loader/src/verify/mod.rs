//! Checking a finalized run against what Oomnitza holds. A `200` from the bulk endpoint means
//! Oomnitza *accepted* a batch; it applies the records afterwards, and a record can still fail
//! then (a duplicate unique value, a role that does not exist, a tenant validation rule). So
//! once a portion is finalized, one replica claims its check (a compare-and-set on the run
//! record, taken over by another replica after [`CLAIM_EXPIRY`] if it dies), reads the run log
//! until nothing is `processing`, then reads back the users the run wrote — by their first
//! sync value, a few hundred per request — and compares every field a read can show.
//!
//! A record counts as written only when Oomnitza holds the values sent. One that does not is
//! dead-lettered with Oomnitza's message where one names it (else "not applied by Oomnitza"),
//! counted as dead-lettered, and its applied hash is dropped so the next run sends it again.
//! Fields a read cannot show (the `SAAS` block, custom fields missing from the read) are
//! listed on the run instead of guessed. Letters reuse the event's id, so a check redone after
//! a crash adds none twice; the counts are set once, with the claim's end.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use std::time::{Duration, Instant};

use peoplesync_bus::{
    Bus, BusError, DeadLetter, FinalizeState, OutcomeCounts, RunLogCounts, RunRecord, Runs,
    VerifyState, WrittenEvent, WrittenEvents, dlq, names, outcomes,
};
use peoplesync_core::Integration;
use peoplesync_oomnitza::{OomnitzaClient, RunLog};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::VerifySettings;
use crate::integrations::Integrations;

mod check;
mod compare;
mod processing;

pub use compare::{Fields, compare, fields, read_name};
use compare::{compare_named, lookup_of, lower, text};

/// How long a verification claim holds without being renewed before another replica may take
/// it over.
pub const CLAIM_EXPIRY: Duration = Duration::from_secs(120);
/// How long after NATS stopped answering midway a check is handed back for a sweep to take
/// up again (see [`Verifier::hand_back`]): long enough that a cluster electing its leaders has
/// one, short next to [`CLAIM_EXPIRY`].
pub const HAND_BACK_AFTER: Duration = Duration::from_secs(15);
/// How often a replica renews its claim while it checks.
const RENEW: Duration = Duration::from_secs(30);
/// How often a check still waiting for Oomnitza says so.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);
/// Longest wait between two reads of a run log that is still processing.
const LOG_POLL_MAX: Duration = Duration::from_secs(5);
/// Users read per page.
const READ_PAGE: u32 = 1_000;
/// Runs that wrote at least this many records (and at most [`PAGE_ALL_UP_TO`]) are checked
/// against every user, read page by page, instead of by key: fewer, larger requests. Between
/// the two, what was sent is held in memory (about half a kilobyte a record).
const PAGE_ALL_FROM: u64 = 5_000;
/// The most records checked against every user at once; larger runs are read by key, a group
/// at a time, in bounded memory.
const PAGE_ALL_UP_TO: u64 = 250_000;

/// Checks finalized runs for one replica.
#[derive(Clone)]
pub struct Verifier {
    bus: Bus,
    runs: Runs,
    client: OomnitzaClient,
    integrations: Integrations,
    replica: String,
    settings: VerifySettings,
    /// Runs whose check this replica is about to hand back ([`Verifier::hand_back`]): not
    /// claimed again by this replica meanwhile, so the hand-back cannot reset a newer claim of
    /// its own.
    handing_back: Arc<std::sync::Mutex<BTreeSet<String>>>,
}

/// What the check of one record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Oomnitza holds every value sent that a read can show.
    Confirmed,
    /// Oomnitza does not hold what was sent: why, in words.
    NotApplied(String),
    /// Not applied by design: the integration creates only (the user existed) or updates only
    /// (there was no user).
    SkippedByPreference,
}

/// The comparison of one sent record with the user read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The verdict.
    pub check: Check,
    /// Fields sent that the read does not show.
    pub unverifiable: Vec<String>,
}

/// Why a check stopped early.
enum Stop {
    /// NATS failed: the check is retried.
    Bus(BusError),
    /// Oomnitza's users could not be read: the run is marked unverified with this reason.
    Unreadable(String),
}

/// What judging pages of users carries from page to page (moved to a blocking thread and back).
struct PageState {
    judge: Arc<Judge>,
    /// Records not met yet: attribute → lower-cased value → record.
    waiting: HashMap<String, HashMap<String, Pending>>,
    tally: Tally,
    letters: Vec<NotApplied>,
}

impl PageState {
    /// Judges the records whose users are on `pages`; true when a page was the last.
    fn judge_pages(&mut self, pages: &[Bytes]) -> Result<bool, Stop> {
        let started = Instant::now();
        let mut last = false;
        for body in pages {
            let page: Vec<Fields<'_>> = serde_json::from_slice(body).map_err(|e| {
                Stop::Unreadable(format!(
                    "Oomnitza's users page is not a list of objects: {e}"
                ))
            })?;
            last |= page.len() < READ_PAGE as usize;
            for user in &page {
                for (attribute, records) in &mut self.waiting {
                    let Some(value) = user.get(attribute.as_str()).and_then(|v| text(v)) else {
                        continue;
                    };
                    let key = lower(&value);
                    let Some(pending) = records.get(key.as_ref()) else {
                        continue;
                    };
                    let exact = pending
                        .lookup
                        .as_ref()
                        .is_some_and(|(_, sent)| *sent == *value);
                    if exact {
                        if let Some(pending) = records.remove(key.as_ref()) {
                            self.letters.extend(self.judge.judge(
                                pending,
                                Some(user),
                                &mut self.tally,
                            ));
                        }
                        continue;
                    }
                    // The value in other letters: taken if that user holds the record. If not,
                    // a user holding the value as sent may still come (a tenant that matches
                    // case-sensitively can hold both); the record waits for it, and is read
                    // by key after the pages if none does.
                    if self.judge.confirms(pending, user)
                        && let Some(pending) = records.remove(key.as_ref())
                    {
                        self.letters
                            .extend(self.judge.judge(pending, Some(user), &mut self.tally));
                    }
                }
            }
        }
        self.tally.judging += started.elapsed();
        Ok(last)
    }
}

/// A written record waiting to be judged, with the attribute and value its user is found by.
#[derive(Clone)]
struct Pending {
    event: WrittenEvent,
    lookup: Option<(String, String)>,
}

/// Judges written records against the users read back, for one run.
struct Judge {
    integration: String,
    sync_fields: Vec<String>,
    insert_only: bool,
    update_only: bool,
    /// Oomnitza's failure messages, lower-cased, to find one naming a record.
    failures: Vec<String>,
    /// The read attribute of each field the config maps (others are worked out per record).
    read_names: HashMap<String, Option<String>>,
}

impl Judge {
    fn new(config: Option<&Integration>, failures: Vec<String>) -> Judge {
        let (insert_only, update_only) = config.map_or((false, false), |c| {
            let preference = &c.config().preference;
            (preference.insert_only(), preference.update_only())
        });
        Judge {
            integration: config.map_or_else(String::new, |c| c.config().id.clone()),
            sync_fields: config
                .map_or_else(|| vec!["EMAIL".to_owned()], |c| c.sync_field().to_vec()),
            insert_only,
            update_only,
            failures,
            read_names: config
                .map(|c| {
                    c.config()
                        .mapping
                        .iter()
                        .map(|entry| (entry.field.clone(), read_name(&entry.field)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// `event` with the attribute and value its user is found by.
    fn pending(&self, event: WrittenEvent) -> Pending {
        let lookup =
            fields(&event.record_json).and_then(|record| lookup_of(&self.sync_fields, &record));
        Pending { event, lookup }
    }

    /// `record` (as sent) against `user` (as read), under the integration's preference.
    fn compare(&self, record: &Fields<'_>, user: Option<&Fields<'_>>) -> Comparison {
        compare_named(
            record,
            user,
            self.insert_only,
            self.update_only,
            |field| match self.read_names.get(field) {
                Some(name) => name.as_deref().map(Cow::Borrowed),
                None => read_name(field).map(Cow::Owned),
            },
        )
    }

    /// Whether `user` holds `pending`'s record as sent, field for field (not merely a user the
    /// preference excuses).
    fn confirms(&self, pending: &Pending, user: &Fields<'_>) -> bool {
        fields(&pending.event.record_json).is_some_and(|record| {
            matches!(self.compare(&record, Some(user)).check, Check::Confirmed)
        })
    }

    /// Judges one record against its user (`None`: none found); returns what is left to settle
    /// when Oomnitza did not apply it: a dead letter, or, for an update-only record that found
    /// no user, only its applied hash to drop, so that it is sent again once the user exists.
    fn judge(
        &self,
        pending: Pending,
        user: Option<&Fields<'_>>,
        tally: &mut Tally,
    ) -> Option<NotApplied> {
        let Pending { event, lookup } = pending;
        let Some(record) = fields(&event.record_json) else {
            // Recorded without its JSON (too large, or by an older loader): nothing to compare.
            tally.confirmed += 1;
            tally
                .unverifiable
                .insert("(record too large to keep)".to_owned());
            return None;
        };
        // Every record sent carries a value of a sync key of the config it was mapped with. One
        // carrying none of today's was sent under another config (the sync keys changed before
        // the check): no user can be looked up for it, which says nothing of whether it landed.
        if lookup.is_none() {
            tally.confirmed += 1;
            tally.unverifiable.insert(NO_SYNC_VALUE.to_owned());
            return None;
        }
        let comparison = self.compare(&record, user);
        drop(record);
        tally.unverifiable.extend(comparison.unverifiable);
        let difference = match comparison.check {
            Check::Confirmed => {
                tally.confirmed += 1;
                return None;
            }
            Check::SkippedByPreference => {
                tally.skipped += 1;
                // Update only, and no user yet: nothing landed. The record is sent again by
                // the next run (Oomnitza skips it again until someone creates the user).
                return user.is_none().then_some(NotApplied {
                    letter: None,
                    applied_key: event.applied_key,
                    record: event.record_json,
                });
            }
            Check::NotApplied(difference) => difference,
        };
        tally.not_applied += 1;
        let needle = lookup.as_ref().map(|(_, v)| v.to_lowercase());
        let message = needle.and_then(|needle| {
            self.failures
                .iter()
                .find(|m| peoplesync_oomnitza::message_names(m, &needle))
                .cloned()
        });
        let reason = match &message {
            Some(message) => format!("Oomnitza did not apply the record: {message}"),
            None => format!("not applied by Oomnitza: {difference}"),
        };
        Some(NotApplied {
            letter: Some(DeadLetter {
                integration: self.integration.clone(),
                run_id: String::new(),
                worker_id: event.worker_id,
                reason,
                stage: dlq::STAGE_VERIFICATION.into(),
                http_status: None,
                body_excerpt: Some(difference),
                attempts: 1,
                original_subject: String::new(),
            }),
            applied_key: event.applied_key,
            record: event.record_json,
        })
    }
}

/// How a record sent under other sync keys than today's is listed among the unverifiable.
const NO_SYNC_VALUE: &str =
    "(records without a value of today's sync keys: the sync keys changed after they were sent)";

/// A record Oomnitza did not apply: its dead letter (none when the integration's preference
/// explains it), applied-hash key and the record as sent.
struct NotApplied {
    letter: Option<DeadLetter>,
    applied_key: String,
    record: String,
}

/// Running totals of one check.
#[derive(Debug, Default)]
struct Tally {
    /// Time spent reading what was sent, reading users, and comparing.
    reading_sent: Duration,
    reading_users: Duration,
    judging: Duration,
    confirmed: u64,
    not_applied: u64,
    skipped: u64,
    unverifiable: BTreeSet<String>,
}

impl Tally {
    /// Adds what `other` counted.
    fn add(&mut self, other: Tally) {
        self.reading_sent += other.reading_sent;
        self.reading_users += other.reading_users;
        self.judging += other.judging;
        self.confirmed += other.confirmed;
        self.not_applied += other.not_applied;
        self.skipped += other.skipped;
        self.unverifiable.extend(other.unverifiable);
    }
}

/// A check's claim on the run record, renewed while it works.
pub(crate) struct Claim<'a> {
    verifier: &'a Verifier,
    integration: &'a str,
    run_id: &'a str,
    renewed: Instant,
}

impl Claim<'_> {
    /// Renews the claim if [`RENEW`] has passed since the last renewal.
    async fn renew(&mut self) {
        if self.renewed.elapsed() < RENEW {
            return;
        }
        self.renewed = Instant::now();
        let at = chrono::Utc::now().to_rfc3339();
        let replica = &self.verifier.replica;
        let renewed = self
            .verifier
            .runs
            .update(self.integration, self.run_id, |record| {
                match record.verification.as_mut() {
                    Some(v) if matches!(&v.state, VerifyState::Claimed { by, .. } if by == replica) =>
                    {
                        v.state = VerifyState::Claimed {
                            by: replica.clone(),
                            at: at.clone(),
                        };
                        true
                    }
                    _ => false,
                }
            })
            .await;
        if let Err(err) = renewed {
            tracing::warn!(run_id = self.run_id, error = %err, "cannot renew the verification claim");
        }
    }
}

/// Whether `record`'s portion is finalized and its check waits for a replica (or its checker's
/// claim expired).
pub fn needs_verify(record: &RunRecord) -> bool {
    if !matches!(record.finalize, FinalizeState::Finalized { .. }) {
        return false;
    }
    match record.verification.as_ref().map(|v| &v.state) {
        Some(VerifyState::Pending) => true,
        Some(VerifyState::Claimed { at, .. }) => expired(at, CLAIM_EXPIRY),
        _ => false,
    }
}

/// Whether the RFC 3339 time `at` is more than `expiry` ago (an unreadable time is).
pub fn expired(at: &str, expiry: Duration) -> bool {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|at| {
            chrono::Utc::now()
                .signed_duration_since(at)
                .to_std()
                .unwrap_or_default()
                > expiry
        })
        .unwrap_or(true)
}

/// Ends the check of a run: stores `change` on its record, counts the run as checked in
/// `state` (`LOADER_RUNS_CHECKED`), and drops the run's per-event outcomes, which nothing reads
/// any more. When `change` leaves the record as it is (the check is another replica's now),
/// nothing else is done either.
pub(crate) async fn close_check(
    bus: &Bus,
    runs: &Runs,
    integration: &str,
    run_id: &str,
    state: &'static str,
    mut change: impl FnMut(&mut RunRecord) -> bool,
) -> Result<(), BusError> {
    let mut changed = false;
    runs.update(integration, run_id, |record| {
        changed = change(record);
        changed
    })
    .await?;
    if !changed {
        return Ok(());
    }
    metrics::counter!(peoplesync_runtime::metrics::names::LOADER_RUNS_CHECKED,
        "integration" => integration.to_owned(), "state" => state)
    .increment(1);
    outcomes::purge(bus, integration, run_id).await
}

/// Drops the applied hashes the run wrote (where it still wrote the latest), so the next run
/// sends its records again: for a run whose records cannot all be known to have landed. A
/// check's `claim`, when given, is renewed as it goes (two KV round trips per record).
pub(crate) async fn forget_written(
    bus: &Bus,
    integration: &str,
    run_id: &str,
    mut claim: Option<&mut Claim<'_>>,
) -> Result<(), BusError> {
    let mut written = WrittenEvents::open(bus, integration, run_id, 1_000).await?;
    while let Some(events) = written.next_group().await? {
        if let Some(claim) = claim.as_deref_mut() {
            claim.renew().await;
        }
        for event in events {
            bus.applied()
                .forget_if_written_by(&event.applied_key, run_id)
                .await;
        }
    }
    Ok(())
}

/// Moves `not_applied` written records to dead-lettered and `skipped` to filtered.
fn move_written(counts: &mut OutcomeCounts, not_applied: u64, skipped: u64) {
    let not_applied = not_applied.min(counts.written);
    counts.written -= not_applied;
    counts.dead_lettered += not_applied;
    let skipped = skipped.min(counts.written);
    counts.written -= skipped;
    counts.filtered += skipped;
}

fn run_log_counts(log: &RunLog) -> RunLogCounts {
    let counts = &log.counts;
    RunLogCounts {
        added: counts.added,
        updated: counts.updated,
        unchanged: counts.unchanged,
        skipped: counts.skipped,
        failed: counts.failed,
        canceled: counts.canceled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Page state waiting for one record written for `Ada@Example.com`.
    fn waiting_for_ada() -> PageState {
        waiting_for_ada_under(Judge::new(None, Vec::new()))
    }

    /// [`waiting_for_ada`] judged by `judge`.
    fn waiting_for_ada_under(judge: Judge) -> PageState {
        let judge = Arc::new(judge);
        let record =
            json!({"USER": "Ada@Example.com", "EMAIL": "Ada@Example.com", "FIRST_NAME": "Ada"});
        let pending = judge.pending(WrittenEvent {
            msg_id: "m1".into(),
            worker_id: "w1".into(),
            applied_key: "k1".into(),
            record_json: record.to_string(),
        });
        let (attribute, value) = pending.lookup.clone().expect("looked up by e-mail");
        let mut waiting: HashMap<String, HashMap<String, Pending>> = HashMap::new();
        waiting
            .entry(attribute)
            .or_default()
            .insert(value.to_lowercase(), pending);
        PageState {
            judge,
            waiting,
            tally: Tally::default(),
            letters: Vec::new(),
        }
    }

    #[test]
    fn a_record_sent_under_other_sync_keys_is_unverifiable_not_dead_lettered() {
        let judge = Judge {
            sync_fields: vec!["6C1F".to_owned()],
            ..Judge::new(None, Vec::new())
        };
        let record = json!({"USER": "ada@example.com", "EMAIL": "ada@example.com"});
        let pending = judge.pending(WrittenEvent {
            msg_id: "m1".into(),
            worker_id: "w1".into(),
            applied_key: "k1".into(),
            record_json: record.to_string(),
        });
        assert!(pending.lookup.is_none());
        let mut tally = Tally::default();
        assert!(judge.judge(pending, None, &mut tally).is_none());
        assert_eq!((tally.confirmed, tally.not_applied), (1, 0));
        assert!(tally.unverifiable.contains(NO_SYNC_VALUE));
    }

    fn page(users: Value) -> Bytes {
        Bytes::from(users.to_string())
    }

    fn user(address: &str, first_name: &str) -> Value {
        json!({"username": address, "email": address, "first_name": first_name})
    }

    fn waiting(state: &PageState) -> usize {
        state.waiting.values().map(HashMap::len).sum()
    }

    #[test]
    fn on_pages_the_user_holding_the_value_as_sent_wins_over_a_stale_one_in_other_letters() {
        let mut state = waiting_for_ada();
        let stale = user("ada@example.com", "Augusta");
        let current = user("Ada@Example.com", "Ada");
        assert!(state.judge_pages(&[page(json!([stale, current]))]).is_ok());
        assert_eq!((state.tally.confirmed, state.tally.not_applied), (1, 0));
        assert!(state.letters.is_empty());
        assert_eq!(waiting(&state), 0);
    }

    #[test]
    fn on_pages_a_user_in_other_letters_holding_the_record_is_taken_and_one_that_does_not_waits() {
        let mut state = waiting_for_ada();
        assert!(
            state
                .judge_pages(&[page(json!([user("ada@example.com", "Augusta")]))])
                .is_ok()
        );
        assert_eq!(
            (state.tally.confirmed, waiting(&state)),
            (0, 1),
            "left for a user holding the value as sent, or for the read by key"
        );
        assert!(
            state
                .judge_pages(&[page(json!([user("ada@example.com", "Ada")]))])
                .is_ok()
        );
        assert_eq!((state.tally.confirmed, waiting(&state)), (1, 0));
        assert!(state.letters.is_empty());
    }

    #[test]
    fn on_pages_a_user_in_other_letters_that_only_the_preference_excuses_is_not_taken() {
        // Insert only: any user found makes the record "skipped by preference", so a stale user
        // in other letters would have hidden the user holding the value as sent.
        let mut insert_only = Judge::new(None, Vec::new());
        insert_only.insert_only = true;
        let mut state = waiting_for_ada_under(insert_only);
        let stale = user("ada@example.com", "Augusta");
        let current = user("Ada@Example.com", "Ada");
        assert!(state.judge_pages(&[page(json!([stale, current]))]).is_ok());
        assert_eq!(
            (state.tally.confirmed, state.tally.skipped),
            (1, 0),
            "confirmed by the user holding the value as sent"
        );
    }
}
