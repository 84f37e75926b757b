//! Outages longer than the retry budgets: Oomnitza unreachable for longer than one bulk
//! request's retries (`retry.max_elapsed_secs`), and Sage People failing for longer than the
//! extractor's `sage_retry_secs`. Nothing is dead-lettered for either; the run completes once
//! the service is back.

use std::time::Duration;

use peoplesync_bus::RunState;
use peoplesync_sims::oomnitza::OomnitzaFaults;
use peoplesync_sims::sage::SageFaults;
use peoplesync_testkit::wait_for;

use super::{EXTRACTOR, Scale, Stack, loader_config, org};
use peoplesync_testkit::stack::{Deployment, oomnitza_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oomnitza_outage_longer_than_the_retry_budget_dead_letters_nothing_and_loads_everyone() {
    let scale = Scale::from_env();
    let (workers, outage_secs) = scale.pick((3_000, 30), (20_000, 180));
    let d = peoplesync_testkit::stack::deployment(workers).await;
    let stack = Stack::start(d, 1, EXTRACTOR, 2, &loader_config()).await;
    let run_id = stack.trigger().await;
    wait_for("the first writes", Duration::from_secs(60), || async {
        (stack.d.oomnitza.stats().bulk_records >= 200).then_some(())
    })
    .await;
    // loader_config() gives one bulk request 5 s of retries: the outage lasts several budgets.
    stack.d.oomnitza.set_faults(OomnitzaFaults {
        outage_for_ms: Some(outage_secs * 1_000),
        ..Default::default()
    });
    // The loaders say why they are not loading.
    let note = stack.readyz_note(&stack.loaders, "oomnitza").await;
    assert!(note.contains("503"), "{note}");
    tokio::time::sleep(Duration::from_secs(outage_secs / 2)).await;
    stack.observe("Oomnitza down").await;
    let run = stack.settled(&run_id, Duration::from_secs(600)).await;
    stack.assert_exact(&run).await;
    let statuses = stack.d.oomnitza.stats().status_counts;
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "the outage was real"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sage_outage_longer_than_the_retry_budget_fails_the_run_and_it_resumes_by_itself() {
    let scale = Scale::from_env();
    let (workers, outage_secs) = scale.pick((3_000, 12), (20_000, 90));
    let d = Deployment::start(org(workers, 100, 20), oomnitza_config()).await;
    // Two seconds of retries per Sage People request: the outage outlasts them.
    let config = format!("sage_retry_secs = 2\n{EXTRACTOR}");
    let stack = Stack::start(d, 1, &config, 2, &loader_config()).await;
    let run_id = stack.trigger().await;
    stack.pages_published(&run_id, 5).await;
    stack.d.sage.set_faults(SageFaults {
        latency_ms: 20,
        outage_for_ms: Some(outage_secs * 1_000),
        ..Default::default()
    });
    let runs = stack.bus.runs();
    let failed = wait_for("the run to fail", Duration::from_secs(60), || {
        let (runs, run_id) = (runs.clone(), run_id.clone());
        async move {
            let (record, _) = runs.get("sage-people", &run_id).await.ok()??;
            (record.state == RunState::Failed).then_some(record)
        }
    })
    .await;
    eprintln!("[chaos] the run failed: {:?}", failed.error);
    // The lease holder says it will resume the run.
    let note = stack
        .readyz_note(&stack.extractors, "run_retry.sage-people")
        .await;
    eprintln!("[chaos] extractor /readyz note run_retry.sage-people: {note}");
    assert!(note.contains(&run_id), "{note}");
    stack.observe("Sage People down").await;
    let run = stack.settled(&run_id, Duration::from_secs(600)).await;
    stack.assert_exact(&run).await;
}
