//! Set-up steps NATS has not answered yet, asked again: a JetStream cluster electing its
//! leaders, or a node starting or just lost, answers within seconds, and a service that exited
//! instead would restart into the same wait. The bus's own set-up uses it, and services use it
//! for their start-up reads (the loader's integration configs).

use std::time::Duration;

use crate::BusError;
use crate::setup::UNREACHABLE_WARNING;

/// How often a set-up step NATS does not answer is said again after the first warning.
const STILL_UNANSWERED_EVERY: Duration = Duration::from_secs(30);

/// Runs set-up step `what` again while NATS has not answered it ([`BusError::is_unanswered`])
/// until it succeeds or is refused: a JetStream cluster electing its leaders, or a node that
/// is starting or was just lost, answers again within seconds, and a service that exited
/// instead would restart into the same wait. Said after 5 s and every 30 s after, with the
/// last error and what to check.
pub async fn patiently<T, Fut>(
    what: &str,
    replicas: usize,
    mut step: impl FnMut() -> Fut,
) -> Result<T, BusError>
where
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    let started = tokio::time::Instant::now();
    let mut warn_at = started + UNREACHABLE_WARNING;
    let mut pause = Duration::from_millis(200);
    loop {
        let error = match step().await {
            Err(error) if error.is_unanswered() => error,
            done => return done,
        };
        let now = tokio::time::Instant::now();
        if now >= warn_at {
            warn_at = now + STILL_UNANSWERED_EVERY;
            tracing::warn!(%error, waited_secs = started.elapsed().as_secs(),
                "NATS has not answered the set-up of {what} yet; still trying: check that the \
                 servers run with JetStream enabled, and that at least {replicas} JetStream \
                 node(s) of the cluster are up (PEOPLESYNC_STREAM_REPLICAS={replicas})");
        } else {
            tracing::debug!(%error, "NATS has not answered the set-up of {what} yet; trying again");
        }
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(2).min(Duration::from_secs(5));
    }
}
