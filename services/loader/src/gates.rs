//! Whether this replica may pull an integration's events now: not while an operator has
//! paused the integration (KV `peoplesync_state`, key `pause.<integration>`, watched by every
//! replica), and not while Oomnitza cannot take records — it refuses the credentials, its URL
//! is wrong, or it kept failing past the retries. Then pulling stops, the state is reported,
//! and Oomnitza is re-checked only at a slow interval, so an outage or a revoked token causes
//! neither a retry storm nor dead-lettered good data.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use peoplesync_bus::Bus;
use peoplesync_bus::pause::{self, Pauses};
use peoplesync_oomnitza::OomnitzaClient;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why Oomnitza cannot take records now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 401/403: bad credentials or missing rights.
    Credentials,
    /// 404 for the bulk endpoint: `OOMNITZA_URL` is wrong.
    Misconfigured,
    /// Transient failures outlasted the retries.
    Unavailable,
}

/// The open/closed state of every integration's intake, shared by the replica's tasks.
#[derive(Clone)]
pub struct Gates {
    /// Integration → (paused, KV revision of the flag it was read from).
    paused: Arc<RwLock<HashMap<String, (bool, u64)>>>,
    failure: Arc<RwLock<Option<(Failure, String)>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            paused: Arc::default(),
            failure: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gates").finish_non_exhaustive()
    }
}

impl Gates {
    /// Whether `integration`'s events may be pulled now.
    pub fn is_open(&self, integration: &str) -> bool {
        !self.is_paused(integration) && self.failure().is_none()
    }

    /// Whether an operator paused `integration`.
    pub fn is_paused(&self, integration: &str) -> bool {
        self.paused
            .read()
            .is_ok_and(|flags| flags.get(integration).is_some_and(|(paused, _)| *paused))
    }

    /// Why Oomnitza cannot take records, while it cannot.
    pub fn failure(&self) -> Option<(Failure, String)> {
        self.failure.read().ok().and_then(|f| f.clone())
    }

    /// Waits until `integration`'s gate is open.
    pub async fn wait_open(&self, integration: &str) {
        let mut changes = self.changed.subscribe();
        while !self.is_open(integration) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Records whether `integration` is paused, as read at KV `revision`; a read older than
    /// the one already recorded (the watch and the start-up read race) is ignored.
    pub fn set_paused(&self, integration: &str, paused: bool, revision: u64) {
        if let Ok(mut flags) = self.paused.write() {
            let previous = flags.get(integration).copied();
            if previous.is_some_and(|(_, seen)| seen > revision) {
                // An older read than what the watch already delivered.
                return;
            }
            flags.insert(integration.to_owned(), (paused, revision));
            if previous.map(|(was, _)| was) != Some(paused) && (paused || previous.is_some()) {
                tracing::info!(
                    integration,
                    paused,
                    "integration {}",
                    if paused { "paused" } else { "resumed" }
                );
                metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_PAUSED, "integration" => integration.to_owned())
                    .set(if paused { 1.0 } else { 0.0 });
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Records that Oomnitza cannot take records (`Some(reason)`) or can again (`None`).
    pub fn set_failure(&self, kind: Failure, reason: Option<String>) {
        if let Ok(mut slot) = self.failure.write() {
            match (&reason, slot.is_some()) {
                (Some(reason), false) => tracing::error!(?kind, %reason,
                    "Oomnitza cannot take records; stopped pulling until it answers again"),
                (None, true) => tracing::info!("Oomnitza answers again; pulling resumes"),
                _ => {}
            }
            let credentials = reason.is_some() && kind == Failure::Credentials;
            metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_CREDENTIALS_FAILING)
                .set(if credentials { 1.0 } else { 0.0 });
            *slot = reason.map(|r| (kind, r));
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Follows the pause flags in KV until the watch ends or `shutdown`.
    pub async fn watch_pauses(&self, bus: &Bus, shutdown: CancellationToken) {
        let mut watch = match Pauses::new(bus.state_kv().clone()).watch().await {
            Ok(watch) => watch,
            Err(err) => {
                tracing::error!(error = %err, "cannot watch pause flags; Pause/Resume will not reach this replica");
                return;
            }
        };
        loop {
            let entry = tokio::select! {
                () = shutdown.cancelled() => return,
                entry = watch.next() => entry,
            };
            let Some(entry) = entry else { return };
            match entry {
                Ok(entry) => {
                    let Some(integration) = pause::integration_of(&entry.key) else {
                        continue;
                    };
                    let paused = entry.operation == kv::Operation::Put
                        && pause::decode(&entry.value).is_ok_and(|f| f.paused);
                    self.set_paused(integration, paused, entry.revision);
                }
                Err(err) => tracing::warn!(error = %err, "pause flag watch error"),
            }
        }
    }

    /// While Oomnitza cannot take records, re-checks it every `interval` until it answers.
    pub async fn probe_oomnitza(
        &self,
        client: OomnitzaClient,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut changes = self.changed.subscribe();
        loop {
            let Some((kind, _)) = self.failure() else {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                continue;
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match client.check_auth().await {
                Ok(()) => self.set_failure(kind, None),
                Err(err) if err.kind() == peoplesync_oomnitza::ErrorKind::Unauthorized => {
                    self.set_failure(Failure::Credentials, Some(err.to_string()));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "Oomnitza still cannot be reached; will check again")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_read_of_a_pause_flag_never_undoes_a_newer_one() {
        let gates = Gates::default();
        assert!(gates.is_open("acme"), "open until a flag says otherwise");
        gates.set_paused("acme", true, 7);
        gates.set_paused("acme", false, 0);
        assert!(
            gates.is_paused("acme"),
            "the start-up read found no flag, but the watch had one"
        );
        gates.set_paused("acme", false, 9);
        assert!(gates.is_open("acme"));
        gates.set_paused("acme", true, 8);
        assert!(gates.is_open("acme"), "a stale read does not pause again");
        assert!(gates.is_open("other"));
    }
}
