//! The Sage People client: one connection pool and one shared access token for all clones, and
//! the path every API call takes — get a token, send, renew the token once on a 401, classify
//! the answer, retry transient failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use peoplesync_retry::retry_call;
use peoplesync_retry::transport::URL_COMPONENT;
use peoplesync_retry::transport::{self, NoAnswer};
use percent_encoding::utf8_percent_encode;
use reqwest::header::ACCEPT;
use secrecy::ExposeSecret;
use url::Url;

use crate::config::{RetryPolicy, SageConfig};
use crate::error::{Error, ErrorKind, transport_error};
use crate::fault::{self, Fault, Request};
use crate::limits::{ApiUsage, UsageRecorder};
use crate::token::{Token, TokenSource};

/// The other side, as the retry log names it.
const SERVICE: &str = "Sage People";

/// A client of one org's Sage People Employees API.
///
/// Cheap to clone: clones share the connection pool, the access token, the latest API usage and
/// the count of API requests. Each holds its own retry policy, so a caller that must answer
/// within a deadline can take a clone that gives up sooner ([`SageClient::with_retry_budget`]).
#[derive(Clone)]
pub struct SageClient {
    inner: Arc<Inner>,
    retry: RetryPolicy,
}

struct Inner {
    http: reqwest::Client,
    tokens: TokenSource,
    usage: UsageRecorder,
    timeout: Duration,
    /// API requests sent, retries included: see [`SageClient::api_requests`].
    requests: AtomicU64,
}

impl std::fmt::Debug for SageClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SageClient")
            .field("host", &self.hostname())
            .field("grant", &self.inner.tokens.grant_name())
            .field("has_token", &self.inner.tokens.cached().is_some())
            .field("retry", &self.retry)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// One API request, described for sending and for messages.
pub(crate) struct Call<'a> {
    /// What is being done, as a phrase for messages: `listing employees from the start`.
    pub what: &'a str,
    /// Path segments after the instance URL; each is percent-encoded.
    pub path: &'a [&'a str],
    /// The `marker` query parameter.
    pub marker: Option<&'a str>,
    /// The `$filter` query parameter.
    pub filter: Option<&'a str>,
    /// Non-2xx statuses that are answers rather than errors (404 when reading one employee).
    pub answers: &'a [u16],
}

/// A successful (or expected) answer.
pub(crate) struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The whole body.
    pub body: Bytes,
    /// The API usage the answer reported.
    pub usage: Option<ApiUsage>,
    /// The host that answered, for messages.
    pub host: String,
}

impl SageClient {
    /// Builds a client; nothing is sent until the first call. Fails with
    /// [`ErrorKind::Configuration`] on a malformed login URL or JWT private key.
    pub fn new(config: SageConfig) -> Result<SageClient, Error> {
        let tokens = TokenSource::new(&config)?;
        let http = transport::client_builder(&config.extra_roots, config.request_timeout)
            .build()
            .map_err(|error| {
                Error::new(
                    ErrorKind::Configuration,
                    format!("could not set up the HTTP client for Sage People: {error}"),
                )
                .with_source(error)
            })?;
        Ok(SageClient {
            inner: Arc::new(Inner {
                http,
                tokens,
                usage: UsageRecorder::default(),
                timeout: config.request_timeout,
                requests: AtomicU64::new(0),
            }),
            retry: config.retry,
        })
    }

    /// A clone whose calls stop retrying once `budget` has passed since their first attempt, or
    /// sooner where this client's own policy ends them sooner; it shares the connection pool,
    /// the access token, the API usage and the request count with this client, whose own
    /// policy is unchanged. For a caller that must answer within a deadline, such as
    /// `syncctl check`, while runs keep the full budget an operator set.
    pub fn with_retry_budget(&self, budget: Duration) -> SageClient {
        let mut retry = self.retry;
        retry.max_elapsed = retry.max_elapsed.min(budget);
        SageClient {
            inner: Arc::clone(&self.inner),
            retry,
        }
    }

    /// The Sage People host: that of the `instance_url` once a token was fetched, else that of
    /// the login URL. Events carry it as the "Connect: Hostname" tracking field.
    pub fn hostname(&self) -> String {
        match self.inner.tokens.cached() {
            Some(token) => token.host.clone(),
            None => self.inner.tokens.login_host().to_owned(),
        }
    }

    /// The org's API usage from the latest `Sforce-Limit-Info` header seen on any response,
    /// errors included.
    pub fn last_api_usage(&self) -> Option<ApiUsage> {
        self.inner.usage.latest()
    }

    /// The HTTP requests this client and its clones sent to the org's APIs (the Employees API
    /// and the `limits` resource) so far: every attempt of a call, retries and the resend after
    /// a renewed token included, whether it was answered or not, since the org may count each
    /// against its daily API quota. Token requests to the OAuth endpoint are not API calls and
    /// are not counted. A caller learns what a call cost from the count before and after it.
    pub fn api_requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Gets an access token (the cached one, or a new one with the configured grant, retrying
    /// transient failures) and returns the API host it is for: checks the credentials without
    /// reading any data.
    pub async fn authenticate(&self) -> Result<String, Error> {
        let inner = &*self.inner;
        let token = retry_call(&self.retry, SERVICE, || {
            inner.tokens.get(&inner.http, &inner.usage)
        })
        .await?;
        Ok(token.host.clone())
    }

    /// The OAuth grant in use, for messages: `client credentials`, `JWT bearer` or
    /// `username-password`.
    pub fn grant_name(&self) -> &'static str {
        self.inner.tokens.grant_name()
    }

    /// Records an API usage read from the `limits` resource as the latest one.
    pub(crate) fn record_usage(&self, usage: ApiUsage) {
        self.inner.usage.set(usage);
    }

    /// Sends `call` with retries, then decodes the reply; a reply that fails to decode with a
    /// retryable error is fetched again.
    pub(crate) async fn call<T>(
        &self,
        call: &Call<'_>,
        decode: impl Fn(Reply) -> Result<T, Error>,
    ) -> Result<T, Error> {
        retry_call(&self.retry, SERVICE, || async {
            decode(self.attempt(call).await?)
        })
        .await
    }

    /// One attempt: with the cached token, and once more with a new token if that one is
    /// refused. Marker paging is stateless, so re-sending the same request is safe.
    async fn attempt(&self, call: &Call<'_>) -> Result<Reply, Error> {
        let inner = &*self.inner;
        let token = inner.tokens.get(&inner.http, &inner.usage).await?;
        match self.send(&token, call).await {
            Err(error) if error.status() == Some(401) => {
                tracing::info!(host = %token.host, "Salesforce refused the access token; fetching a new one");
                let fresh = inner
                    .tokens
                    .renew(&inner.http, &inner.usage, &token)
                    .await?;
                self.send(&fresh, call).await.map_err(|error| {
                    if error.status() == Some(401) {
                        self.refused_fresh_token(&fresh, error)
                    } else {
                        error
                    }
                })
            }
            other => other,
        }
    }

    fn refused_fresh_token(&self, token: &Token, error: Error) -> Error {
        let grant = self.inner.tokens.grant_name();
        let host = &token.host;
        let login = self.inner.tokens.login_host();
        let code = error.code().map(str::to_owned);
        let said = code.as_deref().unwrap_or("no error code");
        Error::new(
            ErrorKind::Authentication,
            format!(
                "Salesforce at {host} refused a freshly issued access token ({grant} grant from \
                 {login}) with 401 {said}, right after refusing the previous one; check the \
                 External Client App's session policies (IP relaxation, session timeout) and \
                 that the integration user is active and may use the app, then run again"
            ),
        )
        .with_status(401)
        .with_code(code)
    }

    /// One HTTP request with `token`.
    async fn send(&self, token: &Token, call: &Call<'_>) -> Result<Reply, Error> {
        let inner = &*self.inner;
        let host = token.host.as_str();
        let url = api_url(&token.instance_url, call).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidResponse,
                format!(
                    "the instance URL `{}` from Salesforce cannot take an API path; report this \
                     to the peoplesync maintainers",
                    token.instance_url
                ),
            )
        })?;
        let transport =
            |error| transport_error(host, call.what, NoAnswer::new(error, inner.timeout));
        inner.requests.fetch_add(1, Ordering::Relaxed);
        let response = inner
            .http
            .get(url)
            .bearer_auth(token.access_token.expose_secret())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let usage = inner.usage.record(response.headers());
        let body = response.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) || call.answers.contains(&status) {
            return Ok(Reply {
                status,
                body,
                usage,
                host: token.host.clone(),
            });
        }
        Err(fault::classify_api(
            status,
            Fault::parse(&body),
            &Request {
                host,
                what: call.what,
                filter: call.filter,
                marker: call.marker,
            },
        ))
    }
}

/// The URL of `call` under `instance_url`, or `None` if the instance URL cannot take a path.
fn api_url(instance_url: &Url, call: &Call<'_>) -> Option<Url> {
    let mut url = instance_url.clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(call.path.iter().copied());
    let mut query = String::new();
    for (name, value) in [("marker", call.marker), ("$filter", call.filter)] {
        if let Some(value) = value {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(name);
            query.push('=');
            query.extend(utf8_percent_encode(value, URL_COMPONENT));
        }
    }
    url.set_query((!query.is_empty()).then_some(query.as_str()));
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(path: &'a [&'a str], marker: Option<&'a str>, filter: Option<&'a str>) -> Call<'a> {
        Call {
            what: "test",
            path,
            marker,
            filter,
            answers: &[],
        }
    }

    #[test]
    fn encodes_query_values_strictly() {
        let out = utf8_percent_encode(
            "workAddress.country eq 'Côte d'Ivoire' & x=1#",
            URL_COMPONENT,
        );
        assert_eq!(
            out.to_string(),
            "workAddress.country%20eq%20%27C%C3%B4te%20d%27Ivoire%27%20%26%20x%3D1%23"
        );
    }

    #[test]
    fn builds_the_api_url_under_the_instance() {
        let base = Url::parse("https://acme.my.salesforce.com/").unwrap();
        let path = ["services", "apexrest", "spapi", "v4", "employees"];
        let url = api_url(&base, &call(&path, None, None)).unwrap();
        assert_eq!(
            url.as_str(),
            "https://acme.my.salesforce.com/services/apexrest/spapi/v4/employees"
        );
        let url = api_url(&base, &call(&path, Some("a2G0"), Some("active eq true"))).unwrap();
        assert_eq!(
            url.as_str(),
            "https://acme.my.salesforce.com/services/apexrest/spapi/v4/employees?marker=a2G0&$filter=active%20eq%20true"
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("marker".to_owned(), "a2G0".to_owned()),
                ("$filter".to_owned(), "active eq true".to_owned())
            ]
        );
    }

    #[test]
    fn encodes_path_segments() {
        let base = Url::parse("http://127.0.0.1:8080").unwrap();
        let path = ["employees", "a/b c"];
        let url = api_url(&base, &call(&path, None, None)).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/employees/a%2Fb%20c");
    }
}
