//! The API quota guard: a run stops cleanly, resumable, before its next call would take the
//! org past the configured share of its rolling 24-hour API quota, so the integration never
//! starves the customer's other Salesforce users.
//!
//! The org's usage comes from `Sforce-Limit-Info` when answers carry it (not published for the
//! Employees API) and otherwise from the REST API's `limits` resource, read before the run and
//! every [`LIMITS_EVERY`] pages ([`UsageWatch`]), so the guard is never silently off.

use peoplesync_sage_people::ApiUsage;

/// Page requests between two readings of the `limits` resource when answers carry no
/// `Sforce-Limit-Info`: a few hundred, so reading it costs well under 1% of a run's calls.
pub const LIMITS_EVERY: u64 = 200;

/// The org's usage as a run knows it, and whether it is time to read the `limits` resource.
#[derive(Debug, Clone)]
pub struct UsageWatch {
    usage: Option<ApiUsage>,
    pages_since_reading: u64,
    every: u64,
}

impl UsageWatch {
    /// A watch that knows nothing yet (so it asks for a reading before the first page), and
    /// asks again after `every` pages without a header.
    pub fn new(every: u64) -> UsageWatch {
        UsageWatch {
            usage: None,
            pages_since_reading: 0,
            every: every.max(1),
        }
    }

    /// The latest usage known in this run.
    pub fn usage(&self) -> Option<ApiUsage> {
        self.usage
    }

    /// Whether the `limits` resource should be read before the next page.
    pub fn needs_reading(&self) -> bool {
        self.usage.is_none() || self.pages_since_reading >= self.every
    }

    /// A reading of the `limits` resource.
    pub fn record_reading(&mut self, usage: ApiUsage) {
        self.usage = Some(usage);
        self.pages_since_reading = 0;
    }

    /// A page was read; `reported` is the usage its header gave, if any.
    pub fn page_read(&mut self, reported: Option<ApiUsage>) {
        match reported {
            Some(usage) => self.record_reading(usage),
            None => self.pages_since_reading += 1,
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
        let mut watch = UsageWatch::new(3);
        assert!(watch.needs_reading(), "before the first page");
        watch.record_reading(usage(10, 100));
        for _ in 0..3 {
            assert!(!watch.needs_reading());
            watch.page_read(None);
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
    fn a_header_on_each_page_makes_readings_unneeded() {
        let mut watch = UsageWatch::new(2);
        for used in 1..10 {
            watch.page_read(Some(usage(used, 100)));
            assert!(!watch.needs_reading());
        }
        assert_eq!(watch.usage(), Some(usage(9, 100)));
    }

    #[test]
    fn the_explanation_says_what_to_do() {
        let text = explain("acme.my.salesforce.com", usage(80, 100), 0.8);
        assert!(text.contains("80%"), "{text}");
        assert!(text.contains("80 of 100"), "{text}");
        assert!(text.contains("resumes"), "{text}");
    }
}
