//! Salesforce OAuth access tokens: fetched lazily with the configured grant, cached and shared
//! by every clone of the client, renewed only when the API refuses the current one.
//!
//! Salesforce gives no `expires_in`, so a token is kept until a `401 INVALID_SESSION_ID`. One
//! renewal runs at a time: callers that saw the same stale token wait for it and reuse its result.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use peoplesync_retry::transport::NoAnswer;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{Credentials, SageConfig};
use crate::error::{Error, ErrorKind, transport_error};
use crate::fault::{self, Fault};
use crate::limits::UsageRecorder;
use crate::paging::decode_error;

/// How far ahead a JWT bearer assertion expires; Salesforce accepts at most three minutes, and
/// a little less leaves room for clock skew.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(170);

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The JWT `aud` of production orgs, whatever host the token request goes to.
pub const PRODUCTION_AUDIENCE: &str = "https://login.salesforce.com";
/// The JWT `aud` of sandboxes.
pub const SANDBOX_AUDIENCE: &str = "https://test.salesforce.com";

/// The generic login hosts, which the client credentials flow does not support.
const GENERIC_LOGIN_HOSTS: [&str; 2] = ["login.salesforce.com", "test.salesforce.com"];

/// The JWT bearer `aud` for a login host when none is configured: Salesforce wants
/// `https://test.salesforce.com` for sandboxes (`test.salesforce.com`,
/// `<domain>--<sandbox>.sandbox.my.salesforce.com`) and `https://login.salesforce.com`
/// otherwise — never the My Domain host, even when the token request goes there.
pub fn default_audience(login_host: &str) -> &'static str {
    let host = login_host.trim_end_matches('.').to_ascii_lowercase();
    if host == "test.salesforce.com" || host.ends_with(".sandbox.my.salesforce.com") {
        SANDBOX_AUDIENCE
    } else {
        PRODUCTION_AUDIENCE
    }
}

/// Why the client credentials grant cannot be sent to `login_url` (a URL or a bare host), or
/// `None` when it can: Salesforce answers that grant only on the org's My Domain host, and on
/// `login.salesforce.com` / `test.salesforce.com` fails with an `invalid_grant` that does not
/// say why. The message names the My Domain host to use instead.
pub fn client_credentials_host_problem(login_url: &str) -> Option<String> {
    let trimmed = login_url.trim();
    let host = Url::parse(trimmed)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_else(|| trimmed.to_owned());
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if !GENERIC_LOGIN_HOSTS.contains(&host.as_str()) {
        return None;
    }
    let example = if host.starts_with("test.") {
        "https://<your-domain>--<sandbox>.sandbox.my.salesforce.com"
    } else {
        "https://<your-domain>.my.salesforce.com"
    };
    Some(format!(
        "the client credentials grant cannot be sent to {host}: Salesforce supports it only on \
         the org's My Domain host; set the login URL to the org's My Domain URL ({example}, \
         shown in Salesforce Setup > My Domain), or use the JWT bearer grant"
    ))
}

/// Refuses the client credentials grant on the generic login hosts
/// ([`client_credentials_host_problem`]).
pub(crate) fn check_grant_host(credentials: &Credentials, login_host: &str) -> Result<(), Error> {
    match credentials {
        Credentials::ClientCredentials { .. } => {
            match client_credentials_host_problem(login_host) {
                Some(problem) => Err(Error::new(ErrorKind::Configuration, problem)),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// An access token and where to use it.
pub(crate) struct Token {
    /// The bearer token.
    pub access_token: SecretString,
    /// The org's API base URL, from the token response.
    pub instance_url: Url,
    /// The host of `instance_url`, for messages and tracking.
    pub host: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"[REDACTED]")
            .field("instance_url", &self.instance_url.as_str())
            .finish()
    }
}

/// The signing key of the JWT bearer grant, parsed once.
struct SigningKey(EncodingKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

/// The claims of a JWT bearer assertion.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
}

/// The fields of a token response peoplesync uses (`id`, `signature`, `issued_at`, `scope` and
/// `token_type` are ignored).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    instance_url: String,
}

/// Fetches, caches and renews access tokens.
#[derive(Debug)]
pub(crate) struct TokenSource {
    credentials: Credentials,
    token_url: Url,
    login_host: String,
    audience: String,
    signing_key: Option<SigningKey>,
    timeout: Duration,
    current: RwLock<Option<Arc<Token>>>,
    renewal: tokio::sync::Mutex<()>,
}

impl TokenSource {
    /// Checks the login URL and, for the JWT bearer grant, parses the private key, so that a bad
    /// configuration fails at start-up rather than on the first page.
    pub(crate) fn new(config: &SageConfig) -> Result<TokenSource, Error> {
        let login_url = config.login_url.trim().trim_end_matches('/');
        let token_url = Url::parse(&format!("{login_url}/services/oauth2/token"))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Configuration,
                    format!(
                        "the Sage People login URL `{}` is not an http(s) URL; set it to the \
                         org's My Domain URL (https://<domain>.my.salesforce.com) or \
                         https://login.salesforce.com",
                        config.login_url
                    ),
                )
            })?;
        let login_host = token_url.host_str().unwrap_or_default().to_owned();
        check_grant_host(&config.credentials, &login_host)?;
        let (audience, signing_key) = match &config.credentials {
            Credentials::JwtBearer {
                audience,
                private_key_pem,
                ..
            } => {
                let key = EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes())
                    .map_err(|error| {
                        Error::new(
                            ErrorKind::Configuration,
                            format!(
                                "the private key configured for the JWT bearer grant to \
                                 {login_host} is not a PEM-encoded RSA private key ({error}); \
                                 configure the key whose certificate is uploaded to the \
                                 External Client App"
                            ),
                        )
                    })?;
                let audience = audience
                    .as_deref()
                    .map(str::trim)
                    .filter(|aud| !aud.is_empty())
                    .map_or_else(
                        || default_audience(&login_host).to_owned(),
                        |aud| aud.trim_end_matches('/').to_owned(),
                    );
                (audience, Some(SigningKey(key)))
            }
            _ => (login_url.to_owned(), None),
        };
        Ok(TokenSource {
            credentials: config.credentials.clone(),
            token_url,
            login_host,
            audience,
            signing_key,
            timeout: config.request_timeout,
            current: RwLock::new(None),
            renewal: tokio::sync::Mutex::new(()),
        })
    }

    /// The grant's name, for messages.
    pub(crate) fn grant_name(&self) -> &'static str {
        self.credentials.grant_name()
    }

    /// The host of the login URL.
    pub(crate) fn login_host(&self) -> &str {
        &self.login_host
    }

    /// The token in use, if one was fetched.
    pub(crate) fn cached(&self) -> Option<Arc<Token>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn store(&self, token: Option<Arc<Token>>) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = token;
    }

    /// The cached token, or a new one when none is cached.
    pub(crate) async fn get(
        &self,
        http: &reqwest::Client,
        usage: &UsageRecorder,
    ) -> Result<Arc<Token>, Error> {
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let _renewal = self.renewal.lock().await;
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let token = Arc::new(self.fetch(http, usage).await?);
        self.store(Some(token.clone()));
        Ok(token)
    }

    /// A token other than `stale`, which the API refused: the one another caller already
    /// fetched, or a new one.
    pub(crate) async fn renew(
        &self,
        http: &reqwest::Client,
        usage: &UsageRecorder,
        stale: &Arc<Token>,
    ) -> Result<Arc<Token>, Error> {
        let _renewal = self.renewal.lock().await;
        match self.cached() {
            Some(current) if !Arc::ptr_eq(&current, stale) => return Ok(current),
            // Forget the refused token first: if fetching fails, the next attempt fetches anew
            // instead of re-sending a token known to be dead.
            Some(_) => self.store(None),
            None => {}
        }
        let token = Arc::new(self.fetch(http, usage).await?);
        self.store(Some(token.clone()));
        Ok(token)
    }

    /// One request to the token endpoint.
    async fn fetch(&self, http: &reqwest::Client, usage: &UsageRecorder) -> Result<Token, Error> {
        let host = self.login_host.as_str();
        let grant = self.grant_name();
        let what = format!("requesting an access token with the {grant} grant");
        tracing::debug!(host, grant, "requesting a Salesforce access token");
        let assertion;
        let form: Vec<(&str, &str)> = match &self.credentials {
            Credentials::ClientCredentials {
                client_id,
                client_secret,
            } => vec![
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", client_secret.expose_secret()),
            ],
            Credentials::JwtBearer {
                client_id,
                username,
                ..
            } => {
                assertion = self.assertion(client_id, username)?;
                vec![
                    ("grant_type", JWT_BEARER_GRANT),
                    ("assertion", assertion.expose_secret()),
                ]
            }
            Credentials::Password {
                client_id,
                client_secret,
                username,
                password,
            } => vec![
                ("grant_type", "password"),
                ("client_id", client_id),
                ("client_secret", client_secret.expose_secret()),
                ("username", username),
                ("password", password.expose_secret()),
            ],
        };
        let timeout = self.timeout;
        let response = http
            .post(self.token_url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|error| transport_error(host, &what, NoAnswer::new(error, timeout)))?;
        let status = response.status().as_u16();
        usage.record(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|error| transport_error(host, &what, NoAnswer::new(error, timeout)))?;
        if !(200..300).contains(&status) {
            return Err(fault::classify_token(
                status,
                Fault::parse(&body),
                &self.credentials,
                &self.audience,
                host,
            ));
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|error| decode_error(error, host, &what))?;
        let instance_url = Url::parse(&parsed.instance_url)
            .ok()
            .filter(|url| url.host_str().is_some() && !url.cannot_be_a_base())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidResponse,
                    format!(
                        "Salesforce at {host} answered the token request with an unusable \
                         instance_url `{}`; report this to the peoplesync maintainers",
                        parsed.instance_url
                    ),
                )
            })?;
        let instance_host = instance_url.host_str().unwrap_or_default().to_owned();
        tracing::info!(host, instance = %instance_host, grant, "got a Salesforce access token");
        Ok(Token {
            access_token: SecretString::from(parsed.access_token),
            instance_url,
            host: instance_host,
        })
    }

    /// An RS256-signed JWT bearer assertion, valid for less than three minutes.
    fn assertion(&self, client_id: &str, username: &str) -> Result<SecretString, Error> {
        let key = self.signing_key.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Configuration,
                "the JWT bearer grant has no signing key; configure its private key",
            )
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            iss: client_id,
            sub: username,
            aud: &self.audience,
            exp: (now + ASSERTION_LIFETIME).as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key.0)
            .map(SecretString::from)
            .map_err(|error| {
                Error::new(
                    ErrorKind::Configuration,
                    format!(
                        "could not sign the JWT bearer assertion for {} ({error}); check the \
                         configured private key",
                        self.login_host
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn the_default_audience_is_the_login_host_of_the_org_kind_never_my_domain() {
        for (host, audience) in [
            ("acme.my.salesforce.com", PRODUCTION_AUDIENCE),
            ("login.salesforce.com", PRODUCTION_AUDIENCE),
            ("127.0.0.1", PRODUCTION_AUDIENCE),
            ("test.salesforce.com", SANDBOX_AUDIENCE),
            ("acme--uat.sandbox.my.salesforce.com", SANDBOX_AUDIENCE),
            ("ACME--UAT.Sandbox.My.Salesforce.com", SANDBOX_AUDIENCE),
        ] {
            assert_eq!(default_audience(host), audience, "{host}");
        }
    }

    #[test]
    fn client_credentials_on_a_generic_login_host_name_the_my_domain_host() {
        let credentials = Credentials::ClientCredentials {
            client_id: "id".into(),
            client_secret: SecretString::from("secret"),
        };
        for host in [
            "login.salesforce.com",
            "test.salesforce.com",
            "LOGIN.salesforce.com",
        ] {
            let error = check_grant_host(&credentials, host).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Configuration);
            let message = error.to_string();
            assert!(message.contains("my.salesforce.com"), "{message}");
            assert!(message.contains("My Domain"), "{message}");
        }
        assert!(check_grant_host(&credentials, "acme.my.salesforce.com").is_ok());
        let password = Credentials::Password {
            client_id: "id".into(),
            client_secret: SecretString::from("secret"),
            username: "u".into(),
            password: SecretString::from("p"),
        };
        assert!(check_grant_host(&password, "login.salesforce.com").is_ok());
    }
}
