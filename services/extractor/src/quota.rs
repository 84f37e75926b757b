//! The API quota guard: Salesforce reports the org's rolling 24-hour API usage on every
//! response (`Sforce-Limit-Info`); a run stops cleanly, resumable, before its next call would
//! take the org past the configured share of its quota, so the integration never starves the
//! customer's other Salesforce users.

use peoplesync_sage_people::ApiUsage;

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
    fn the_explanation_says_what_to_do() {
        let text = explain("acme.my.salesforce.com", usage(80, 100), 0.8);
        assert!(text.contains("80%"), "{text}");
        assert!(text.contains("80 of 100"), "{text}");
        assert!(text.contains("resumes"), "{text}");
    }
}
