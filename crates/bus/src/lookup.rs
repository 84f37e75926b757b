//! Reading many KV keys at once. A loader batch checks up to a few hundred applied hashes; one
//! direct get per key costs a request and a reply each, so on nats-server 2.11 and later the
//! keys are read with batched direct gets (ADR-31: `multi_last`, answered by one message per
//! key found and an end-of-batch status), a few hundred keys per request. Older servers, and a
//! batch the server refuses, fall back to one direct get per key, concurrently.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;

use crate::BusError;

/// Keys per batched request (the server caps `multi_last` subjects).
const KEYS_PER_REQUEST: usize = 256;
/// How long one batched request may take before it is abandoned.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The current value of each of `keys` in `store`, in order; `None` for a key that is absent
/// or deleted.
pub async fn values(
    client: &async_nats::Client,
    store: &kv::Store,
    keys: &[String],
) -> Result<Vec<Option<Bytes>>, BusError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let batched_ok = supports_batched_get(&client.server_info().version);
    if !batched_ok || !store.stream.cached_info().config.allow_direct {
        return one_by_one(store, keys).await;
    }
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_REQUEST) {
        match batched(client, store, chunk).await {
            Ok(found) => values.extend(found),
            Err(err) => {
                tracing::debug!(bucket = %store.name, error = %err, "batched KV read failed; reading key by key");
                values.extend(one_by_one(store, chunk).await?);
            }
        }
    }
    Ok(values)
}

/// Whether a server of `version` answers batched direct gets (nats-server 2.11 and later).
fn supports_batched_get(version: &str) -> bool {
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 11)
}

async fn batched(
    client: &async_nats::Client,
    store: &kv::Store,
    keys: &[String],
) -> Result<Vec<Option<Bytes>>, BusError> {
    let what = || {
        format!(
            "batched read of {} keys in bucket {}",
            keys.len(),
            store.name
        )
    };
    // A key may appear more than once (two events of one worker in a batch): it is asked for
    // once and its value given to each place it holds.
    let mut slots: HashMap<String, Vec<usize>> = HashMap::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        slots
            .entry(format!("{}{key}", store.prefix))
            .or_default()
            .push(i);
    }
    let request = serde_json::json!({
        "multi_last": slots.keys().collect::<Vec<_>>(),
        "batch": keys.len(),
    });
    let body = serde_json::to_vec(&request).map_err(|e| BusError::request(what(), e))?;
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| BusError::request(what(), e))?;
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{}", store.stream_name),
            inbox,
            body.into(),
        )
        .await
        .map_err(|e| BusError::request(what(), e))?;
    let mut values = vec![None; keys.len()];
    let collect = async {
        while let Some(message) = replies.next().await {
            match message.status.map(|s| s.as_u16()) {
                None => {}
                // End of batch, or none of the keys exists.
                Some(204 | 404) => return Ok(()),
                Some(status) => {
                    let reason = message.description.unwrap_or_default();
                    return Err(BusError::request(
                        what(),
                        format!("the server answered {status} {reason}"),
                    ));
                }
            }
            let headers = message.headers.as_ref();
            let subject = headers.and_then(|h| h.get("Nats-Subject"));
            let Some(places) = subject.and_then(|s| slots.remove(s.as_str())) else {
                continue;
            };
            let deleted = headers
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
            if !deleted {
                for place in places {
                    values[place] = Some(message.payload.clone());
                }
            }
        }
        Err(BusError::request(what(), "the reply subscription ended"))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, collect).await {
        Ok(result) => result.map(|()| values),
        Err(_) => Err(BusError::request(what(), "no complete answer within 5 s")),
    }
}

async fn one_by_one(store: &kv::Store, keys: &[String]) -> Result<Vec<Option<Bytes>>, BusError> {
    let reads = keys.iter().map(|key| async move {
        store
            .get(key)
            .await
            .map_err(|e| BusError::kv(&store.name, "read", key, e))
    });
    join_all(reads).await.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::supports_batched_get;

    #[test]
    fn batched_gets_need_nats_server_2_11() {
        assert!(supports_batched_get("2.12.8"));
        assert!(supports_batched_get("2.11.0-RC.1"));
        assert!(supports_batched_get("3.0.0"));
        assert!(!supports_batched_get("2.10.29"));
        assert!(
            !supports_batched_get(""),
            "an unknown server is read key by key"
        );
    }
}
