//! Inspecting a tenant before the first run, for `syncctl check`: whether the field ids a
//! mapping writes are known to Oomnitza, asked with a one-record `test_run` bulk post to a
//! throwaway portion. A test run validates and applies nothing; Oomnitza refuses an envelope
//! that names an unknown field id with a `400` naming it, before any record is looked at. A
//! portion Oomnitza took is finalized afterwards, as Oomnitza's own connector ends every run,
//! test runs included, so the check leaves no run open in Oomnitza's run log.
//!
//! The published External API has no read of user roles (only SaaS roles), so a role id
//! cannot be checked here. Oomnitza accepts a batch whatever its roles; a record whose role
//! does not exist fails afterwards, while Oomnitza processes it, and shows in the run's
//! verification.

use rand::Rng;
use serde_json::{Map, Value, json};

use crate::client::OomnitzaClient;
use crate::error::{Error, ErrorKind, Operation, excerpt};

/// What a field-id probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldProbe {
    /// Oomnitza took the envelope: every field id is known. `status` is the HTTP status
    /// (`2xx`, or `422` when only the placeholder record itself was refused).
    Known {
        /// The answer's status.
        status: u16,
    },
    /// Oomnitza refused the envelope (`400`).
    Refused {
        /// The mapped field ids the answer names.
        unknown: Vec<String>,
        /// What Oomnitza said.
        message: String,
    },
}

impl OomnitzaClient {
    /// Posts one record holding every id of `field_ids` (each `null`) as a `test_run` to a new
    /// throwaway portion, and reports whether Oomnitza knows the ids. `sync_field` is sent as
    /// the integration sends it (its ids are checked too).
    ///
    /// How many unknown ids one refusal names is not published (a refusal may name only the
    /// first). So the test run is repeated without the ids the one before named, until
    /// Oomnitza takes it, names none of the ids left, or none is left: every unknown id is
    /// found, in at most one request more than there are ids (a test run applies nothing).
    pub async fn probe_field_ids(
        &self,
        sync_field: &[String],
        field_ids: &[String],
    ) -> Result<FieldProbe, Error> {
        let mut left: Vec<String> = field_ids.to_vec();
        let mut unknown: Vec<String> = Vec::new();
        let mut first_message: Option<String> = None;
        let mut runs = 0usize;
        loop {
            runs += 1;
            let answer = self.test_run(sync_field, &left).await?;
            let message = match answer {
                TestRun::Taken(status) if unknown.is_empty() => {
                    return Ok(FieldProbe::Known { status });
                }
                TestRun::Taken(_) => None,
                TestRun::Refused(message) => Some(message),
            };
            let named: Vec<String> = match &message {
                Some(message) => left
                    .iter()
                    .chain(sync_field)
                    .filter(|id| names(message, id))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            let sync_key_named = named.iter().any(|id| sync_field.contains(id));
            for id in &named {
                if !unknown.contains(id) {
                    unknown.push(id.clone());
                }
            }
            left.retain(|id| !named.contains(id));
            let first = first_message.get_or_insert_with(|| message.clone().unwrap_or_default());
            // Done when the run was taken, when it names none of the ids left (another
            // problem), when it names a sync key (sent on every run, so named again), or when
            // no id is left to try.
            if named.is_empty() || sync_key_named || left.is_empty() {
                let mut said = first.clone();
                if runs > 1 {
                    said.push_str(&format!(
                        "; {runs} test runs in all, each without the ids named before"
                    ));
                    if let Some(last) = message.filter(|_| named.is_empty()) {
                        said.push_str(&format!(", the last refused with: {last}"));
                    }
                }
                unknown.sort();
                return Ok(FieldProbe::Refused {
                    unknown,
                    message: said,
                });
            }
        }
    }

    /// One `test_run` post of a record holding `field_ids`; a portion Oomnitza took is
    /// finalized.
    async fn test_run(
        &self,
        sync_field: &[String],
        field_ids: &[String],
    ) -> Result<TestRun, Error> {
        let inner = self.inner();
        let portion = throwaway_portion();
        let record: Map<String, Value> = field_ids
            .iter()
            .map(|id| (id.clone(), Value::Null))
            .collect();
        let body = json!({
            "connector_version": inner.connector_version,
            "connector_name": inner.connector_name,
            "portion": portion,
            "data_type": "users",
            "sync_field": sync_field,
            "insert_only": false,
            "update_only": false,
            "test_run": true,
            "error": null,
            "records": [record],
        })
        .to_string();
        let what = format!("a test run naming {} field id(s)", field_ids.len());
        let reply = self
            .send_retrying(&what, &[400, 422], |http| {
                http.post(inner.bulk_url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        if reply.status != 400 {
            self.close_test_run(&portion).await;
            return Ok(TestRun::Taken(reply.status));
        }
        Ok(TestRun::Refused(
            excerpt(&reply.body).unwrap_or_else(|| "400 without a body".to_owned()),
        ))
    }
}

/// Oomnitza's answer to one test run.
enum TestRun {
    /// Taken, with this status (`2xx`, or `422` when only the placeholder record was refused).
    Taken(u16),
    /// Refused (`400`), with what Oomnitza said.
    Refused(String),
}

/// Whether `message` names field `id` as a whole word (so `EMAIL` is not found in
/// `EMAIL_2`).
fn names(message: &str, id: &str) -> bool {
    crate::run_log::names_whole(message, id, |c| c.is_ascii_alphanumeric() || c == '_')
}

impl OomnitzaClient {
    /// Whether the bulk endpoint answers: a read of a portion nobody posted to. Any answer but a
    /// transient failure counts (`404`, the usual one, included), whatever state one portion is
    /// in. For telling an outage of the bulk endpoint alone from one of the whole API.
    pub async fn bulk_answers(&self) -> Result<(), Error> {
        match self.portion(&throwaway_portion()).await {
            Err(err) if err.kind() == ErrorKind::Transient => Err(err),
            _ => Ok(()),
        }
    }

    /// Whether the users endpoints answer: a read of one user. Any answer but a transient
    /// failure counts. For telling an outage of the users endpoints alone (which leavers need)
    /// from one of the whole API.
    pub async fn users_answer(&self) -> Result<(), Error> {
        match self.find_users_json("", 1, 0).await {
            Err(err) if err.kind() == ErrorKind::Transient => Err(err),
            _ => Ok(()),
        }
    }
}

impl OomnitzaClient {
    /// Finalizes the test run `portion`, once and without retries: the check's answer does not
    /// depend on it, so a failure is only logged (the run stays open in Oomnitza's log).
    async fn close_test_run(&self, portion: &str) {
        let what = format!("finalizing the test run {portion}");
        let sent = self
            .send(
                &what,
                Operation::Other,
                &[404, 409],
                self.finalize_request(portion),
            )
            .await;
        if let Err(err) = sent {
            tracing::info!(portion, error = %err, "the field check's test run stays open in Oomnitza");
        }
    }
}

/// A random version-4 UUID for a portion of its own.
fn throwaway_portion() -> String {
    let mut rng = rand::rng();
    let a: u32 = rng.random();
    let b: u16 = rng.random();
    let c: u16 = rng.random::<u16>() & 0x0fff;
    let d: u16 = (rng.random::<u16>() & 0x3fff) | 0x8000;
    let e: u64 = rng.random::<u64>() & 0xffff_ffff_ffff;
    format!("{a:08x}-{b:04x}-4{c:03x}-{d:04x}-{e:012x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_id_is_found_as_a_whole_word_only() {
        let message = "records[0]: field id 'EMAIL_2' is not known to Oomnitza";
        assert!(names(message, "EMAIL_2"));
        assert!(!names(message, "EMAIL"));
        assert!(!names(message, "MAIL_2"));
    }

    #[test]
    fn throwaway_portions_are_version_4_uuids() {
        let portion = throwaway_portion();
        let parts: Vec<&str> = portion.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert_ne!(portion, throwaway_portion());
    }
}
