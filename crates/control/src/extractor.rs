//! Asking the extractor to do something over NATS request/reply (the protocol is in
//! `peoplesync_bus::control`): start a run, read or sync one worker, release held removals.
//! No responder means no extractor is running for the integration, which an operator must hear
//! in those words.

use std::time::Duration;

use async_nats::RequestErrorKind;
use bytes::Bytes;
use peoplesync_bus::control::{self, Reply};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Status;

use crate::status;

/// How long a run trigger may take to be acknowledged (the run itself goes on after).
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long releasing held removals may take.
pub(crate) const APPROVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The extractor, reached through the loader's NATS connection.
#[derive(Clone)]
pub(crate) struct Extractor {
    client: async_nats::Client,
}

impl Extractor {
    pub(crate) fn new(client: async_nats::Client) -> Extractor {
        Extractor { client }
    }

    /// Sends `command` with `body` to the extractor of `integration` and decodes its reply.
    pub(crate) async fn request<Req, Rep>(
        &self,
        integration: &str,
        command: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Rep, Status>
    where
        Req: Serialize,
        Rep: DeserializeOwned,
    {
        let subject = control::subject(integration, command);
        let payload = serde_json::to_vec(body)
            .map_err(|e| Status::internal(format!("encoding the `{command}` request: {e}")))?;
        let request = async_nats::Request::new()
            .payload(Bytes::from(payload))
            .timeout(Some(timeout));
        let reply = self
            .client
            .send_request(subject.clone(), request)
            .await
            .map_err(|err| match err.kind() {
                RequestErrorKind::NoResponders => Status::unavailable(format!(
                    "no extractor is answering for integration {integration}; is sage-extractor running \
                     (as a service, not --once) with {integration} among its integrations?"
                )),
                RequestErrorKind::TimedOut => Status::deadline_exceeded(format!(
                    "the extractor of integration {integration} did not answer `{command}` within {}s; \
                     it may be busy or Sage People slow — check the extractor's log and retry",
                    timeout.as_secs()
                )),
                _ => status::nats(&format!("asking the extractor ({subject})"), err),
            })?;
        let reply: Reply<Rep> = serde_json::from_slice(&reply.payload).map_err(|e| {
            Status::internal(format!(
                "the extractor's reply to `{command}` for {integration} cannot be read ({e}); \
                 are sage-extractor and oomnitza-loader the same version?"
            ))
        })?;
        reply
            .into_result()
            .map_err(|err| status::command(integration, command, err))
    }
}
