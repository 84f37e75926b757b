//! Configuration of the Oomnitza client: the tenant's URL, how to authenticate, the per-request
//! timeout, the connector identity sent with bulk posts, and how read calls retry.
//!
//! Secrets are `SecretString`s, so formatting a config with `{:?}` never shows them.

use std::time::Duration;

use secrecy::SecretString;

/// The request timeout used when none is configured.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The connector name sent in bulk envelopes when none is configured.
pub const DEFAULT_CONNECTOR_NAME: &str = "peoplesync";

/// Everything the client needs to reach one Oomnitza tenant.
#[derive(Clone, Debug)]
pub struct OomnitzaConfig {
    /// The tenant's base URL, `https://<tenant>.oomnitza.com`.
    pub base_url: String,
    /// How requests are authenticated.
    pub auth: OomnitzaAuth,
    /// Timeout of each HTTP request, connection and body included (default 30 s).
    pub request_timeout: Duration,
    /// `connector_name` of bulk envelopes; shows in Oomnitza's run log (default `peoplesync`).
    pub connector_name: String,
    /// `connector_version` of bulk envelopes (default: this crate's version).
    pub connector_version: String,
    /// How the read and control calls retry transient failures (`post_bulk` never retries).
    pub retry: RetryPolicy,
    /// Certificate authorities trusted besides the operating system's store and the built-in
    /// public roots: a private CA, such as that of a TLS-inspecting proxy (`OOMNITZA_CA_FILE`).
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl OomnitzaConfig {
    /// A configuration with the default timeout, connector identity and retry policy.
    pub fn new(base_url: impl Into<String>, auth: OomnitzaAuth) -> Self {
        OomnitzaConfig {
            base_url: base_url.into(),
            auth,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connector_name: DEFAULT_CONNECTOR_NAME.to_owned(),
            connector_version: env!("CARGO_PKG_VERSION").to_owned(),
            retry: default_retry_policy(),
            extra_roots: Vec::new(),
        }
    }
}

/// How the client authenticates to Oomnitza.
#[derive(Clone, Debug)]
pub enum OomnitzaAuth {
    /// An API token (Configuration > Security > API tokens), sent as `Authorization2`.
    ApiToken(SecretString),
    /// A login and password, exchanged for a token at `POST /api/request_token`; the token is
    /// cached and requested again once when Oomnitza refuses it.
    Password {
        /// The Oomnitza login.
        login: String,
        /// Its password.
        password: SecretString,
    },
}

impl OomnitzaAuth {
    /// How the client authenticates, for messages: `API token` or `password of <login>`.
    pub fn describe(&self) -> String {
        match self {
            OomnitzaAuth::ApiToken(_) => "API token".to_owned(),
            OomnitzaAuth::Password { login, .. } => format!("password of {login}"),
        }
    }
}

/// How the read and control calls (`portion`, `finalize`, `run_log`, `find_users`,
/// `check_auth`) retry transient failures: the shared policy of every outbound call.
pub use peoplesync_retry::RetryPolicy;

/// The Oomnitza default: 4 attempts, 200 ms doubling to at most 5 s apart (a longer
/// `Retry-After` is honoured), for up to 30 s.
pub fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        max_elapsed: Duration::from_secs(30),
    }
}
