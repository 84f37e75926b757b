//! The listing part of a run: pages in, events out, checkpoints behind; and the fetch task
//! that reads pages ahead.

use super::*;

use peoplesync_core::NormaliseError;

use crate::event::{TOO_LARGE_FIX, max_event_bytes};
use sha2::{Digest, Sha256};

/// How much of a skipped record its dead letter holds.
const LETTER_EXCERPT_CHARS: usize = 64 * 1024;

/// A dead letter of the extractor about `worker`, which was skipped for `reason`.
fn skipped(integration: &str, run_id: &str, worker: &str, reason: String) -> DeadLetter {
    DeadLetter {
        integration: integration.to_owned(),
        run_id: run_id.to_owned(),
        worker_id: worker.to_owned(),
        reason,
        stage: dlq::STAGE_EXTRACTOR.into(),
        attempts: 1,
        original_subject: names::workers_subject(integration),
        ..DeadLetter::default()
    }
}

/// The dead letter of a worker whose event is too large to publish.
fn too_large(integration: &str, run_id: &str, worker: &str, problem: &str) -> DeadLetter {
    let reason = format!(
        "{problem}: the worker was skipped. {TOO_LARGE_FIX}, then run again; the letter holds \
         the start of the record, not an event to replay"
    );
    skipped(integration, run_id, worker, reason)
}

/// The dead letter of a listed record that cannot be normalised into a worker (no usable `id`,
/// or not an object): it cannot be published, nor matched to a user when it is gone.
fn unusable(integration: &str, run_id: &str, raw: &Value, problem: &NormaliseError) -> DeadLetter {
    let worker = record_label(raw);
    let reason = format!(
        "Sage People listed a record that cannot be read as a worker ({problem}): it was \
         skipped, and no user is created, updated or removed for it. Find the worker in Sage \
         People by the record at the start of this letter and correct it (or report the record \
         to Sage People support), then run again; nothing to replay"
    );
    skipped(integration, run_id, &worker, reason)
}

/// The name a dead letter gives a record without a usable id: the id itself when it is text
/// (on one line, cut to 128 characters), else `no-id-` and a digest of the record, so that one
/// record keeps one letter across runs and two records never share one.
fn record_label(raw: &Value) -> String {
    match raw.get("id").and_then(Value::as_str) {
        Some(id) if !id.trim().is_empty() => id
            .chars()
            .take(128)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
        _ => {
            let digest = Sha256::digest(raw.to_string().as_bytes());
            format!("no-id-{}", hex::encode(&digest[..8]))
        }
    }
}

/// Files `letter` with the start of the record it is about.
async fn file_letter(bus: &Bus, letter: &DeadLetter, raw: &Value) -> Result<(), BusError> {
    let excerpt: String = raw.to_string().chars().take(LETTER_EXCERPT_CHARS).collect();
    dlq::record(bus, letter, excerpt.into()).await?;
    Ok(())
}

pub(super) struct Listing<'a> {
    pub(super) extraction: &'a Extraction,
    pub(super) checkpoints: &'a Checkpoints,
    pub(super) journal: &'a Journal,
    pub(super) publisher: &'a mut Publisher,
    pub(super) checkpoint: &'a mut Checkpoint,
    pub(super) events: Option<EventBuilder>,
    pub(super) credentials: &'a str,
    pub(super) client: &'a SageClient,
    /// Checkpoints of published pages, each with the number of messages sent up to its end:
    /// committable once that many are acknowledged.
    pub(super) acked: VecDeque<(u64, Checkpoint)>,
    /// The publish window.
    pub(super) window: u64,
    pub(super) pending: Option<JoinHandle<Result<(), BusError>>>,
    pub(super) recorded_at: Instant,
    pub(super) pages: &'a mut u64,
    pub(super) keys: Option<&'a mut SyncKeyGuard>,
    pub(super) end_dates: crate::ended::EndDates,
}

impl Listing<'_> {
    pub(super) async fn list(&mut self, cancel: &CancellationToken) -> Result<(), Stop> {
        let integration = self.extraction.integration().to_owned();
        let (tx, mut rx) = mpsc::channel(PAGES_AHEAD);
        let fetch_stop = cancel.child_token();
        tokio::spawn(fetch(
            self.client.clone(),
            self.checkpoint.filter.clone(),
            self.checkpoint.marker.clone(),
            self.extraction.options().quota_share,
            self.checkpoint.restarts,
            tx,
            fetch_stop.clone(),
        ));
        let _stop_fetcher = fetch_stop.drop_guard();
        // Records up to here were published before the listing restarted; skip them.
        let mut skip_through = match (&self.checkpoint.done_through, &self.checkpoint.marker) {
            (Some(done), Some(marker)) if done != marker => Some(done.clone()),
            (Some(done), None) => Some(done.clone()),
            _ => None,
        };
        loop {
            let fetched = tokio::select! {
                biased;
                () = cancel.cancelled() => break Err(Stop::Interrupted),
                fetched = rx.recv() => fetched,
            };
            match fetched {
                Some(Fetched::Page { records, marker }) => {
                    self.publish_page(&records, &marker, &mut skip_through)
                        .await?;
                    metrics::counter!(metric::EXTRACTOR_PAGES, "integration" => integration.clone()).increment(1);
                    if let Some(usage) = self.client.last_api_usage() {
                        metrics::gauge!(metric::EXTRACTOR_API_USAGE_RATIO, "integration" => integration.clone())
                            .set(usage.share());
                    }
                }
                Some(Fetched::Restarted { refused }) => {
                    self.checkpoint.restarts += 1;
                    self.checkpoint.marker = None;
                    skip_through = self.checkpoint.done_through.clone();
                    tracing::warn!(%integration, run_id = %self.checkpoint.run_id, marker = %refused,
                        "Sage People refused the paging marker; restarting the listing from the first page (workers already published in this run are read again but not published again)");
                }
                Some(Fetched::End) => break Ok(()),
                Some(Fetched::Failed(source)) => break Err(source.into()),
                Some(Fetched::Quota(usage)) => {
                    let message = quota::explain(
                        &self.client.hostname(),
                        usage,
                        self.extraction.options().quota_share,
                    );
                    break Err(Stop::QuotaGuard { usage, message });
                }
                // The fetch task ended without a word: it was stopped.
                None => break Err(Stop::Interrupted),
            }
        }
    }

    async fn publish_page(
        &mut self,
        records: &[Value],
        marker: &str,
        skip_through: &mut Option<String>,
    ) -> Result<(), Stop> {
        let integration = self.extraction.integration();
        let run_id = self.checkpoint.run_id.clone();
        let events = self.events.get_or_insert_with(|| {
            EventBuilder::new(
                integration,
                &run_id,
                self.credentials,
                &self.client.hostname(),
            )
            .resending(self.checkpoint.resend_all)
            .judging_end_dates(self.end_dates)
        });
        let subject = names::workers_subject(integration);
        let observed = codec::now();
        let max_payload = max_event_bytes(self.extraction.bus().client().server_info().max_payload);
        let mut ids: Vec<&str> = Vec::with_capacity(records.len());
        let mut published = 0;
        let already = |raw: &Value| {
            let id = raw.get("id").and_then(Value::as_str);
            matches!((skip_through.as_deref(), id), (Some(limit), Some(id)) if id <= limit)
        };
        let mut verdict = match self.keys.as_deref_mut() {
            Some(guard) => {
                let skip: Vec<bool> = records.iter().map(already).collect();
                let mut verdict =
                    guard.check_page(self.checkpoint.pages, records, &skip, |worker| {
                        events.has_left(worker)
                    });
                if SyncKeyGuard::has_suspects(&verdict) {
                    // The other worker's id is read back from the seen list.
                    self.publisher.flush().await?;
                    guard
                        .confirm(
                            self.extraction.bus(),
                            self.client,
                            integration,
                            &run_id,
                            &mut verdict,
                        )
                        .await;
                }
                Some(verdict)
            }
            None => None,
        };
        for (index, raw) in records.iter().enumerate() {
            let id = raw.get("id").and_then(Value::as_str);
            if already(raw) {
                continue;
            }
            let worker = verdict
                .as_mut()
                .and_then(|v| v.workers.get_mut(index))
                .and_then(Option::take);
            if let Some(hold) = verdict.as_ref().and_then(|v| v.held.get(&index)) {
                self.checkpoint.skipped += 1;
                let worker = id.unwrap_or("(no id)");
                let letter = hold.letter(integration, &run_id, worker);
                tracing::warn!(integration, run_id = %run_id, worker, field = %hold.field,
                    others = ?hold.others, "holding back a worker whose sync key another worker shares");
                file_letter(self.extraction.bus(), &letter, raw).await?;
                if let Some(id) = id {
                    ids.push(id);
                }
                continue;
            }
            let sequence = self.checkpoint.published + published + 1;
            let built = match worker {
                Some(worker) => events.upsert_worker(raw, worker, sequence, observed),
                None => events.upsert(raw, sequence, observed),
            };
            match built {
                Ok(event) if let Some(problem) = event.too_large(max_payload) => {
                    // NATS refuses a message this large, and retrying it would stop the run
                    // for good: the worker is skipped with a dead letter that says so. It
                    // stays in the seen list, so it is not taken for a removal.
                    self.checkpoint.skipped += 1;
                    let worker = id.unwrap_or("(no id)");
                    let letter = too_large(integration, &run_id, worker, &problem);
                    tracing::error!(integration, run_id = %run_id, worker, size = event.payload.len(),
                        max_payload, "skipping a worker whose event is larger than NATS accepts");
                    file_letter(self.extraction.bus(), &letter, raw).await?;
                    if let Some(id) = id {
                        ids.push(id);
                    }
                }
                Ok(event) => {
                    // With the window full, wait for half of it at once rather than for one ack
                    // per message: far fewer wake-ups, the same bound.
                    let in_flight = self.publisher.sent() - self.publisher.acknowledged();
                    if in_flight >= self.window {
                        self.publisher
                            .settle_until(self.publisher.sent() - self.window / 2)
                            .await?;
                    }
                    // A leaver is left out of the list (so a removal when it is next settled)
                    // and their upsert kept for the `ended` event (see `crate::ended`).
                    let ended = event.ended;
                    if ended {
                        peoplesync_bus::seen::keep(
                            self.publisher,
                            integration,
                            &run_id,
                            &event.worker_id,
                            event.payload.clone(),
                        )
                        .await?;
                        if !self.end_dates.upsert_leavers {
                            continue;
                        }
                    }
                    self.publisher
                        .publish(subject.clone(), event.msg_id, event.payload, None)
                        .await?;
                    published += 1;
                    if let Some(id) = id
                        && !ended
                    {
                        ids.push(id);
                    }
                }
                Err(err) => {
                    // Not in the seen list either: without an id it cannot be matched to a
                    // user, so the letter is what tells the operator about it.
                    self.checkpoint.skipped += 1;
                    let letter = unusable(integration, &run_id, raw, &err);
                    let excerpt: String = raw.to_string().chars().take(200).collect();
                    tracing::warn!(integration, run_id = %run_id, error = %err, record = %excerpt,
                        worker = %letter.worker_id, "skipping a Sage People record that cannot be normalised, with a dead letter");
                    file_letter(self.extraction.bus(), &letter, raw).await?;
                }
            }
        }
        if !ids.is_empty() {
            let page = self.checkpoint.pages;
            self.publisher
                .publish(
                    names::seen_chunk_subject(integration, &run_id, page),
                    format!("{run_id}.seen.{page}.{}", self.checkpoint.resumes),
                    peoplesync_bus::seen::encode_chunk(ids.iter().copied()),
                    None,
                )
                .await?;
        }
        metrics::counter!(metric::EXTRACTOR_WORKERS_PUBLISHED, "integration" => integration.to_owned())
            .increment(published);
        self.checkpoint.published += published;
        self.checkpoint.pages += 1;
        *self.pages += 1;
        self.checkpoint.marker = Some(marker.to_owned());
        match skip_through.as_deref() {
            Some(limit) if marker <= limit => {}
            _ => {
                *skip_through = None;
                self.checkpoint.done_through = Some(marker.to_owned());
            }
        }
        self.acked
            .push_back((self.publisher.sent(), self.checkpoint.clone()));
        if self.acked.len() > PAGES_IN_FLIGHT
            && let Some((sent, _)) = self.acked.front()
        {
            self.publisher.settle_until(*sent).await?;
        }
        let acknowledged = self.publisher.acknowledged();
        let mut ready = None;
        while self
            .acked
            .front()
            .is_some_and(|(sent, _)| *sent <= acknowledged)
        {
            ready = self.acked.pop_front().map(|(_, checkpoint)| checkpoint);
        }
        match ready {
            Some(checkpoint) => self.commit(checkpoint).await,
            None => Ok(()),
        }
    }

    /// Waits for every page's acks and stores the latest checkpoint.
    pub(super) async fn finish(&mut self) -> Result<(), Stop> {
        self.publisher.flush().await?;
        self.acked.clear();
        self.commit(self.checkpoint.clone()).await?;
        self.settle_commit().await
    }

    /// Stores `checkpoint` in the background, once the previous one is stored.
    async fn commit(&mut self, checkpoint: Checkpoint) -> Result<(), Stop> {
        self.settle_commit().await?;
        let checkpoints = self.checkpoints.clone();
        let journal = self.journal.clone();
        let record = self.recorded_at.elapsed() >= RECORD_EVERY;
        if record {
            self.recorded_at = Instant::now();
        }
        self.pending = Some(tokio::spawn(async move {
            checkpoints.save(journal.integration(), &checkpoint).await?;
            if record {
                journal
                    .progress(&checkpoint.run_id, counts(&checkpoint))
                    .await?;
            }
            Ok(())
        }));
        Ok(())
    }

    /// Waits for the checkpoint being stored.
    async fn settle_commit(&mut self) -> Result<(), Stop> {
        if let Some(pending) = self.pending.take() {
            match pending.await {
                Ok(result) => result?,
                Err(err) => {
                    return Err(Stop::Bus(BusError::Request {
                        what: "storing the checkpoint".into(),
                        source: err.into(),
                    }));
                }
            }
        }
        Ok(())
    }
}

/// Reads pages ahead of the publisher until the end of the list, an error, the quota guard,
/// or `stop`.
async fn fetch(
    client: SageClient,
    filter: Option<String>,
    mut marker: Option<String>,
    quota_share: f64,
    // Restarts the run already made before it was resumed: the limit is per run.
    mut restarts: u64,
    pages: mpsc::Sender<Fetched>,
    stop: CancellationToken,
) {
    // Only usage read during this run counts: the client's last reading may be hours old.
    let mut watch = quota::UsageWatch::new(quota::LIMITS_EVERY, quota_share);
    // Some orgs may not let the API user read the `limits` resource although their answers
    // carry the header: a refused first reading waits for the first page's header.
    let mut first_reading_refused = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        if watch.needs_reading() {
            let reading = tokio::select! {
                () = stop.cancelled() => return,
                reading = client.read_limits() => reading,
            };
            match reading {
                Ok(usage) => watch.record_reading(usage),
                Err(err) if !first_reading_refused && err.kind() != ErrorKind::QuotaExhausted => {
                    if watch.usage().is_some() {
                        tracing::warn!(error = %err, "cannot read the org's API limits again; going on with the last reading plus the run's own requests");
                    } else {
                        tracing::warn!(error = %err, "cannot read the org's API limits; relying on the Sforce-Limit-Info header of the first page");
                    }
                    first_reading_refused = true;
                }
                Err(err) => {
                    let _ = pages.send(Fetched::Failed(err)).await;
                    return;
                }
            }
        }
        if !watch.allows_next()
            && let Some(usage) = watch.usage()
        {
            let _ = pages.send(Fetched::Quota(usage)).await;
            return;
        }
        let before = client.api_requests();
        let page = tokio::select! {
            () = stop.cancelled() => return,
            page = client.list_page(marker.as_deref(), filter.as_deref()) => page,
        };
        // Every attempt counts, a refused page's too (a refused marker is followed by more
        // pages). Another caller of the same client in between makes the count high, not low.
        let requests = client.api_requests().saturating_sub(before);
        watch.page_read(page.as_ref().ok().and_then(|page| page.api_usage), requests);
        let fetched = match page {
            Ok(page) => match page.next_marker() {
                Some(next) => {
                    marker = Some(next.to_owned());
                    Fetched::Page {
                        marker: next.to_owned(),
                        records: page.records,
                    }
                }
                None => Fetched::End,
            },
            Err(err) if err.kind() == ErrorKind::InvalidMarker && restarts < MAX_RESTARTS => {
                match marker.take() {
                    Some(refused) => {
                        restarts += 1;
                        Fetched::Restarted { refused }
                    }
                    None => Fetched::Failed(err),
                }
            }
            Err(err) => Fetched::Failed(err),
        };
        let last = matches!(fetched, Fetched::End | Fetched::Failed(_));
        if pages.send(fetched).await.is_err() || last {
            return;
        }
    }
}
