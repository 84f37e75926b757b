//! Compare-and-set writes on a three-node JetStream cluster, whose servers answer a write that
//! lost to another writer with another error code ("wrong last sequence", 10164) than a single
//! server does (10071): the loser must read again and decide afresh, as on one server.

use bytes::Bytes;
use peoplesync_bus::{Bus, BusSettings, RunRecord, Written};
use peoplesync_testkit::NatsCluster;

async fn cluster_bus(cluster: &NatsCluster) -> Bus {
    let settings = BusSettings {
        replicas: 3,
        ..BusSettings::default()
    };
    Bus::connect(cluster.urls(), "cluster-cas-test", settings)
        .await
        .expect("bus on the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_lose_a_race_on_a_cluster_are_read_again_or_reported_stale() {
    let cluster = NatsCluster::start(3);
    let (a, b) = tokio::join!(cluster_bus(&cluster), cluster_bus(&cluster));

    // A config written over a revision that is no longer current is stale, not an error.
    let configs = a.configs();
    let text = || Bytes::from_static(b"id = \"acme\"\n");
    assert_eq!(
        configs.put("acme", text(), 0).await.unwrap(),
        Written::Stored(1)
    );
    assert_eq!(
        configs.put("acme", text(), 0).await.unwrap(),
        Written::Stale
    );
    assert!(matches!(
        configs.put("acme", text(), 1).await.unwrap(),
        Written::Stored(_)
    ));
    assert_eq!(
        configs.put("acme", text(), 1).await.unwrap(),
        Written::Stale
    );

    // A run record another replica writes between this one's read and its write: the update
    // is applied again on top of the other's.
    let runs = a.runs();
    runs.create(&RunRecord::start("acme", "r1", true, "test"))
        .await
        .unwrap();
    let mut reads = 0;
    let updated = runs
        .update("acme", "r1", |record| {
            reads += 1;
            if reads == 1 {
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async {
                        b.runs()
                            .update("acme", "r1", |theirs| {
                                theirs.published = 7;
                                true
                            })
                            .await
                            .unwrap();
                    });
                });
            }
            record.removed = 2;
            true
        })
        .await
        .expect("the update is read again, not failed")
        .unwrap();
    // At least once more; a read served by a server a little behind may add another.
    assert!(reads >= 2, "{reads}");
    assert_eq!((updated.published, updated.removed), (7, 2));

    // Two replicas recording the same dead letter at once.
    super::record_the_same_letter_at_once(a, b).await;
}
