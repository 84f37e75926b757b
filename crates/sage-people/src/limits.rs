//! The org's Salesforce API quota: from `Sforce-Limit-Info` when a response carries it, else
//! from the REST API's `limits` resource.
//!
//! Salesforce documents `Sforce-Limit-Info: api-usage=<used>/<allowed>` for `/services/data`;
//! whether Apex REST answers (the Employees API) carry it is not published. The client records
//! the latest value it sees, and [`SageClient::read_limits`] reads `DailyApiRequests` when no
//! header came, so the extractor's quota guard is never silently off.

use std::sync::Mutex;

use reqwest::header::HeaderMap;
use serde::Deserialize;

use crate::client::{Call, SageClient};
use crate::error::{Error, ErrorKind, answer_of};
use crate::paging::decode_error;

/// The REST API version whose `limits` resource is read (available since Spring '24 in every
/// org; the `DailyApiRequests` shape has not changed since v29.0).
pub const LIMITS_API_VERSION: &str = "v60.0";

/// The header Salesforce reports the org's API usage in.
pub const LIMIT_INFO_HEADER: &str = "Sforce-Limit-Info";

/// The org's rolling 24-hour API usage, from the latest `Sforce-Limit-Info` header seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiUsage {
    /// API requests used in the rolling 24-hour window.
    pub used: u64,
    /// API requests the org is allowed in that window.
    pub allowed: u64,
}

impl ApiUsage {
    /// The share of the daily quota already used, from 0.0 upwards (above 1.0 when the org is
    /// over quota). An org that reports an allowance of 0 counts as fully used.
    pub fn share(&self) -> f64 {
        if self.allowed == 0 {
            return 1.0;
        }
        self.used as f64 / self.allowed as f64
    }

    /// Parses a `Sforce-Limit-Info` header value such as
    /// `api-usage=18/5000, per-app-api-usage=17/250(appName=sample-app)`.
    ///
    /// Only the org-wide `api-usage` entry is read; other entries (per-app usage) are ignored.
    /// Returns `None` when the entry is missing or malformed.
    pub fn parse(header: &str) -> Option<ApiUsage> {
        header.split([',', ';']).find_map(|entry| {
            let (name, value) = entry.trim().split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("api-usage") {
                return None;
            }
            let (used, allowed) = value.trim().split_once('/')?;
            Some(ApiUsage {
                used: used.trim().parse().ok()?,
                allowed: allowed.trim().parse().ok()?,
            })
        })
    }
}

/// The latest usage seen on any response, shared by every clone of a client.
#[derive(Debug, Default)]
pub(crate) struct UsageRecorder {
    latest: Mutex<Option<ApiUsage>>,
}

impl UsageRecorder {
    /// Records the usage a response reports, if it reports one, and returns it.
    pub(crate) fn record(&self, headers: &HeaderMap) -> Option<ApiUsage> {
        let usage = headers
            .get(LIMIT_INFO_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(ApiUsage::parse)?;
        // A poisoned lock only means another thread panicked mid-assignment of a Copy value.
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
        Some(usage)
    }

    /// Records a usage read some other way (the `limits` resource).
    pub(crate) fn set(&self, usage: ApiUsage) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
    }

    /// The latest usage recorded.
    pub(crate) fn latest(&self) -> Option<ApiUsage> {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The part of `GET /services/data/vXX.X/limits` the quota guard reads.
#[derive(Deserialize)]
struct Limits {
    #[serde(rename = "DailyApiRequests")]
    daily: DailyApiRequests,
}

/// Both signed: Salesforce's limits are soft, so an org past its quota reports `Remaining`
/// below zero, and that must read as a used-up quota, not as an answer that cannot be decoded.
#[derive(Deserialize)]
struct DailyApiRequests {
    #[serde(rename = "Max")]
    max: i64,
    #[serde(rename = "Remaining")]
    remaining: i64,
}

impl Limits {
    /// `Remaining <= 0` gives a usage at or past the allowance, so the quota guard stops.
    fn usage(&self) -> ApiUsage {
        let allowed = self.daily.max.max(0);
        let used = i128::from(allowed) - i128::from(self.daily.remaining);
        ApiUsage {
            used: u64::try_from(used.max(0)).unwrap_or(u64::MAX),
            allowed: allowed.unsigned_abs(),
        }
    }
}

impl SageClient {
    /// Reads the org's daily API usage from `GET /services/data/vXX.X/limits`
    /// (`DailyApiRequests`), and records it as the latest usage. For when answers carry no
    /// `Sforce-Limit-Info`: before a run, and every few hundred requests during one.
    pub async fn read_limits(&self) -> Result<ApiUsage, Error> {
        let what = "reading the org's API limits";
        let path = ["services", "data", LIMITS_API_VERSION, "limits"];
        let call = Call {
            what,
            path: &path,
            marker: None,
            filter: None,
            answers: &[],
        };
        // The token first, so that a refusal of the credentials (a 400 `invalid_client`, say)
        // keeps its own message naming them; the permission advice below is only for a
        // refusal of the resource itself. A cached token costs no request.
        self.authenticate().await?;
        let usage = self
            .call(&call, |reply| {
                let limits: Limits = serde_json::from_slice(&reply.body)
                    .map_err(|error| decode_error(error, &reply.host, what))?;
                Ok(limits.usage())
            })
            .await
            .map_err(|error| match error.kind() {
                ErrorKind::Configuration => {
                    let host = self.hostname();
                    let said = answer_of(&error);
                    // Salesforce serves the limits resource only to users with this
                    // permission (REST API Developer Guide, "Limits"); an API user that reads
                    // the Employees API already has "API Enabled".
                    let message = format!(
                        "Salesforce at {host} refused reading the org's API usage from \
                         /services/data/{LIMITS_API_VERSION}/limits ({said}); peoplesync's quota \
                         guard needs it when Employees API answers carry no Sforce-Limit-Info \
                         header: give the integration user the \"View Setup and Configuration\" \
                         user permission (in a permission set assigned to it), then run again"
                    );
                    error.with_message(message)
                }
                _ => error,
            })?;
        self.record_usage(usage);
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_plain_header() {
        assert_eq!(
            ApiUsage::parse("api-usage=25/15000"),
            Some(ApiUsage {
                used: 25,
                allowed: 15000
            })
        );
    }

    #[test]
    fn parses_the_org_entry_among_per_app_entries() {
        for header in [
            "per-app-api-usage=17/250(appName=sample-app), api-usage=18/5000",
            "api-usage=18/5000, per-app-api-usage=17/250(appName=sample-app)",
        ] {
            assert_eq!(
                ApiUsage::parse(header),
                Some(ApiUsage {
                    used: 18,
                    allowed: 5000
                }),
                "{header}"
            );
        }
    }

    #[test]
    fn tolerates_spaces_and_case() {
        assert_eq!(
            ApiUsage::parse(" API-Usage = 1 / 2 "),
            Some(ApiUsage {
                used: 1,
                allowed: 2
            })
        );
    }

    #[test]
    fn refuses_malformed_values() {
        for header in [
            "",
            "api-usage",
            "api-usage=",
            "api-usage=12",
            "api-usage=a/b",
            "api-usage=-1/5",
        ] {
            assert_eq!(ApiUsage::parse(header), None, "{header:?}");
        }
    }

    #[test]
    fn the_recorder_keeps_the_latest_value() {
        let recorder = UsageRecorder::default();
        assert_eq!(recorder.latest(), None);
        let mut headers = HeaderMap::new();
        assert_eq!(recorder.record(&headers), None);
        headers.insert(LIMIT_INFO_HEADER, "api-usage=7/100".parse().unwrap());
        assert_eq!(
            recorder.record(&headers),
            Some(ApiUsage {
                used: 7,
                allowed: 100
            })
        );
        headers.insert(LIMIT_INFO_HEADER, "garbage".parse().unwrap());
        assert_eq!(recorder.record(&headers), None);
        assert_eq!(
            recorder.latest(),
            Some(ApiUsage {
                used: 7,
                allowed: 100
            })
        );
    }

    fn usage_from_limits(body: &str) -> ApiUsage {
        let limits: Limits = serde_json::from_str(body).expect("a limits answer");
        limits.usage()
    }

    #[test]
    fn the_limits_resource_gives_used_as_max_minus_remaining() {
        let usage =
            usage_from_limits(r#"{"DailyApiRequests": {"Max": 15000, "Remaining": 14000}}"#);
        assert_eq!(
            usage,
            ApiUsage {
                used: 1000,
                allowed: 15000
            }
        );
    }

    #[test]
    fn an_org_past_its_soft_quota_reads_as_used_up() {
        for (remaining, used) in [(0, 15000), (-250, 15250)] {
            let body =
                format!(r#"{{"DailyApiRequests": {{"Max": 15000, "Remaining": {remaining}}}}}"#);
            let usage = usage_from_limits(&body);
            assert_eq!(
                usage,
                ApiUsage {
                    used,
                    allowed: 15000
                },
                "{remaining}"
            );
            assert!(usage.share() >= 1.0, "{remaining}: {usage:?}");
        }
        // A nonsensical negative allowance is no allowance at all.
        let usage = usage_from_limits(r#"{"DailyApiRequests": {"Max": -1, "Remaining": -1}}"#);
        assert!(usage.share() >= 1.0, "{usage:?}");
    }

    #[test]
    fn share_is_used_over_allowed() {
        assert!(
            (ApiUsage {
                used: 4000,
                allowed: 5000
            }
            .share()
                - 0.8)
                .abs()
                < 1e-9
        );
        assert!(
            (ApiUsage {
                used: 1,
                allowed: 0
            }
            .share()
                - 1.0)
                .abs()
                < 1e-9
        );
    }
}
