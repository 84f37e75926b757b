//! The Sage People simulator's leavers: the generated org holds workers who have left
//! (inactive, end date in the past) and workers serving notice (active, end date to come), and
//! a test can end anyone's employment through the admin API, field by field.

use peoplesync_sims::generate::{self, worker_id};
use peoplesync_sims::sage::{SageConfig, SageSim};
use serde_json::json;

#[test]
fn the_generated_org_has_leavers_and_workers_serving_notice() {
    let records: Vec<_> = (0..3_000).map(|i| generate::worker(7, i)).collect();
    let employment = |r: &serde_json::Value| r["currentEmployment"].clone();
    let left = records
        .iter()
        .map(employment)
        .filter(|e| e["active"] == false && e["endDate"].is_string())
        .count();
    let notice = records
        .iter()
        .map(employment)
        .filter(|e| e["active"] == true && e["endDate"].is_string())
        .count();
    assert!(left > 50, "{left} leavers");
    assert!(notice > 5, "{notice} serving notice");
}

#[tokio::test]
async fn ending_a_workers_employment_keeps_the_rest_of_their_record() {
    let sim = SageSim::spawn(SageConfig {
        workers: 10,
        ..SageConfig::default()
    })
    .await
    .expect("sim starts");
    let id = worker_id(4);
    let before = sim.worker(&id).expect("worker");
    sim.patch_worker(
        &id,
        json!({"currentEmployment": {"active": false, "endDate": "2026-06-14"}}),
    );
    let after = sim.worker(&id).expect("worker");
    assert_eq!(after["currentEmployment"]["active"], false);
    assert_eq!(after["currentEmployment"]["endDate"], "2026-06-14");
    assert_eq!(
        after["currentEmployment"]["startDate"], before["currentEmployment"]["startDate"],
        "a merge patch: other employment fields stay"
    );
    assert_eq!(after["emailAddress"], before["emailAddress"]);
}
