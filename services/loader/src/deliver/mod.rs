//! Delivering one batch to Oomnitza, one record at a time in one value: each record to send
//! becomes a [`Record`] carrying its event, its change-detection verdict ([`detect`]: records
//! identical to what was last written, or older than it, are settled without a request) and
//! what posting made of it ([`post`]: one bulk request per batch, retried, split on refusal;
//! an envelope refusal pauses the integration), and [`settle`] turns it into its event's
//! settlement. Before a batch, the portion's state is read when [`crate::cancel`] says it is
//! due; a portion an administrator canceled gets no more posts. While a request keeps being
//! retried, the events get progress acks ([`crate::progress`]) so the stream does not hand them
//! to another replica.

mod detect;
mod post;
mod settle;

use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use peoplesync_bus::{Bus, CancelNote};
use peoplesync_oomnitza::{ErrorKind, OomnitzaClient};
use serde_json::value::RawValue;

use crate::ack::{RetryCause, Settlement};
use crate::batcher::Batch;
use crate::cancel::{PortionWatches, Step};
use crate::config::RetrySettings;
use crate::gates::{Gates, TokenCheck};
use crate::limiter::AdaptiveLimiter;
use crate::pipeline::{Disposition, Item};
use detect::Verdict;
use post::Delivered;
pub(crate) use post::{REFUSED_RETRY, Target, is_envelope_refusal, refuse_as_a_whole};

/// Posts batches for one replica.
#[derive(Clone)]
pub struct Deliverer {
    bus: Bus,
    client: OomnitzaClient,
    retry: RetrySettings,
    limiter: AdaptiveLimiter,
    gates: Gates,
    /// Bulk requests in flight at Oomnitza (`batch.in_flight`).
    requests: Arc<Semaphore>,
    /// What this replica knows of each portion's cancel state.
    portions: Arc<PortionWatches>,
    /// This replica's name, for the run record's cancel note.
    replica: String,
}

/// One record a batch sends, followed through delivery as one value: its event, its applied
/// key and hash (moved out of the event by change detection), its verdict, and what posting
/// made of it.
#[derive(Debug)]
struct Record {
    item: Item,
    /// Its key in the applied-record store, when the record has a sync key value.
    key: Option<String>,
    /// `peoplesync_core::record_hash` of the record.
    hash: String,
    verdict: Verdict,
    /// `None` until it is posted (or when it never was).
    result: Option<Delivered>,
}

impl Record {
    /// Whether it goes to Oomnitza: new or changed, or unchanged but asked for again (drift
    /// repair sends whatever was last written).
    fn sends(&self) -> bool {
        match self.verdict {
            Verdict::Send => true,
            Verdict::Unchanged => self.item.resend,
            Verdict::WrittenByThisRun | Verdict::Stale => false,
        }
    }

    /// The JSON it sends (only items with [`Disposition::Send`] become records).
    fn json(&self) -> &RawValue {
        match &self.item.disposition {
            Disposition::Send(outgoing) => &outgoing.json,
            Disposition::Done(..) | Disposition::Refused(_) | Disposition::Leaver(_) => {
                static NULL: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
                NULL.get_or_init(Box::default)
            }
        }
    }
}

impl Deliverer {
    /// A deliverer posting with `client`, at most `in_flight` requests at once, paced by
    /// `limiter`, reporting credential failures to `gates`.
    pub fn new(
        bus: Bus,
        client: OomnitzaClient,
        retry: RetrySettings,
        limiter: AdaptiveLimiter,
        gates: Gates,
        in_flight: usize,
        replica: String,
    ) -> Deliverer {
        Deliverer {
            bus,
            client,
            retry,
            limiter,
            gates,
            requests: Arc::new(Semaphore::new(in_flight.max(1))),
            portions: Arc::default(),
            replica,
        }
    }

    /// Delivers `batch` and decides how each of its events is settled.
    pub async fn deliver(&self, batch: Batch) -> Vec<(Item, Settlement)> {
        let mut settled = Vec::with_capacity(batch.items.len());
        let mut to_send: Vec<Item> = Vec::new();
        let mut refused: Vec<Item> = Vec::new();
        let mut leavers: Vec<Item> = Vec::new();
        for item in batch.items {
            match &item.disposition {
                Disposition::Send(_) => to_send.push(item),
                Disposition::Refused(_) => refused.push(item),
                Disposition::Leaver(_) => leavers.push(item),
                Disposition::Done(outcome, letter) => {
                    let settlement = Settlement::Done(*outcome, letter.clone());
                    settled.push((item, settlement));
                }
            }
        }
        let Some(integration) = batch.integration else {
            settled.extend(refused.into_iter().map(settle::refused_by_mapping));
            for item in to_send.into_iter().chain(leavers) {
                let reason =
                    "no integration config was active when the event was mapped".to_owned();
                settled.push((
                    item,
                    Settlement::Retry(Duration::from_secs(5), reason, RetryCause::Configuration),
                ));
            }
            return settled;
        };
        // Paused by an operator while this batch was on its way (pulling stops between
        // fetches): nothing of it goes to Oomnitza, and its events wait on the stream, not
        // counted as failed, until the integration is resumed.
        if self.paused_by_an_operator(&batch.key.integration) {
            for item in to_send.into_iter().chain(refused).chain(leavers) {
                let reason = post::PAUSED.to_owned();
                let settlement = Settlement::Retry(post::PAUSED_RETRY, reason, RetryCause::Held);
                settled.push((item, settlement));
            }
            return settled;
        }
        let portion = batch.key.run_id.clone();
        // An administrator's cancel stops the run's leaver actions too (each may post into the
        // portion or delete a user, which cannot be taken back).
        if !leavers.is_empty()
            && self
                .admit(&batch.key.integration, &portion, leavers.len(), true)
                .await
        {
            settled.extend(leavers.into_iter().map(crate::leavers::canceled));
        } else {
            let processing_retry = Duration::from_millis(self.retry.max_delay_ms);
            let handling = crate::leavers::Leavers {
                bus: &self.bus,
                client: &self.client,
                gates: &self.gates,
                integration: &integration,
                processing_retry,
            };
            settled.extend(handling.handle_all(leavers).await);
        }
        let target = Target {
            integration: &integration,
            portion: &portion,
            revision: batch.key.revision,
        };
        if !refused.is_empty() {
            self.report_refused(&target, &refused).await;
            settled.extend(refused.into_iter().map(settle::refused_by_mapping));
        }
        if to_send.is_empty() {
            return settled;
        }
        // Paused because Oomnitza refused this integration's records as a whole: batches
        // already on their way are not posted either; their events wait on the stream.
        if let Some((_, reason)) = self.gates.refusal(&batch.key.integration) {
            for item in to_send {
                let settlement =
                    Settlement::Retry(REFUSED_RETRY, reason.clone(), RetryCause::Configuration);
                settled.push((item, settlement));
            }
            return settled;
        }

        // Change detection: only new or changed records are sent; the others are settled now.
        let mut written = Vec::new();
        let mut sending = Vec::with_capacity(to_send.len());
        for record in detect::check(&self.bus, &portion, to_send).await {
            if record.sends() {
                sending.push(record);
            } else {
                settled.push(settle::settle(record, &portion, &mut written));
            }
        }
        if !sending.is_empty() {
            if self
                .admit(&batch.key.integration, &portion, sending.len(), false)
                .await
            {
                for record in &mut sending {
                    record.result = Some(Delivered::Canceled);
                }
            } else {
                self.post_isolating(&target, &mut sending).await;
            }
            // Posted after the portion was finalized: by a replica that stalled past the ack
            // wait, say, after the events' redelivery elsewhere was written and the run
            // finalized with it. What the applied store holds now tells those (settled as
            // written before) from records never loaded, which alone are dead-lettered.
            let (mut late, on_time): (Vec<Record>, Vec<Record>) = sending
                .into_iter()
                .partition(|r| matches!(r.result, Some(Delivered::Finalized)));
            if !late.is_empty() {
                detect::judge(&self.bus, &portion, &mut late).await;
            }
            settled.extend(
                on_time
                    .into_iter()
                    .chain(late)
                    .map(|record| settle::settle(record, &portion, &mut written)),
            );
        }
        self.bus.applied().remember(&written).await;
        settled
    }

    /// Whether an operator paused `integration` (a pause for a configuration refusal holds
    /// only its sends, see [`Deliverer::deliver`]).
    fn paused_by_an_operator(&self, integration: &str) -> bool {
        self.gates.is_paused(integration) && self.gates.refusal(integration).is_none()
    }

    /// Whether `portion` was canceled in Oomnitza, before posting `records` records to it:
    /// starts a read of the portion's state when [`crate::cancel`] says it is due (waiting for
    /// a read in flight only when too many records were posted past the last one, or when what
    /// follows cannot be taken back: `irreversible`). No read is made while Oomnitza cannot take
    /// records.
    async fn admit(
        &self,
        integration: &str,
        portion: &str,
        records: usize,
        irreversible: bool,
    ) -> bool {
        if self.gates.failure().is_some() {
            return self.portions.is_canceled(portion);
        }
        let records = u64::try_from(records).unwrap_or(u64::MAX);
        loop {
            let now = Instant::now();
            let step = match irreversible {
                true => self.portions.step_irreversible(portion, records, now),
                false => self.portions.step(portion, records, now),
            };
            match step {
                Step::Post => return false,
                Step::Canceled { first } => {
                    if first {
                        self.note_canceled(integration, portion).await;
                    }
                    return true;
                }
                Step::Wait(mut reads) => {
                    // Bounded: a read in flight ends (its request has a timeout), and its
                    // report is made even if its task dies.
                    let _ = reads.changed().await;
                }
                Step::Read { issued } => {
                    let (client, gates) = (self.client.clone(), self.gates.clone());
                    // Reports the read even if the task never ends well, so no batch waits
                    // for it for ever.
                    let report = self.portions.report_read(portion, issued);
                    let portion = portion.to_owned();
                    tokio::spawn(async move {
                        let canceled = match client.portion(&portion).await {
                            Ok(status) => Some(status.is_some_and(|s| s.canceled)),
                            // A token refused everywhere closes the credential gate; one
                            // that only may not read portions must not, or the gate would
                            // reopen at its probe and close again at the next read.
                            // Warned once per passed check (at most every 30 s), not per read.
                            Err(err) if err.kind() == ErrorKind::Unauthorized => {
                                let check = gates
                                    .refuse_if_the_token_is_refused(&client, &err, true)
                                    .await;
                                if check == TokenCheck::Passes {
                                    tracing::warn!(portion, error = %err,
                                        "Oomnitza refuses the token a read of the portion's state, though the credential check passes: an administrator's cancel is not noticed while loading; give the token the right to read bulk portions");
                                }
                                None
                            }
                            Err(err) => {
                                tracing::debug!(portion, error = %err, "cannot read the portion's state; going on");
                                None
                            }
                        };
                        report.done(canceled);
                    });
                }
            }
        }
    }

    /// Remembers that `portion` was canceled, and notes it on the run record (once per replica).
    pub(super) async fn mark_canceled(&self, integration: &str, portion: &str) {
        if self.portions.mark_canceled(portion, Instant::now()) {
            self.note_canceled(integration, portion).await;
        }
    }

    /// Notes on the run record that `portion` was seen canceled (the first replica's note stays).
    async fn note_canceled(&self, integration: &str, portion: &str) {
        tracing::warn!(
            integration,
            portion,
            "the portion was canceled in Oomnitza; not sending more of this run"
        );
        let note = CancelNote {
            noticed_by: self.replica.clone(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        let runs = self.bus.runs();
        let noted = runs
            .update(integration, portion, |record| {
                let new = record.canceled.is_none();
                if new {
                    record.canceled = Some(note.clone());
                }
                new
            })
            .await;
        if let Err(err) = noted {
            tracing::warn!(integration, portion, error = %err, "cannot note the cancel on the run record");
        }
    }

    /// Reports records the mapping refused to Oomnitza as failed — as they came from Sage
    /// People, with the bulk envelope's `error` set to the reason (one request per reason) —
    /// so they show in the run's log in Oomnitza, as its own connector's do. Best effort: the
    /// dead letter is what peoplesync keeps; a report that fails is logged. Nothing is reported
    /// to a canceled portion or while a configuration refusal holds the integration.
    async fn report_refused(&self, target: &Target<'_>, items: &[Item]) {
        let integration = &target.integration.config().id;
        if self.gates.refusal(integration).is_some()
            || self
                .admit(integration, target.portion, items.len(), false)
                .await
        {
            return;
        }
        let mut by_reason: std::collections::BTreeMap<&str, Vec<Box<RawValue>>> =
            std::collections::BTreeMap::new();
        for item in items {
            let Disposition::Refused(letter) = &item.disposition else {
                continue;
            };
            let raw = peoplesync_bus::codec::decode_worker_event(&item.message.payload)
                .ok()
                .and_then(|event| String::from_utf8(event.raw.to_vec()).ok())
                .and_then(|raw| RawValue::from_string(raw).ok());
            if let Some(raw) = raw {
                by_reason.entry(&letter.reason).or_default().push(raw);
            }
        }
        for (reason, records) in by_reason {
            let records: Vec<&RawValue> = records.iter().map(|r| &**r).collect();
            if let Err(err) = self.post_with_retry(target, &records, Some(reason)).await {
                tracing::warn!(integration, portion = target.portion, error = %err,
                    "cannot report records the mapping refused to Oomnitza; they are dead-lettered");
            }
        }
    }
}
