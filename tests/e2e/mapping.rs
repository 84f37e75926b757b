//! The integration config in KV is live: a new revision applies to the next records of a run
//! that is going, and a revision that fails validation is refused while the previous one stays.

use std::time::Duration;

use bytes::Bytes;
use peoplesync_sims::sage::SageConfig;
use peoplesync_testkit::wait_for;

use peoplesync_testkit::stack::{Deployment, oomnitza_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_changed_in_kv_mid_run_applies_to_later_records_and_a_bad_one_is_refused() {
    let sage = SageConfig {
        workers: 2_000,
        ..SageConfig::default()
    };
    let d = Deployment::start(sage, oomnitza_config()).await;
    d.oomnitza_latency(100);
    let _loader = d.loader_with("loader-1", "[batch]\nsize = 50\nin_flight = 1\n");
    // Read in the background, so that the mapping changes while the first records load,
    // however long the extraction takes.
    let extraction = d.extract_run_in_background();
    wait_for("the first writes", Duration::from_secs(30), || async {
        (d.oomnitza.stats().bulk_requests >= 2).then_some(())
    })
    .await;

    let bus = d.bus().await;
    let store = bus.config_kv();
    let current = store
        .entry("sage-people")
        .await
        .unwrap()
        .expect("seeded config");
    let text = String::from_utf8(current.value.to_vec()).unwrap();
    // A revision that fails validation (no role) is refused; loading goes on with the old one.
    let broken = text.replace("default_role = \"25\"\n", "");
    assert_ne!(broken, text);
    let revision = store
        .update("sage-people", Bytes::from(broken), current.revision)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let position = "field = \"POSITION\"\nsource = \"Job Title\"";
    assert!(
        text.contains(position),
        "the default maps POSITION from Job Title"
    );
    let changed = text.replace(position, "field = \"POSITION\"\nvalue = \"Changed by KV\"");
    store
        .update("sage-people", Bytes::from(changed), revision)
        .await
        .unwrap();

    let run_id = extraction.await.expect("the extraction");
    d.finalized("sage-people", &run_id, Duration::from_secs(120))
        .await;
    d.assert_each_user_stored_once();
    let users = d.oomnitza.users();
    let changed = users
        .iter()
        .filter(|u| u.get("POSITION").and_then(|p| p.as_str()) == Some("Changed by KV"))
        .count();
    assert!(changed > 0, "records after the change use the new mapping");
    assert!(
        changed < users.len(),
        "records before the change kept the old one"
    );
    assert!(
        users
            .iter()
            .all(|u| u.get("PERMISSIONS_ID").and_then(|p| p.as_str()) == Some("25")),
        "the refused revision never applied"
    );
}
