//! Workers no longer listed become `removed` events, unless there are too many: then they wait
//! for an operator's approval.

use std::time::Duration;

use peoplesync_bus::Bus;
use peoplesync_bus::control::{self, CommandError, RemovalsReleased, RunStarted};
use peoplesync_bus::{RunRecord, RunState};
use peoplesync_extractor::{Extraction, RunSummary};
use peoplesync_proto::v1::{RunEventKind, WorkerEventKind};
use peoplesync_runtime::metrics::names::EXTRACTOR_REMOVALS_SKIPPED;
use peoplesync_sims::generate;
use peoplesync_sims::sage::{SageConfig, SageFaults};
use peoplesync_testkit::wait_for;
use serde_json::json;

use crate::harness::extraction as extraction_of;
use crate::harness::*;

/// Whether the simulator lists `id` as still employed today.
pub fn employed(sim: &peoplesync_sims::sage::SageSim, id: &str) -> bool {
    let Some(raw) = sim.worker(id) else {
        return false;
    };
    let worker = peoplesync_core::Worker::from_raw(&raw).unwrap();
    let today = peoplesync_core::leavers::today_in(chrono_tz::Tz::UTC, chrono::Utc::now());
    peoplesync_core::leavers::ended(&worker, today).is_none()
}

/// Removes `n` workers employed today (from index 100 on) from the org; returns their ids.
/// Workers who had already left are not in a baseline (see `ended`): only employed ones can
/// disappear.
fn remove_employed(sim: &peoplesync_sims::sage::SageSim, n: usize) -> Vec<String> {
    let leaving: Vec<String> = (100..)
        .map(generate::worker_id)
        .filter(|id| employed(sim, id))
        .take(n)
        .collect();
    for id in &leaving {
        sim.remove_worker(id);
    }
    leaving
}

/// The org `sim`, the extraction of `integration`, and a first full run (the baseline, whose
/// events are drained): it publishes no removals, having nothing to compare with.
async fn baseline_of(integration: &str, sim: SageConfig) -> (Setup, Extraction, RunSummary) {
    let s = setup(sim).await;
    let extraction = s.extraction(integration);
    let first = run_to_completion(&extraction).await;
    assert_eq!(first.removed, 0, "nothing to compare the first run with");
    drain_workers(&s.bus, integration).await;
    (s, extraction, first)
}

/// [`baseline_of`] an org of 1,000 workers, for [`ID`].
async fn baseline() -> (Setup, Extraction) {
    let (s, extraction, _) = baseline_of(ID, org(1000, 50, 120)).await;
    (s, extraction)
}

#[tokio::test]
async fn workers_no_longer_listed_are_published_as_removed_after_a_full_run() {
    let (s, extraction) = baseline().await;

    let gone: Vec<String> = [3, 500, 999]
        .iter()
        .map(|i| generate::worker_id(*i))
        .collect();
    for id in &gone {
        s.sim.remove_worker(id);
    }
    s.sim.add_workers(2);
    let second = run_to_completion(&extraction).await;
    assert_eq!((second.published, second.removed), (999, 3));
    let events = drain_workers(&s.bus, ID).await;
    let mut removed: Vec<String> = events
        .iter()
        .filter(|e| e.kind() == WorkerEventKind::Removed)
        .map(|e| e.worker.as_ref().unwrap().id.clone())
        .collect();
    removed.sort();
    assert_eq!(removed, gone);
    assert!(events.iter().all(|e| e.run_id == second.run_id));
    let record = s.run_record(ID, &second.run_id).await;
    assert_eq!(
        (record.published, record.removed, record.removals_held),
        (999, 3, 0)
    );
    let completed = run_events(&s.bus, ID)
        .await
        .into_iter()
        .rfind(|e| e.kind() == RunEventKind::Completed)
        .unwrap();
    assert_eq!((completed.published, completed.removed), (999, 3));

    let third = run_to_completion(&extraction).await;
    assert_eq!(third.removed, 0, "removals are published once");
}

/// Asks the extractor to release the removals held by run `run_id`.
async fn approve_removals(bus: &Bus, run_id: &str) -> Result<RemovalsReleased, CommandError> {
    release(bus, control::APPROVE_REMOVALS, run_id).await
}

/// Sends `command` (an approval or a rebaseline) for the removals held by run `run_id`.
async fn release(
    bus: &Bus,
    command_name: &str,
    run_id: &str,
) -> Result<RemovalsReleased, CommandError> {
    command(bus, ID, command_name, json!({"run_id": run_id})).await
}

/// Has the extractor service start a full run of [`ID`] with `trigger`; its record once
/// completed.
async fn served_run(bus: &Bus, trigger: &str) -> RunRecord {
    let started: RunStarted = command(bus, ID, control::RUN, json!({"trigger": trigger}))
        .await
        .unwrap();
    completed(bus, ID, &started.run_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_removals_are_held_until_an_operator_approves_them() {
    let s = setup(org(1000, 50, 120)).await;
    let service = s.serve().await;
    let run = |trigger| served_run(&s.bus, trigger);
    run("first").await;
    drain_workers(&s.bus, ID).await;
    let leaving = remove_employed(&s.sim, 60);

    let held = run("second").await;
    assert_eq!(held.state, RunState::Completed, "upserts are not held back");
    assert_eq!(
        (held.published, held.removed, held.removals_held),
        (940, 0, 60)
    );
    assert_eq!(leaving.len(), 60);
    let events = drain_workers(&s.bus, ID).await;
    assert!(events.iter().all(|e| e.kind() == WorkerEventKind::Upsert));
    // Still held on the next run: the baseline has not moved.
    let again = run("third").await;
    assert_eq!((again.removed, again.removals_held), (0, 60));
    drain_workers(&s.bus, ID).await;
    // The hold moved to the newer run: the earlier one counts none, so the 60 are held once.
    assert_eq!(s.run_record(ID, &held.run_id).await.removals_held, 0);
    assert_eq!(s.bus.runs().removals_held(ID).await.unwrap(), 60);

    let wrong = approve_removals(&s.bus, &held.run_id).await.unwrap_err();
    assert_eq!(
        wrong.code, "not_found",
        "only the latest held run can be approved"
    );
    assert!(wrong.message.contains(&again.run_id), "{}", wrong.message);

    let released = approve_removals(&s.bus, &again.run_id).await.unwrap();
    assert_eq!(released.released, 60);
    let events = drain_workers(&s.bus, ID).await;
    assert_eq!(events.len(), 60);
    assert!(events.iter().all(|e| e.kind() == WorkerEventKind::Removed));
    let release_run = events[0].run_id.clone();
    let record = s.run_record(ID, &release_run).await;
    assert_eq!(record.state, RunState::Completed);
    assert_eq!(
        (
            record.trigger.as_str(),
            record.full,
            record.removed,
            record.published
        ),
        ("approve-removals", false, 60, 0)
    );
    assert_eq!(s.run_record(ID, &again.run_id).await.removals_held, 0);

    let after = run("fourth").await;
    assert_eq!((after.removed, after.removals_held), (0, 0));
    assert_eq!(s.bus.runs().removals_held(ID).await.unwrap(), 0);
    service.shutdown().await;
}

#[tokio::test]
async fn a_later_run_that_publishes_held_removals_leaves_none_counted_on_the_holding_run() {
    let (s, extraction) = baseline().await;
    remove_employed(&s.sim, 60);
    let held = run_to_completion(&extraction).await;
    assert_eq!((held.removed, held.removals_held), (0, 60));

    // A policy that lets 60 through: the next run publishes them and drops the hold.
    let (mut config, secrets) = config(&s.sim, &[ID]);
    config.removals.hold_above_count = 100;
    config.removals.hold_above_share = 0.5;
    let published = run_to_completion(&extraction_of(&s.bus, config, secrets, ID)).await;
    assert_eq!((published.removed, published.removals_held), (60, 0));
    assert_eq!(s.run_record(ID, &held.run_id).await.removals_held, 0);
    assert_eq!(s.bus.runs().removals_held(ID).await.unwrap(), 0);
}

#[tokio::test]
async fn removals_after_a_source_filter_change_are_held_however_few() {
    let (s, extraction) = baseline().await;

    // One worker now falls outside the filter: it did not leave the company.
    let mut config = peoplesync_core::IntegrationConfig::default_for(ID);
    config.source_filter = Some(format!("id ne '{}'", generate::worker_id(3)));
    put_integration(&s.bus, &config).await;
    let second = run_to_completion(&extraction).await;
    assert_eq!(second.removed, 0, "nothing is published on a filter change");
    let record = s.run_record(ID, &second.run_id).await;
    assert_eq!(
        record.removals_held, 1,
        "the one 'removal' waits for an operator"
    );
    assert!(
        drain_workers(&s.bus, ID)
            .await
            .iter()
            .all(|e| e.kind() != WorkerEventKind::Removed)
    );
}

/// How many runs of `integration` could not compute their removals, from this process's
/// Prometheus recorder (installed on first use, so increments after it are counted). The
/// recorder is shared by every test of the binary: each such test has an integration of its
/// own.
fn removals_skipped(integration: &str) -> u64 {
    let handle = peoplesync_runtime::metrics::install().unwrap();
    let series = format!("{EXTRACTOR_REMOVALS_SKIPPED}{{integration=\"{integration}\"}} ");
    handle
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// [`baseline_of`], with the metrics recorder installed first so [`removals_skipped`] counts
/// the runs after it.
async fn counted_baseline(integration: &str, sim: SageConfig) -> (Setup, Extraction, RunSummary) {
    removals_skipped(integration);
    baseline_of(integration, sim).await
}

#[tokio::test]
async fn a_run_whose_list_is_out_of_order_records_why_its_removals_were_not_computed() {
    const UNORDERED: &str = "unordered-ids";
    let (s, extraction, first) = counted_baseline(UNORDERED, org(1000, 100, 100)).await;
    let leaving = remove_employed(&s.sim, 3);

    // Sage People lists one worker by a case-blind order, not byte order: the id it serves
    // differs in case from its neighbours' prefix, so it sorts after every one of them in bytes.
    // Mid-page, so the paging client accepts it (only a page's last id is checked).
    let index = (550..)
        .find(|i| employed(&s.sim, &generate::worker_id(*i)))
        .unwrap();
    let id = generate::worker_id(index);
    let original = s.sim.worker(&id).unwrap();
    let case_blind =
        generate::with_case_suffix(&id[..15].replacen("a2G7E", "a2G7e", 1)).expect("a 15-char id");
    let mut moved = original.clone();
    moved["id"] = json!(case_blind);
    s.sim.replace_worker(&id, moved);
    let next = (index + 1..)
        .map(generate::worker_id)
        .find(|id| employed(&s.sim, id))
        .unwrap();

    let second = run_to_completion(&extraction).await;
    assert_eq!((second.removed, second.removals_held), (0, 0));
    let record = s.run_record(UNORDERED, &second.run_id).await;
    assert_eq!(record.state, RunState::Completed, "the upserts still count");
    let reason = record
        .removals_skipped
        .expect("the run record says removals were not computed");
    assert_eq!(second.removals_skipped.as_deref(), Some(reason.as_str()));
    assert!(
        reason.contains(&format!("the seen list of this run {}", second.run_id))
            && reason.contains(&format!("the baseline run {}", first.run_id))
            && reason.contains(&format!("({case_blind} came before {next})")),
        "the reason names the list and the two ids: {reason}"
    );
    assert_eq!(removals_skipped(UNORDERED), 1);
    let state = s.bus.removals().load(UNORDERED).await.unwrap();
    assert_eq!(state.baseline.as_deref(), Some(first.run_id.as_str()));

    // Once the list is in order again, the next run compares with the same baseline: the
    // workers who left are announced late, not lost.
    s.sim.replace_worker(&id, original);
    let third = run_to_completion(&extraction).await;
    assert_eq!(third.removed, 3);
    assert_eq!(
        s.run_record(UNORDERED, &third.run_id)
            .await
            .removals_skipped,
        None
    );
    let mut removed: Vec<String> = drain_workers(&s.bus, UNORDERED)
        .await
        .into_iter()
        .filter(|e| e.kind() == WorkerEventKind::Removed)
        .map(|e| e.worker.unwrap_or_default().id)
        .collect();
    removed.sort();
    let mut leaving = leaving;
    leaving.sort();
    assert_eq!(removed, leaving);
    assert_eq!(removals_skipped(UNORDERED), 1);
}

#[tokio::test]
async fn an_empty_baseline_whose_run_record_was_removed_is_not_taken_for_a_gone_list() {
    const EMPTY: &str = "empty-baseline";
    // The org (or the source filter) listed nobody, and months later the baseline's run
    // record reaches the end of its retention: an empty list is still an empty org.
    let (s, extraction, first) = counted_baseline(EMPTY, org(0, 100, 100)).await;
    assert_eq!(first.published, 0);
    let key = peoplesync_bus::runs::key(EMPTY, &first.run_id);
    s.bus.runs().remove(&key).await.unwrap();
    assert!(
        s.bus
            .runs()
            .get(EMPTY, &first.run_id)
            .await
            .unwrap()
            .is_none()
    );

    let second = run_to_completion(&extraction).await;
    assert_eq!(second.removals_skipped, None, "no false alarm");
    assert_eq!(removals_skipped(EMPTY), 0);
}

#[tokio::test]
async fn a_baseline_whose_list_is_gone_is_replaced_and_the_run_says_why() {
    const GONE: &str = "gone-baseline";
    let (s, extraction, first) = counted_baseline(GONE, org(1000, 100, 100)).await;
    // The baseline's list ages out of the seen stream (months without a full run), and
    // meanwhile some workers leave.
    s.bus.seen().purge_run(GONE, &first.run_id).await.unwrap();
    remove_employed(&s.sim, 3);

    let second = run_to_completion(&extraction).await;
    assert_eq!((second.removed, second.removals_held), (0, 0));
    let reason = s
        .run_record(GONE, &second.run_id)
        .await
        .removals_skipped
        .expect("the run record says removals were not computed");
    assert!(
        reason.contains(&format!("baseline run {} is gone", first.run_id)),
        "{reason}"
    );
    assert_eq!(removals_skipped(GONE), 1);
    let state = s.bus.removals().load(GONE).await.unwrap();
    assert_eq!(
        state.baseline.as_deref(),
        Some(second.run_id.as_str()),
        "this run is the new baseline, so later leavers are announced"
    );
    drain_workers(&s.bus, GONE).await;

    let leaving = remove_employed(&s.sim, 2);
    let third = run_to_completion(&extraction).await;
    assert_eq!(third.removed, 2, "{leaving:?}");
    assert_eq!(
        s.run_record(GONE, &third.run_id).await.removals_skipped,
        None
    );
}

/// The filter of an integration that reads the workers of France only.
const FRANCE: &str = "workAddress.country eq 'France'";

/// Stores [`ID`]'s config with `source_filter` (none for `None`).
async fn filter_with(bus: &Bus, source_filter: Option<&str>) {
    let mut config = peoplesync_core::IntegrationConfig::default_for(ID);
    config.source_filter = source_filter.map(str::to_owned);
    put_integration(bus, &config).await;
}

/// `n` workers of France employed today.
fn employed_in_france(sim: &peoplesync_sims::sage::SageSim, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..sim.stats().workers)
        .map(generate::worker_id)
        .filter(|id| employed(sim, id))
        .filter(|id| sim.worker(id).unwrap()["workAddress"]["country"] == "France")
        .take(n)
        .collect();
    assert_eq!(ids.len(), n, "the org has {n} employees in France");
    ids
}

/// The ids of the `removed` events among `events`, sorted.
fn removed_ids(events: &[peoplesync_proto::v1::WorkerEvent]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter(|e| e.kind() == WorkerEventKind::Removed)
        .map(|e| e.worker.clone().unwrap_or_default().id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_worker_who_moves_out_of_the_source_filter_is_not_published_as_a_leaver() {
    let s = setup(org(300, 40, 90)).await;
    filter_with(&s.bus, Some(FRANCE)).await;
    // France is a fraction of the org: a policy that lets three removals through.
    let (mut config, secrets) = config(&s.sim, &[ID]);
    config.removals.hold_above_share = 0.5;
    let extraction = extraction_of(&s.bus, config, secrets, ID);
    run_to_completion(&extraction).await;
    drain_workers(&s.bus, ID).await;

    // One transfers to Germany (still employed), one is gone from Sage People, one transfers
    // and has left: the last two are leavers, the first is not.
    let french = employed_in_france(&s.sim, 3);
    let (moved, gone, moved_and_left) = (&french[0], &french[1], &french[2]);
    s.sim
        .patch_worker(moved, json!({"workAddress": {"country": "Germany"}}));
    s.sim.remove_worker(gone);
    s.sim.patch_worker(
        moved_and_left,
        json!({"workAddress": {"country": "Germany"}, "currentEmployment": {"active": false}}),
    );
    let second = run_to_completion(&extraction).await;
    let mut leavers = vec![gone.clone(), moved_and_left.clone()];
    leavers.sort();
    assert_eq!(removed_ids(&drain_workers(&s.bus, ID).await), leavers);
    assert_eq!(second.removed, 2);
    let record = s.run_record(ID, &second.run_id).await;
    assert_eq!(
        (record.removed, record.removals_held, record.moved_out),
        (2, 0, 1),
        "the record counts the events published, which the loaders wait for, and who moved"
    );

    // The baseline moved past the worker who moved: no later run announces them.
    let third = run_to_completion(&extraction).await;
    assert_eq!(third.removed, 0);
    assert!(removed_ids(&drain_workers(&s.bus, ID).await).is_empty());
}

/// Asks the extractor to make run `run_id`'s list the baseline without publishing its held
/// removals.
async fn rebaseline(bus: &Bus, run_id: &str) -> Result<RemovalsReleased, CommandError> {
    release(bus, control::REBASELINE_REMOVALS, run_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_narrowing_the_source_filter_the_held_run_becomes_the_baseline_without_leaver_actions()
 {
    let s = setup(org(200, 40, 90)).await;
    let service = s.serve().await;
    let first = served_run(&s.bus, "first").await;
    drain_workers(&s.bus, ID).await;

    filter_with(&s.bus, Some(FRANCE)).await;
    let held = served_run(&s.bus, "narrowed").await;
    assert!(held.removals_held > 0, "everyone outside France is held");
    assert_eq!(held.removed, 0);
    drain_workers(&s.bus, ID).await;

    let released = rebaseline(&s.bus, &held.run_id).await.unwrap();
    assert_eq!(released.released, 0);
    assert!(
        drain_workers(&s.bus, ID).await.is_empty(),
        "no leaver action: nothing is published"
    );
    assert_eq!(s.run_record(ID, &held.run_id).await.removals_held, 0);
    assert_eq!(s.bus.runs().removals_held(ID).await.unwrap(), 0);
    let state = s.bus.removals().load(ID).await.unwrap();
    assert_eq!(state.baseline.as_deref(), Some(held.run_id.as_str()));
    assert_eq!(state.held, None);
    assert_ne!(held.run_id, first.run_id);
    let again = rebaseline(&s.bus, &held.run_id).await.unwrap_err();
    assert_eq!(again.code, "not_found", "nothing is held any more");

    // Later runs compare with the narrowed list: only who leaves from now on is a leaver.
    let gone = employed_in_france(&s.sim, 1);
    s.sim.remove_worker(&gone[0]);
    let next = served_run(&s.bus, "after").await;
    assert_eq!((next.removed, next.removals_held), (1, 0));
    assert_eq!(removed_ids(&drain_workers(&s.bus, ID).await), gone);
    service.shutdown().await;
}

/// A full run of the whole org, then — `leaving` gone from Sage People — one narrowed to
/// France, which holds the removal of everyone else; its record. Both runs' events are drained.
async fn held_after_narrowing_to_france(s: &Setup, leaving: Option<&str>) -> RunRecord {
    served_run(&s.bus, "first").await;
    drain_workers(&s.bus, ID).await;
    filter_with(&s.bus, Some(FRANCE)).await;
    if let Some(id) = leaving {
        s.sim.remove_worker(id);
    }
    let held = served_run(&s.bus, "narrowed").await;
    assert!(held.removals_held > 1, "{held:?}");
    drain_workers(&s.bus, ID).await;
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_removals_held_by_a_filtered_run_publishes_only_the_workers_who_left() {
    let s = setup(org(200, 40, 90)).await;
    let service = s.serve().await;
    // Narrowed to France: the rest are held, though only one of them left.
    let outside = (0..200)
        .map(generate::worker_id)
        .find(|id| {
            employed(&s.sim, id) && s.sim.worker(id).unwrap()["workAddress"]["country"] != "France"
        })
        .unwrap();
    let held = held_after_narrowing_to_france(&s, Some(&outside)).await;

    let released = approve_removals(&s.bus, &held.run_id).await.unwrap();
    assert_eq!(released.released, 1);
    let events = drain_workers(&s.bus, ID).await;
    assert_eq!(removed_ids(&events), [outside]);
    let record = s.run_record(ID, &events[0].run_id).await;
    assert_eq!(
        (record.trigger.as_str(), record.removed, record.moved_out),
        ("approve-removals", 1, held.removals_held - 1)
    );
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_fails_part_way_fails_its_run_and_approving_again_finishes_that_run() {
    let s = setup(org(200, 40, 90)).await;
    let service = s.serve().await;
    // Narrowed to France: the rest are held, and the release asks Sage People about each.
    let held = held_after_narrowing_to_france(&s, None).await;

    // Sage People refuses every call while the approval checks who left.
    s.sim.set_faults(SageFaults {
        config_error: Some("MISSING_API_PERMISSION".into()),
        ..SageFaults::default()
    });
    let refused = approve_removals(&s.bus, &held.run_id).await.unwrap_err();
    let state = s.bus.removals().load(ID).await.unwrap();
    let release_run = state
        .held
        .and_then(|h| h.release_run)
        .expect("the approval fixed the id of its run");
    let failed = s.run_record(ID, &release_run).await;
    assert_eq!(failed.state, RunState::Failed, "{failed:?}");
    let error = failed.error.unwrap_or_default();
    assert!(error.contains(&refused.message), "{error}");
    assert!(failed.finished_at.is_some());
    s.sim.set_faults(SageFaults::default());
    approving_again_finishes(&s, &held, &release_run).await;
    service.shutdown().await;
}

/// The failed `release_run` of an approval of `held`'s removals says to approve them again,
/// and doing so reuses that run and completes it.
async fn approving_again_finishes(s: &Setup, held: &RunRecord, release_run: &str) {
    let error = s
        .run_record(ID, release_run)
        .await
        .error
        .unwrap_or_default();
    let again = format!("approve run {}'s held removals again", held.run_id);
    assert!(error.contains(&again), "{error}");
    let released = approve_removals(&s.bus, &held.run_id).await.unwrap();
    assert_eq!(released.released, 0, "nobody outside France left");
    let record = s.run_record(ID, release_run).await;
    assert_eq!(
        (record.state, record.error, record.trigger.as_str()),
        (RunState::Completed, None, "approve-removals")
    );
    assert_eq!(s.bus.runs().removals_held(ID).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_stopped_by_its_extractors_death_is_failed_by_the_next_lease_holder() {
    let s = setup(org(200, 40, 90)).await;
    let service = s.serve().await;
    let held = held_after_narrowing_to_france(&s, None).await;
    service.shutdown().await;
    // What an extractor killed while approving leaves: the release run fixed and running.
    let release_run = "01a00000-0000-7000-8000-00000000dead";
    let mut state = s.bus.removals().load(ID).await.unwrap();
    state.held.as_mut().unwrap().release_run = Some(release_run.into());
    s.bus.removals().save(ID, &state).await.unwrap();
    peoplesync_extractor::journal::Journal::new(&s.bus, ID, false)
        .start(release_run, "approve-removals", false)
        .await
        .unwrap();

    let service = s.serve().await;
    wait_for(
        "the next lease holder to fail the stopped approval's run",
        Duration::from_secs(60),
        || async { (s.run_record(ID, release_run).await.state == RunState::Failed).then_some(()) },
    )
    .await;
    approving_again_finishes(&s, &held, release_run).await;
    service.shutdown().await;
}
