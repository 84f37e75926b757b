//! Loader replicas announcing themselves: each replica writes `presence.loader.<replica>` in the
//! state bucket every [`BEAT`], and the control plane's status lists those seen within
//! [`SEEN_WITHIN`]. The keys of stopped replicas are removed on a clean stop and otherwise
//! just age out of the list.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::BusError;
use crate::names;

/// How often a replica writes its key.
pub const BEAT: Duration = Duration::from_secs(15);
/// A replica whose key is older than this is not listed.
pub const SEEN_WITHIN: Duration = Duration::from_secs(60);

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

/// Writes `replica`'s key every [`BEAT`] until `stop` is cancelled, then removes it.
pub(crate) async fn announce(
    state: kv::Store,
    replica: String,
    version: String,
    stop: CancellationToken,
) {
    let key = key(&replica);
    loop {
        let value = Announcement {
            replica: replica.clone(),
            version: version.clone(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        if let Err(err) = state.put(&key, Bytes::from(bytes)).await {
            tracing::debug!(key, error = %err, "cannot announce this loader replica");
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(BEAT) => {}
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
