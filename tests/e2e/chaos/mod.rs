//! The chaos suite: a whole deployment — real nats-server processes, both simulators, the
//! extractor as a service and several loader replicas as real binaries — under crashes
//! (`kill -9` of loaders and of the extractor), NATS restarts and the loss of a cluster node,
//! outages of Oomnitza and Sage People longer than the retry budgets, and hostile input. Each
//! test waits for conditions with generous timeouts and then checks the exact final state
//! ([`Stack::assert_exact`], with the rest of the suite's stack in
//! `peoplesync_testkit::stack`): every worker once in Oomnitza with the right fields, the portion
//! finalized once, the run's counts equal to what Oomnitza holds, nothing left on the work
//! stream, and every worker not loaded accounted for with a reason.
//!
//! CI runs the bounded form. `PEOPLESYNC_CHAOS=long` runs the longer one for release checks
//! (more kills, larger orgs, longer outages); see docs/chaos.md.

mod corpus;
mod crashes;
mod nats;
mod outages;

use peoplesync_sims::sage::{PageSize, SageConfig, SageFaults};
pub use peoplesync_testkit::stack::Stack;

/// An org of `workers` served in pages of `page` records, each answered `latency_ms` late.
pub fn org(workers: u64, page: usize, latency_ms: u64) -> SageConfig {
    SageConfig {
        workers,
        page_size: PageSize::Fixed(page),
        faults: SageFaults {
            latency_ms,
            ..SageFaults::default()
        },
        ..SageConfig::default()
    }
}

/// How hard the suite pushes: bounded (CI) unless `PEOPLESYNC_CHAOS=long`.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub long: bool,
}

impl Scale {
    pub fn from_env() -> Scale {
        Scale {
            long: std::env::var("PEOPLESYNC_CHAOS").is_ok_and(|v| v.trim() == "long"),
        }
    }

    /// `bounded` in CI, `long` for release checks.
    pub fn pick<T>(self, bounded: T, long: T) -> T {
        if self.long { long } else { bounded }
    }
}

/// Loader settings of the suite: the tests' quick redelivery and retries, and five seconds of
/// retries per bulk request, so faults play out in seconds and outages outlast the budget.
pub fn loader_config() -> String {
    let config =
        peoplesync_testkit::stack::QUICK.replace("[retry]\n", "[retry]\nmax_elapsed_secs = 5\n");
    assert!(config.contains("max_elapsed_secs = 5"), "{config}");
    config
}

/// Extractor settings of the suite: a short lease, so a standby takes over in seconds, and
/// quick resumption of a run stopped part-way.
pub const EXTRACTOR: &str = r#"
lease_ttl_secs = 3
[run_retry]
first_delay_secs = 1
max_delay_secs = 4
max_attempts = 30
"#;
