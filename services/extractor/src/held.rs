//! Keeps the `peoplesync_extractor_removals_held` gauge equal to the removals held for approval
//! in the run records: read at start-up, again whenever a run record changes (a run holds
//! removals, an approval releases them), and at least every few minutes.

use std::time::Duration;

use peoplesync_bus::Bus;
use peoplesync_runtime::metrics::names;
use peoplesync_runtime::watch::next_change;
use tokio_util::sync::CancellationToken;

/// The longest the gauge goes without a fresh read (also the pause before a failed watch is
/// re-created).
const REFRESH: Duration = Duration::from_secs(300);
/// The shortest time between two reads: a running run updates its record after every page.
const DEBOUNCE: Duration = Duration::from_secs(5);

/// Updates the gauge of each of `integrations` until `stop` is cancelled.
pub async fn keep_gauge(bus: Bus, integrations: Vec<String>, stop: CancellationToken) {
    let runs = bus.runs();
    let mut watch = None;
    loop {
        if watch.is_none() {
            // Watch first, then read: a change between the two is not missed.
            watch = match runs.watch().await {
                Ok(watch) => Some(watch),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot watch run records; the removals-held gauge is refreshed every {}s", REFRESH.as_secs());
                    None
                }
            };
        }
        for integration in &integrations {
            match runs.removals_held(integration).await {
                Ok(held) => {
                    metrics::gauge!(names::EXTRACTOR_REMOVALS_HELD, "integration" => integration.clone())
                        .set(held as f64);
                }
                Err(err) => {
                    tracing::warn!(integration, error = %err, "cannot count the removals held for approval");
                }
            }
        }
        let changed = async { next_change(&mut watch).await.is_some() };
        tokio::select! {
            () = stop.cancelled() => return,
            alive = changed => if !alive {
                tracing::warn!("the run-record watch for held removals ended; watching again");
                watch = None;
            },
            () = tokio::time::sleep(REFRESH) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(DEBOUNCE) => {}
        }
    }
}
