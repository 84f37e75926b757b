//! Publishing the removals a run decided on, and — for lists read with a `source_filter` —
//! telling a worker who left from one who only moved out of the filter ([`LeaverCheck`]).

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use peoplesync_bus::seen::ReadError;
use peoplesync_bus::{Bus, BusError, Publisher, codec, names};
use peoplesync_sage_people::SageClient;

use super::diff;
use crate::ended::EndDates;
use crate::error::Stop;
use crate::event::EventBuilder;

/// Workers no longer listed whose ids are taken from the lists at a time, to be checked with
/// Sage People together ([`LeaverCheck`]); the lists are not read while they are.
const CHECK_BATCH: usize = 64;
/// Of those, how many are read from Sage People at once.
const READS_AT_ONCE: usize = 4;

/// Why removals could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Sage People failed to say whether a worker no longer listed has left; nothing after
    /// that worker is published (publishing again publishes the same ones, deduplicated).
    #[error(transparent)]
    Source(#[from] peoplesync_sage_people::Error),
}

impl From<ReadError> for PublishError {
    fn from(err: ReadError) -> Self {
        PublishError::Bus(err.into())
    }
}

impl From<PublishError> for Stop {
    fn from(err: PublishError) -> Self {
        match err {
            PublishError::Bus(err) => err.into(),
            PublishError::Source(err) => err.into(),
        }
    }
}

/// How a worker no longer listed by a run with a `source_filter` is told apart from one who
/// only moved out of the filter: read by id from Sage People, and judged by the rule a
/// listing applies to the workers it lists ([`EndDates::has_left`]).
#[derive(Debug, Clone, Copy)]
pub struct LeaverCheck<'a> {
    /// Reads the worker.
    pub client: &'a SageClient,
    /// How end dates are judged.
    pub end_dates: EndDates,
}

impl LeaverCheck<'_> {
    /// This check, for lists read with `filter`; none without a filter, where a worker no
    /// longer listed is no longer in Sage People's list at all.
    pub fn for_filter(self, filter: Option<&str>) -> Option<Self> {
        filter.is_some_and(|f| !f.trim().is_empty()).then_some(self)
    }

    /// Whether worker `id`, no longer listed by run `run_id`, has left: Sage People no longer
    /// has them (`404`), or their record says they have. A record that cannot be normalised
    /// cannot be judged, and counts as a leaver, as it would without the filter.
    async fn has_left(
        &self,
        integration: &str,
        run_id: &str,
        id: &str,
    ) -> Result<bool, peoplesync_sage_people::Error> {
        let raw = self.client.get_employee(id).await.map_err(|err| {
            let message = format!(
                "{err} (while checking whether worker {id}, no longer listed by run {run_id} \
                 of {integration}, left or only moved out of its source_filter; the run's \
                 removals are published once Sage People answers)"
            );
            err.with_message(message)
        })?;
        let Some(raw) = raw else {
            return Ok(true);
        };
        match peoplesync_core::Worker::from_raw(&raw) {
            Ok(worker) => Ok(self.end_dates.has_left(&worker)),
            Err(err) => {
                tracing::warn!(integration, run_id, worker = id, error = %err,
                    "Sage People's record of a worker no longer listed cannot be normalised, so whether they left cannot be told; publishing them as removed");
                Ok(true)
            }
        }
    }
}

/// What [`publish`] did: the leaver events published, and the workers no longer listed who
/// are still employed (moved out of the filter), for whom none was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// `removed` and `ended` events published.
    pub leavers: u64,
    /// Workers no longer listed but still employed in Sage People.
    pub moved_out: u64,
}

/// Publishes the removals between `baseline` and `run_id` as events of run `publish_in`,
/// numbered after `first_sequence`; returns how many, and how many were skipped as moved out
/// of the filter. With `check` (lists read with a
/// `source_filter`), a worker no longer listed is published only once Sage People says they
/// left; one still employed is logged and skipped.
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    bus: &Bus,
    publisher: &mut Publisher,
    events: &EventBuilder,
    integration: &str,
    baseline: &str,
    run_id: &str,
    first_sequence: u64,
    check: Option<LeaverCheck<'_>>,
) -> Result<Published, PublishError> {
    let subject = names::workers_subject(integration);
    let observed = codec::now();
    let seen = bus.seen();
    let mut diff = diff(bus, integration, baseline, run_id).await?;
    let mut published = 0;
    let mut employed = 0;
    loop {
        // A worker still listed but gone has their upsert kept with the list: offboard them
        // with what was last known of them (no need to ask Sage People).
        let mut batch: Vec<(String, Option<Bytes>)> = Vec::with_capacity(CHECK_BATCH);
        while batch.len() < CHECK_BATCH {
            let Some(id) = diff.next_removed().await? else {
                break;
            };
            let kept = seen.kept(integration, run_id, &id).await?;
            batch.push((id, kept));
        }
        if batch.is_empty() {
            break;
        }
        let left: Vec<bool> = match check {
            Some(check) => {
                // Owned ids: futures borrowing the batch would not be `Send` for every lifetime.
                let unknown = batch
                    .iter()
                    .map(|(id, kept)| kept.is_none().then(|| id.clone()));
                futures::stream::iter(unknown.collect::<Vec<_>>())
                    .map(|unknown| async move {
                        match unknown {
                            Some(id) => check.has_left(integration, run_id, &id).await,
                            None => Ok(true),
                        }
                    })
                    .buffered(READS_AT_ONCE)
                    .try_collect()
                    .await?
            }
            None => vec![true; batch.len()],
        };
        for ((id, kept), left) in batch.into_iter().zip(left) {
            if !left {
                employed += 1;
                tracing::info!(integration, run_id, worker = %id,
                    "a worker no longer listed is still employed in Sage People: they moved out of the source_filter, they did not leave; not published as a leaver");
                continue;
            }
            published += 1;
            let event = match kept {
                Some(kept) => events.ended(&kept, first_sequence + published, observed)?,
                None => events.removed(&id, first_sequence + published, observed),
            };
            publisher
                .publish(subject.clone(), event.msg_id, event.payload, None)
                .await?;
        }
    }
    publisher.flush().await?;
    if employed > 0 {
        metrics::counter!(peoplesync_runtime::metrics::names::EXTRACTOR_MOVED_OUT,
            "integration" => integration.to_owned())
        .increment(employed);
        tracing::warn!(
            integration,
            run_id,
            employed,
            published,
            "workers no longer listed are still employed in Sage People (moved out of the source_filter, not leavers); they are not published as leavers, and the baseline moves past them"
        );
    }
    Ok(Published {
        leavers: published,
        moved_out: employed,
    })
}
