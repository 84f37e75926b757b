//! Bulk portions: posting batches of user records to `POST /api/v3/bulk`, reading a portion's
//! status, and finalizing it.
//!
//! `post_bulk` is on the loader's hot path: the envelope borrows the caller's records and is
//! serialised once, straight into the request body; it makes exactly one attempt and classifies
//! the outcome, because the loader owns retries, rate limiting and batch splitting.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::OomnitzaClient;
use crate::error::{Error, Operation};

/// One batch of user records for a portion. A record is any serialisable JSON object: a map
/// of field id → value, or the same already serialised (`&RawValue`), which is written as it is.
#[derive(Debug)]
pub struct BulkRequest<'a, R = Map<String, Value>> {
    /// The portion (integration run) id, a UUID chosen by the client.
    pub portion: &'a str,
    /// Field ids that identify a user, in priority order (for example `["EMAIL"]`).
    pub sync_field: &'a [String],
    /// Create only: existing users are left alone.
    pub insert_only: bool,
    /// Update only: unknown users are not created.
    pub update_only: bool,
    /// The records, field id → value.
    pub records: &'a [R],
    /// Set to report `records` as failed with this reason (records the client could not build).
    pub error: Option<&'a str>,
}

// Not derived: a derive would ask `R: Clone`/`R: Copy`, though only a reference is copied.
impl<R> Clone for BulkRequest<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for BulkRequest<'_, R> {}

/// The documented envelope, borrowing everything.
#[derive(Serialize)]
struct Envelope<'a, R> {
    connector_version: &'a str,
    connector_name: &'a str,
    portion: &'a str,
    data_type: &'static str,
    sync_field: &'a [String],
    insert_only: bool,
    update_only: bool,
    test_run: bool,
    error: Option<&'a str>,
    records: &'a [R],
}

impl<R: Serialize> BulkRequest<'_, R> {
    /// The JSON body of this request, as sent by [`OomnitzaClient::post_bulk`].
    pub fn to_body(&self, connector_name: &str, connector_version: &str) -> Vec<u8> {
        let envelope = Envelope {
            connector_version,
            connector_name,
            portion: self.portion,
            data_type: "users",
            sync_field: self.sync_field,
            insert_only: self.insert_only,
            update_only: self.update_only,
            test_run: false,
            error: self.error,
            records: self.records,
        };
        // A user record is a few hundred bytes; starting near the final size avoids most
        // reallocations.
        let mut body = Vec::with_capacity(256 + self.records.len() * 384);
        // Serialising JSON objects into a Vec cannot fail: keys are strings and there is no I/O.
        if let Err(error) = serde_json::to_writer(&mut body, &envelope) {
            tracing::error!(%error, "serialising a bulk envelope failed");
        }
        body
    }
}

/// A portion's state in Oomnitza.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PortionStatus {
    /// An administrator canceled the run: stop sending to it.
    pub canceled: bool,
    /// The portion was finalized: the run is complete.
    pub finalized: bool,
}

/// The outcome of [`OomnitzaClient::finalize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finalize {
    /// This call finalized the portion.
    Finalized,
    /// The portion was already finalized (or canceled): Oomnitza answered `409`.
    AlreadyFinalized,
}

impl OomnitzaClient {
    /// Posts one batch of user records to its portion: one attempt, no retry.
    ///
    /// `Ok` means Oomnitza *accepted* the batch, not that its records were applied: Oomnitza
    /// processes them afterwards, and a record can still fail then. Per-record outcomes are in
    /// the run log ([`OomnitzaClient::run_log`]); what landed is what reading the users back
    /// shows. A canceled portion may still answer `Ok` (Oomnitza publishes nothing about it):
    /// poll [`OomnitzaClient::portion`] for `canceled`. Errors:
    /// [`Transient`](crate::ErrorKind::Transient) (send again later, after `retry_after`),
    /// [`Rejected`](crate::ErrorKind::Rejected) (split the batch to isolate bad records),
    /// [`Closed`](crate::ErrorKind::Closed) (the portion is finalized),
    /// [`Unauthorized`](crate::ErrorKind::Unauthorized) (stop loading).
    pub async fn post_bulk<R: Serialize>(&self, request: &BulkRequest<'_, R>) -> Result<(), Error> {
        let inner = self.inner();
        let body =
            bytes::Bytes::from(request.to_body(&inner.connector_name, &inner.connector_version));
        let what = format!(
            "a bulk post of {} user record(s) to portion {}",
            request.records.len(),
            request.portion
        );
        // The body is refcounted: re-sending it after a token renewal copies nothing.
        self.send(&what, Operation::BulkPost, &[], |http| {
            http.post(inner.bulk_url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await?;
        Ok(())
    }

    /// Reads a portion's state; `None` when Oomnitza does not know the portion.
    pub async fn portion(&self, portion: &str) -> Result<Option<PortionStatus>, Error> {
        let what = format!("reading portion {portion}");
        let url = self.url(&["api", "v3", "bulk", portion], &[]);
        let reply = self
            .send_retrying(&what, &[404], |http| http.get(url.clone()))
            .await?;
        if reply.status == 404 {
            return Ok(None);
        }
        self.decode(&what, &reply.body).map(Some)
    }

    /// Finalizes a portion: Oomnitza finishes processing and marks the run complete. Finalizing
    /// twice is harmless: the second call returns [`Finalize::AlreadyFinalized`].
    pub async fn finalize(&self, portion: &str) -> Result<Finalize, Error> {
        let what = format!("finalizing portion {portion}");
        let reply = self
            .send_retrying(&what, &[409], self.finalize_request(portion))
            .await?;
        Ok(if reply.status == 409 {
            Finalize::AlreadyFinalized
        } else {
            Finalize::Finalized
        })
    }

    /// The request that finalizes `portion` (`POST /api/v3/bulk/{portion}/finalize`, body `{}`).
    pub(crate) fn finalize_request(
        &self,
        portion: &str,
    ) -> impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + use<> {
        let url = self.url(&["api", "v3", "bulk", portion, "finalize"], &[]);
        move |http| {
            http.post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body("{}")
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_envelope_is_the_documented_one() {
        let records = vec![
            json!({"USER": "ada@example.com", "EMAIL": "ada@example.com", "PERMISSIONS_ID": "25"})
                .as_object()
                .cloned()
                .unwrap(),
        ];
        let sync_field = vec!["EMAIL".to_owned()];
        let request = BulkRequest {
            portion: "29f56f78-03ca-4e64-9ee3-c01758addc42",
            sync_field: &sync_field,
            insert_only: false,
            update_only: true,
            records: &records,
            error: None,
        };
        let body: Value = serde_json::from_slice(&request.to_body("peoplesync", "0.1.0")).unwrap();
        assert_eq!(
            body,
            json!({
                "connector_version": "0.1.0",
                "connector_name": "peoplesync",
                "portion": "29f56f78-03ca-4e64-9ee3-c01758addc42",
                "data_type": "users",
                "sync_field": ["EMAIL"],
                "insert_only": false,
                "update_only": true,
                "test_run": false,
                "error": null,
                "records": [{"USER": "ada@example.com", "EMAIL": "ada@example.com", "PERMISSIONS_ID": "25"}]
            })
        );
        let failed = BulkRequest {
            error: Some("no e-mail"),
            ..request
        };
        let body: Value = serde_json::from_slice(&failed.to_body("n", "v")).unwrap();
        assert_eq!(body["error"], "no e-mail");
    }
}
