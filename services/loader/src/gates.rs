//! Whether this replica may pull an integration's events now: not while an operator has
//! paused the integration (KV `peoplesync_state`, key `pause.<integration>`, watched by every
//! replica), and not while Oomnitza refuses the loader's credentials — then pulling stops, the
//! state is reported, and the credentials are re-checked only at a slow interval, so a revoked
//! token causes neither a retry storm nor dead-lettered good data.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use peoplesync_bus::Bus;
use peoplesync_bus::pause::{self, PauseFlag};
use peoplesync_oomnitza::OomnitzaClient;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The open/closed state of every integration's intake, shared by the replica's tasks.
#[derive(Clone)]
pub struct Gates {
    paused: Arc<RwLock<HashSet<String>>>,
    credentials_failing: Arc<RwLock<Option<String>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            paused: Arc::default(),
            credentials_failing: Arc::default(),
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
        !self.is_paused(integration) && self.credentials_failure().is_none()
    }

    /// Whether an operator paused `integration`.
    pub fn is_paused(&self, integration: &str) -> bool {
        self.paused
            .read()
            .is_ok_and(|set| set.contains(integration))
    }

    /// Why Oomnitza refuses the credentials, while it does.
    pub fn credentials_failure(&self) -> Option<String> {
        self.credentials_failing.read().ok().and_then(|f| f.clone())
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

    /// Records whether `integration` is paused.
    pub fn set_paused(&self, integration: &str, paused: bool) {
        if let Ok(mut set) = self.paused.write() {
            let changed = if paused {
                set.insert(integration.to_owned())
            } else {
                set.remove(integration)
            };
            if changed {
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

    /// Records that Oomnitza refused the credentials (`Some(reason)`) or accepts them (`None`).
    pub fn set_credentials_failure(&self, failure: Option<String>) {
        if let Ok(mut slot) = self.credentials_failing.write() {
            if slot.is_some() != failure.is_some() {
                match &failure {
                    Some(reason) => {
                        tracing::error!(%reason, "Oomnitza refuses the loader's credentials; stopped pulling until they work again")
                    }
                    None => tracing::info!(
                        "Oomnitza accepts the loader's credentials again; pulling resumes"
                    ),
                }
                metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_CREDENTIALS_FAILING)
                    .set(if failure.is_some() { 1.0 } else { 0.0 });
            }
            *slot = failure;
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Follows the pause flags in KV until the watch ends or `shutdown`.
    pub async fn watch_pauses(&self, bus: &Bus, shutdown: CancellationToken) {
        let state = bus.state_kv();
        let mut watch = match state
            .watch_with_history(format!("{}*", pause::PREFIX))
            .await
        {
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
                        && serde_json::from_slice::<PauseFlag>(&entry.value)
                            .is_ok_and(|f| f.paused);
                    self.set_paused(integration, paused);
                }
                Err(err) => tracing::warn!(error = %err, "pause flag watch error"),
            }
        }
    }

    /// While the credentials are failing, re-checks them every `interval` until they work.
    pub async fn probe_credentials(
        &self,
        client: OomnitzaClient,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut changes = self.changed.subscribe();
        loop {
            if self.credentials_failure().is_none() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match client.check_auth().await {
                Ok(()) => self.set_credentials_failure(None),
                Err(err) if err.kind() == peoplesync_oomnitza::ErrorKind::Unauthorized => {
                    self.set_credentials_failure(Some(err.to_string()));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "checking Oomnitza credentials failed; will check again")
                }
            }
        }
    }
}
