//! Crashes: loader replicas killed (`kill -9`) again and again during a run, and the extractor
//! killed mid-run with a standby replica beside it.

use std::time::Duration;

use super::{EXTRACTOR, Scale, Stack, loader_config, org};
use peoplesync_testkit::stack::{Deployment, oomnitza_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaders_killed_again_and_again_during_a_run_lose_nothing_and_write_nothing_twice() {
    let scale = Scale::from_env();
    let (workers, replicas, kills) = scale.pick((4_000, 3, 8), (50_000, 4, 60));
    let d = peoplesync_testkit::stack::deployment(workers).await;
    // Slow enough that the test sees each mark of the load below as it passes.
    d.oomnitza_latency(scale.pick(40, 20));
    let mut stack = Stack::start(d, 1, EXTRACTOR, replicas, &loader_config()).await;
    let run_id = stack.trigger().await;
    let mut killed = 0;
    for kill in 0..kills {
        // The kills are spread over the load (up to 80% of the workers) rather than over time,
        // so that they all fall while records are written, on a fast machine or a slow one.
        let mark = workers * (kill + 1) / (kills + 2);
        if !stack.records_accepted_before_settling(&run_id, mark).await {
            break;
        }
        stack.restart_loader(kill as usize % replicas);
        killed += 1;
        if killed == 1 {
            stack.observe("after a loader kill").await;
        }
    }
    eprintln!("[chaos] {killed} loader kills");
    assert_eq!(killed, kills, "the run settled before all its kills");
    let run = stack.settled(&run_id, Duration::from_secs(600)).await;
    stack.assert_exact(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extractor_killed_mid_run_is_replaced_by_its_standby_and_the_run_completes_once() {
    let scale = Scale::from_env();
    let (workers, kills) = scale.pick((6_000, 1), (40_000, 4));
    // Pages of 100 ms: the listing lasts seconds past each kill's mark.
    let d = Deployment::start(org(workers, 200, 100), oomnitza_config()).await;
    let mut stack = Stack::start(d, 2, EXTRACTOR, 2, &loader_config()).await;
    let run_id = stack.trigger().await;
    let pages = workers / 200;
    for kill in 0..kills {
        // Spread the kills over the listing.
        stack
            .pages_published(&run_id, pages * (kill + 1) / (kills + 2))
            .await;
        let holder = stack.lease_holder(Duration::from_secs(60)).await;
        let index = stack
            .extractors
            .iter()
            .position(|s| s.name == holder)
            .expect("the holder is one of ours");
        stack.extractors[index].child.kill();
        eprintln!("[chaos] killed the scheduling extractor {holder}");
        if kill == 0 {
            stack.observe("after the extractor kill").await;
        }
        // The standby takes the lease once it runs out, and resumes the run.
        let standby = stack
            .lease_holder_other_than(&holder, Duration::from_secs(60))
            .await;
        eprintln!("[chaos] {standby} took the lease over");
        // The killed replica comes back, as the standby now.
        stack.restart_extractor(index);
    }
    let run = stack.settled(&run_id, Duration::from_secs(600)).await;
    stack.assert_exact(&run).await;
    let stats = stack.d.sage.stats();
    assert!(
        stats.records_served >= workers,
        "the org was read: {stats:?}"
    );
}
