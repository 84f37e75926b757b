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

/// What a service's stop watchdog ([`exit_unless_stopped_within`]) says when it ends the
/// process.
#[derive(Debug, Clone)]
pub struct Overdue {
    /// What sets the limit: the configuration key, as an operator would look for it.
    pub setting: String,
    /// What a stop that long may still be waiting for.
    pub waits_on: &'static str,
    /// What becomes of the work left (it is what a crash would leave).
    pub then: &'static str,
}

impl Overdue {
    /// The log message when a stop has taken `limit`.
    fn message(&self, limit: Duration) -> String {
        format!(
            "did not stop within {} s of being told to stop ({}; still waiting on {}?); exiting now: {}",
            limit.as_secs(),
            self.setting,
            self.waits_on,
            self.then
        )
    }
}

/// Ends the process with status 1 if it is still running `limit` after `shutdown` was
/// cancelled (by SIGTERM, or by the service stopping itself), logging why ([`Overdue`]). A
/// stop must end within the orchestrator's grace period even when a step waits on NATS that
/// does not answer: the NATS client holds every request while it reconnects, whatever the
/// request's timeout. The wait runs on a thread of its own, so a runtime thread that is
/// blocked cannot hold it up.
pub fn exit_unless_stopped_within(shutdown: &CancellationToken, limit: Duration, overdue: Overdue) {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            tracing::error!(limit_secs = limit.as_secs(), "{}", overdue.message(limit));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overdue_message_names_the_setting_what_it_waits_on_and_what_is_left() {
        let overdue = Overdue {
            setting: "shutdown_grace_secs".into(),
            waits_on: "NATS",
            then: "its events are redelivered",
        };
        assert_eq!(
            overdue.message(Duration::from_secs(30)),
            "did not stop within 30 s of being told to stop (shutdown_grace_secs; still waiting \
             on NATS?); exiting now: its events are redelivered"
        );
    }
}
