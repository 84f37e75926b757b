//! The leavers report: one JSON entry per leaver a loader handled, on stream
//! `PEOPLESYNC_LEAVERS`, subject `peoplesync.<integration>.leavers.<run>.<worker>`, deduplicated by
//! `<run>.<worker>.leaver` (and `<run>.<worker>.leaver.deleting` for the note written before a
//! delete, [`note_deleting`]). It says who left, when, what was done in Oomnitza, and which assets
//! they still held — what `syncctl leavers` lists and the leavers webhook posts. Kept 90 days.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::consume::Snapshot;
use crate::setup::StreamSpec;
use crate::{BusError, Publisher, names};

pub use crate::names::LEAVERS_STREAM;

/// How long reports are kept.
pub const LEAVERS_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);

/// How long reading a run's report waits for the next entry.
const READ_IDLE: Duration = Duration::from_secs(5);

/// One asset a leaver still held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAsset {
    /// The asset's id in Oomnitza.
    pub id: String,
    /// Its name or model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// One leaver as handled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaverEntry {
    /// The Sage People worker id.
    pub worker_id: String,
    /// Full name, when Sage People still listed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Why they are a leaver: `removed` (no longer listed), `inactive`, `end_date`.
    pub reason: String,
    /// Their end date (`YYYY-MM-DD`), when Sage People gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    /// What was done: `none`, `updated`, `deleted`, `kept_holding_assets`, `not_found`,
    /// `delete_failed` (Oomnitza refused the delete); or [`DELETING`], a delete sent whose
    /// outcome is not recorded.
    pub action: String,
    /// The Oomnitza user, when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oomnitza_user: Option<String>,
    /// The assets they held when handled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<HeldAsset>,
    /// When the loader handled them (RFC 3339).
    pub at: String,
}

/// Creates the stream, or brings its limits in line; idempotent.
pub async fn ensure(bus: &crate::Bus) -> Result<(), BusError> {
    bus.ensure_stream(StreamSpec::limits(
        (
            LEAVERS_STREAM,
            "peoplesync leavers handled per run, with the assets they held",
        ),
        &[names::LEAVERS_SUBJECTS],
        LEAVERS_MAX_AGE,
        Duration::from_secs(120),
    ))
    .await
}

/// The action of the note recorded just before a leaver's user is deleted
/// ([`note_deleting`]). The report shows it only while no later entry for the worker follows:
/// the delete was sent, and its outcome is not recorded (yet).
pub const DELETING: &str = "deleting";

/// Records `entry` in `run_id`'s report and waits for the server to store it.
pub async fn record(
    bus: &crate::Bus,
    integration: &str,
    run_id: &str,
    entry: &LeaverEntry,
) -> Result<(), BusError> {
    let id = format!("{run_id}.{}.leaver", entry.worker_id);
    publish(bus, integration, run_id, entry, id).await
}

/// Records, just before a leaver's user is deleted, the entry the report is to carry, as a
/// note (action [`DELETING`]). When the delete happens but its answer, or the report's entry
/// after it, is lost, the leaver's next attempt finds no user: it takes the user and the
/// assets they held from this note ([`noted`]) instead of reporting `not_found` and losing the
/// list of equipment to recover.
pub async fn note_deleting(
    bus: &crate::Bus,
    integration: &str,
    run_id: &str,
    entry: &LeaverEntry,
) -> Result<(), BusError> {
    let note = LeaverEntry {
        action: DELETING.to_owned(),
        ..entry.clone()
    };
    let id = format!("{run_id}.{}.leaver.{DELETING}", entry.worker_id);
    publish(bus, integration, run_id, &note, id).await
}

async fn publish(
    bus: &crate::Bus,
    integration: &str,
    run_id: &str,
    entry: &LeaverEntry,
    id: String,
) -> Result<(), BusError> {
    let payload = crate::document::encode("leaver entry", entry)?;
    let mut publisher = Publisher::new(bus.js.clone(), 1);
    publisher
        .publish(
            names::leaver_subject(integration, run_id, &entry.worker_id),
            id,
            payload,
            None,
        )
        .await?;
    publisher.flush().await
}

/// The leavers of `run_id`, one entry per worker (the last recorded), by worker id.
pub async fn read(
    bus: &crate::Bus,
    integration: &str,
    run_id: &str,
) -> Result<Vec<LeaverEntry>, BusError> {
    Ok(entries(bus, integration, run_id)
        .await?
        .into_values()
        .collect())
}

/// The last entry recorded for `worker_id` in `run_id`'s report, a [`DELETING`] note included:
/// one direct read of the worker's own subject, however long the report.
pub async fn noted(
    bus: &crate::Bus,
    integration: &str,
    run_id: &str,
    worker_id: &str,
) -> Result<Option<LeaverEntry>, BusError> {
    let subject = names::leaver_subject(integration, run_id, worker_id);
    let Some(payload) = bus.last_on(LEAVERS_STREAM, &subject).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&payload)
        .map(Some)
        .map_err(|e| BusError::request(format!("reading the leaver entry on {subject}"), e))
}

/// The last entry of each worker in `run_id`'s report, by worker id.
async fn entries(
    bus: &crate::Bus,
    integration: &str,
    run_id: &str,
) -> Result<BTreeMap<String, LeaverEntry>, BusError> {
    let what = format!("reading the leavers of run {run_id} of {integration}");
    let mut report = Snapshot::open(
        &bus.js,
        LEAVERS_STREAM,
        names::leavers_run_filter(integration, run_id),
        what,
    )
    .await?;
    let mut entries = BTreeMap::new();
    let missing = "the report changed while it was read";
    while let Some(message) = report.next(READ_IDLE, missing).await? {
        match serde_json::from_slice::<LeaverEntry>(&message.payload) {
            Ok(entry) => {
                entries.insert(entry.worker_id.clone(), entry);
            }
            Err(err) => tracing::warn!(integration, run_id, error = %err,
                "skipping a leaver entry that cannot be read"),
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_and_leaves_out_what_is_unknown() {
        let entry = LeaverEntry {
            worker_id: "a1".into(),
            reason: "removed".into(),
            action: "none".into(),
            at: "2026-12-06T00:00:00Z".into(),
            ..Default::default()
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert!(
            !text.contains("assets") && !text.contains("end_date"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<LeaverEntry>(&text).unwrap(), entry);
    }
}
