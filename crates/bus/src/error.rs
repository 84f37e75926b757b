//! The bus error type: what went wrong talking to NATS, and with which stream, bucket or subject.
//! Each variant names what it was doing and keeps the underlying error as its `source`, so a
//! caller can log the whole chain or look at the client's own error kind.

/// The underlying error a [`BusError`] keeps: the client's error, or a description where the
/// failure is ours (a reply that does not decode, a count that does not add up).
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from the bus. The message names the NATS object involved; most are transient
/// (NATS unreachable or slow) and the caller retries or stops, as its context dictates.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Connecting to the NATS server failed.
    #[error(
        "cannot connect to NATS at {url}: {source}; check NATS_URL and that nats-server is running with JetStream enabled (-js)"
    )]
    Connect {
        /// The URL tried.
        url: String,
        /// The client's error.
        source: async_nats::ConnectError,
    },
    /// A NATS connection setting (`NATS_URL`, `NATS_USER`, `NATS_TLS_*`, …) is wrong.
    #[error(transparent)]
    Config(#[from] crate::connect::ConnectConfigError),
    /// The server refused the credentials; retrying with the same ones cannot succeed.
    #[error(
        "NATS at {url} refused the {method} given in {variables}: {message}; check the credentials and the server's authorization block or account"
    )]
    Auth {
        /// The seed URLs, without credentials.
        url: String,
        /// The method used, in words.
        method: &'static str,
        /// Where it is configured.
        variables: &'static str,
        /// What the client reported.
        message: String,
    },
    /// The TLS handshake with the servers failed: their certificate is not trusted, or they
    /// verify clients and this one has no (acceptable) certificate. Retrying cannot help.
    #[error(
        "the TLS handshake with NATS at {url} failed: trust the CA that signed the servers' certificates with NATS_TLS_CA_FILE, and give a client certificate (NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE) if the servers verify clients"
    )]
    Tls {
        /// The seed URLs, without credentials.
        url: String,
    },
    /// Creating or verifying a stream, consumer or bucket failed.
    #[error("setting up {what}: {source}")]
    Setup {
        /// The stream, consumer or bucket.
        what: String,
        /// What the server said.
        source: Source,
    },
    /// Publishing failed after its retries.
    #[error("publishing {id} to {subject}: {source}")]
    Publish {
        /// Subject published to.
        subject: String,
        /// The dedup id of the message.
        id: String,
        /// What failed.
        source: Source,
    },
    /// A KV operation failed.
    #[error("{op} key {key} in bucket {bucket}: {source}")]
    Kv {
        /// The operation (read, write, update).
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What failed.
        source: Source,
    },
    /// A message on the bus could not be decoded.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        source: Source,
    },
    /// Another JetStream request failed.
    #[error("{what}: {source}")]
    Request {
        /// What was asked.
        what: String,
        /// What failed.
        source: Source,
    },
}

impl BusError {
    /// Whether NATS has not answered yet, as opposed to refusing: a JetStream request timed
    /// out, JetStream had no responder, or it said it is temporarily unavailable or cannot
    /// place the replicas now. That is what a cluster electing its leaders, or a node that is
    /// starting or was just lost, answers; asking again later can succeed.
    pub fn is_unanswered(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = match self {
            BusError::Setup { source, .. }
            | BusError::Kv { source, .. }
            | BusError::Request { source, .. } => Some(source.as_ref()),
            _ => None,
        };
        while let Some(error) = next {
            if unanswered(error) {
                return true;
            }
            next = error.source();
        }
        false
    }

    pub(crate) fn setup(what: impl Into<String>, err: impl Into<Source>) -> Self {
        BusError::Setup {
            what: what.into(),
            source: err.into(),
        }
    }

    /// A failed KV operation `op` on `key` in `bucket`.
    pub fn kv(bucket: &str, op: &'static str, key: &str, err: impl Into<Source>) -> Self {
        BusError::Kv {
            op,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source: err.into(),
        }
    }

    /// A failed JetStream request about `what`.
    pub fn request(what: impl Into<String>, err: impl Into<Source>) -> Self {
        BusError::Request {
            what: what.into(),
            source: err.into(),
        }
    }

    /// A value of kind `what` that does not decode.
    pub fn decode(what: &'static str, err: impl Into<Source>) -> Self {
        BusError::Decode {
            what,
            source: err.into(),
        }
    }

    /// A publish of message `id` to `subject` that failed.
    pub fn publish(
        subject: impl Into<String>,
        id: impl Into<String>,
        err: impl Into<Source>,
    ) -> Self {
        BusError::Publish {
            subject: subject.into(),
            id: id.into(),
            source: err.into(),
        }
    }
}

/// Whether a compare-and-set write (a KV update or create, a publish expecting a subject's
/// last sequence) lost to another writer, so reading again and deciding afresh is right. The
/// client gives this its own kind only for the code a single server answers (10071); a
/// clustered server answers "wrong last sequence" with 10164, and "duplicate message id is in
/// process" (10158) while another writer's message with the same id is being stored, which
/// the client reports as another kind of error with the server's answer as its source.
pub(crate) fn lost_to_another_writer(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    use async_nats::jetstream::kv::{CreateError, CreateErrorKind, UpdateError, UpdateErrorKind};
    use async_nats::jetstream::{Error, ErrorCode};
    let mut next = Some(error);
    while let Some(error) = next {
        let lost = error
            .downcast_ref::<UpdateError>()
            .is_some_and(|e| e.kind() == UpdateErrorKind::WrongLastRevision)
            || error
                .downcast_ref::<CreateError>()
                .is_some_and(|e| e.kind() == CreateErrorKind::AlreadyExists)
            || error
                .downcast_ref::<PublishError>()
                .is_some_and(|e| e.kind() == PublishErrorKind::WrongLastSequence)
            || error.downcast_ref::<Error>().is_some_and(|e| {
                matches!(
                    e.error_code(),
                    ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                        | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
                        | ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT
                )
            });
        if lost {
            return true;
        }
        next = error.source();
    }
    false
}

/// How long to wait before reading again after the `attempt`-th lost race: a few
/// milliseconds, jittered, longer with each attempt (at most 100 ms), so that writers racing
/// for one key, or a read served by a server a little behind, do not spin against NATS.
pub(crate) fn race_pause(attempt: u32) -> std::time::Duration {
    let ceiling = 10 * u64::from(attempt.clamp(1, 10));
    let jitter = (uuid::Uuid::new_v4().as_u128() % u128::from(ceiling)) as u64;
    std::time::Duration::from_millis(1 + jitter)
}

/// Whether `error` itself (not its sources) is one of the client's "no answer yet" errors.
fn unanswered(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{
        AccountError, AccountErrorKind, CreateKeyValueError, CreateKeyValueErrorKind,
        CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind, PublishError,
        PublishErrorKind, RequestError, RequestErrorKind,
    };
    use async_nats::jetstream::kv;
    use async_nats::jetstream::stream::{
        ConsumerError, ConsumerErrorKind, DirectGetError, DirectGetErrorKind,
    };
    if let Some(e) = error.downcast_ref::<CreateStreamError>() {
        return match e.kind() {
            CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => true,
            CreateStreamErrorKind::JetStream(e) => not_available(&e),
            _ => false,
        };
    }
    if let Some(e) = error.downcast_ref::<ConsumerError>() {
        return match e.kind() {
            ConsumerErrorKind::TimedOut => true,
            ConsumerErrorKind::JetStream(e) => not_available(&e),
            _ => false,
        };
    }
    if let Some(e) = error.downcast_ref::<AccountError>() {
        return match e.kind() {
            AccountErrorKind::TimedOut | AccountErrorKind::JetStreamUnavailable => true,
            AccountErrorKind::JetStream(e) => not_available(&e),
            AccountErrorKind::Other => false,
        };
    }
    if let Some(e) = error.downcast_ref::<CreateKeyValueError>() {
        return e.kind() == CreateKeyValueErrorKind::TimedOut;
    }
    if let Some(e) = error.downcast_ref::<GetStreamError>() {
        // A request that failed keeps its cause as the source, looked at next.
        return matches!(e.kind(), GetStreamErrorKind::JetStream(e) if not_available(&e));
    }
    // Timeouts of KV reads, writes and watches, and of publishes, carry no source.
    if let Some(e) = error.downcast_ref::<kv::EntryError>() {
        return e.kind() == kv::EntryErrorKind::TimedOut;
    }
    if let Some(e) = error.downcast_ref::<kv::UpdateError>() {
        return e.kind() == kv::UpdateErrorKind::TimedOut;
    }
    if let Some(e) = error.downcast_ref::<kv::WatchError>() {
        return e.kind() == kv::WatchErrorKind::TimedOut;
    }
    if let Some(e) = error.downcast_ref::<PublishError>() {
        return e.kind() == PublishErrorKind::TimedOut;
    }
    if let Some(e) = error.downcast_ref::<DirectGetError>() {
        return e.kind() == DirectGetErrorKind::TimedOut;
    }
    if let Some(e) = error.downcast_ref::<RequestError>() {
        return matches!(
            e.kind(),
            RequestErrorKind::TimedOut | RequestErrorKind::NoResponders
        );
    }
    if let Some(e) = error.downcast_ref::<async_nats::RequestError>() {
        return matches!(
            e.kind(),
            async_nats::RequestErrorKind::TimedOut | async_nats::RequestErrorKind::NoResponders
        );
    }
    error
        .downcast_ref::<async_nats::jetstream::Error>()
        .is_some_and(not_available)
}

/// JetStream's own "not now" answers: temporarily unavailable (no meta leader yet), no
/// suitable peers for the replicas (a cluster node is down), the cluster cannot handle the
/// request (a leader is changing), and the stream is offline (its replicas have no quorum).
fn not_available(error: &async_nats::jetstream::Error) -> bool {
    use async_nats::jetstream::ErrorCode;
    matches!(
        error.error_code(),
        ErrorCode::CLUSTER_NOT_AVAILABLE
            | ErrorCode::CLUSTER_NO_PEERS
            | ErrorCode::CLUSTER_NOT_LEADER
            | ErrorCode::STREAM_OFFLINE
    )
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::context::{
        CreateKeyValueError, CreateKeyValueErrorKind, CreateStreamError, CreateStreamErrorKind,
    };

    use super::*;

    fn jetstream_error(err_code: u64) -> async_nats::jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 503, "err_code": err_code, "description": "from the server"
        }))
        .unwrap()
    }

    fn stream_error(kind: CreateStreamErrorKind) -> BusError {
        BusError::setup("stream S", CreateStreamError::new(kind))
    }

    #[test]
    fn a_lost_race_is_told_as_one_server_and_as_a_cluster_answers_it() {
        use async_nats::jetstream::context::{PublishError, PublishErrorKind};
        use async_nats::jetstream::kv::{CreateError, UpdateError, UpdateErrorKind};
        // A KV write refused by the server, as the client builds it: the server's answer is
        // the source of the publish error, itself the source of the update error.
        let refused = |code| {
            UpdateError::from(PublishError::with_source(
                PublishErrorKind::Other,
                jetstream_error(code),
            ))
        };
        // Wrong last sequence (one server, a cluster); duplicate message id in process.
        for code in [10071, 10164, 10158] {
            assert!(lost_to_another_writer(&refused(code)), "{code}");
            assert!(lost_to_another_writer(&CreateError::from(refused(code))));
        }
        let wrong_last_revision = UpdateError::new(UpdateErrorKind::WrongLastRevision);
        assert!(lost_to_another_writer(&wrong_last_revision));
        // Insufficient resources; a timeout.
        assert!(!lost_to_another_writer(&refused(10023)));
        assert!(!lost_to_another_writer(&UpdateError::new(
            UpdateErrorKind::TimedOut
        )));
    }

    #[test]
    fn no_answer_yet_is_told_from_a_refusal() {
        for unanswered in [
            stream_error(CreateStreamErrorKind::TimedOut),
            stream_error(CreateStreamErrorKind::JetStreamUnavailable),
            // JetStream system temporarily unavailable; no suitable peers for placement; the
            // cluster cannot handle the request; the stream is offline.
            stream_error(CreateStreamErrorKind::JetStream(jetstream_error(10008))),
            stream_error(CreateStreamErrorKind::JetStream(jetstream_error(10005))),
            stream_error(CreateStreamErrorKind::JetStream(jetstream_error(10009))),
            stream_error(CreateStreamErrorKind::JetStream(jetstream_error(10118))),
            // A KV read's timeout carries no source.
            BusError::kv(
                "B",
                "read",
                "k",
                async_nats::jetstream::kv::EntryError::new(
                    async_nats::jetstream::kv::EntryErrorKind::TimedOut,
                ),
            ),
            // Found behind another error of the client's, as a bucket's creation keeps it.
            BusError::setup(
                "bucket B",
                CreateKeyValueError::with_source(
                    CreateKeyValueErrorKind::BucketCreate,
                    CreateStreamError::new(CreateStreamErrorKind::TimedOut),
                ),
            ),
        ] {
            assert!(unanswered.is_unanswered(), "{unanswered}");
        }
        for refused in [
            // Subjects overlap with an existing stream; insufficient resources; JetStream not
            // enabled for the account; replicas > 1 on a server without clustering.
            stream_error(CreateStreamErrorKind::JetStream(jetstream_error(10065))),
            stream_error(CreateStreamErrorKind::JetStream(jetstream_error(10023))),
            stream_error(CreateStreamErrorKind::JetStream(jetstream_error(10039))),
            stream_error(CreateStreamErrorKind::JetStream(jetstream_error(10074))),
            stream_error(CreateStreamErrorKind::InvalidStreamName),
            BusError::decode("a run record", "not JSON"),
        ] {
            assert!(!refused.is_unanswered(), "{refused}");
        }
    }
}
