//! A portion's run log (`GET /api/v3/connector_run_logs/connectors/{portion}`), in the shape
//! of the published schema "Connector run logs portion details": record counts per outcome
//! under `objects` (`processing` counts records accepted but not applied yet) and free-text
//! messages per outcome under `logs` (`"Fatal Error"`, `failed`, ...).
//!
//! Oomnitza processes bulk records asynchronously, so a run log with `processing > 0` is not
//! final; and the text of a message is not specified: show it to an operator as Oomnitza's
//! reason, but find out which records landed by reading the users back. Decoding is lenient:
//! missing counts read as zero, missing lists as empty, and every member peoplesync does not
//! know is kept. A log in the older flat shape (counts at the top level) is read too; a log with
//! no counts at all is an invalid answer, never "nothing processing".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::OomnitzaClient;
use crate::error::Error;

/// The record counts of a run log, by outcome.
const COUNTS: [&str; 7] = [
    "added",
    "updated",
    "unchanged",
    "skipped",
    "failed",
    "canceled",
    "processing",
];

/// The `logs` key of messages about failures that stopped a run.
pub const FATAL_ERROR: &str = "Fatal Error";

/// The record counts of a run (`objects`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Map<String, Value>")]
pub struct RunCounts {
    /// Users created.
    pub added: u64,
    /// Users updated.
    pub updated: u64,
    /// Records that changed nothing.
    pub unchanged: u64,
    /// Records skipped (create-only on an existing user, update-only on an unknown one).
    pub skipped: u64,
    /// Records that failed.
    pub failed: u64,
    /// Records discarded because the run was canceled.
    pub canceled: u64,
    /// Records accepted and not applied yet.
    pub processing: u64,
    /// Every other count, as sent.
    pub other: Map<String, Value>,
}

/// One portion's run log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct RunLog {
    /// The run's status as Oomnitza words it (empty when absent).
    pub status: String,
    /// The run was a test run: the counts say what would have happened; nothing was applied.
    pub test_run: bool,
    /// Record counts per outcome.
    pub counts: RunCounts,
    /// Messages per outcome (`"Fatal Error"`, `failed`, `added`, ...), as sent.
    pub logs: BTreeMap<String, Vec<String>>,
    /// Every other member of the answer (`connector`, `start_time`, `test_run_payload`, ...).
    pub other: Map<String, Value>,
}

impl RunLog {
    /// Records accepted and not applied yet: the counts are final once this is zero.
    pub fn processing(&self) -> u64 {
        self.counts.processing
    }

    /// The messages about failed records (free text naming the record and the reason).
    pub fn failed_messages(&self) -> &[String] {
        self.messages("failed")
    }

    /// The first message about a failed record that names `value` (any case) as a whole, not
    /// inside a longer name, address or id: Oomnitza's reason for that record, as far as its
    /// free text can be matched.
    pub fn failure_naming(&self, value: &str) -> Option<&str> {
        let value = value.to_lowercase();
        self.failed_messages()
            .iter()
            .find(|message| message_names(&message.to_lowercase(), &value))
            .map(String::as_str)
    }

    /// The messages about failures that stopped the run.
    pub fn fatal_errors(&self) -> &[String] {
        self.messages(FATAL_ERROR)
    }

    /// The messages logged under `outcome`, empty if none.
    pub fn messages(&self, outcome: &str) -> &[String] {
        self.logs.get(outcome).map_or(&[], Vec::as_slice)
    }
}

/// Whether run-log `message` names `value` (both lower-cased) as a whole: `ann@example.com`
/// names neither `jo` in `joann@example.com` nor `ann@example.co`. A full stop after it ends a
/// sentence, not the name.
pub fn message_names(message: &str, value: &str) -> bool {
    names_whole(message, value, |c| {
        c.is_alphanumeric() || matches!(c, '_' | '-' | '@' | '+' | '.')
    })
}

/// Whether `message` holds `value` with no character `part_of_a_name` accepts on either side
/// (a full stop that one accepts still ends a sentence when no letter or digit follows it).
pub(crate) fn names_whole(
    message: &str,
    value: &str,
    part_of_a_name: impl Fn(char) -> bool,
) -> bool {
    !value.is_empty()
        && message.match_indices(value).any(|(at, _)| {
            let before = message[..at].chars().next_back();
            let mut rest = message[at + value.len()..].chars();
            let after = match rest.next() {
                Some('.') if part_of_a_name('.') => rest.next().filter(|c| c.is_alphanumeric()),
                after => after,
            };
            !before.is_some_and(&part_of_a_name) && !after.is_some_and(&part_of_a_name)
        })
}

/// A count that may be missing, `null`, a number or a numeric string.
fn count(value: Option<Value>) -> u64 {
    match value {
        Some(Value::Number(number)) => number.as_u64().unwrap_or(0),
        Some(Value::String(text)) => text.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// A message list that may be missing, `null`, one string, or hold non-strings (shown as JSON).
fn messages(value: Value) -> Vec<String> {
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.into_iter().map(text).collect(),
        other => vec![text(other)],
    }
}

impl From<Map<String, Value>> for RunCounts {
    fn from(mut objects: Map<String, Value>) -> Self {
        let mut take = |name: &str| count(objects.remove(name));
        RunCounts {
            added: take("added"),
            updated: take("updated"),
            unchanged: take("unchanged"),
            skipped: take("skipped"),
            failed: take("failed"),
            canceled: take("canceled"),
            processing: take("processing"),
            other: objects,
        }
    }
}

impl TryFrom<Value> for RunLog {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        let Value::Object(mut body) = value else {
            return Err("a run log is a JSON object".into());
        };
        let counts = match body.remove("objects") {
            Some(Value::Object(objects)) => RunCounts::from(objects),
            // The older flat shape: the counts are members of the log itself.
            _ => {
                let flat: Map<String, Value> = COUNTS
                    .into_iter()
                    .filter_map(|name| Some((name.to_owned(), body.remove(name)?)))
                    .collect();
                // A log with no counts at all (`{}`, an error object) would read as "nothing
                // processing" and end the wait for records still being processed.
                if flat.is_empty() {
                    return Err(
                        "a run log holds its record counts under `objects`; this one has none"
                            .into(),
                    );
                }
                RunCounts::from(flat)
            }
        };
        let logs = match body.remove("logs") {
            Some(Value::Object(logs)) => logs
                .into_iter()
                .map(|(outcome, list)| (outcome, messages(list)))
                .collect(),
            _ => BTreeMap::new(),
        };
        let status = match body.remove("status") {
            Some(Value::String(status)) => status,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let test_run = matches!(body.remove("test_run"), Some(Value::Bool(true)));
        Ok(RunLog {
            status,
            test_run,
            counts,
            logs,
            other: body,
        })
    }
}

impl OomnitzaClient {
    /// Reads a portion's run log. Records are processed after their batch is accepted, so
    /// read it again until [`RunLog::processing`] is zero before taking the counts as final.
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
    fn a_failure_is_found_by_a_value_it_names_as_a_whole() {
        let log: RunLog = serde_json::from_value(json!({
            "objects": {"failed": 2},
            "logs": {"failed": [
                "USER 'joann@example.com': bad role",
                "USER 'Ann@Example.com', a0B000000000000010: PERMISSIONS_ID \"3\" is not a role.",
            ]}
        }))
        .unwrap();
        let second = Some(log.failed_messages()[1].as_str());
        assert_eq!(log.failure_naming("ann@example.com"), second);
        assert_eq!(log.failure_naming("A0B000000000000010"), second);
        assert_eq!(
            log.failure_naming("a0B00000000000001"),
            None,
            "part of an id"
        );
        assert_eq!(
            log.failure_naming("ann@example.co"),
            None,
            "part of an address"
        );
        assert_eq!(
            log.failure_naming("example.com"),
            None,
            "part of an address"
        );
        assert_eq!(log.failure_naming(""), None);
        assert!(
            message_names("user ann: a role.", "role"),
            "a full stop ends the name"
        );
        assert!(!message_names("user ann: a role.x", "role"));
    }

    #[test]
    fn reads_the_published_shape_and_keeps_the_rest() {
        let log: RunLog = serde_json::from_value(json!({
            "connector": "sage-people", "deployment": "", "status": "in_progress",
            "start_time": 1_700_000_000, "end_time": 0, "ipv4_address": "10.0.0.1",
            "test_run": false, "test_run_payload": [], "file_attachment": null,
            "objects": {"added": 3, "updated": "2", "failed": 1, "skipped": null,
                        "canceled": 4, "processing": 5, "archived": 6},
            "logs": {"Fatal Error": [], "failed": ["EMAIL 'x': bad role"], "added": null,
                     "skipped": "one message", "updated": [7]}
        }))
        .unwrap();
        let c = &log.counts;
        assert_eq!(
            (
                c.added,
                c.updated,
                c.unchanged,
                c.skipped,
                c.failed,
                c.canceled,
                c.processing
            ),
            (3, 2, 0, 0, 1, 4, 5)
        );
        assert_eq!(c.other["archived"], 6);
        assert_eq!(log.processing(), 5);
        assert_eq!(log.status, "in_progress");
        assert!(!log.test_run);
        assert_eq!(log.failed_messages(), ["EMAIL 'x': bad role"]);
        assert!(log.fatal_errors().is_empty());
        assert!(log.messages("added").is_empty());
        assert_eq!(log.messages("skipped"), ["one message"]);
        assert_eq!(log.messages("updated"), ["7"]);
        assert_eq!(log.other["connector"], "sage-people");
        assert_eq!(log.other["start_time"], 1_700_000_000);
    }

    #[test]
    fn reads_the_older_flat_shape() {
        let log: RunLog =
            serde_json::from_value(json!({"added": 2, "failed": "1", "portion": "p"})).unwrap();
        assert_eq!((log.counts.added, log.counts.failed), (2, 1));
        assert_eq!(log.other["portion"], "p");
    }

    #[test]
    fn a_log_without_counts_or_a_list_is_refused() {
        // Read as zeros, `{}` would say nothing is processing and end the wait too early.
        for body in [json!({}), json!({"error": "busy"}), json!([1])] {
            assert!(
                serde_json::from_value::<RunLog>(body.clone()).is_err(),
                "{body}"
            );
        }
        let empty: RunLog = serde_json::from_value(json!({"objects": {}})).unwrap();
        assert_eq!(empty.processing(), 0);
    }
}
