//! Authenticating to Oomnitza: a configured API token, or a token obtained from a login and
//! password at `POST /api/request_token`, cached and shared by every clone of the client and
//! requested again (once per call) when Oomnitza refuses it. A password session may come with
//! an `X-CSRF-Token` header, and so may the credential check's answer for an API token; like
//! Oomnitza's own connector, the client echoes it on every later request of that session, and
//! a renewed password session brings its own.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use peoplesync_retry::transport::NoAnswer;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::config::OomnitzaAuth;
use crate::error::{
    Error, ErrorKind, Operation, answer_error, excerpt, invalid_response, transport_error,
};

/// The header Oomnitza reads the token from.
pub(crate) const AUTH_HEADER: &str = "Authorization2";

/// The header of a session's anti-CSRF token, in `request_token`'s answer (or the credential
/// check's, for an API token) and in later requests.
pub(crate) const CSRF_HEADER: &str = "X-CSRF-Token";

/// What authenticates a request: the `Authorization2` value and, for a session that got one,
/// the `X-CSRF-Token` to echo; both marked sensitive so that they are never logged.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) token: HeaderValue,
    pub(crate) csrf: Option<HeaderValue>,
}

/// The current session, shared; compared by pointer to tell a renewed one from a refused one.
pub(crate) type Credential = Arc<Session>;

/// Body of `POST /api/request_token`'s answer.
#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
}

/// Where the client's `Authorization2` value comes from.
#[derive(Debug)]
pub(crate) enum Authenticator {
    /// A configured API token, used as it is, with the `X-CSRF-Token` of the last credential
    /// check that brought one.
    Static(RwLock<Credential>),
    /// A login and password, exchanged for a token on first use.
    Password {
        login: String,
        password: SecretString,
        url: Url,
        current: RwLock<Option<Credential>>,
        renewal: tokio::sync::Mutex<()>,
    },
}

/// A header value that is never shown by reqwest's or our `Debug`.
fn sensitive(token: &str, host: &str) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(token.trim()).map_err(|_| {
        Error::new(
            ErrorKind::Unauthorized,
            format!(
                "the Oomnitza token for {host} contains characters that cannot go in an HTTP \
                 header; configure the token exactly as Oomnitza shows it"
            ),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl Authenticator {
    /// Prepares the credential; a malformed API token fails here, at start-up.
    pub(crate) fn new(auth: &OomnitzaAuth, base: &Url, host: &str) -> Result<Self, Error> {
        match auth {
            OomnitzaAuth::ApiToken(token) => {
                Ok(Authenticator::Static(RwLock::new(Arc::new(Session {
                    token: sensitive(token.expose_secret(), host)?,
                    csrf: None,
                }))))
            }
            OomnitzaAuth::Password { login, password } => {
                let url = base.join("api/request_token").map_err(|error| {
                    Error::new(
                        ErrorKind::Rejected,
                        format!("cannot build Oomnitza's token URL from {base}: {error}"),
                    )
                })?;
                Ok(Authenticator::Password {
                    login: login.clone(),
                    password: password.clone(),
                    url,
                    current: RwLock::new(None),
                    renewal: tokio::sync::Mutex::new(()),
                })
            }
        }
    }

    /// Echoes `csrf` from now on, when the credential check's answer brought it for the API
    /// token, as Oomnitza's connector does (a password session keeps the one its token request
    /// brought).
    pub(crate) fn adopt_csrf(&self, csrf: HeaderValue) {
        let Authenticator::Static(lock) = self else {
            return;
        };
        let current = read(lock);
        if current.csrf.as_ref() != Some(&csrf) {
            let mut csrf = csrf;
            csrf.set_sensitive(true);
            let session = Session {
                token: current.token.clone(),
                csrf: Some(csrf),
            };
            write(lock, Arc::new(session));
        }
    }

    /// Whether a refused credential can be replaced by asking for a new token.
    pub(crate) fn renewable(&self) -> bool {
        matches!(self, Authenticator::Password { .. })
    }

    /// The credential to send: the API token, or the cached (else a new) password token.
    pub(crate) async fn credential(
        &self,
        http: &reqwest::Client,
        host: &str,
        timeout: Duration,
    ) -> Result<Credential, Error> {
        self.cached_or_new(http, host, timeout, None).await
    }

    /// A credential other than `refused`: one another caller already obtained, or a new one.
    pub(crate) async fn renew(
        &self,
        http: &reqwest::Client,
        host: &str,
        timeout: Duration,
        refused: &Credential,
    ) -> Result<Credential, Error> {
        self.cached_or_new(http, host, timeout, Some(refused)).await
    }

    /// The API token; or the cached password token unless it is `refused`, else a new one. The
    /// renewal lock makes concurrent callers share one token request: each looks again once it
    /// holds the lock, and a renewal clears the cache first so that nobody picks up the refused
    /// token while the new one is requested.
    async fn cached_or_new(
        &self,
        http: &reqwest::Client,
        host: &str,
        timeout: Duration,
        refused: Option<&Credential>,
    ) -> Result<Credential, Error> {
        match self {
            Authenticator::Static(credential) => Ok(read(credential)),
            Authenticator::Password {
                current, renewal, ..
            } => {
                let usable = |credential: &Credential| {
                    refused.is_none_or(|refused| !Arc::ptr_eq(credential, refused))
                };
                if let Some(credential) = read(current).filter(usable) {
                    return Ok(credential);
                }
                let _renewal = renewal.lock().await;
                if let Some(credential) = read(current).filter(usable) {
                    return Ok(credential);
                }
                write(current, None);
                let credential = self.request_token(http, host, timeout).await?;
                write(current, Some(credential.clone()));
                Ok(credential)
            }
        }
    }

    /// `POST /api/request_token` with the login and password.
    async fn request_token(
        &self,
        http: &reqwest::Client,
        host: &str,
        timeout: Duration,
    ) -> Result<Credential, Error> {
        let Authenticator::Password {
            login,
            password,
            url,
            ..
        } = self
        else {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                "an API token cannot be renewed; configure a valid one",
            ));
        };
        let what = format!("requesting a token for {login}");
        tracing::debug!(host, login, "requesting an Oomnitza token");
        let response = http
            .post(url.clone())
            .form(&[
                ("login", login.as_str()),
                ("password", password.expose_secret()),
            ])
            .send()
            .await
            .map_err(|error| transport_error(host, &what, NoAnswer::new(error, timeout)))?;
        let status = response.status().as_u16();
        let retry_after = crate::client::retry_after_of(response.headers());
        let csrf = response
            .headers()
            .get(CSRF_HEADER)
            .cloned()
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        let body = response
            .bytes()
            .await
            .map_err(|error| transport_error(host, &what, NoAnswer::new(error, timeout)))?;
        if !(200..300).contains(&status) {
            if crate::error::classify(status, Operation::Other) == ErrorKind::Transient {
                return Err(answer_error(
                    host,
                    &what,
                    Operation::Other,
                    status,
                    retry_after,
                    &body,
                    "login",
                ));
            }
            // Oomnitza answers a wrong login or password with 400 or 401: both mean bad
            // credentials here, not a bad body.
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "Oomnitza at {host} refused the login {login} ({status}); check the login and \
                     password configured for peoplesync, or configure an API token instead, then \
                     resume loading"
                ),
            )
            .with_status(status)
            .with_retry_after(retry_after)
            .with_body_excerpt(excerpt(&body)));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|error| invalid_response(host, &what, &body, error))?;
        Ok(Arc::new(Session {
            token: sensitive(&answer.token, host)?,
            csrf,
        }))
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = value;
}
