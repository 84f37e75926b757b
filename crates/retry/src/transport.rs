//! The HTTP plumbing both API clients share: how their connection pool is set up
//! ([`client_builder`]), how a value goes into a URL path or query ([`URL_COMPONENT`]), and
//! what went wrong when a request got no complete answer (connection
//! refused or reset, timeout, body cut off), in words an operator can act on ([`NoAnswer`]).
//! Every such failure is transient: both clients retry it under the one policy.

use std::fmt;
use std::time::Duration;

/// What a URL path segment or query value keeps as it is: RFC 3986's unreserved characters.
/// Everything else is percent-encoded, so spaces become `%20` (not `+`, which some servers read
/// literally) and quotes, `&`, `=`, `[` and `#` in filter values cannot break the query.
pub const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Connection set-up gets at most this long, within the request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client set up as every API client is: proxies from `HTTPS_PROXY` / `HTTP_PROXY` /
/// `NO_PROXY` (reqwest's default); roots from the OS store, the built-in public roots and
/// `extra_roots` (a private CA); each request bounded by `timeout`, connecting by at most 10 s
/// of it; peoplesync's user agent. The caller adds what only it needs, then builds.
pub fn client_builder(
    extra_roots: &[reqwest::Certificate],
    timeout: Duration,
) -> reqwest::ClientBuilder {
    let mut http = reqwest::Client::builder();
    for root in extra_roots {
        http = http.add_root_certificate(root.clone());
    }
    http.timeout(timeout)
        .connect_timeout(timeout.min(CONNECT_TIMEOUT))
        .user_agent(concat!("peoplesync/", env!("CARGO_PKG_VERSION")))
}

/// A request that got no complete answer within its timeout: what happened, as a phrase for a
/// message (`could not connect`, `the answer's body was cut off`, ...), and reqwest's error as
/// the source, without the URL: query strings carry filters and markers, and URLs stay out of
/// errors and logs.
#[derive(Debug)]
pub struct NoAnswer {
    /// What happened, as a phrase.
    pub detail: String,
    /// The lower-level cause, its URL removed.
    pub source: reqwest::Error,
}

impl NoAnswer {
    /// Reads reqwest's `error` for a request sent with `timeout`.
    pub fn new(error: reqwest::Error, timeout: Duration) -> NoAnswer {
        let detail = describe(
            Failed {
                timeout: error.is_timeout(),
                connect: error.is_connect(),
                body: error.is_body() || error.is_decode(),
            },
            timeout,
        );
        NoAnswer {
            detail,
            source: error.without_url(),
        }
    }
}

impl fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Which stage of the request failed, as reqwest reports it.
#[derive(Clone, Copy, Debug, Default)]
struct Failed {
    timeout: bool,
    connect: bool,
    body: bool,
}

/// The phrase for a failure: a timeout first (it can happen while connecting or reading).
fn describe(failed: Failed, timeout: Duration) -> String {
    if failed.timeout {
        format!(
            "no complete answer within the {} s request timeout",
            timeout.as_secs_f64()
        )
    } else if failed.connect {
        "could not connect".to_owned()
    } else if failed.body {
        "the answer's body was cut off".to_owned()
    } else {
        "the connection failed".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_is_named_and_a_timeout_says_how_long() {
        let timeout = Duration::from_millis(2_500);
        let cases = [
            (
                Failed {
                    timeout: true,
                    connect: true,
                    body: false,
                },
                "no complete answer within the 2.5 s request timeout",
            ),
            (
                Failed {
                    connect: true,
                    ..Failed::default()
                },
                "could not connect",
            ),
            (
                Failed {
                    body: true,
                    ..Failed::default()
                },
                "the answer's body was cut off",
            ),
            (Failed::default(), "the connection failed"),
        ];
        for (failed, phrase) in cases {
            assert_eq!(describe(failed, timeout), phrase, "{failed:?}");
        }
    }
}
