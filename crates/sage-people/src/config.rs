//! Configuration of the Sage People client: the org's login URL, the OAuth grant and its
//! credentials, the per-request timeout and the retry policy for transient failures.
//!
//! Secrets are `SecretString`s, so formatting a config with `{:?}` never shows them.

use std::time::Duration;

use secrecy::SecretString;

/// The request timeout used when none is configured: every call, the token endpoint included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the client needs to reach one Sage People org.
#[derive(Clone, Debug)]
pub struct SageConfig {
    /// The org's login host: its My Domain URL (`https://<domain>.my.salesforce.com`) or
    /// `https://login.salesforce.com` / `https://test.salesforce.com`.
    pub login_url: String,
    /// Which OAuth grant to use, with its credentials.
    pub credentials: Credentials,
    /// Timeout of each HTTP request, connection and body included (default 30 s).
    pub request_timeout: Duration,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
    /// Certificate authorities trusted besides the operating system's store and the built-in
    /// public roots: a private CA, such as that of a TLS-inspecting proxy (`SAGE_PEOPLE_CA_FILE`).
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl SageConfig {
    /// A configuration with the default timeout and retry policy.
    pub fn new(login_url: impl Into<String>, credentials: Credentials) -> Self {
        SageConfig {
            login_url: login_url.into(),
            credentials,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry: default_retry_policy(),
            extra_roots: Vec::new(),
        }
    }
}

/// The Salesforce OAuth 2.0 grant used to get an access token, with its credentials.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Client credentials (recommended): the External Client App's consumer key and secret; the
    /// app's run-as user is the API user. Only the org's My Domain host takes this grant, so a
    /// `login.salesforce.com` / `test.salesforce.com` login URL is refused by [`crate::SageClient::new`].
    ClientCredentials {
        /// The External Client App's consumer key.
        client_id: String,
        /// The External Client App's consumer secret.
        client_secret: SecretString,
    },
    /// JWT bearer: an RS256 assertion signed with the private key whose certificate is uploaded
    /// to the External Client App. No secret travels.
    JwtBearer {
        /// The External Client App's consumer key (the assertion's `iss`).
        client_id: String,
        /// The Salesforce username of the API user (the assertion's `sub`).
        username: String,
        /// The assertion's `aud`. When `None`: `https://test.salesforce.com` for sandbox login
        /// hosts, else `https://login.salesforce.com` — never the My Domain host, even when the
        /// token request goes there ([`crate::default_audience`]).
        audience: Option<String>,
        /// The PEM-encoded RSA private key (PKCS#1 or PKCS#8).
        private_key_pem: SecretString,
    },
    /// Username-password (legacy; Salesforce is retiring it — prefer the other two).
    Password {
        /// The External Client App's consumer key.
        client_id: String,
        /// The External Client App's consumer secret.
        client_secret: SecretString,
        /// The Salesforce username of the API user.
        username: String,
        /// The password with the user's security token already appended.
        password: SecretString,
    },
}

impl Credentials {
    /// The grant's name as operators know it, for messages:
    /// `"client credentials"`, `"JWT bearer"` or `"username-password"`.
    pub fn grant_name(&self) -> &'static str {
        match self {
            Credentials::ClientCredentials { .. } => "client credentials",
            Credentials::JwtBearer { .. } => "JWT bearer",
            Credentials::Password { .. } => "username-password",
        }
    }

    /// The External Client App's consumer key (not a secret).
    pub fn client_id(&self) -> &str {
        match self {
            Credentials::ClientCredentials { client_id, .. }
            | Credentials::JwtBearer { client_id, .. }
            | Credentials::Password { client_id, .. } => client_id,
        }
    }
}

/// How transient failures (5xx, 420, 429, connection errors, timeouts, cut-off bodies) are
/// retried: the shared policy of every outbound call.
pub use peoplesync_retry::RetryPolicy;

/// The Sage People default: 200 ms doubling to at most 10 s apart, for up to two minutes, with
/// no count of attempts ([`RetryPolicy::UNCOUNTED`]): the elapsed time alone ends them, so a
/// longer budget an operator sets (`sage_retry_secs`, up to an hour) is spent in full. A count
/// cut it short: 30 attempts at most 10 s apart ended after 2–4 minutes whatever the budget.
pub fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: RetryPolicy::UNCOUNTED,
        initial_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(10),
        max_elapsed: Duration::from_secs(120),
    }
}
