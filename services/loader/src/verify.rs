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

/// How long a verification claim holds without being renewed before another replica may take
/// it over.
pub const CLAIM_EXPIRY: Duration = Duration::from_secs(120);
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

/// Attributes whose values Oomnitza matches without regard to case.
const CASELESS: &[&str] = &["username", "email"];

/// Checks finalized runs for one replica.
#[derive(Clone)]
pub struct Verifier {
    bus: Bus,
    runs: Runs,
    client: OomnitzaClient,
    integrations: Integrations,
    replica: String,
    settings: VerifySettings,
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
                    if let Some(pending) = records.remove(lower(&value).as_ref()) {
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

    /// Judges one record against its user (`None`: none found); returns its dead letter when
    /// Oomnitza did not apply it.
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
        let comparison = compare_named(
            &record,
            user,
            self.insert_only,
            self.update_only,
            |field| match self.read_names.get(field) {
                Some(name) => name.as_deref().map(Cow::Borrowed),
                None => read_name(field).map(Cow::Owned),
            },
        );
        drop(record);
        tally.unverifiable.extend(comparison.unverifiable);
        let difference = match comparison.check {
            Check::Confirmed => {
                tally.confirmed += 1;
                return None;
            }
            Check::SkippedByPreference => {
                tally.skipped += 1;
                return None;
            }
            Check::NotApplied(difference) => difference,
        };
        tally.not_applied += 1;
        let needle = lookup.as_ref().map(|(_, v)| v.to_lowercase());
        let message =
            needle.and_then(|needle| self.failures.iter().find(|m| m.contains(&needle)).cloned());
        let reason = match &message {
            Some(message) => format!("Oomnitza did not apply the record: {message}"),
            None => format!("not applied by Oomnitza: {difference}"),
        };
        Some(NotApplied {
            letter: DeadLetter {
                integration: self.integration.clone(),
                run_id: String::new(),
                worker_id: event.worker_id,
                reason,
                stage: dlq::STAGE_VERIFICATION.into(),
                http_status: None,
                body_excerpt: Some(difference),
                attempts: 1,
                original_subject: String::new(),
            },
            applied_key: event.applied_key,
            record: event.record_json,
        })
    }
}

/// A record Oomnitza did not apply: its dead letter, applied-hash key and the record as sent.
struct NotApplied {
    letter: DeadLetter,
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

impl Verifier {
    /// A verifier acting as `replica`.
    pub fn new(
        bus: Bus,
        client: OomnitzaClient,
        integrations: Integrations,
        replica: String,
        settings: VerifySettings,
    ) -> Verifier {
        let runs = Runs::new(bus.state_kv().clone());
        Verifier {
            bus,
            runs,
            client,
            integrations,
            replica,
            settings,
        }
    }

    /// Whether checks are on (`verify.enabled`).
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Checks the run if it waits for a check (or its checker's claim expired) and this
    /// replica wins the claim; otherwise does nothing.
    pub async fn verify(&self, integration: &str, run_id: &str) -> Result<(), BusError> {
        let now = chrono::Utc::now().to_rfc3339();
        let mut won = false;
        let claimed = self
            .runs
            .update(integration, run_id, |record| {
                won = needs_verify(record);
                if won && let Some(v) = record.verification.as_mut() {
                    v.state = VerifyState::Claimed {
                        by: self.replica.clone(),
                        at: now.clone(),
                    };
                }
                won
            })
            .await?;
        let accepted = claimed
            .and_then(|record| record.verification)
            .map_or(0, |v| v.accepted);
        if !won {
            return Ok(());
        }
        let started = Instant::now();
        tracing::info!(integration, run_id, "checking what Oomnitza applied");
        let mut claim = Claim {
            verifier: self,
            integration,
            run_id,
            renewed: Instant::now(),
        };
        let log = match self.wait_processed(&mut claim).await {
            Ok(log) => log,
            Err(reason) => return self.give_up(integration, run_id, reason).await,
        };
        let failures: Vec<String> = log
            .failed_messages()
            .iter()
            .map(|m| m.to_lowercase())
            .collect();
        let config = self.integrations.get(integration);
        let judge = Arc::new(Judge::new(config.as_deref(), failures));
        let mut tally = Tally::default();
        let group = self.settings.read_batch.max(1);
        let mut written =
            WrittenEvents::open(self.bus.jetstream(), integration, run_id, group).await?;
        let checked = if (PAGE_ALL_FROM..=PAGE_ALL_UP_TO).contains(&accepted) {
            self.check_by_pages(&judge, &mut written, &mut claim, &mut tally)
                .await
        } else {
            self.check_by_keys(&judge, &mut written, &mut claim, &mut tally)
                .await
        };
        match checked {
            Ok(()) => {}
            Err(Stop::Bus(err)) => return Err(err),
            Err(Stop::Unreadable(reason)) => {
                return self.give_up(integration, run_id, reason).await;
            }
        }
        let at = chrono::Utc::now().to_rfc3339();
        let unverifiable: Vec<String> = tally.unverifiable.iter().cloned().collect();
        let run_log = Some(run_log_counts(&log));
        self.runs
            .update(integration, run_id, |record| {
                let Some(v) = record.verification.as_mut() else {
                    return false;
                };
                if !matches!(&v.state, VerifyState::Claimed { by, .. } if *by == self.replica) {
                    return false;
                }
                v.state = VerifyState::Verified {
                    by: self.replica.clone(),
                    at: at.clone(),
                };
                v.confirmed = tally.confirmed;
                v.not_applied = tally.not_applied;
                v.unverifiable_fields = unverifiable.clone();
                v.run_log = run_log;
                let counts = record.counts.get_or_insert_with(OutcomeCounts::default);
                move_written(counts, tally.not_applied, tally.skipped);
                true
            })
            .await?;
        outcomes::purge(self.bus.jetstream(), integration, run_id).await?;
        let label = |result: &'static str, n: u64| {
            metrics::counter!(peoplesync_runtime::metrics::names::LOADER_RECORDS_VERIFIED,
                "integration" => integration.to_owned(), "result" => result)
            .increment(n);
        };
        label("confirmed", tally.confirmed);
        label("not_applied", tally.not_applied);
        metrics::counter!(peoplesync_runtime::metrics::names::LOADER_RUNS_CHECKED,
            "integration" => integration.to_owned(), "state" => "verified")
        .increment(1);
        tracing::info!(
            integration,
            run_id,
            confirmed = tally.confirmed,
            not_applied = tally.not_applied,
            skipped_by_preference = tally.skipped,
            unverifiable = ?tally.unverifiable,
            reading_sent_ms = tally.reading_sent.as_millis() as u64,
            reading_users_ms = tally.reading_users.as_millis() as u64,
            judging_ms = tally.judging.as_millis() as u64,
            took_ms = started.elapsed().as_millis() as u64,
            "run verified against Oomnitza"
        );
        Ok(())
    }

    /// Reads the run log until nothing is processing, renewing the claim, for at most
    /// `verify.processing_timeout_secs`.
    async fn wait_processed(&self, claim: &mut Claim<'_>) -> Result<RunLog, String> {
        let limit = Duration::from_secs(self.settings.processing_timeout_secs);
        let started = Instant::now();
        let mut said = started;
        let mut wait = Duration::from_millis(20);
        loop {
            let last = match self.client.run_log(claim.run_id).await {
                Ok(log) if log.processing() == 0 => return Ok(log),
                Ok(log) => format!("{} record(s) still processing", log.processing()),
                Err(err) => format!("cannot read the run log: {err}"),
            };
            // Waiting is said, at most once a minute, never in silence.
            if said.elapsed() >= PROGRESS_EVERY {
                said = Instant::now();
                tracing::warn!(integration = claim.integration, run_id = claim.run_id,
                    waited_s = started.elapsed().as_secs(), limit_s = limit.as_secs(), %last,
                    "still waiting for Oomnitza to finish processing the run before checking it");
            }
            if started.elapsed() >= limit {
                return Err(format!(
                    "Oomnitza did not finish processing the portion within {} s ({last}); the \
                     run's written count holds records accepted, not confirmed",
                    limit.as_secs()
                ));
            }
            claim.renew().await;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LOG_POLL_MAX);
        }
    }

    /// Checks the written records group by group, reading their users back by sync value.
    async fn check_by_keys(
        &self,
        judge: &Judge,
        written: &mut WrittenEvents,
        claim: &mut Claim<'_>,
        tally: &mut Tally,
    ) -> Result<(), Stop> {
        while let Some(events) = written.next_group().await.map_err(Stop::Bus)? {
            claim.renew().await;
            let pending: Vec<Pending> = events.into_iter().map(|e| judge.pending(e)).collect();
            let letters = self.check_pending(judge, pending, tally).await?;
            self.settle_not_applied(claim, letters).await?;
        }
        Ok(())
    }

    /// Checks the written records against every user, read page by page (two pages at a time):
    /// for a run that wrote many users, far fewer requests than reading them by key. Records
    /// not met on any page (a user created while the pages were read could shift them) are
    /// read by key before they count as not applied.
    async fn check_by_pages(
        &self,
        judge: &Arc<Judge>,
        written: &mut WrittenEvents,
        claim: &mut Claim<'_>,
        tally: &mut Tally,
    ) -> Result<(), Stop> {
        let mut letters = Vec::new();
        let mut waiting: HashMap<String, HashMap<String, Pending>> = HashMap::new();
        let started = Instant::now();
        while let Some(events) = written.next_group().await.map_err(Stop::Bus)? {
            for pending in events.into_iter().map(|e| judge.pending(e)) {
                match pending.lookup.clone() {
                    Some((attribute, value)) => {
                        waiting
                            .entry(attribute)
                            .or_default()
                            .insert(value.to_lowercase(), pending);
                    }
                    None => letters.extend(judge.judge(pending, None, tally)),
                }
            }
        }
        tally.reading_sent += started.elapsed();
        // Two pages are read while the two before are judged on a blocking thread: reading
        // waits on Oomnitza, judging is CPU. (Reading the first pages while what was sent is
        // read from NATS was tried: on two cores it made the check slower.)
        let mut state = PageState {
            judge: judge.clone(),
            waiting,
            tally: Tally::default(),
            letters,
        };
        let paging = Instant::now();
        let mut skip = 0u32;
        let mut bodies = self.read_two_pages(skip).await;
        loop {
            claim.renew().await;
            let (first, second) = bodies;
            let pages = [first?, second?];
            skip = skip.saturating_add(2 * READ_PAGE);
            let judging = tokio::task::spawn_blocking(move || {
                let last = state.judge_pages(&pages);
                (state, last)
            });
            let (next, judged) = futures::future::join(self.read_two_pages(skip), judging).await;
            let (judged, last) = judged
                .map_err(|e| Stop::Unreadable(format!("judging a page of users failed: {e}")))?;
            state = judged;
            let last = last?;
            self.settle_not_applied(claim, std::mem::take(&mut state.letters))
                .await?;
            if last || state.waiting.values().all(HashMap::is_empty) {
                break;
            }
            bodies = next;
        }
        let PageState {
            waiting,
            tally: judged,
            ..
        } = state;
        tally.add(judged);
        // Reading and judging the pages overlap: this is the time of both.
        tally.reading_users += paging.elapsed();
        let rest: Vec<Pending> = waiting
            .into_values()
            .flat_map(HashMap::into_values)
            .collect();
        for chunk in rest.chunks(self.settings.read_batch.max(1)) {
            let letters = self.check_pending(judge, chunk.to_vec(), tally).await?;
            self.settle_not_applied(claim, letters).await?;
        }
        Ok(())
    }

    /// Two pages of users as JSON text, from `skip` on, read at the same time.
    async fn read_two_pages(&self, skip: u32) -> (Result<Bytes, Stop>, Result<Bytes, Stop>) {
        let read = |skip: u32| async move {
            self.client
                .find_users_json("", READ_PAGE, skip)
                .await
                .map_err(|e| Stop::Unreadable(format!("cannot read the users: {e}")))
        };
        futures::future::join(read(skip), read(skip.saturating_add(READ_PAGE))).await
    }

    /// Reads back the users of `pending` by sync value and judges each record.
    async fn check_pending(
        &self,
        judge: &Judge,
        pending: Vec<Pending>,
        tally: &mut Tally,
    ) -> Result<Vec<NotApplied>, Stop> {
        let mut wanted: HashMap<&str, Vec<String>> = HashMap::new();
        for (attribute, value) in pending.iter().filter_map(|p| p.lookup.as_ref()) {
            wanted.entry(attribute).or_default().push(value.clone());
        }
        // Users by (attribute, lower-cased value), as JSON text.
        let mut found: HashMap<(String, String), String> = HashMap::new();
        for (attribute, values) in &wanted {
            for user in self.read_users(attribute, values).await? {
                let Ok(json) = serde_json::to_string(&user) else {
                    continue;
                };
                let value = fields(&json).and_then(|user| {
                    user.get(*attribute)
                        .and_then(|v| text(v))
                        .map(|t| t.to_lowercase())
                });
                if let Some(value) = value {
                    found
                        .entry(((*attribute).to_owned(), value))
                        .or_insert(json);
                }
            }
        }
        let mut letters = Vec::new();
        for pending in pending {
            let user = pending
                .lookup
                .as_ref()
                .and_then(|(a, v)| found.get(&(a.clone(), v.to_lowercase())))
                .and_then(|text| fields(text));
            letters.extend(judge.judge(pending, user.as_ref(), tally));
        }
        Ok(letters)
    }

    /// Users whose `attribute` is one of `values`, a few hundred per request.
    async fn read_users(
        &self,
        attribute: &str,
        values: &[String],
    ) -> Result<Vec<Map<String, Value>>, Stop> {
        let users = self
            .client
            .find_users_in(attribute, values, READ_PAGE)
            .await
            .map_err(|err| Stop::Unreadable(format!("cannot read the users back: {err}")))?;
        Ok(users
            .into_iter()
            .filter_map(|user| match user {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .collect())
    }

    /// Dead-letters the records Oomnitza did not apply and drops their applied hashes (where
    /// this run still wrote the latest), so the next run sends them again.
    async fn settle_not_applied(
        &self,
        claim: &Claim<'_>,
        letters: Vec<NotApplied>,
    ) -> Result<(), Stop> {
        if letters.is_empty() {
            return Ok(());
        }
        let (integration, run_id) = (claim.integration, claim.run_id);
        let mut publisher = peoplesync_bus::Publisher::new(self.bus.jetstream().clone(), 64);
        for NotApplied {
            mut letter,
            applied_key,
            record,
        } in letters
        {
            letter.integration = integration.to_owned();
            letter.run_id = run_id.to_owned();
            letter.original_subject = names::workers_subject(integration);
            tracing::warn!(integration, run_id, worker = %letter.worker_id, reason = %letter.reason,
                "Oomnitza accepted a record but did not apply it; dead-lettering it");
            dlq::publish(&mut publisher, &letter, record.into())
                .await
                .map_err(Stop::Bus)?;
            forget_applied(&self.bus, &applied_key, run_id).await;
        }
        publisher.flush().await.map_err(Stop::Bus)
    }

    /// Ends a check that cannot be completed: the run keeps its accepted counts, marked
    /// unverified with `reason`.
    async fn give_up(
        &self,
        integration: &str,
        run_id: &str,
        reason: String,
    ) -> Result<(), BusError> {
        tracing::error!(integration, run_id, %reason, "cannot verify the run against Oomnitza");
        let at = chrono::Utc::now().to_rfc3339();
        self.runs
            .update(integration, run_id, |record| {
                let Some(v) = record.verification.as_mut() else {
                    return false;
                };
                v.state = VerifyState::Unverified {
                    by: self.replica.clone(),
                    at: at.clone(),
                    reason: reason.clone(),
                };
                true
            })
            .await?;
        metrics::counter!(peoplesync_runtime::metrics::names::LOADER_RUNS_CHECKED,
            "integration" => integration.to_owned(), "state" => "unverified")
        .increment(1);
        outcomes::purge(self.bus.jetstream(), integration, run_id).await
    }
}

/// A check's claim on the run record, renewed while it works.
struct Claim<'a> {
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

/// Moves `not_applied` written records to dead-lettered and `skipped` to filtered.
fn move_written(counts: &mut OutcomeCounts, not_applied: u64, skipped: u64) {
    let not_applied = not_applied.min(counts.written);
    counts.written -= not_applied;
    counts.dead_lettered += not_applied;
    let skipped = skipped.min(counts.written);
    counts.written -= skipped;
    counts.filtered += skipped;
}

/// Drops the applied hash under `key` if `run_id` wrote it last, so the next run sends the
/// record again. Failures are logged: the record then waits for a change in Sage People.
pub async fn forget_applied(bus: &Bus, key: &str, run_id: &str) {
    if key.is_empty() {
        return;
    }
    let store = bus.applied_kv();
    let entry = match store.entry(key).await {
        Ok(Some(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => entry,
        Ok(_) => return,
        Err(err) => {
            tracing::warn!(key, error = %err, "cannot read an applied hash to drop it");
            return;
        }
    };
    let ours = serde_json::from_slice::<crate::applied::AppliedRecord>(&entry.value)
        .is_ok_and(|applied| applied.run_id == run_id);
    if !ours {
        return;
    }
    if let Err(err) = store
        .delete_expect_revision(key, Some(entry.revision))
        .await
    {
        tracing::warn!(key, error = %err, "cannot drop an applied hash; the record is sent again only once it changes");
    }
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

/// The attribute a user read shows bulk field `field` as, when it is known: the documented
/// system fields, and custom fields (32 hexadecimal digits) under their id in lower case.
pub fn read_name(field: &str) -> Option<String> {
    let custom = field.len() == 32 && field.chars().all(|c| c.is_ascii_hexdigit());
    (custom || peoplesync_oomnitza::is_system_field(field))
        .then(|| peoplesync_oomnitza::read_attribute(field))
}

/// A JSON object as its members' raw text, borrowed from the document: records and users are
/// compared without building a `Value` per member.
pub type Fields<'a> = HashMap<&'a str, &'a RawValue, foldhash::fast::RandomState>;

/// The members of the JSON object `text`, borrowed (`None` when it is not an object).
pub fn fields(text: &str) -> Option<Fields<'_>> {
    serde_json::from_str(text).ok()
}

/// The attribute and value a record is looked for by: the first sync field with a value.
fn lookup_of(sync_fields: &[String], record: &Fields<'_>) -> Option<(String, String)> {
    sync_fields.iter().find_map(|field| {
        let value = record.get(field.as_str()).and_then(|v| text(v))?;
        Some((read_name(field)?, value.into_owned()))
    })
}

/// Compares a sent record with the user read back (`None`: no user holds its sync value).
pub fn compare(
    sent: &Fields<'_>,
    user: Option<&Fields<'_>>,
    insert_only: bool,
    update_only: bool,
) -> Comparison {
    compare_named(sent, user, insert_only, update_only, |field| {
        read_name(field).map(Cow::Owned)
    })
}

/// [`compare`], with the read attribute of each field from `read_name_of` (a per-run cache).
fn compare_named<'n>(
    sent: &Fields<'_>,
    user: Option<&Fields<'_>>,
    insert_only: bool,
    update_only: bool,
    read_name_of: impl Fn(&str) -> Option<Cow<'n, str>>,
) -> Comparison {
    let mut unverifiable = Vec::new();
    let Some(user) = user else {
        let check = if update_only {
            Check::SkippedByPreference
        } else {
            Check::NotApplied("no user holds the record's sync value".to_owned())
        };
        return Comparison {
            check,
            unverifiable,
        };
    };
    let mut differences = Vec::new();
    for (field, value) in sent {
        let name = read_name_of(field);
        let Some(held) = name.as_deref().and_then(|name| user.get(name)) else {
            unverifiable.push((*field).to_owned());
            continue;
        };
        let caseless = name.as_deref().is_some_and(|n| CASELESS.contains(&n));
        if !same(value, held, caseless) {
            differences.push(format!(
                "{field} holds {}, sent {}",
                shown_value(held),
                shown_value(value)
            ));
        }
    }
    // Members come in no particular order: messages are sorted so they read the same.
    unverifiable.sort_unstable();
    differences.sort_unstable();
    let check = if differences.is_empty() {
        Check::Confirmed
    } else if insert_only {
        Check::SkippedByPreference
    } else {
        Check::NotApplied(differences.join("; "))
    };
    Comparison {
        check,
        unverifiable,
    }
}

/// A value as text for comparing: strings as they are (borrowed when they hold no escapes),
/// numbers and booleans as written, an object by its `id` (a role read as an object); `None`
/// for null and empty text.
fn text(value: &RawValue) -> Option<Cow<'_, str>> {
    let raw = value.get();
    let text = match raw.as_bytes().first()? {
        b'n' => return None,
        b'"' => match serde_json::from_str::<&str>(raw) {
            Ok(borrowed) => Cow::Borrowed(borrowed),
            Err(_) => Cow::Owned(serde_json::from_str::<String>(raw).ok()?),
        },
        b'{' => {
            let object: Fields<'_> = serde_json::from_str(raw).ok()?;
            return object
                .get("id")
                .and_then(|id| text(id))
                .map(|t| Cow::Owned(t.into_owned()));
        }
        _ => Cow::Borrowed(raw),
    };
    (!text.is_empty()).then_some(text)
}

/// `text` in lower case, borrowed when it has no upper-case letter.
fn lower(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_uppercase) {
        Cow::Owned(text.to_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// Whether Oomnitza holding `held` means it applied `sent`.
fn same(sent: &RawValue, held: &RawValue, caseless: bool) -> bool {
    if sent.get() == held.get() {
        return true;
    }
    match (text(sent), text(held)) {
        (None, None) => true,
        (Some(a), Some(b)) if caseless => a.to_lowercase() == b.to_lowercase(),
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn shown_value(value: &RawValue) -> String {
    match text(value) {
        None => "nothing".to_owned(),
        Some(text) => format!("{:?}", text.chars().take(80).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The JSON text of `value`, to borrow [`Fields`] from.
    fn json(value: Value) -> String {
        value.to_string()
    }

    #[test]
    fn a_user_holding_what_was_sent_is_confirmed_and_unreadable_fields_are_listed() {
        let sent = json(json!({
            "USER": "Ada@Example.com", "EMAIL": "Ada@Example.com", "PERMISSIONS_ID": "25",
            "FIRST_NAME": "Ada", "POSITION": null,
            "6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C": "a2G1",
            "SAAS": {"sync_key": "email", "name": "Sage People"}
        }));
        let user = json(json!({
            "username": "ada@example.com", "email": "ada@example.com", "role": 25,
            "first_name": "Ada", "position": "", "6c1f0a2b9d3e4f5a8b7c6d5e4f3a2b1c": "a2G1"
        }));
        let (sent, user) = (fields(&sent).unwrap(), fields(&user).unwrap());
        let result = compare(&sent, Some(&user), false, false);
        assert_eq!(result.check, Check::Confirmed);
        assert_eq!(result.unverifiable, ["SAAS"]);
    }

    #[test]
    fn a_different_value_or_no_user_is_not_applied_unless_the_preference_explains_it() {
        let sent = json(json!({"EMAIL": "ada@example.com", "POSITION": "CTO"}));
        let user = json(json!({"email": "ada@example.com", "position": "Engineer"}));
        let (sent, user) = (fields(&sent).unwrap(), fields(&user).unwrap());
        let Check::NotApplied(why) = compare(&sent, Some(&user), false, false).check else {
            panic!("a different value is not applied");
        };
        assert_eq!(why, r#"POSITION holds "Engineer", sent "CTO""#);
        assert_eq!(
            compare(&sent, Some(&user), true, false).check,
            Check::SkippedByPreference,
            "create only leaves existing users alone"
        );
        assert!(matches!(
            compare(&sent, None, false, false).check,
            Check::NotApplied(_)
        ));
        assert_eq!(
            compare(&sent, None, false, true).check,
            Check::SkippedByPreference,
            "update only creates nobody"
        );
    }

    #[test]
    fn a_custom_field_the_read_does_not_show_is_unverifiable_not_wrong() {
        let sent =
            json(json!({"EMAIL": "a@x", "0F9E8D7C6B5A49382716A5B4C3D2E1F0": "UK", "odd": 1}));
        let user = json(json!({"email": "a@x"}));
        let (sent, user) = (fields(&sent).unwrap(), fields(&user).unwrap());
        let result = compare(&sent, Some(&user), false, false);
        assert_eq!(result.check, Check::Confirmed);
        assert_eq!(
            result.unverifiable,
            ["0F9E8D7C6B5A49382716A5B4C3D2E1F0", "odd"]
        );
    }

    #[test]
    fn records_are_looked_up_by_their_first_sync_value() {
        let record = json(json!({"EMAIL": null, "6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C": "a2G1"}));
        let sync = [
            "EMAIL".to_owned(),
            "6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C".to_owned(),
        ];
        assert_eq!(
            lookup_of(&sync, &fields(&record).unwrap()),
            Some(("6c1f0a2b9d3e4f5a8b7c6d5e4f3a2b1c".into(), "a2G1".into()))
        );
    }

    #[test]
    fn counts_move_from_written_to_dead_lettered_and_filtered() {
        let mut counts = OutcomeCounts {
            written: 10,
            ..Default::default()
        };
        move_written(&mut counts, 3, 2);
        assert_eq!(
            (counts.written, counts.dead_lettered, counts.filtered),
            (5, 3, 2)
        );
        assert_eq!(counts.total(), 10);
    }
}
