//! Loader replicas announcing themselves: each replica writes `presence.loader.<replica>` in the
//! state bucket every [`BEAT`], and at once when what its `/readyz` says changes (checked every
//! [`LOOK`]), and the control plane's status lists those seen within [`SEEN_WITHIN`], with what
//! their `/readyz` says: why a replica takes no records (Oomnitza down, credentials refused, an
//! unusable config) shows in `syncctl status` within seconds. The keys of stopped replicas are
//! removed on a clean stop and otherwise just age out of the list.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::TryStreamExt;
use peoplesync_runtime::Readiness;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::BusError;
use crate::names;

/// How often a replica writes its key.
pub const BEAT: Duration = Duration::from_secs(15);
/// A replica whose key is older than this is not listed.
pub const SEEN_WITHIN: Duration = Duration::from_secs(60);
/// How often a replica looks whether what its `/readyz` says has changed.
pub const LOOK: Duration = Duration::from_secs(1);

const PREFIX: &str = "presence.loader.";

/// What a replica's key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The replica's name.
    pub replica: String,
    /// Its version.
    pub version: String,
    /// When it wrote this (RFC 3339).
    pub at: String,
    /// Its readiness conditions that do not hold (empty: ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
    /// Its `/readyz` notes: why it makes no progress with something, by subject.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
}

/// The key of `replica` (characters KV keys do not allow become `_`).
pub fn key(replica: &str) -> String {
    let safe: String = replica
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{PREFIX}{safe}")
}

/// Writes `replica`'s key, with what `readiness` says, every [`BEAT`] and whenever that
/// changes, until `stop` is cancelled; then removes it.
pub(crate) async fn announce(
    state: kv::Store,
    replica: String,
    version: String,
    readiness: Readiness,
    stop: CancellationToken,
) {
    let key = key(&replica);
    let mut said: Option<(Vec<String>, BTreeMap<String, String>)> = None;
    let mut written = tokio::time::Instant::now();
    loop {
        let status = readiness.status();
        let now = (
            status.not_ready().into_iter().map(str::to_owned).collect(),
            status.notes,
        );
        if said.as_ref() != Some(&now) || written.elapsed() >= BEAT {
            let value = Announcement {
                replica: replica.clone(),
                version: version.clone(),
                at: chrono::Utc::now().to_rfc3339(),
                not_ready: now.0.clone(),
                notes: now.1.clone(),
            };
            let bytes = serde_json::to_vec(&value).unwrap_or_default();
            match state.put(&key, Bytes::from(bytes)).await {
                Ok(_) => said = Some(now),
                Err(err) => {
                    tracing::debug!(key, error = %err, "cannot announce this loader replica");
                }
            }
            written = tokio::time::Instant::now();
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(LOOK) => {}
        }
    }
    let _ = state.delete(&key).await;
}

/// The replicas seen within [`SEEN_WITHIN`] of `now`, by name.
pub(crate) async fn seen(
    state: &kv::Store,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Announcement>, BusError> {
    let keys: Vec<String> = state
        .keys()
        .await
        .map_err(|e| BusError::kv(names::STATE_BUCKET, "list", PREFIX, e))?
        .try_collect()
        .await
        .map_err(|e| BusError::kv(names::STATE_BUCKET, "list", PREFIX, e))?;
    let within = chrono::Duration::from_std(SEEN_WITHIN).unwrap_or_default();
    let mut found = Vec::new();
    for key in keys.iter().filter(|k| k.starts_with(PREFIX)) {
        let Some(value) = state
            .get(key)
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "read", key, e))?
        else {
            continue;
        };
        let Ok(announcement) = serde_json::from_slice::<Announcement>(&value) else {
            continue;
        };
        let fresh = chrono::DateTime::parse_from_rfc3339(&announcement.at)
            .is_ok_and(|at| now.signed_duration_since(at) <= within);
        if fresh {
            found.push(announcement);
        }
    }
    found.sort_by(|a, b| a.replica.cmp(&b.replica));
    Ok(found)
}
