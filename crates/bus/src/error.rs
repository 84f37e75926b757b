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
