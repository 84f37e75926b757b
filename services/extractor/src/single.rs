//! Commands about one worker and about run state: read one worker from Sage People (for
//! previews), publish one worker as a single-worker run (the loader finalizes it like any run),
//! report the current run's progress, and release held removals in a run of their own. The
//! worker's read fits inside the control plane's wait ([`WORKER_TIME`]), whatever
//! `sage_retry_secs` says, so that a Sage People failure reaches the operator in its own words.
//! Both worker commands keep to the integration's `source_filter`, as a full run does: a
//! worker outside it is neither previewed nor synced, since no full run would list them.

use peoplesync_bus::codec;
use peoplesync_bus::control::{
    CommandError, Progress, RemovalsReleased, WORKER_WAIT, WorkerFetched, WorkerSynced,
};
use peoplesync_bus::{BusError, RunState, names};
use peoplesync_sage_people::{ErrorKind, SageClient};
use serde_json::Value;

use crate::deadline::{Budget, CommandTime};
use crate::event::{EventBuilder, TOO_LARGE_FIX, max_event_bytes};
use crate::journal::{Counts, Journal};
use crate::removals::{self, RemovalError};
use crate::run::Extraction;
use crate::settings::{self, IntegrationSettings, SettingsError};

fn error(code: &str, message: impl Into<String>) -> CommandError {
    CommandError {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Why a command of this module failed: the error reply it becomes. NATS, Sage People and
/// settings failures convert into it with `?`, as code `failed` with their message.
#[derive(Debug)]
pub struct Failure(pub CommandError);

impl From<CommandError> for Failure {
    fn from(err: CommandError) -> Self {
        Failure(err)
    }
}

impl From<Failure> for CommandError {
    fn from(failure: Failure) -> Self {
        failure.0
    }
}

impl From<BusError> for Failure {
    fn from(err: BusError) -> Self {
        Failure(error("failed", err.to_string()))
    }
}

impl From<peoplesync_sage_people::Error> for Failure {
    fn from(err: peoplesync_sage_people::Error) -> Self {
        Failure(error("failed", err.to_string()))
    }
}

impl From<SettingsError> for Failure {
    fn from(err: SettingsError) -> Self {
        Failure(error("failed", err.to_string()))
    }
}

impl From<removals::PublishError> for Failure {
    fn from(err: removals::PublishError) -> Self {
        match err {
            removals::PublishError::Bus(err) => err.into(),
            removals::PublishError::Source(err) => err.into(),
        }
    }
}

impl From<RemovalError> for Failure {
    fn from(err: RemovalError) -> Self {
        match err {
            RemovalError::NotHeld(message) => Failure(error("not_found", message)),
            RemovalError::Started(message) => Failure(error("invalid", message)),
            RemovalError::Bus(err) => err.into(),
        }
    }
}

/// The integration's settings now, and the client of the credential set they name.
async fn client(extraction: &Extraction) -> Result<(SageClient, IntegrationSettings), Failure> {
    let settings = settings::load(extraction.bus(), extraction.integration()).await?;
    let client = extraction
        .sources()
        .client(&settings.credentials)
        .map_err(|problem| {
            error(
                "failed",
                format!(
                    "integration {} reads with credential set {:?}, which cannot be used: {problem}",
                    extraction.integration(),
                    settings.credentials
                ),
            )
        })?;
    Ok((client, settings))
}

fn check_id(id: &str) -> Result<(), CommandError> {
    let valid = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(error(
            "invalid",
            format!(
                "{id:?} is not a Sage People employee id (letters and digits, e.g. a2G7E000000LlIDUA0)"
            ),
        ))
    }
}

/// How long the read of one worker (`fetch`, `worker`: token and request, with retries) may
/// take: derived from [`WORKER_WAIT`], how long the control plane waits for the answer. With
/// the client's own budget (`sage_retry_secs`, up to an hour) a Sage People outage would
/// outlast that wait, and the operator would see only that the extractor did not answer.
pub const WORKER_TIME: CommandTime = CommandTime::within(WORKER_WAIT, "reading one worker");

/// Reads employee `id` with `client` within `budget`.
async fn read(budget: &Budget, client: &SageClient, id: &str) -> Result<Option<Value>, Failure> {
    let what = format!("the request for employee {id}");
    let raw = budget
        .call(client, &what, |client| async move {
            client.get_employee(id).await
        })
        .await?;
    Ok(raw)
}

/// Refuses worker `raw` (read as `id`) when the integration has a `source_filter` that Sage
/// People says the worker does not pass: `doing` is what would not happen, for the message.
///
/// Sage People is asked rather than the filter evaluated here, so its own comparison rules
/// decide, as in a full run. A worker outside the filter is never listed by a full run: synced,
/// they would become a user no run's removals ever cover (never handled as a leaver), or
/// overwrite the user of another integration whose filter does include them.
async fn keep_to_filter(
    budget: &Budget,
    client: &SageClient,
    settings: &IntegrationSettings,
    raw: &Value,
    id: &str,
    doing: &str,
) -> Result<(), Failure> {
    let Some(filter) = settings.source_filter.as_deref() else {
        return Ok(());
    };
    // The id as Sage People names the worker, which the listing compares with.
    let named = raw.get("id").and_then(Value::as_str).unwrap_or(id);
    let what = format!("the filter check of employee {named}");
    let passes = budget
        .call(client, &what, |client| async move {
            client.passes_filter(named, filter).await
        })
        .await
        .map_err(|err| match err.kind() {
            ErrorKind::Configuration => Failure(error(
                "misconfigured",
                format!(
                    "{err}; the integration has a source_filter, so worker {id} is not {doing} \
                     (a full run keeps to the filter; remove source_filter to act on workers \
                     one by one without it)"
                ),
            )),
            _ => err.into(),
        })?;
    if passes {
        return Ok(());
    }
    Err(error(
        "invalid",
        format!(
            "worker {id} is outside the integration's source_filter `{filter}` (Sage People's \
             own answer to it), so it would not be loaded: a full run does not list it. Not \
             {doing}; change the source_filter if this worker belongs to the integration"
        ),
    )
    .into())
}

/// Reads worker `id` without publishing it, within [`WORKER_TIME`]; a worker outside the
/// integration's `source_filter` is refused, saying that it would not be loaded.
pub async fn fetch(extraction: &Extraction, id: &str) -> Result<WorkerFetched, Failure> {
    let budget = Budget::start(WORKER_TIME);
    check_id(id)?;
    let (client, settings) = client(extraction).await?;
    let raw = read(&budget, &client, id).await?;
    if let Some(raw) = &raw {
        keep_to_filter(&budget, &client, &settings, raw, id, "previewed").await?;
    }
    Ok(WorkerFetched {
        found: raw.is_some(),
        raw,
        credentials: settings.credentials,
        hostname: client.hostname(),
    })
}

/// Reads worker `id` within [`WORKER_TIME`] and publishes it as a single-worker run; a worker
/// outside the integration's `source_filter` is refused before any run starts.
///
/// Only the read is bounded: the run is journaled once the worker is read, and its start,
/// event and completion are then written whatever the time, because a sync abandoned between
/// them would leave a run that shows as running and never ends; should one of them fail, the
/// run is recorded as failed. A read given up, or an event larger than NATS accepts, starts no
/// run.
pub async fn sync(extraction: &Extraction, id: &str) -> Result<WorkerSynced, Failure> {
    let budget = Budget::start(WORKER_TIME);
    check_id(id)?;
    let integration = extraction.integration();
    let (client, settings) = client(extraction).await?;
    let Some(raw) = read(&budget, &client, id).await? else {
        return Ok(WorkerSynced {
            found: false,
            run_id: None,
        });
    };
    keep_to_filter(&budget, &client, &settings, &raw, id, "synced").await?;
    let bus = extraction.bus();
    let run_id = uuid::Uuid::now_v7().to_string();
    // A single-worker sync always writes: it is how an operator puts one user right.
    let end_dates = crate::ended::EndDates::of(integration, &settings);
    let events = EventBuilder::new(
        integration,
        &run_id,
        &settings.credentials,
        &client.hostname(),
    )
    .resending(true)
    .judging_end_dates(end_dates);
    let event = events.upsert(&raw, 1, codec::now()).map_err(|err| {
        error(
            "failed",
            format!("Sage People's record of worker {id} cannot be used: {err}"),
        )
    })?;
    // Writing a leaver's record would undo the leaver action (or recreate a deleted user).
    if event.ended && !end_dates.upsert_leavers {
        return Err(error(
            "invalid",
            format!(
                "worker {id} has left (employment inactive, or end date passed); with leaver action \"{}\" their user is handled by the leaver policy, not written by a sync",
                settings.leaver_action.as_str()
            ),
        )
        .into());
    }
    // NATS refuses it at once; a full run dead-letters such a worker.
    let max = max_event_bytes(bus.client().server_info().max_payload);
    if let Some(problem) = event.too_large(max) {
        return Err(error(
            "invalid",
            format!("{problem}: not synced, and no run was started. {TOO_LARGE_FIX}, then sync the worker again"),
        )
        .into());
    }
    let journal = Journal::new(bus, integration, false);
    let published = async {
        journal.start(&run_id, "worker", false).await?;
        let mut publisher = bus.publisher(4);
        publisher
            .publish(
                names::workers_subject(integration),
                event.msg_id,
                event.payload,
                None,
            )
            .await?;
        publisher.flush().await?;
        let counts = Counts {
            published: 1,
            ..Counts::default()
        };
        journal.complete(&run_id, counts, None).await
    };
    if let Err(err) = published.await {
        // Whatever failed once the run was recorded, it must not show as running for ever.
        let message = format!("the single-worker sync of {id} failed: {err}");
        if let Err(also) = journal
            .fail(&run_id, RunState::Failed, Counts::default(), &message)
            .await
        {
            tracing::warn!(integration, %run_id, error = %also, "cannot record that the single-worker run failed");
        }
        return Err(err.into());
    }
    tracing::info!(integration, %run_id, worker = id, "published a single-worker run");
    Ok(WorkerSynced {
        found: true,
        run_id: Some(run_id),
    })
}

/// The progress of the integration's unfinished full run, as its checkpoint has it.
pub async fn progress(extraction: &Extraction) -> Result<Progress, Failure> {
    let bus = extraction.bus();
    let integration = extraction.integration();
    let Some(checkpoint) = bus.checkpoints().load(integration).await? else {
        return Ok(Progress::default());
    };
    let record = extraction.journal().record(&checkpoint.run_id).await?;
    let running = record.is_some_and(|r| r.state == RunState::Running);
    Ok(Progress {
        running,
        run_id: Some(checkpoint.run_id),
        published: checkpoint.published,
        pages: checkpoint.pages,
    })
}

/// Publishes the removals held by run `run_id` in a run of their own; with `rebaseline`,
/// publishes none and only makes the held run's list the baseline (after a deliberate change
/// of the `source_filter`, say, when the workers missing did not leave).
pub async fn approve_removals(
    extraction: &Extraction,
    run_id: &str,
    rebaseline: bool,
) -> Result<RemovalsReleased, Failure> {
    let integration = extraction.integration();
    let bus = extraction.bus();
    let _settling = extraction.removal_lock().lock().await;
    if rebaseline {
        let journal = Journal::new(bus, integration, false);
        let held = removals::rebaseline(bus, &journal, run_id).await?;
        tracing::warn!(
            integration,
            held_run = run_id,
            held,
            "the held run's list is the new baseline: its held removals were dropped without any leaver action"
        );
        return Ok(RemovalsReleased { released: 0 });
    }
    let release = removals::begin_release(bus, integration, run_id).await?;
    let (client, settings) = client(extraction).await?;
    let journal = Journal::new(bus, integration, false);
    journal
        .start_or_reuse(&release.release_run, "approve-removals")
        .await?;
    let released = match release_held(extraction, &journal, &release, &client, &settings).await {
        Ok(released) => released,
        Err(failure) => {
            // The release run must not stay `running` with nothing behind it: it fails,
            // saying how to finish it. Approving again reuses it and publishes the removals
            // again (deduplicated), from the first.
            let message = format!(
                "{}; approve run {}'s held removals again to finish this run",
                failure.0.message, release.held_run
            );
            if let Err(err) = journal
                .fail(
                    &release.release_run,
                    RunState::Failed,
                    Counts::default(),
                    &message,
                )
                .await
            {
                tracing::warn!(integration, release_run = %release.release_run, error = %err,
                    "cannot record that the approval failed; its run shows running until the removals are approved again");
            }
            return Err(failure);
        }
    };
    removals::finish_release(bus, integration, &release).await?;
    tracing::info!(integration, held_run = %release.held_run, release_run = %release.release_run,
        released, held = release.count, "released removals held for approval");
    Ok(RemovalsReleased { released })
}

/// Publishes `release`'s held removals in its run and completes that run; how many were
/// published.
async fn release_held(
    extraction: &Extraction,
    journal: &Journal,
    release: &removals::Release,
    client: &SageClient,
    settings: &IntegrationSettings,
) -> Result<u64, Failure> {
    let integration = extraction.integration();
    let bus = extraction.bus();
    let mut publisher = bus.publisher(extraction.options().publish_window);
    let events = EventBuilder::new(
        integration,
        &release.release_run,
        &settings.credentials,
        &client.hostname(),
    );
    // The held run's filter decides whether its missing workers are checked with Sage People.
    let check = removals::LeaverCheck {
        client,
        end_dates: crate::ended::EndDates::of(integration, settings),
    };
    let done = removals::publish(
        bus,
        &mut publisher,
        &events,
        integration,
        &release.baseline,
        &release.held_run,
        0,
        check.for_filter(Some(&release.filter)),
    )
    .await?;
    let released = done.leavers;
    journal
        .moved_out(&release.release_run, done.moved_out)
        .await?;
    let counts = Counts {
        removed: released,
        ..Counts::default()
    };
    // The held run gives its removals up before the release run is reported complete, so no
    // one sees the release completed while the removals still show as held.
    journal.removals_released(&release.held_run).await?;
    journal.complete(&release.release_run, counts, None).await?;
    Ok(released)
}
