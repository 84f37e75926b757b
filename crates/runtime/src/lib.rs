//! What every peoplesync service process shares and nothing else needs: loading its
//! configuration (defaults, TOML file, environment), reading secrets from
//! the environment or from files (`<NAME>_FILE`), setting up logs (`RUST_LOG`,
//! `LOG_FORMAT=json`), turning SIGTERM/Ctrl-C into a cancellation token for a drain, and the
//! operations endpoint (`/metrics`, `/healthz`, `/readyz`) with its readiness conditions,
//! waiting on a KV watch that may have been lost, and starting a lost watch or subscription
//! again.
//!
//! Kept apart from `peoplesync-core`, which stays free of I/O.

pub mod env_config;
pub mod http;
pub mod metrics;
pub mod readiness;
pub mod restart;
pub mod secrets;
pub mod service_config;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod watch;

pub use readiness::{Readiness, ReadinessStatus};
pub use secrets::{SecretError, SecretSource, env_or_file, env_or_file_with, require};
pub use service_config::ConfigError;
pub use shutdown::shutdown_token;
pub use telemetry::init_logging;
