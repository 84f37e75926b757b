//! NATS faults: the server restarted for 1 s and for 15 s while the extractor publishes, the
//! extractor stopped while the server is gone, and a three-node JetStream cluster (streams and
//! buckets with three replicas, seed URLs given comma-separated in `NATS_URL`) losing the node
//! the extractor is connected to.

use std::time::Duration;

use peoplesync_testkit::NatsCluster;

use super::{EXTRACTOR, Scale, Stack, loader_config, org};
use peoplesync_testkit::stack::{Deployment, Nats, oomnitza_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_for_one_and_for_fifteen_seconds_mid_publish_loses_and_repeats_nothing() {
    let scale = Scale::from_env();
    let workers = scale.pick(15_000, 100_000);
    // Pages of 500 without latency: publishing dominates, so a restart finds acks in flight.
    let outages: &[u64] = scale.pick(&[1, 15], &[1, 15, 1, 30]);
    let d = Deployment::start(org(workers, 500, 0), oomnitza_config()).await;
    let mut stack = Stack::start(d, 1, EXTRACTOR, 2, &loader_config()).await;
    let run_id = stack.trigger().await;
    let pages = workers / 500;
    for (i, &secs) in outages.iter().enumerate() {
        stack
            .pages_published(&run_id, pages * (i as u64 + 1) / (outages.len() as u64 + 2))
            .await;
        stack.d.nats.server().kill();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        if secs > 5 {
            stack.observe(&format!("NATS down for {secs} s")).await;
        }
        stack.d.nats.server().restart();
        eprintln!("[chaos] NATS was down for {secs} s");
    }
    let run = stack.settled(&run_id, Duration::from_secs(600)).await;
    stack.assert_exact(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extractor_stopped_while_nats_is_gone_exits_within_its_grace_period_and_the_run_resumes()
{
    // NATS goes away mid-publish, then the scheduling extractor is told to stop: the page in
    // flight can never be acknowledged, and its window would be sent again for two minutes.
    // The stop ends within shutdown_grace_secs (3 s here); NATS back, the replica started
    // again resumes the run from its checkpoint and every worker lands once.
    // Pages of 100 ms: the listing is far from its end when NATS goes.
    let d = Deployment::start(org(15_000, 500, 100), oomnitza_config()).await;
    let extractor = format!("shutdown_grace_secs = 3\n{EXTRACTOR}");
    let mut stack = Stack::start(d, 1, &extractor, 1, &loader_config()).await;
    let run_id = stack.trigger().await;
    stack.pages_published(&run_id, 5).await;
    stack.d.nats.server().kill();
    let served = stack.d.sage.stats().records_served;
    assert!(
        served < 15_000,
        "the listing was still going: {served} read"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = std::time::Instant::now();
    let child = &mut stack.extractors[0].child;
    let status = tokio::task::block_in_place(|| child.terminate_within(Duration::from_secs(10)));
    let status = status.unwrap_or_else(|| {
        panic!(
            "the extractor still ran {:?} after SIGTERM (grace 3 s)",
            asked.elapsed()
        )
    });
    assert_eq!(
        status.code(),
        Some(1),
        "ended by its watchdog: the page in flight could not be acknowledged"
    );
    stack.d.nats.server().restart();
    stack.restart_extractor(0);
    let run = stack.settled(&run_id, Duration::from_secs(300)).await;
    stack.assert_exact(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_losing_the_node_the_services_use_completes_the_run_exactly() {
    let scale = Scale::from_env();
    let workers = scale.pick(8_000, 60_000);
    let cluster = NatsCluster::start(3);
    let d = Deployment::start_on(
        Nats::Cluster(cluster),
        org(workers, 500, 0),
        oomnitza_config(),
    )
    .await;
    d.oomnitza_latency(20);
    let mut stack = Stack::start(d, 1, EXTRACTOR, 2, &loader_config()).await;
    let run_id = stack.trigger().await;
    stack.pages_published(&run_id, workers / 500 / 3).await;
    let nodes = stack.d.nats.cluster().nodes_with_client("sage-extractor");
    let node = *nodes.first().expect("the extractor is connected to a node");
    stack.d.nats.cluster().kill(node);
    eprintln!("[chaos] killed cluster node n{node}, the extractor's");
    stack.observe("a cluster node lost").await;
    if scale.long {
        // Then the node the loaders use, once the first is back.
        stack.pages_published(&run_id, workers / 500 * 2 / 3).await;
        stack.d.nats.cluster().restart(node);
        let loaders = stack.d.nats.cluster().nodes_with_client("oomnitza-loader");
        if let Some(&other) = loaders.first() {
            stack.d.nats.cluster().kill(other);
            eprintln!("[chaos] killed cluster node n{other}, a loader's");
        }
    }
    let run = stack.settled(&run_id, Duration::from_secs(600)).await;
    stack.assert_exact(&run).await;
}
