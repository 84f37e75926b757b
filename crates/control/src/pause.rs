//! Pause and Resume: write the integration's pause flag (`peoplesync_bus::pause`), which every
//! loader replica watches; a paused integration's events stay in the stream until Resume.

use peoplesync_bus::{Bus, PauseFlag};
use peoplesync_proto::v1 as pb;
use tonic::Status;

use crate::{runs, status};

/// The longest `by` or `reason` kept with a flag.
const MAX_TEXT: usize = 200;

/// Sets the pause flag of `integration`.
pub(crate) async fn set(
    bus: &Bus,
    integration: &str,
    paused: bool,
    by: String,
    reason: Option<String>,
) -> Result<pb::PauseState, Status> {
    let flag = PauseFlag::now(
        paused,
        &clip(&by),
        reason.map(|r| clip(&r)).filter(|r| !r.is_empty()),
    );
    bus.pauses()
        .set(integration, &flag)
        .await
        .map_err(|e| status::bus(&format!("writing the pause flag of {integration}"), e))?;
    tracing::info!(
        integration,
        paused,
        by = %flag.by,
        "pause flag set through the control plane"
    );
    Ok(view(integration, Some(&flag)))
}

/// The pause flag of `integration` as stored (`None`: never paused).
pub(crate) async fn read(bus: &Bus, integration: &str) -> Result<Option<PauseFlag>, Status> {
    bus.pauses()
        .get(integration)
        .await
        .map_err(|e| status::bus(&format!("reading the pause flag of {integration}"), e))
}

/// The API view of a pause flag (`None`: never paused).
pub(crate) fn view(integration: &str, flag: Option<&PauseFlag>) -> pb::PauseState {
    match flag {
        Some(flag) => pb::PauseState {
            integration_id: integration.to_owned(),
            paused: flag.paused,
            by: flag.by.clone(),
            at: runs::timestamp(&flag.at),
            reason: flag.reason.clone().unwrap_or_default(),
        },
        None => pb::PauseState {
            integration_id: integration.to_owned(),
            ..Default::default()
        },
    }
}

fn clip(text: &str) -> String {
    text.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect()
}
