//! Connecting to a loader's control plane: the URL (`PEOPLESYNC_CONTROL_URL`), TLS with an
//! optional CA file, the bearer token (`PEOPLESYNC_CONTROL_TOKEN` or `_FILE`) on every call,
//! and the exit code each gRPC status becomes, so scripts can tell failures apart.

use std::path::Path;
use std::time::Duration;

use peoplesync_proto::v1::sync_control_client::SyncControlClient;
use secrecy::ExposeSecret;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

/// The client type every command uses.
pub type Client = SyncControlClient<InterceptedService<Channel, BearerToken>>;

/// How long a unary call may take (previews read Sage People and Oomnitza).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// Exit codes scripts can rely on (docs/control-plane.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The operation failed (a run failed, dead letters with --fail-on-dead-letters, an
    /// internal error).
    pub const FAILED: u8 = 1;
    /// Wrong usage or invalid input (bad flags, an invalid config).
    pub const USAGE: u8 = 2;
    /// The token is missing or wrong.
    pub const UNAUTHENTICATED: u8 = 3;
    /// The integration, run, worker or config does not exist.
    pub const NOT_FOUND: u8 = 4;
    /// The control plane, NATS or the extractor cannot be reached, or did not answer in time.
    pub const UNAVAILABLE: u8 = 5;
    /// The state does not allow it (a stale config revision, an invalid stored config).
    pub const FAILED_PRECONDITION: u8 = 6;
    /// `check`: a setting or credential is wrong and must be fixed (unreachable services give
    /// [`UNAVAILABLE`]).
    pub const MISCONFIGURED: u8 = 7;
}

/// A failure, with the exit code it gives.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// What to tell the operator.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// Wrong usage or input.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(exit::USAGE, message)
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        let code = match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => exit::UNAUTHENTICATED,
            Code::NotFound => exit::NOT_FOUND,
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
                exit::UNAVAILABLE
            }
            Code::FailedPrecondition
                if status
                    .metadata()
                    .get(peoplesync_proto::error_kind::KEY)
                    .is_some_and(|v| v == peoplesync_proto::error_kind::MISCONFIGURED) =>
            {
                exit::MISCONFIGURED
            }
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                exit::FAILED_PRECONDITION
            }
            Code::InvalidArgument | Code::OutOfRange => exit::USAGE,
            _ => exit::FAILED,
        };
        let name = format!("{:?}", status.code());
        Failure::new(code, format!("{name}: {}", status.message()))
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Connects to `url` (TLS when it is https, trusting `ca_file` or the public roots).
pub async fn connect(url: &str, ca_file: Option<&Path>) -> Result<Client, Failure> {
    let token = peoplesync_runtime::env_or_file("PEOPLESYNC_CONTROL_TOKEN")
        .map_err(|e| Failure::usage(e.to_string()))?;
    let token = match token {
        Some(token) => {
            let value = format!("Bearer {}", token.expose_secret().trim());
            Some(value.parse::<MetadataValue<Ascii>>().map_err(|_| {
                Failure::usage("PEOPLESYNC_CONTROL_TOKEN contains characters a header cannot carry")
            })?)
        }
        None => None,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| {
            Failure::usage(format!(
                "PEOPLESYNC_CONTROL_URL / --url {url:?} is not a URL ({e}); use http://HOST:PORT or https://HOST:PORT"
            ))
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    let https = url.starts_with("https://");
    if https || ca_file.is_some() {
        if !https {
            return Err(Failure::usage(format!(
                "--ca-file is given but {url} is not https://; use an https:// URL for TLS"
            )));
        }
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Failure::usage(format!("--ca-file {}: cannot read it: {e}", path.display()))
            })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Failure::usage(format!("TLS setup for {url}: {e}")))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            detail = format!("{detail}: {cause}");
            source = cause.source();
        }
        Failure::new(
            exit::UNAVAILABLE,
            format!(
                "cannot reach the control plane at {url} ({detail}); is an oomnitza-loader running with \
                 PEOPLESYNC_CONTROL_TOKEN set, and does PEOPLESYNC_CONTROL_URL point at its CONTROL_LISTEN?"
            ),
        )
    })?;
    Ok(
        SyncControlClient::with_interceptor(channel, BearerToken(token))
            .max_decoding_message_size(16 * 1024 * 1024),
    )
}

/// A unary request with the call timeout.
pub fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}
