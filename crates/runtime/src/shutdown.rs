//! SIGTERM (what Docker and Kubernetes send) and Ctrl-C become one cancellation token, so
//! every part of a service can stop taking work and drain instead of being dropped mid-batch.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        trigger.cancel();
    });
    token
}

/// Ends the process with status 1 if it is still running `limit` after `shutdown` was
/// cancelled (by SIGTERM, or by the service stopping itself), logging why. A stop must end
/// within the orchestrator's grace period even when a step waits on NATS that does not
/// answer: the NATS client holds every request while it reconnects, whatever the request's
/// timeout. `setting` names what sets `limit`; `then` says what becomes of the work left (it
/// is what a crash would leave). The wait runs on a thread of its own, so a runtime thread
/// that is blocked cannot hold it up.
pub fn exit_unless_stopped_within(
    shutdown: &CancellationToken,
    limit: Duration,
    setting: &'static str,
    then: &'static str,
) {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            tracing::error!(
                limit_secs = limit.as_secs(),
                "did not stop within {} s of being told to stop ({setting}; still waiting on NATS?); exiting now: {then}",
                limit.as_secs()
            );
            std::process::exit(1);
        });
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
