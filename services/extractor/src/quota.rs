//! The API quota guard: a run stops cleanly, resumable, before its next call would take the
//! org past the configured share of its rolling 24-hour API quota, so the integration never
//! starves the customer's other Salesforce users.
//!
//! The org's usage comes from `Sforce-Limit-Info` when answers carry it (not published for the
//! Employees API) and otherwise from the REST API's `limits` resource, read before the run and
//! every [`LIMITS_EVERY`] requests ([`UsageWatch`]), so the guard is never silently off.
//! Between two readings the run's own requests (every attempt of a page, as the client counts
//! them) are counted on top of the last one, and the `limits` are read again before a stop that
//! rests on that count. The guard acts between pages: the retries of one page are counted once
//! the page came or its retries ran out.

use peoplesync_sage_people::ApiUsage;

/// API requests between two readings of the `limits` resource when answers carry no
/// `Sforce-Limit-Info`: a few hundred, so reading it costs well under 1% of a run's calls.
pub const LIMITS_EVERY: u64 = 200;

/// The org's usage as a run knows it, and whether it is time to read the `limits` resource.
#[derive(Debug, Clone)]
pub struct UsageWatch {
    /// The latest reading: the `limits` resource or a page's header.
    reading: Option<ApiUsage>,
    /// API calls this run made since that reading, which it does not include.
    calls_since_reading: u64,
    every: u64,
    share: f64,
}

impl UsageWatch {
    /// A watch that knows nothing yet (so it asks for a reading before the first page), asks
    /// again after `every` requests without a header, and lets calls through while the org's
    /// usage stays within `share` (0 < share <= 1) of its quota.
    pub fn new(every: u64, share: f64) -> UsageWatch {
        UsageWatch {
            reading: None,
            calls_since_reading: 0,
            every: every.max(1),
            share,
        }
    }

    /// The org's usage as this run knows it: the latest reading plus the calls the run made
    /// since, so that a run between two readings of the `limits` resource cannot pass the
    /// share unnoticed. Calls of the org's other users since the reading are not known.
    pub fn usage(&self) -> Option<ApiUsage> {
        self.reading.map(|usage| ApiUsage {
            used: usage.used.saturating_add(self.calls_since_reading),
            ..usage
        })
    }

    /// Whether the next call keeps the org within the share, as far as this run knows; `true`
    /// while no usage is known (the first reading was refused and no header came yet).
    pub fn allows_next(&self) -> bool {
        self.usage().is_none_or(|usage| allows(usage, self.share))
    }

    /// Whether the `limits` resource should be read before the next page: before the first
    /// page, every `every` requests without a header, and before the run stops on its own
    /// count of calls (the reading is the org's word; the count may be high, as it counts
    /// requests the org may not have, such as those that never reached it).
    pub fn needs_reading(&self) -> bool {
        match self.reading {
            None => true,
            Some(_) => {
                self.calls_since_reading >= self.every
                    || (self.calls_since_reading > 0 && !self.allows_next())
            }
        }
    }

    /// A reading of the `limits` resource.
    pub fn record_reading(&mut self, usage: ApiUsage) {
        self.reading = Some(usage);
        self.calls_since_reading = 0;
    }

    /// A page was requested, whether it came or not, with `requests` HTTP requests (its
    /// retries included: whether the org counts failed ones is not published, so they count);
    /// `reported` is the usage its header gave, if any (which includes them).
    pub fn page_read(&mut self, reported: Option<ApiUsage>, requests: u64) {
        match reported {
            Some(usage) => self.record_reading(usage),
            None => {
                self.calls_since_reading = self.calls_since_reading.saturating_add(requests);
            }
        }
    }
}

/// Whether one more API call keeps the org's usage within `share` (0 < share <= 1) of its quota.
pub fn allows(usage: ApiUsage, share: f64) -> bool {
    (usage.used.saturating_add(1)) as f64 <= share * usage.allowed as f64
}

/// The operator's explanation of a stop by the guard.
pub fn explain(host: &str, usage: ApiUsage, share: f64) -> String {
    format!(
        "stopped before the Salesforce org at {host} passes {:.0}% of its daily API quota \
         ({} of {} requests used in the last 24 hours); the checkpoint is kept and the next \
         scheduled or manual run resumes the run (raise quota_share, or the org's API limit, \
         to let runs use more)",
        share * 100.0,
        usage.used,
        usage.allowed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(used: u64, allowed: u64) -> ApiUsage {
        ApiUsage { used, allowed }
    }

    #[test]
    fn calls_stop_when_the_next_one_would_pass_the_share() {
        assert!(allows(usage(78, 100), 0.8));
        assert!(allows(usage(79, 100), 0.8));
        assert!(!allows(usage(80, 100), 0.8));
        assert!(!allows(usage(95, 100), 0.8));
        assert!(allows(usage(99, 100), 1.0));
        assert!(!allows(usage(100, 100), 1.0));
        assert!(!allows(usage(0, 0), 0.8));
    }

    #[test]
    fn without_headers_the_limits_are_read_before_the_run_and_every_few_hundred_pages() {
        let mut watch = UsageWatch::new(3, 0.8);
        assert!(watch.needs_reading(), "before the first page");
        watch.record_reading(usage(10, 100));
        for _ in 0..3 {
            assert!(!watch.needs_reading());
            watch.page_read(None, 1);
        }
        assert!(
            watch.needs_reading(),
            "after `every` pages without a header"
        );
        watch.record_reading(usage(13, 100));
        assert_eq!(watch.usage(), Some(usage(13, 100)));
        assert!(!watch.needs_reading());
    }

    #[test]
    fn the_runs_own_calls_count_on_top_of_the_reading_up_to_the_share() {
        let mut watch = UsageWatch::new(200, 0.8);
        watch.record_reading(usage(70, 100));
        for _ in 0..9 {
            watch.page_read(None, 1);
        }
        assert_eq!(watch.usage(), Some(usage(79, 100)));
        assert!(watch.allows_next() && !watch.needs_reading());
        watch.page_read(None, 1);
        assert_eq!(watch.usage(), Some(usage(80, 100)));
        assert!(!watch.allows_next(), "the next call would pass 80%");
        assert!(
            watch.needs_reading(),
            "the limits are read again before the run stops on its own count"
        );
        watch.record_reading(usage(75, 100));
        assert!(
            watch.allows_next() && !watch.needs_reading(),
            "the reading decides"
        );
        watch.record_reading(usage(80, 100));
        assert!(!watch.allows_next());
        assert!(!watch.needs_reading(), "a fresh reading is not read again");
    }

    #[test]
    fn every_request_of_a_page_counts_and_a_header_replaces_the_count() {
        let mut watch = UsageWatch::new(200, 0.8);
        watch.record_reading(usage(70, 100));
        // One page that took five attempts, then one that took one.
        watch.page_read(None, 5);
        watch.page_read(None, 1);
        assert_eq!(watch.usage(), Some(usage(76, 100)));
        // A page whose requests all failed before reaching the API (a refused token).
        watch.page_read(None, 0);
        assert_eq!(watch.usage(), Some(usage(76, 100)));
        watch.page_read(None, 4);
        assert!(!watch.allows_next(), "the retries take it to 80%");
        // The org's own figure already includes every attempt.
        watch.page_read(Some(usage(78, 100)), 3);
        assert_eq!(watch.usage(), Some(usage(78, 100)));
    }

    #[test]
    fn nothing_known_lets_the_first_page_through() {
        let mut watch = UsageWatch::new(200, 0.8);
        assert!(watch.allows_next());
        watch.page_read(None, 1);
        assert_eq!(watch.usage(), None);
        assert!(watch.needs_reading());
    }

    #[test]
    fn the_explanation_says_what_to_do() {
        let text = explain("acme.my.salesforce.com", usage(80, 100), 0.8);
        assert!(text.contains("80%"), "{text}");
        assert!(text.contains("80 of 100"), "{text}");
        assert!(text.contains("resumes"), "{text}");
    }
}
