//! The peoplesync control plane: the gRPC service `SyncControl` (proto/peoplesync/v1/
//! control.proto) that every oomnitza-loader replica serves, so any replica can answer. It
//! triggers runs and reads single workers through the extractor's NATS command protocol,
//! reads run progress from run records and outcome counts, stores integration configs with
//! revisions, checks an integration before its first run, previews a worker against Oomnitza,
//! sets pause flags, lists, replays, summarises and purges dead letters, and reports an
//! integration's status at a glance.
//!
//! Every call needs `authorization: Bearer <CONTROL_TOKEN>`; the standard health and
//! reflection services answer without it. `docs/control-plane.md` is the operator's guide.

mod auth;
mod check;
pub mod config;
mod dead_letters;
mod extractor;
mod integrations;
mod leavers;
mod overview;
mod pause;
mod preview;
mod runs;
mod server;
mod service;
mod status;

pub use auth::Authenticator;
pub use check::{credentials_refused, probe_mapped_fields};
pub use config::{Auth, ControlConfig, TlsFiles};
pub use server::{ControlGate, ControlServer};
pub use service::ControlService;

/// Why the control plane could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A setting is wrong; the message names the variable.
    #[error("control plane configuration: {0}")]
    Config(String),
    /// The listen address cannot be bound.
    #[error(
        "control plane cannot listen on {addr}: {source}; is another process (or loader replica) using it? set CONTROL_LISTEN to a free address"
    )]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error(
        "control plane TLS ({path}): {message}; CONTROL_TLS_CERT_FILE and CONTROL_TLS_KEY_FILE must be readable PEM files"
    )]
    Tls {
        /// The file(s).
        path: String,
        /// Why.
        message: String,
    },
    /// The server failed while serving.
    #[error("control plane server: {0}")]
    Serve(String),
}
