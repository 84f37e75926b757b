//! ListLeavers: a run's leavers report (who left, the action taken in Oomnitza, the assets
//! each still held), read from the stream the loaders record it in. Without a run, the latest
//! run of the integration that handled leavers. A run with neither a report nor a record is
//! NOT_FOUND; a report outlives its run's record, so it is still shown after the record
//! expired.

use std::time::Duration;

use peoplesync_bus::Bus;
use peoplesync_bus::control::{self, HeldLeavers};
use peoplesync_bus::leavers::{self, LeaverEntry};
use peoplesync_proto::v1 as pb;
use tonic::Status;

use crate::extractor::Extractor;
use crate::runs::RunViews;
use crate::status;

/// A report entry as the API shows it.
pub(crate) fn to_proto(entry: LeaverEntry) -> pb::Leaver {
    pb::Leaver {
        worker_id: entry.worker_id,
        name: entry.name.unwrap_or_default(),
        email: entry.email.unwrap_or_default(),
        reason: entry.reason,
        end_date: entry.end_date.unwrap_or_default(),
        action: entry.action,
        oomnitza_user: entry.oomnitza_user.unwrap_or_default(),
        assets: entry
            .assets
            .into_iter()
            .map(|a| pb::LeaverAsset {
                id: a.id,
                name: a.name.unwrap_or_default(),
                serial: a.serial.unwrap_or_default(),
            })
            .collect(),
    }
}

/// How many recent runs are searched for the latest one with leavers.
const RECENT_RUNS: usize = 50;

/// How long listing the held leavers may take (the extractor compares two run lists).
const HELD_TIMEOUT: Duration = Duration::from_secs(60);

/// The leavers `integration` holds for approval, as the extractor lists them.
pub(crate) async fn held(
    extractor: &Extractor,
    integration: &str,
) -> Result<pb::ListLeaversResponse, Status> {
    let held: HeldLeavers = extractor
        .request(integration, control::HELD_LEAVERS, &(), HELD_TIMEOUT)
        .await?;
    Ok(pb::ListLeaversResponse {
        run_id: held.run_id.unwrap_or_default(),
        leavers: held.leavers.into_iter().map(to_proto).collect(),
        with_assets: 0,
        held_count: held.count,
    })
}

/// The leavers of `run_id` of `integration` (when empty, the latest of the last
/// [`RECENT_RUNS`] runs that had leavers); NOT_FOUND for a run with neither leavers nor a
/// record.
pub(crate) async fn list(
    bus: &Bus,
    runs: &RunViews,
    integration: &str,
    run_id: &str,
) -> Result<pb::ListLeaversResponse, Status> {
    let run_id = if run_id.trim().is_empty() {
        let recent = runs.list(Some(integration), RECENT_RUNS).await?;
        match recent
            .into_iter()
            .find(|r| r.removed > 0 || r.counts.as_ref().is_some_and(|c| c.leavers > 0))
        {
            Some(run) => run.run_id,
            None => {
                return Ok(pb::ListLeaversResponse::default());
            }
        }
    } else {
        run_id.trim().to_owned()
    };
    let entries = leavers::read(bus, integration, &run_id)
        .await
        .map_err(|e| status::bus(&format!("reading the leavers of run {run_id}"), e))?;
    if entries.is_empty() {
        // An empty report is an answer only for a run that exists.
        runs.get(integration, &run_id).await?;
    }
    let leavers: Vec<pb::Leaver> = entries.into_iter().map(to_proto).collect();
    let with_assets = leavers.iter().filter(|l| !l.assets.is_empty()).count() as u64;
    Ok(pb::ListLeaversResponse {
        run_id,
        leavers,
        with_assets,
        held_count: 0,
    })
}
