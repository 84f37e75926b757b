//! What went wrong when a request got no complete answer (connection refused or reset, timeout,
//! body cut off), in words an operator can act on. Every such failure is transient: both API
//! clients word their messages with [`failure`] and retry them under the one policy.

use std::time::Duration;

/// What happened to a request that got no complete answer within `timeout`, as a phrase for a
/// message: `could not connect`, `the answer's body was cut off`, ...
pub fn failure(error: &reqwest::Error, timeout: Duration) -> String {
    describe(
        Failed {
            timeout: error.is_timeout(),
            connect: error.is_connect(),
            body: error.is_body() || error.is_decode(),
        },
        timeout,
    )
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
