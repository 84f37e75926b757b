//! Handling one leaver: an `ended` event (still listed, but inactive or past their end date)
//! or a `removed` one (no longer listed). The user is found in Oomnitza by the field mapped
//! from the Sage People id; the assets they hold are read; then the integration's policy is
//! applied — nothing (the assets are still read for the report), the `[[leavers.set]]` fields
//! sent as an update-only bulk record into the run's portion (keyed by that same id field, so it
//! can only change the user found, and shows in the run's log in Oomnitza), or a `DELETE` (never
//! of a user holding assets unless `delete_with_assets`). The result goes to the run's leavers
//! report (`peoplesync_bus::leavers`), and the user's applied hash is dropped so that a rehire
//! is written again in full. Every step is idempotent, so a redelivered event is harmless.

use futures::StreamExt;
use peoplesync_bus::leavers::{self, HeldAsset, LeaverEntry};
use peoplesync_bus::{Bus, DeadLetter, Outcome};
use peoplesync_core::{Integration, LeaverAction, RecordInput, Tracking, Worker};
use peoplesync_oomnitza::{Error, ErrorKind, OomnitzaClient, read_attribute, user_ident};
use peoplesync_runtime::metrics::names as metric;
use serde_json::Value;

use crate::ack::{RetryCause, Settlement};
use crate::gates::{Failure, Gates, TokenCheck};
use crate::pipeline::{Disposition, Item};

mod update;

use update::{post_update, shows_all};

/// What the pipeline knows of a leaver.
#[derive(Debug)]
pub struct LeaverTask {
    /// The worker as last listed (only the id for one no longer listed).
    pub worker: Worker,
    /// The raw record as last listed (`null` when not listed).
    pub raw: Value,
    /// Where it was read from.
    pub tracking: Tracking,
    /// Still listed (an `ended` event) rather than gone from the listing.
    pub listed: bool,
}

impl LeaverTask {
    /// Why they are a leaver: `removed`, `inactive` or `end_date`.
    fn reason(&self) -> &'static str {
        if !self.listed {
            "removed"
        } else if self.worker.employment_active == Some(false) {
            "inactive"
        } else {
            "end_date"
        }
    }
}

/// Why a leaver could not be handled now.
enum Failed {
    /// Try again later.
    Retry(String),
    /// Oomnitza refused the credentials or kept failing past the client's retries: try again
    /// later, and when Oomnitza as a whole is down (or refuses the token everywhere), close
    /// the intake as a failing bulk post does, so the leaver is not delivered again (and does
    /// not run out of deliveries) until Oomnitza answers. A token refused here but not by the
    /// credential check lacks a right: the leaver is dead-lettered at once, saying so.
    Oomnitza(Error),
    /// Oomnitza has not processed the run's records yet: try again later, as long as it takes.
    Processing(String),
    /// Dead-letter it with this reason.
    Dead(String, Option<u16>),
    /// Oomnitza refused the update's envelope as a whole (a `400`, such as a `[[leavers.set]]`
    /// field id the tenant does not have): a configuration error, which pauses the integration
    /// as a refused bulk post does; the leaver waits on the stream for the fix.
    Refused(Error),
}

fn from_oomnitza(err: Error) -> Failed {
    match err.kind() {
        ErrorKind::Transient | ErrorKind::Unauthorized => Failed::Oomnitza(err),
        _ => Failed::Dead(err.to_string(), err.status()),
    }
}

/// Leavers handled at once per batch: each takes a few sequential Oomnitza calls.
const CONCURRENT_LEAVERS: usize = 4;

/// How long a leaver whose calls failed waits before it is delivered again, unless Oomnitza
/// asked for longer with `Retry-After` (then that, up to [`MAX_RETRY`]).
const RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest wait a `Retry-After` can set for a leaver's next delivery.
const MAX_RETRY: std::time::Duration = std::time::Duration::from_secs(300);

/// How soon a leaver goes back to the stream when the intake is closed: it is not delivered
/// again while the intake stays closed, so this only says how soon after it reopens.
const HELD_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// What handling the leavers of one integration's batch needs.
#[derive(Debug, Clone, Copy)]
pub struct Leavers<'a> {
    /// Where leavers reports and applied hashes are kept.
    pub bus: &'a Bus,
    /// Oomnitza.
    pub client: &'a OomnitzaClient,
    /// The replica's intake, closed when Oomnitza fails as a whole.
    pub gates: &'a Gates,
    /// The integration's config, with its leaver policy.
    pub integration: &'a Integration,
    /// How soon a leaver whose update Oomnitza has not processed yet is tried again (its
    /// update is posted again, which is harmless).
    pub processing_retry: std::time::Duration,
}

impl Leavers<'_> {
    /// Handles the leavers of a batch, a few at a time, and says how to settle each event. Once
    /// the intake closes (Oomnitza down, or refusing the token), the leavers whose turn has not
    /// come are not tried: each would only meet the same failure after the client's retries.
    /// They go back to the stream untried ([`held`]) and wait there until the intake opens.
    pub async fn handle_all(&self, items: Vec<Item>) -> Vec<(Item, Settlement)> {
        futures::stream::iter(items)
            .map(|item| async move {
                let settlement = match &item.disposition {
                    Disposition::Leaver(_) if let Some((_, reason)) = self.gates.failure() => {
                        held(reason)
                    }
                    // Paused since the batch was pulled because Oomnitza refused the config.
                    Disposition::Leaver(_)
                        if let Some((_, reason)) = self.gates.refusal(&item.key.integration) =>
                    {
                        refused(reason)
                    }
                    Disposition::Leaver(task) => self.handle(&item, task).await,
                    // Only leavers are handed over; anything else goes back to the stream.
                    _ => Settlement::Retry(
                        std::time::Duration::from_secs(5),
                        "not a leaver".into(),
                        RetryCause::Transient,
                    ),
                };
                (item, settlement)
            })
            .buffer_unordered(CONCURRENT_LEAVERS)
            .collect()
            .await
    }

    /// Handles `item`'s leaver with the integration's policy and says how to settle the event. A
    /// leaver waiting for Oomnitza to process its run's records is noted on `/readyz` (and so in
    /// `syncctl status`) until a leaver of the integration settles, or for three waits at most.
    pub async fn handle(&self, item: &Item, task: &LeaverTask) -> Settlement {
        let Leavers {
            gates,
            processing_retry,
            ..
        } = *self;
        let settlement = self.settle(item, task).await;
        let name = &item.key.integration;
        match &settlement {
            Settlement::Retry(_, reason, RetryCause::Processing) => gates.note_leavers_waiting(
                name,
                format!(
                    "waiting for Oomnitza to process the records of run {}, for up to {} h after \
                 the worker was read: {reason}",
                    item.key.run_id,
                    update::PROCESSING_PATIENCE.as_secs() / 3600
                ),
                (processing_retry * 3).max(std::time::Duration::from_secs(60)),
            ),
            Settlement::Done(..) => gates.clear_leavers_waiting(name),
            _ => {}
        }
        settlement
    }

    /// How to settle `item`'s leaver once its policy was tried.
    async fn settle(&self, item: &Item, task: &LeaverTask) -> Settlement {
        let Leavers {
            bus,
            client,
            gates,
            integration,
            processing_retry,
        } = *self;
        let name = &item.key.integration;
        match act(bus, client, integration, item, task).await {
            Ok(entry) => {
                metrics::counter!(metric::LOADER_LEAVERS, "integration" => name.clone(), "action" => entry.action.clone())
                .increment(1);
                if !entry.assets.is_empty() {
                    metrics::counter!(metric::LOADER_LEAVERS_WITH_ASSETS, "integration" => name.clone())
                    .increment(1);
                }
                tracing::info!(integration = %name, run_id = %item.key.run_id, worker = %item.worker_id,
                action = %entry.action, assets = entry.assets.len(), "leaver handled");
                Settlement::Done(Outcome::Leaver, None)
            }
            Err(Failed::Retry(reason)) => {
                tracing::warn!(integration = %name, run_id = %item.key.run_id, worker = %item.worker_id,
                    %reason, delivery = item.delivered, "leaver not handled yet; it is tried again");
                Settlement::Retry(RETRY, reason, RetryCause::Transient)
            }
            Err(Failed::Oomnitza(err)) => {
                tracing::warn!(integration = %name, run_id = %item.key.run_id, worker = %item.worker_id,
                error = %err, "Oomnitza failed while handling a leaver; the event goes back to the stream");
                oomnitza_failed(client, gates, item, &err).await
            }
            Err(Failed::Processing(reason)) => {
                Settlement::Retry(processing_retry, reason, RetryCause::Processing)
            }
            Err(Failed::Dead(reason, status)) => {
                tracing::warn!(integration = %name, run_id = %item.key.run_id, worker = %item.worker_id,
                %reason, "leaver cannot be handled; dead-lettered");
                dead_letter(item, reason, status)
            }
            Err(Failed::Refused(err)) => {
                let target = crate::deliver::Target {
                    integration,
                    portion: &item.key.run_id,
                    revision: item.key.revision,
                };
                refused(crate::deliver::refuse_as_a_whole(bus, client, gates, &target, &err).await)
            }
        }
    }
}

/// How to settle a leaver whose integration is paused because Oomnitza refused its config for
/// `reason`: back to the stream until the config is fixed, never dead-lettered for it.
fn refused(reason: String) -> Settlement {
    Settlement::Retry(
        crate::deliver::REFUSED_RETRY,
        reason,
        RetryCause::Configuration,
    )
}

/// How to settle a leaver not tried because the intake is closed for `reason`: back to the
/// stream, and requeued rather than dead-lettered at its last delivery (nothing failed for it).
fn held(reason: String) -> Settlement {
    Settlement::Retry(
        HELD_RETRY,
        format!("not tried while Oomnitza cannot take records: {reason}"),
        RetryCause::Held,
    )
}

/// How long a leaver whose call failed with `err` waits for its next delivery: [`RETRY`], or
/// longer when Oomnitza asked for it with `Retry-After` (at most [`MAX_RETRY`]).
fn retry_delay(err: &Error) -> std::time::Duration {
    err.retry_after()
        .map_or(RETRY, |asked| asked.clamp(RETRY, MAX_RETRY))
}

/// How to settle a leaver whose call failed with `err` after the client's retries. A refused
/// token closes the credential gate only when the credential check is refused too
/// ([`Gates::refuse_if_the_token_is_refused`]); when the check passes, the token lacks a right
/// this leaver's calls need, which no retry gives it: the leaver is dead-lettered saying so.
/// A transient failure closes the outage gate only when a read of one user fails too (its
/// probe reads one user as well), not for a failure of one user's record, which is retried
/// on its own.
async fn oomnitza_failed(
    client: &OomnitzaClient,
    gates: &Gates,
    item: &Item,
    err: &Error,
) -> Settlement {
    let retry = || Settlement::Retry(retry_delay(err), err.to_string(), RetryCause::Transient);
    if err.kind() == ErrorKind::Unauthorized {
        return match gates
            .refuse_if_the_token_is_refused(client, err, false)
            .await
        {
            TokenCheck::Refused => {
                Settlement::Retry(HELD_RETRY, err.to_string(), RetryCause::Configuration)
            }
            check if check.passes() => {
                let reason = format!(
                    "{err}; the token passes the credential check, so it lacks a right this \
                     leaver's calls need: grant it, then `syncctl dlq replay` this letter"
                );
                dead_letter(item, reason, err.status())
            }
            // Nothing is known of the token: try again as for any failure.
            _ => retry(),
        };
    }
    match client.users_answer().await {
        Err(down) => {
            gates.set_failure(Failure::Unavailable, Some(down.to_string()));
            Settlement::Retry(HELD_RETRY, err.to_string(), RetryCause::Transient)
        }
        Ok(()) => retry(),
    }
}

/// Settles the leaver of a run whose portion an administrator canceled in Oomnitza: nothing is
/// done to the user (a cancel stops the run's changes, deletes included), and the event is
/// dead-lettered so the leaver is not lost: a replay handles it in a new run.
pub fn canceled(item: Item) -> (Item, Settlement) {
    tracing::warn!(integration = %item.key.integration, run_id = %item.key.run_id,
        worker = %item.worker_id, "the run was canceled in Oomnitza; leaver not handled, dead-lettered");
    let reason = "the run was canceled in Oomnitza before this leaver was handled; nothing was \
                  done to the user: `syncctl dlq replay` the letter to handle it in a new run"
        .to_owned();
    let settlement = dead_letter(&item, reason, None);
    (item, settlement)
}

/// Dead-letters `item`'s leaver with `reason` (and Oomnitza's status, if it answered).
fn dead_letter(item: &Item, reason: String, status: Option<u16>) -> Settlement {
    Settlement::Done(
        Outcome::DeadLettered,
        Some(Box::new(DeadLetter {
            integration: item.key.integration.clone(),
            run_id: item.key.run_id.clone(),
            worker_id: item.worker_id.clone(),
            reason,
            stage: "leavers".into(),
            http_status: status,
            attempts: item.delivered,
            original_subject: item.message.subject.to_string(),
            ..Default::default()
        })),
    )
}

async fn act(
    bus: &Bus,
    client: &OomnitzaClient,
    integration: &Integration,
    item: &Item,
    task: &LeaverTask,
) -> Result<LeaverEntry, Failed> {
    let policy = &integration.config().leavers;
    let mut entry = LeaverEntry {
        worker_id: task.worker.id.clone(),
        name: task.worker.full_name.clone(),
        email: task.worker.email.clone(),
        reason: task.reason().to_owned(),
        end_date: task.worker.end_date.clone(),
        action: "none".into(),
        at: chrono::Utc::now().to_rfc3339(),
        ..LeaverEntry::default()
    };
    // With action `none` nothing is written, but the user is still looked up (when the config
    // maps the Sage People id) so the report says which assets IT should recover.
    let field = integration.leaver_lookup_field();
    if policy.action != LeaverAction::None && field.is_none() {
        return Err(Failed::Dead(
            "the leaver policy needs a mapping from source \"ID\" to find the user".into(),
            None,
        ));
    }
    if let Some(field) = field {
        let attribute = read_attribute(field);
        let users = client
            .find_user_by(&attribute, &task.worker.id)
            .await
            .map_err(from_oomnitza)?;
        match users.as_slice() {
            [] => match deleted_before(bus, integration, item, &task.worker.id).await? {
                // This leaver's delete went through on an earlier attempt whose answer, or
                // whose report entry, was lost: report it with what the note kept.
                Some(noted) => {
                    entry.action = "deleted".into();
                    entry.oomnitza_user = noted.oomnitza_user;
                    entry.assets = noted.assets;
                }
                None => entry.action = "not_found".into(),
            },
            [user] => {
                let found = Found {
                    field,
                    attribute: &attribute,
                    user,
                };
                apply(bus, client, integration, item, task, &found, &mut entry).await?;
            }
            _ => {
                return Err(Failed::Dead(
                    format!(
                        "more than one Oomnitza user has {attribute} = {:?}; the leaver policy acts on one user only",
                        task.worker.id
                    ),
                    None,
                ));
            }
        }
    }
    leavers::record(bus, &item.key.integration, &item.key.run_id, &entry)
        .await
        .map_err(|e| Failed::Retry(format!("recording the leaver: {e}")))?;
    Ok(entry)
}

/// The report's action for a leaver whose delete Oomnitza refused for good.
const DELETE_FAILED: &str = "delete_failed";

/// For a leaver whose user is not found under the `delete` action: the note of a delete an
/// earlier attempt sent ([`leavers::note_deleting`]), if there is one. Every attempt under
/// that action looks (a leaver requeued after a long outage starts its deliveries again); under
/// the others no delete is ever sent.
async fn deleted_before(
    bus: &Bus,
    integration: &Integration,
    item: &Item,
    worker_id: &str,
) -> Result<Option<LeaverEntry>, Failed> {
    if integration.config().leavers.action != LeaverAction::Delete {
        return Ok(None);
    }
    let last = leavers::noted(bus, &item.key.integration, &item.key.run_id, worker_id)
        .await
        .map_err(|e| Failed::Retry(format!("reading the leavers report: {e}")))?;
    Ok(last.filter(|e| e.action == leavers::DELETING || e.action == "deleted"))
}

/// At finalize of a run with `leavers`: its report, and how many of them still held assets
/// (none and 0 when the report cannot be read; a warning says so). The report goes to the
/// webhook once the run is recorded finalized, so a finalize tried again does not post twice.
pub async fn finalized(
    bus: &Bus,
    (integration, run_id): (&str, &str),
    leavers: u64,
) -> (u64, Vec<LeaverEntry>) {
    if leavers == 0 {
        return (0, Vec::new());
    }
    match leavers::read(bus, integration, run_id).await {
        Ok(entries) => {
            let holding = entries.iter().filter(|e| !e.assets.is_empty()).count() as u64;
            (holding, entries)
        }
        Err(err) => {
            tracing::warn!(integration, run_id, error = %err,
                "cannot read the leavers report; not posted, and the run's count of leavers holding assets stays 0");
            (0, Vec::new())
        }
    }
}

/// The leaver's user as found, and the field (and its read attribute) it was found by.
struct Found<'a> {
    field: &'a str,
    attribute: &'a str,
    user: &'a Value,
}

async fn apply(
    bus: &Bus,
    client: &OomnitzaClient,
    integration: &Integration,
    item: &Item,
    task: &LeaverTask,
    found: &Found<'_>,
    entry: &mut LeaverEntry,
) -> Result<(), Failed> {
    let user = found.user;
    let policy = &integration.config().leavers;
    let Some(ident) = user_ident(user) else {
        return Err(Failed::Dead(
            "Oomnitza showed the leaver's user without an id".into(),
            None,
        ));
    };
    entry.oomnitza_user = Some(ident.clone());
    entry.assets = client
        .user_assets(&ident)
        .await
        .map_err(from_oomnitza)?
        .into_iter()
        .map(|a| HeldAsset {
            id: a.id,
            name: a.name,
            serial: a.serial,
        })
        .collect();
    match policy.action {
        LeaverAction::None => {}
        LeaverAction::Update => {
            let input = RecordInput {
                raw: &task.raw,
                worker: &task.worker,
                tracking: &task.tracking,
            };
            let fields = integration
                .leaver_fields(&input)
                .map_err(|reason| Failed::Dead(reason, None))?;
            // An update-only record keyed by the id field: Oomnitza can only change the user
            // found by it, never create one.
            let mut record = fields.clone();
            record.insert(
                found.field.to_owned(),
                Value::String(task.worker.id.clone()),
            );
            // The username as Oomnitza holds it: a bulk record names its user, whether it
            // creates or updates one.
            if let Some(username) = user.get(read_attribute("USER")).filter(|u| !u.is_null()) {
                record
                    .entry("USER".to_owned())
                    .or_insert_with(|| username.clone());
            }
            // Already shown in full (a redelivery after the update landed): nothing to post.
            if !shows_all(&fields, user) {
                let who = (task.worker.id.as_str(), ident.as_str());
                post_update(client, item, found, who, &record, &fields).await?;
            }
            entry.action = "updated".into();
        }
        LeaverAction::Delete if !entry.assets.is_empty() && !policy.delete_with_assets => {
            entry.action = "kept_holding_assets".into();
        }
        LeaverAction::Delete => {
            // Noted first: a delete whose answer is lost is found undone on the next attempt
            // (no user), and the note keeps who it was and what they held.
            leavers::note_deleting(bus, &item.key.integration, &item.key.run_id, entry)
                .await
                .map_err(|e| Failed::Retry(format!("noting the leaver's delete: {e}")))?;
            if let Err(err) = client.delete_user(&ident).await {
                let failed = from_oomnitza(err);
                // Refused for good: nothing was deleted, and the report says so instead of
                // keeping the note (the dead letter says why).
                if matches!(failed, Failed::Dead(..)) {
                    entry.action = DELETE_FAILED.into();
                    if let Err(err) =
                        leavers::record(bus, &item.key.integration, &item.key.run_id, entry).await
                    {
                        tracing::warn!(worker = %task.worker.id, error = %err,
                            "cannot record the refused delete in the leavers report; it shows `deleting`");
                    }
                }
                return Err(failed);
            }
            entry.action = "deleted".into();
        }
    }
    // A rehire maps to the record last written: without its hash it is sent again in full.
    if policy.action != LeaverAction::None
        && let Some(value) = integration
            .sync_field()
            .first()
            .and_then(|f| user.get(read_attribute(f)))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    {
        let key = peoplesync_bus::applied::key(&item.key.integration, value);
        if let Err(err) = bus.applied().purge(&key).await {
            tracing::warn!(key, error = %err, "cannot drop the applied hash of a leaver; a rehire is written once their record changes");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::update::not_shown;
    use super::*;
    use serde_json::json;

    /// A batch of `n` leavers (workers no longer listed) of run `r1`.
    fn leavers(integration: &std::sync::Arc<Integration>, n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                message: crate::pipeline::Delivery {
                    subject: format!("test.{i}").into(),
                    reply: None,
                    payload: bytes::Bytes::new(),
                    stream_sequence: 0,
                },
                key: crate::pipeline::BatchKey {
                    integration: "sage-people".into(),
                    run_id: "r1".into(),
                    revision: 1,
                },
                integration: Some(std::sync::Arc::clone(integration)),
                worker_id: format!("w{i}"),
                msg_id: format!("r1.w{i}"),
                observed_at_ms: 0,
                resend: false,
                disposition: Disposition::Leaver(Box::new(LeaverTask {
                    worker: Worker {
                        id: format!("w{i}"),
                        ..Worker::default()
                    },
                    raw: Value::Null,
                    tracking: Tracking::default(),
                    listed: false,
                })),
                delivered: 1,
                tracked: None,
            })
            .collect()
    }

    /// Handles `n` leavers against a simulated Oomnitza with `gates`; returns how each is
    /// settled and how many API requests the simulator answered.
    async fn handle_leavers(gates: &Gates, n: usize) -> (Vec<Settlement>, u64) {
        let nats = peoplesync_testkit::NatsServer::start();
        let bus = Bus::connect(
            nats.url(),
            "leavers-test",
            peoplesync_bus::BusSettings::default(),
        )
        .await
        .unwrap();
        leavers::ensure(&bus).await.unwrap();
        let sim = peoplesync_sims::oomnitza::OomnitzaSim::spawn(Default::default())
            .await
            .unwrap();
        let token = secrecy::SecretString::from("sim-oomnitza-token");
        let client = OomnitzaClient::new(peoplesync_oomnitza::OomnitzaConfig::new(
            sim.url(),
            peoplesync_oomnitza::OomnitzaAuth::ApiToken(token),
        ))
        .unwrap();
        let config = peoplesync_core::IntegrationConfig::default_for("sage-people");
        let integration = std::sync::Arc::new(Integration::compile(config).unwrap());
        let items = leavers(&integration, n);
        let wait = std::time::Duration::from_secs(1);
        let leavers = Leavers {
            bus: &bus,
            client: &client,
            gates,
            integration: &integration,
            processing_retry: wait,
        };
        let settled = leavers.handle_all(items).await;
        let settlements = settled.into_iter().map(|(_, s)| s).collect();
        (settlements, sim.stats().api_requests)
    }

    #[tokio::test]
    async fn leavers_are_looked_up_while_the_intake_is_open() {
        let (settled, requests) = handle_leavers(&Gates::default(), 3).await;
        assert!(requests >= 3, "each leaver's user is looked up: {requests}");
        assert!(
            settled
                .iter()
                .all(|s| matches!(s, Settlement::Done(Outcome::Leaver, None))),
            "{settled:?}"
        );
    }

    #[tokio::test]
    async fn leavers_are_not_tried_once_the_intake_is_closed() {
        let gates = Gates::default();
        gates.set_failure(Failure::Unavailable, Some("Oomnitza answers 503".into()));
        let (settled, requests) = handle_leavers(&gates, 6).await;
        assert_eq!(requests, 0, "no leaver meets the outage again");
        for settlement in &settled {
            let Settlement::Retry(delay, reason, cause) = settlement else {
                panic!("{settlement:?}");
            };
            assert_eq!((*delay, *cause), (HELD_RETRY, RetryCause::Held));
            assert!(reason.contains("Oomnitza answers 503"), "{reason}");
        }
        assert_eq!(settled.len(), 6);
    }

    #[test]
    fn a_failed_leaver_waits_as_long_as_oomnitza_asks_within_bounds() {
        let failed = |asked: Option<u64>| {
            Error::new(ErrorKind::Transient, "busy")
                .with_retry_after(asked.map(std::time::Duration::from_secs))
        };
        let secs = |asked| retry_delay(&failed(asked)).as_secs();
        assert_eq!(secs(None), 10);
        assert_eq!(secs(Some(2)), 10, "never sooner than its own pause");
        assert_eq!(secs(Some(60)), 60);
        assert_eq!(secs(Some(86_400)), 300, "at most five minutes");
    }

    #[test]
    fn an_update_counts_once_the_user_shows_it() {
        let sent = json!({"STATUS_ID": "Terminated", "PERMISSIONS_ID": 3})
            .as_object()
            .unwrap()
            .clone();
        let shown = json!({"status_id": "Terminated", "role": "3"});
        assert!(not_shown(&sent, Some(&shown)).is_empty());
        let stale = json!({"status_id": "Active", "role": "3"});
        assert_eq!(not_shown(&sent, Some(&stale)), vec!["STATUS_ID".to_owned()]);
        assert_eq!(not_shown(&sent, None).len(), 2);
        let unread = json!({"role": {"id": 3, "name": "Disabled"}});
        assert!(!shows_all(&sent, &unread), "a field not read is not shown");
        assert!(shows_all(&sent, &shown));
        assert!(
            not_shown(&sent, Some(&unread)).is_empty(),
            "a role read as an object compares by its id; a field the read does not carry is \
             passed over"
        );
        // A username or e-mail a tenant stores in lower case is shown; other fields keep case.
        let sent = json!({"EMAIL": "Gone@Example.com", "STATUS_ID": "Terminated"})
            .as_object()
            .unwrap()
            .clone();
        let lowered = json!({"email": "gone@example.com", "status_id": "Terminated"});
        assert!(shows_all(&sent, &lowered));
        assert!(not_shown(&sent, Some(&lowered)).is_empty());
        let other_case = json!({"email": "gone@example.com", "status_id": "terminated"});
        assert_eq!(
            not_shown(&sent, Some(&other_case)),
            vec!["STATUS_ID".to_owned()]
        );
    }
}
