//! The Oomnitza client: one connection pool and one credential for all clones, and the path
//! every call takes — authenticate, send, renew a password token once on a 401, classify the
//! answer, and (for read and control calls only) retry transient failures.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use peoplesync_retry::retry_call;
use peoplesync_retry::transport::URL_COMPONENT;
use peoplesync_retry::transport::{self, NoAnswer};
use percent_encoding::utf8_percent_encode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;
use url::Url;

use crate::auth::{AUTH_HEADER, Authenticator, CSRF_HEADER, Credential};
use crate::config::{OomnitzaConfig, RetryPolicy};
use crate::error::{
    Error, ErrorKind, Operation, answer_error, invalid_response, parse_retry_after, transport_error,
};

/// A client of one Oomnitza tenant.
///
/// Cheap to clone: clones share the connection pool and the credential.
#[derive(Clone)]
pub struct OomnitzaClient {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    base: Url,
    host: String,
    auth: Authenticator,
    auth_description: String,
    timeout: Duration,
    retry: RetryPolicy,
    pub(crate) connector_name: String,
    pub(crate) connector_version: String,
    pub(crate) bulk_url: Url,
}

impl std::fmt::Debug for OomnitzaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OomnitzaClient")
            .field("base_url", &self.inner.base.as_str())
            .field("auth", &self.inner.auth_description)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .finish()
    }
}

/// An answer as it came, before it is classified.
struct Answer {
    reply: Reply,
    retry_after: Option<Duration>,
}

/// An answer that is a success, or an expected status of the call.
pub(crate) struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The whole body.
    pub body: Bytes,
    /// The answer's `X-CSRF-Token`, if it carried one.
    pub csrf: Option<HeaderValue>,
}

/// Reads a `Retry-After` header, if any.
pub(crate) fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, chrono::Utc::now())
}

impl OomnitzaClient {
    /// Builds a client; nothing is sent until the first call. Fails with
    /// [`ErrorKind::Rejected`] on a malformed base URL and [`ErrorKind::Unauthorized`] on an API
    /// token that cannot be sent in a header.
    pub fn new(config: OomnitzaConfig) -> Result<OomnitzaClient, Error> {
        let mut base = Url::parse(config.base_url.trim())
            .ok()
            .filter(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host_str().is_some()
                    && !url.cannot_be_a_base()
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Rejected,
                    format!(
                        "the Oomnitza base URL `{}` is not an http(s) URL; set it to \
                         https://<tenant>.oomnitza.com",
                        config.base_url
                    ),
                )
            })?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        let host = base.host_str().unwrap_or_default().to_owned();
        let auth = Authenticator::new(&config.auth, &base, &host)?;
        let http = transport::client_builder(&config.extra_roots, config.request_timeout)
            // A redirect would turn a bulk POST into a GET without its body (and could carry the
            // Authorization2 token to another host): answer it as it is instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| {
                Error::new(
                    ErrorKind::Rejected,
                    format!("could not set up the HTTP client for Oomnitza: {error}"),
                )
                .with_source(error)
            })?;
        let bulk_url = join(&base, &["api", "v3", "bulk"], &[]);
        Ok(OomnitzaClient {
            inner: Arc::new(Inner {
                http,
                host,
                auth,
                auth_description: config.auth.describe(),
                timeout: config.request_timeout,
                retry: config.retry,
                connector_name: config.connector_name,
                connector_version: config.connector_version,
                bulk_url,
                base,
            }),
        })
    }

    /// The Oomnitza host, for messages and metrics.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Whether the client authenticates with an API token (rather than a login and password).
    pub fn uses_api_token(&self) -> bool {
        matches!(self.inner.auth, crate::auth::Authenticator::Static(_))
    }

    /// Echoes `csrf` on the API token's later requests (see [`Authenticator::adopt_csrf`]).
    pub(crate) fn adopt_csrf(&self, csrf: HeaderValue) {
        self.inner.auth.adopt_csrf(csrf);
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The URL of `segments` (each percent-encoded) under the base URL, with `query`.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        join(&self.inner.base, segments, query)
    }

    /// One request, authenticated; a refused password token is renewed once and the request
    /// sent again. `answers` are non-2xx statuses the call handles itself.
    pub(crate) async fn send(
        &self,
        what: &str,
        operation: Operation,
        answers: &[u16],
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, Error> {
        let inner = &*self.inner;
        let credential = inner
            .auth
            .credential(&inner.http, &inner.host, inner.timeout)
            .await?;
        let mut answer = self.send_with(&credential, what, &build).await?;
        if answer.reply.status == 401 && inner.auth.renewable() {
            tracing::info!(host = %inner.host, "Oomnitza refused the token; requesting a new one");
            let fresh = inner
                .auth
                .renew(&inner.http, &inner.host, inner.timeout, &credential)
                .await?;
            answer = self.send_with(&fresh, what, &build).await?;
        }
        let Answer { reply, retry_after } = answer;
        if (200..300).contains(&reply.status) || answers.contains(&reply.status) {
            return Ok(reply);
        }
        Err(answer_error(
            &inner.host,
            what,
            operation,
            reply.status,
            retry_after,
            &reply.body,
            &inner.auth_description,
        ))
    }

    async fn send_with(
        &self,
        credential: &Credential,
        what: &str,
        build: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Answer, Error> {
        let inner = &*self.inner;
        let transport =
            |error| transport_error(&inner.host, what, NoAnswer::new(error, inner.timeout));
        let mut request = build(&inner.http).header(AUTH_HEADER, credential.token.clone());
        if let Some(csrf) = &credential.csrf {
            request = request.header(CSRF_HEADER, csrf.clone());
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = retry_after_of(response.headers());
        let csrf = response.headers().get(CSRF_HEADER).cloned();
        let body = response.bytes().await.map_err(transport)?;
        Ok(Answer {
            reply: Reply { status, body, csrf },
            retry_after,
        })
    }

    /// [`send`](Self::send) with bounded retries of transient failures, for read and control
    /// calls.
    pub(crate) async fn send_retrying(
        &self,
        what: &str,
        answers: &[u16],
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, Error> {
        retry_call(&self.inner.retry, "Oomnitza", || {
            self.send(what, Operation::Other, answers, &build)
        })
        .await
    }

    /// Decodes a JSON body, or says that it is not the expected shape.
    pub(crate) fn decode<T: DeserializeOwned>(&self, what: &str, body: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(body)
            .map_err(|error| invalid_response(&self.inner.host, what, body, error))
    }
}

fn join(base: &Url, segments: &[&str], query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments.iter().copied());
    }
    let mut encoded = String::new();
    for (name, value) in query {
        if !encoded.is_empty() {
            encoded.push('&');
        }
        encoded.extend(utf8_percent_encode(name, URL_COMPONENT));
        encoded.push('=');
        encoded.extend(utf8_percent_encode(value, URL_COMPONENT));
    }
    url.set_query((!encoded.is_empty()).then_some(encoded.as_str()));
    url
}

/// The length of `value` once percent-encoded for a URL.
pub(crate) fn encoded_len(value: &str) -> usize {
    utf8_percent_encode(value, URL_COMPONENT)
        .map(str::len)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_under_the_base_path() {
        let base = Url::parse("https://acme.oomnitza.com/").unwrap();
        assert_eq!(
            join(&base, &["api", "v3", "bulk", "p 1"], &[]).as_str(),
            "https://acme.oomnitza.com/api/v3/bulk/p%201"
        );
        let base = Url::parse("http://127.0.0.1:9/prefix/").unwrap();
        assert_eq!(
            join(
                &base,
                &["api", "v3", "users"],
                &[("filter", "email eq 'a+b@c.com'"), ("limit", "10")]
            )
            .as_str(),
            "http://127.0.0.1:9/prefix/api/v3/users?filter=email%20eq%20%27a%2Bb%40c.com%27&limit=10"
        );
    }
}
