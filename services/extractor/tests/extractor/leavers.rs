//! Workers who are still listed but have left — employment inactive, or end date passed —
//! are published as `ended` events through the removal diff: once, with the worker as last
//! listed, counted by the same threshold as workers who disappeared.

use peoplesync_core::{IntegrationConfig, LeaverAction, MappingEntry, MappingSource};
use peoplesync_proto::v1::WorkerEventKind;
use peoplesync_sims::generate;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::removals::employed;

fn day(offset: i64) -> String {
    (chrono::Utc::now().date_naive() + chrono::Duration::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}

/// `n` employed workers from index `from` on.
fn employed_ids(s: &Setup, from: u64, n: usize) -> Vec<String> {
    (from..)
        .map(generate::worker_id)
        .filter(|id| employed(&s.sim, id))
        .take(n)
        .collect()
}

fn kinds(events: &[peoplesync_proto::v1::WorkerEvent], id: &str) -> Vec<WorkerEventKind> {
    events
        .iter()
        .filter(|e| e.worker.as_ref().is_some_and(|w| w.id == id))
        .map(|e| e.kind())
        .collect()
}

#[tokio::test]
async fn leavers_are_published_once_as_ended_events_carrying_the_worker() {
    let s = setup(org(300, 40, 90)).await;
    let extraction = s.extraction(ID);
    extraction
        .run_full("test", CancellationToken::new())
        .await
        .unwrap();
    drain_workers(&s.bus, ID).await;

    let ids = employed_ids(&s, 10, 4);
    let (inactive, ended, ending_today, ending) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    s.sim
        .patch_worker(inactive, json!({"currentEmployment": {"active": false}}));
    s.sim
        .patch_worker(ended, json!({"currentEmployment": {"endDate": day(-1)}}));
    s.sim.patch_worker(
        ending_today,
        json!({"currentEmployment": {"endDate": day(0)}}),
    );
    s.sim
        .patch_worker(ending, json!({"currentEmployment": {"endDate": day(1)}}));
    let second = extraction
        .run_full("test", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        second.removed, 2,
        "the inactive worker and the one past their end date"
    );
    let events = drain_workers(&s.bus, ID).await;
    // Leaver action `none` (the default): their last data is upserted as before.
    assert_eq!(
        kinds(&events, inactive),
        [WorkerEventKind::Upsert, WorkerEventKind::Ended]
    );
    assert_eq!(
        kinds(&events, ended),
        [WorkerEventKind::Upsert, WorkerEventKind::Ended]
    );
    assert_eq!(kinds(&events, ending_today), [WorkerEventKind::Upsert]);
    assert_eq!(kinds(&events, ending), [WorkerEventKind::Upsert]);
    let carried = events
        .iter()
        .find(|e| e.kind() == WorkerEventKind::Ended && e.worker.as_ref().unwrap().id == *ended)
        .unwrap();
    assert_eq!(
        carried.worker.as_ref().unwrap().end_date.as_deref(),
        Some(day(-1).as_str())
    );
    assert!(
        !carried.raw.is_empty(),
        "the raw record comes along for templates"
    );

    let third = extraction
        .run_full("test", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(third.removed, 0, "a leaver is acted on once");
}

#[tokio::test]
async fn with_an_update_or_delete_policy_leavers_are_not_upserted() {
    let s = setup(org(200, 40, 90)).await;
    let mut config = IntegrationConfig::default_for(ID);
    config.leavers.action = LeaverAction::Update;
    config.leavers.set = vec![MappingEntry::new(
        "STATUS",
        MappingSource::Value(json!("Terminated")),
    )];
    put_integration(&s.bus, &config).await;
    let extraction = s.extraction(ID);
    let first = extraction
        .run_full("test", CancellationToken::new())
        .await
        .unwrap();
    let employed_count = (0..200)
        .map(generate::worker_id)
        .filter(|id| employed(&s.sim, id))
        .count() as u64;
    assert!(employed_count < 200, "the generated org has leavers");
    assert_eq!(
        first.published, employed_count,
        "workers who left are not upserted"
    );
    drain_workers(&s.bus, ID).await;

    let leaving = employed_ids(&s, 0, 1).remove(0);
    s.sim
        .patch_worker(&leaving, json!({"currentEmployment": {"active": false}}));
    let second = extraction
        .run_full("test", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((second.published, second.removed), (first.published - 1, 1));
    let events = drain_workers(&s.bus, ID).await;
    assert_eq!(kinds(&events, &leaving), [WorkerEventKind::Ended]);
    // Syncing the leaver alone would undo the update: refused, saying why.
    let refused = peoplesync_extractor::single::sync(&extraction, &leaving)
        .await
        .unwrap_err()
        .0;
    assert_eq!(refused.code, "invalid");
    assert!(refused.message.contains("has left"), "{}", refused.message);

    // Rehired: listed as employed again, so upserted again.
    s.sim.patch_worker(
        &leaving,
        json!({"currentEmployment": {"active": true, "endDate": null}}),
    );
    let third = extraction
        .run_full("test", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((third.published, third.removed), (first.published, 0));
}
