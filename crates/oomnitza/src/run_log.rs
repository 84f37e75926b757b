//! A portion's run log (`GET /api/v3/connector_run_logs/connectors/{portion}`): how many records
//! were added, updated, unchanged, skipped, failed or still processing, and the failed records.
//!
//! Oomnitza does not publish this shape, so decoding is lenient: missing counts read as zero,
//! and every member peoplesync does not know is kept in `other`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::client::OomnitzaClient;
use crate::error::Error;

/// The counts and failures of one portion (integration run).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct RunLog {
    /// Users created.
    #[serde(default, deserialize_with = "count")]
    pub added: u64,
    /// Users updated.
    #[serde(default, deserialize_with = "count")]
    pub updated: u64,
    /// Records that changed nothing.
    #[serde(default, deserialize_with = "count")]
    pub unchanged: u64,
    /// Records skipped (create-only on an existing user, update-only on an unknown one).
    #[serde(default, deserialize_with = "count")]
    pub skipped: u64,
    /// Records that failed.
    #[serde(default, deserialize_with = "count")]
    pub failed: u64,
    /// Records still being processed.
    #[serde(default, deserialize_with = "count")]
    pub processing: u64,
    /// The failed records with their reasons.
    #[serde(
        default,
        alias = "failures",
        alias = "errors",
        deserialize_with = "failures"
    )]
    pub failed_records: Vec<FailedRecord>,
    /// Every other member of the answer, as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A record of the run log that failed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct FailedRecord {
    /// The record as posted (`null` when Oomnitza did not echo it).
    #[serde(default)]
    pub record: Value,
    /// Why it failed.
    #[serde(default, alias = "error", alias = "message")]
    pub reason: Option<String>,
    /// Every other member, as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A count that may be missing, `null`, a number or a numeric string.
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(number) => number.as_u64().unwrap_or(0),
        Value::String(text) => text.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

/// A failure list that may be missing or `null`.
fn failures<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<FailedRecord>, D::Error> {
    Ok(Option::<Vec<FailedRecord>>::deserialize(deserializer)?.unwrap_or_default())
}

impl RunLog {
    /// Records accepted but not applied yet.
    pub fn processing(&self) -> u64 {
        self.processing
    }

    /// Records discarded because the portion was canceled.
    pub fn canceled(&self) -> u64 {
        0
    }

    /// Oomnitza's messages about records that failed.
    pub fn failure_messages(&self) -> impl Iterator<Item = &str> {
        self.failed_records
            .iter()
            .filter_map(|failed| failed.reason.as_deref())
    }
}

impl OomnitzaClient {
    /// Reads a portion's run log.
    pub async fn run_log(&self, portion: &str) -> Result<RunLog, Error> {
        let what = format!("reading the run log of portion {portion}");
        let url = self.url(
            &["api", "v3", "connector_run_logs", "connectors", portion],
            &[],
        );
        let reply = self
            .send_retrying(&what, &[], |http| http.get(url.clone()))
            .await?;
        self.decode(&what, &reply.body)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_counts_failures_and_keeps_the_rest() {
        let log: RunLog = serde_json::from_value(json!({
            "portion": "p",
            "added": 3, "updated": "2", "unchanged": null, "failed": 1,
            "failed_records": [{"record": {"EMAIL": "x"}, "reason": "bad role", "row": 4}],
            "finished_at": "2025-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            (
                log.added,
                log.updated,
                log.unchanged,
                log.skipped,
                log.failed,
                log.processing
            ),
            (3, 2, 0, 0, 1, 0)
        );
        assert_eq!(log.failed_records.len(), 1);
        assert_eq!(log.failed_records[0].reason.as_deref(), Some("bad role"));
        assert_eq!(log.failed_records[0].record, json!({"EMAIL": "x"}));
        assert_eq!(log.failed_records[0].other["row"], 4);
        assert_eq!(log.other["portion"], "p");
        assert_eq!(log.other["finished_at"], "2025-01-01T00:00:00Z");
    }

    #[test]
    fn an_empty_object_is_an_empty_log() {
        let log: RunLog = serde_json::from_value(json!({"failed_records": null})).unwrap();
        assert_eq!(log, RunLog::default());
    }
}
