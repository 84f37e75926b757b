//! Leavers end to end: workers ending yesterday, ending tomorrow (acted on once the clock
//! passes their end date), set inactive, and removed from the listing reach Oomnitza under each
//! leaver action; a leaver's assets are reported; a rehire is restored; a rerun sends nothing
//! for leavers already handled; a leaver whose calls the token may not make is dead-lettered
//! without closing the intake; a delete whose answer is lost is still reported with the assets
//! the user held; and a mass of leavers is held until an operator approves.
//!
//! "Today" comes from the extractor's test-only `PEOPLESYNC_TEST_TODAY_FILE`, so the clock is
//! moved by rewriting a file between runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use peoplesync_bus::leavers::{self, LeaverEntry};
use peoplesync_bus::{FinalizeState, RunRecord, control};
use peoplesync_core::{
    IntegrationConfig, LeaverAction, MappingEntry, MappingSource, SAGE_USER_ID_FIELD, Worker,
};
use peoplesync_sims::generate;
use peoplesync_sims::oomnitza::{OomnitzaBehavior, OomnitzaFaults};
use peoplesync_sims::sage::SageFaults;
use peoplesync_testkit::wait_for;
use serde_json::{Map, Value, json};

use peoplesync_testkit::stack::{
    CONTROL_TOKEN, Deployment, QUICK, Serving, Syncctl, assert_accounted, deployment,
};

const ID: &str = "sage-people";
const FINALIZED: Duration = Duration::from_secs(120);
/// The role the `update` policy gives leavers.
const DISABLED_ROLE: &str = "10";
/// The default config's "End Date" custom field.
const END_DATE_FIELD: &str = "95231F6736CCE3D415F4640310AD5C14";

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// The deployment's clock for end dates.
struct Clock {
    path: std::path::PathBuf,
}

impl Clock {
    fn new(d: &Deployment, today: &str) -> Clock {
        let clock = Clock {
            path: d.dir.path().join("today"),
        };
        clock.set(today);
        clock
    }

    fn set(&self, today: &str) {
        std::fs::write(&self.path, today).unwrap();
    }

    fn env(&self) -> [(&'static str, String); 1] {
        [(
            "PEOPLESYNC_TEST_TODAY_FILE",
            self.path.to_string_lossy().into_owned(),
        )]
    }
}

/// Runs `sage-extractor --once` on `clock`'s date; returns the run's id.
fn extract(d: &Deployment, clock: &Clock) -> String {
    let env = clock.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    d.extract_run_with(&env)
}

/// Runs `sage-extractor --once` on `clock`'s date and waits for the run to be finalized.
async fn run(d: &Deployment, clock: &Clock) -> RunRecord {
    let run_id = extract(d, clock);
    let record = d.finalized(ID, &run_id, FINALIZED).await;
    assert_accounted(&record);
    record
}

/// `n` workers with an e-mail who are employed on `today`.
fn employed(d: &Deployment, today: NaiveDate, n: usize) -> Vec<String> {
    (0..d.sage_config.workers)
        .filter_map(|index| {
            let raw = generate::worker(d.sage_config.seed, index);
            let worker = Worker::from_raw(&raw).ok()?;
            let email = worker
                .email
                .as_deref()
                .is_some_and(|e| !e.trim().is_empty());
            (email && peoplesync_core::leavers::ended(&worker, today).is_none())
                .then_some(worker.id)
        })
        .take(n)
        .collect()
}

fn user_of(d: &Deployment, worker: &str) -> Option<Map<String, Value>> {
    d.oomnitza
        .users()
        .into_iter()
        .find(|u| u.get(SAGE_USER_ID_FIELD).and_then(Value::as_str) == Some(worker))
}

fn role_of(d: &Deployment, worker: &str) -> Option<String> {
    user_of(d, worker)?
        .get("PERMISSIONS_ID")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn policy(action: LeaverAction) -> IntegrationConfig {
    let mut config = IntegrationConfig::default_for(ID);
    config.leavers.action = action;
    match action {
        LeaverAction::Update => {
            config.leavers.set = vec![
                MappingEntry::new("PERMISSIONS_ID", MappingSource::Value(json!(DISABLED_ROLE))),
                MappingEntry::new(
                    END_DATE_FIELD,
                    MappingSource::Template("{{ worker.end_date }}".into()),
                ),
            ];
        }
        LeaverAction::Delete => config.leavers.allow_delete = true,
        LeaverAction::None => {}
    }
    config
}

async fn assign_asset(d: &Deployment, user: &str, id: &str, serial: &str) {
    let response = reqwest::Client::new()
        .post(format!("{}/_admin/assets", d.oomnitza.url()))
        .json(&json!({"equipment_id": id, "model": "MacBook Pro", "serial_number": serial, "assigned_to": user}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

async fn report(d: &Deployment, run_id: &str) -> Vec<LeaverEntry> {
    leavers::read(&d.bus().await, ID, run_id).await.unwrap()
}

fn entry<'a>(report: &'a [LeaverEntry], worker: &str) -> &'a LeaverEntry {
    report
        .iter()
        .find(|e| e.worker_id == worker)
        .unwrap_or_else(|| panic!("{worker} is not in the report: {report:?}"))
}

/// Bodies posted to the webhook receiver, with their signature header.
type Posts = Arc<Mutex<Vec<(Option<String>, axum::body::Bytes)>>>;

/// A receiver for the leavers webhook.
async fn webhook_receiver() -> (String, Posts) {
    let posts: Posts = Arc::default();
    let kept = posts.clone();
    let app = axum::Router::new().route(
        "/hooks/leavers",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let signature = headers
                        .get("x-peoplesync-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    kept.lock().unwrap().push((signature, body));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/leavers", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, posts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leavers_report_the_loader_stops_while_posting_is_named_in_its_log() {
    let (d, first, clock, _leaver) = one_leaver_after_a_baseline(LeaverAction::Update, "").await;
    drop(first);
    // A receiver that takes the report and never answers: the post is still being retried
    // when the loader is stopped.
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = received.clone();
    let app = axum::Router::new().route(
        "/hooks/leavers",
        axum::routing::post(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<axum::http::StatusCode>()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hooks/leavers", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut loader = d
        .loader("loader-2")
        .env("PEOPLESYNC_LEAVERS_WEBHOOK_URL", &hook)
        .spawn_serving();
    let record = run(&d, &clock).await;
    assert_eq!(record.counts.expect("counts").leavers, 1);
    wait_for(
        "the report to be posted",
        Duration::from_secs(30),
        || async { (received.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;
    loader.terminate();
    let named = wait_for("the warning", Duration::from_secs(10), || async {
        loader.warnings().into_iter().find(|w| {
            w["message"]
                .as_str()
                .is_some_and(|m| m.contains("was not posted") && m.contains(&record.run_id))
        })
    })
    .await;
    assert!(
        named["message"]
            .as_str()
            .is_some_and(|m| m.contains("syncctl leavers --run")),
        "{named}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leavers_are_updated_once_with_their_assets_reported_and_a_rehire_is_restored() {
    // Enough that 3 leavers stay under the default threshold (5% of those listed).
    let d = deployment(100).await;
    d.put_config(&policy(LeaverAction::Update)).await;
    let (hook, posts) = webhook_receiver().await;
    let _loader = d
        .loader("loader-1")
        .env("PEOPLESYNC_LEAVERS_WEBHOOK_URL", &hook)
        .env("PEOPLESYNC_LEAVERS_WEBHOOK_SECRET", "hook-secret")
        .spawn();
    let clock = Clock::new(&d, "2026-06-15");
    let ids = employed(&d, date("2026-06-15"), 4);
    let (ending_yesterday, ending_tomorrow, inactive, removed) =
        (&ids[0], &ids[1], &ids[2], &ids[3]);

    run(&d, &clock).await;
    for id in &ids {
        assert_eq!(role_of(&d, id).as_deref(), Some("25"), "{id} is loaded");
    }
    let holder = user_of(&d, ending_yesterday).unwrap()["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assign_asset(&d, &holder, "EQ-1001", "C02XL0ABJGH5").await;
    assign_asset(&d, &holder, "EQ-1002", "F9K7Q2").await;

    d.sage.patch_worker(
        ending_yesterday,
        json!({"currentEmployment": {"endDate": "2026-06-14"}}),
    );
    d.sage.patch_worker(
        ending_tomorrow,
        json!({"currentEmployment": {"endDate": "2026-06-16"}}),
    );
    d.sage
        .patch_worker(inactive, json!({"currentEmployment": {"active": false}}));
    d.sage.remove_worker(removed);
    let second = run(&d, &clock).await;
    let counts = second.counts.unwrap();
    assert_eq!(counts.leavers, 3, "{counts:?}");
    assert_eq!(second.leavers_with_assets, 1);
    for id in [ending_yesterday, inactive, removed] {
        assert_eq!(
            role_of(&d, id).as_deref(),
            Some(DISABLED_ROLE),
            "{id} is marked"
        );
    }
    assert_eq!(
        role_of(&d, ending_tomorrow).as_deref(),
        Some("25"),
        "not yet"
    );
    let ended = user_of(&d, ending_yesterday).unwrap();
    assert_eq!(ended[END_DATE_FIELD], "2026-06-14");
    let listed = report(&d, &second.run_id).await;
    assert_eq!(listed.len(), 3);
    // The updates went as update-only bulk records of the run: its log in Oomnitza counts them.
    let portion = d
        .oomnitza
        .portion(&second.run_id)
        .expect("the run's portion");
    assert!(portion.updated >= 3, "{portion:?}");
    assert_eq!(
        portion.added, 0,
        "an update-only record never creates a user"
    );
    let holding = entry(&listed, ending_yesterday);
    assert_eq!(
        (
            holding.reason.as_str(),
            holding.action.as_str(),
            holding.end_date.as_deref()
        ),
        ("end_date", "updated", Some("2026-06-14"))
    );
    let assets: Vec<(&str, Option<&str>)> = holding
        .assets
        .iter()
        .map(|a| (a.id.as_str(), a.serial.as_deref()))
        .collect();
    assert_eq!(
        assets,
        [
            ("EQ-1001", Some("C02XL0ABJGH5")),
            ("EQ-1002", Some("F9K7Q2"))
        ]
    );
    assert_eq!(entry(&listed, inactive).reason, "inactive");
    assert_eq!(entry(&listed, removed).reason, "removed");

    // The webhook gets the same list, signed.
    let (signature, raw) = wait_for("the leavers webhook", Duration::from_secs(30), || async {
        posts.lock().unwrap().first().cloned()
    })
    .await;
    let body: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(body["run_id"], second.run_id.as_str());
    assert_eq!(
        (body["count"].as_u64(), body["with_assets"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(body["leavers"].as_array().map(Vec::len), Some(3));
    let mac = peoplesync_loader::webhook::hmac_sha256(b"hook-secret", &raw);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(signature, Some(format!("sha256={hex}")));

    // The clock passes the second end date: only that worker is acted on; the others are not
    // sent again.
    clock.set("2026-06-17");
    d.oomnitza.insert_user({
        let mut user = user_of(&d, inactive).unwrap();
        user.insert("PERMISSIONS_ID".into(), json!("99"));
        user
    });
    let third = run(&d, &clock).await;
    assert_eq!(third.counts.unwrap().leavers, 1);
    assert_eq!(role_of(&d, ending_tomorrow).as_deref(), Some(DISABLED_ROLE));
    let listed = report(&d, &third.run_id).await;
    assert_eq!(
        listed
            .iter()
            .map(|e| e.worker_id.as_str())
            .collect::<Vec<_>>(),
        [ending_tomorrow.as_str()]
    );
    assert_eq!(
        role_of(&d, inactive).as_deref(),
        Some("99"),
        "a leaver already handled is left alone"
    );

    // Rehired: employed again, so the normal mapping writes the user in full again.
    d.sage.patch_worker(
        inactive,
        json!({"currentEmployment": {"active": true, "endDate": null}}),
    );
    let fourth = run(&d, &clock).await;
    assert_eq!(fourth.counts.unwrap().leavers, 0);
    assert_eq!(role_of(&d, inactive).as_deref(), Some("25"), "restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehire_is_restored_when_oomnitza_shows_their_email_in_other_letters() {
    // 40 workers: one leaver stays under the default threshold (5% of those listed).
    let d = deployment(40).await;
    d.oomnitza
        .set_behavior(OomnitzaBehavior {
            lower_case_identities: true,
            ..d.oomnitza.behavior()
        })
        .expect("behaviour");
    d.put_config(&policy(LeaverAction::Update)).await;
    let _loader = d.loader("loader-1").spawn();
    let clock = Clock::new(&d, "2026-06-15");
    let worker = employed(&d, date("2026-06-15"), 1).remove(0);
    d.sage
        .patch_worker(&worker, json!({"emailAddress": "Rehire.Case@Example.com"}));

    let first = run(&d, &clock).await;
    let verification = first.verification.expect("the run was checked");
    assert_eq!(
        verification.not_applied, 0,
        "every record confirmed, so no applied hash is dropped by the check: {verification:?}"
    );
    let loaded = user_of(&d, &worker).expect("loaded");
    assert_eq!(loaded["EMAIL"], "rehire.case@example.com", "{loaded:?}");
    assert_eq!(role_of(&d, &worker).as_deref(), Some("25"));

    d.sage.remove_worker(&worker);
    assert_eq!(run(&d, &clock).await.counts.unwrap().leavers, 1);
    assert_eq!(role_of(&d, &worker).as_deref(), Some(DISABLED_ROLE));

    // Rehired under the same id with the record they had before they left: the loader last
    // wrote exactly this record, so only dropping its hash when they left makes it send the
    // record again. The hash was stored under the address as sent and dropped under the
    // address as Oomnitza shows it.
    d.sage.restore_worker(&worker);
    assert_eq!(run(&d, &clock).await.counts.unwrap().leavers, 0);
    assert_eq!(role_of(&d, &worker).as_deref(), Some("25"), "restored");
}

/// Makes the four kinds of leaver of `ids`: ending `yesterday`, ending `tomorrow`, set
/// inactive, and removed from the listing.
fn make_leavers(d: &Deployment, ids: &[String], (yesterday, tomorrow): (&str, &str)) {
    d.sage.patch_worker(
        &ids[0],
        json!({"currentEmployment": {"endDate": yesterday}}),
    );
    d.sage
        .patch_worker(&ids[1], json!({"currentEmployment": {"endDate": tomorrow}}));
    d.sage
        .patch_worker(&ids[2], json!({"currentEmployment": {"active": false}}));
    d.sage.remove_worker(&ids[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_spares_a_user_holding_assets_and_none_writes_nothing_but_counts_leavers() {
    // Enough that 3 leavers stay under the default threshold (5% of those listed).
    let d = deployment(100).await;
    d.put_config(&policy(LeaverAction::None)).await;
    let _loader = d.loader("loader-1").spawn();
    let clock = Clock::new(&d, "2026-06-15");
    let ids = employed(&d, date("2026-06-15"), 8);
    let (quiet_ids, deleted_ids) = ids.split_at(4);
    run(&d, &clock).await;
    let holder = user_of(&d, &deleted_ids[3]).unwrap()["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assign_asset(&d, &holder, "EQ-7", "SN-7").await;

    // Action none (the shipped default): counted and reported as leavers, nothing written
    // beyond the listed leavers' records, which load as before.
    make_leavers(&d, quiet_ids, ("2026-06-14", "2026-06-16"));
    let users_before = d.oomnitza.users().len();
    let quiet = run(&d, &clock).await;
    let counts = quiet.counts.unwrap();
    assert_eq!((counts.leavers, counts.filtered), (3, 0), "{counts:?}");
    assert_eq!(d.oomnitza.users().len(), users_before);
    assert!(
        quiet_ids
            .iter()
            .all(|id| role_of(&d, id).as_deref() == Some("25"))
    );
    let inactive = user_of(&d, &quiet_ids[2]).unwrap();
    assert_eq!(
        inactive["81B4B7565B7EAC89EDA804A0081232DD"], false,
        "its Employment Active field is written as before"
    );
    let listed = report(&d, &quiet.run_id).await;
    assert!(listed.iter().all(|e| e.action == "none"), "{listed:?}");
    clock.set("2026-06-17");
    let tomorrow = run(&d, &clock).await;
    assert_eq!(
        tomorrow.counts.unwrap().leavers,
        1,
        "ending tomorrow, now passed"
    );
    assert_eq!(
        report(&d, &tomorrow.run_id).await[0].worker_id,
        quiet_ids[1]
    );

    // Action delete: leavers without assets are deleted; the one holding a laptop is kept
    // (and listed with it) until IT has it back.
    d.put_config(&policy(LeaverAction::Delete)).await;
    make_leavers(&d, deleted_ids, ("2026-06-16", "2026-06-18"));
    let deleting = run(&d, &clock).await;
    assert_eq!(deleting.counts.unwrap().leavers, 3);
    for id in &deleted_ids[..3] {
        if id != &deleted_ids[1] {
            assert!(user_of(&d, id).is_none(), "{id} deleted");
        }
    }
    assert!(
        user_of(&d, &deleted_ids[1]).is_some(),
        "ends tomorrow: not yet"
    );
    assert!(
        user_of(&d, &deleted_ids[3]).is_some(),
        "kept: still holds an asset"
    );
    let listed = report(&d, &deleting.run_id).await;
    assert_eq!(entry(&listed, &deleted_ids[0]).action, "deleted");
    let kept = entry(&listed, &deleted_ids[3]);
    assert_eq!(kept.action, "kept_holding_assets");
    assert_eq!(kept.assets.len(), 1);

    // The clock passes the last end date: that user goes; the rest are not sent again (the
    // deleted users are not recreated).
    clock.set("2026-06-19");
    let later = run(&d, &clock).await;
    assert_eq!(later.counts.unwrap().leavers, 1);
    assert!(
        user_of(&d, &deleted_ids[1]).is_none(),
        "deleted once its end date passed"
    );
    let rerun = run(&d, &clock).await;
    assert_eq!(rerun.counts.unwrap().leavers, 0);
    assert!(
        deleted_ids[..3].iter().all(|id| user_of(&d, id).is_none()),
        "not recreated"
    );
    assert!(user_of(&d, &deleted_ids[3]).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_deleted_whose_answer_was_lost_is_reported_deleted_with_what_they_held() {
    // Oomnitza deletes a user, but no answer reaches the loader for the four attempts its
    // client makes of a call (a gateway giving up on Oomnitza's answers): the leaver's next
    // delivery finds no user. The report still says `deleted`, with the laptop IT must
    // recover, from the note written before the delete; before, it said `not_found` and the
    // list of assets was lost.
    let laptops = LeaversWithLaptops::start().await;
    let d = &laptops.d;
    // Three leavers, four attempts each: every attempt of the first deliveries is unanswered.
    d.oomnitza.set_faults(OomnitzaFaults {
        deletes_answer_lost: 12,
        ..OomnitzaFaults::default()
    });
    let listed = laptops.leave().await;
    assert_eq!(
        d.oomnitza.faults().deletes_answer_lost,
        0,
        "every first attempt went unanswered"
    );
    for id in laptops.leavers() {
        assert!(user_of(d, id).is_none(), "{id} deleted");
    }
    laptops.assert_reported(&listed, "deleted");
    let letters = d.dead_letters().await;
    assert!(
        letters.iter().all(|l| l.letter.stage != "leavers"),
        "retried, not dead-lettered: {letters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_delete_oomnitza_refuses_is_reported_delete_failed_and_dead_lettered() {
    // The note written before a delete does not outlive a refusal: the report says the delete
    // failed, with the laptop still to recover, and the dead letter says why.
    let laptops = LeaversWithLaptops::start().await;
    let d = &laptops.d;
    d.oomnitza
        .set_behavior(OomnitzaBehavior {
            refuse_delete_with_assets: true,
            ..d.oomnitza.behavior()
        })
        .expect("behaviour");
    let listed = laptops.leave().await;
    for id in laptops.leavers() {
        assert!(user_of(d, id).is_some(), "{id} kept");
    }
    laptops.assert_reported(&listed, "delete_failed");
    let letters = d.dead_letters().await;
    let refused = letters
        .iter()
        .filter(|l| l.letter.stage == "leavers" && l.letter.http_status == Some(409))
        .count();
    assert_eq!(refused, 3, "{letters:?}");
}

/// A deployment of 100 workers under the `delete` action with `delete_with_assets`, its first
/// run loaded, and three workers who are about to leave (ended yesterday, inactive, removed;
/// a fourth ends tomorrow) each holding a laptop `SN-<n>`.
struct LeaversWithLaptops {
    d: Deployment,
    _loader: peoplesync_testkit::ChildService,
    clock: Clock,
    ids: Vec<String>,
}

impl LeaversWithLaptops {
    async fn start() -> LeaversWithLaptops {
        let d = deployment(100).await;
        let mut config = policy(LeaverAction::Delete);
        config.leavers.delete_with_assets = true;
        d.put_config(&config).await;
        let loader = d.loader("loader-1").spawn();
        let clock = Clock::new(&d, "2026-06-15");
        let ids = employed(&d, date("2026-06-15"), 4);
        run(&d, &clock).await;
        let laptops = LeaversWithLaptops {
            d,
            _loader: loader,
            clock,
            ids,
        };
        for (n, id) in laptops.leavers().enumerate() {
            let user = user_of(&laptops.d, id).expect("loaded");
            let user = user["_id"].as_str().expect("an id").to_owned();
            assign_asset(&laptops.d, &user, &format!("EQ-{n}"), &format!("SN-{n}")).await;
        }
        laptops
    }

    /// The three who leave.
    fn leavers(&self) -> impl Iterator<Item = &String> {
        [&self.ids[0], &self.ids[2], &self.ids[3]].into_iter()
    }

    /// They leave, and a run handles them: its leavers report.
    async fn leave(&self) -> Vec<LeaverEntry> {
        make_leavers(&self.d, &self.ids, ("2026-06-14", "2026-06-16"));
        let record = run(&self.d, &self.clock).await;
        report(&self.d, &record.run_id).await
    }

    /// Each of the three is in `listed` with `action` and their laptop.
    fn assert_reported(&self, listed: &[LeaverEntry], action: &str) {
        for (n, id) in self.leavers().enumerate() {
            let entry = entry(listed, id);
            assert_eq!(entry.action, action, "{listed:?}");
            let serials: Vec<_> = entry.assets.iter().map(|a| a.serial.clone()).collect();
            assert_eq!(serials, [Some(format!("SN-{n}"))], "{listed:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_canceled_in_oomnitza_deletes_nobody_and_its_leavers_are_replayed_later() {
    let d = deployment(100).await;
    d.put_config(&policy(LeaverAction::Delete)).await;
    let control = peoplesync_testkit::free_port();
    let loader = d.loader("loader-1").control(control).spawn();
    let clock = Clock::new(&d, "2026-06-15");
    let ids = employed(&d, date("2026-06-15"), 4);
    run(&d, &clock).await;

    // Three leavers (ended yesterday, inactive, removed; the fourth ends tomorrow), and an
    // administrator cancels the run in Oomnitza before a loader gets to them.
    make_leavers(&d, &ids, ("2026-06-14", "2026-06-16"));
    drop(loader);
    let run_id = extract(&d, &clock);
    d.oomnitza.cancel_portion(&run_id);
    let _loader = d.loader("loader-2").control(control).spawn();
    let canceled = d.finalized(ID, &run_id, FINALIZED).await;
    assert!(
        matches!(canceled.finalize, FinalizeState::Canceled { .. }),
        "{canceled:?}"
    );
    let leavers = [&ids[0], &ids[2], &ids[3]];
    assert!(
        leavers.iter().all(|id| user_of(&d, id).is_some()),
        "a canceled run deletes nobody"
    );
    let letters = d.dead_letters().await;
    let held: Vec<_> = letters
        .iter()
        .filter(|l| l.letter.stage == "leavers")
        .collect();
    assert_eq!(held.len(), 3, "{letters:?}");
    assert!(
        held.iter()
            .all(|l| l.letter.reason.contains("canceled in Oomnitza")),
        "{:?}",
        held[0].letter.reason
    );

    // The leavers are not lost: replayed, they are handled in a run of their own.
    let replay = replay_letters(control, &run_id, "canceled in Oomnitza", &["--watch"]);
    assert_eq!(replay.code, 0, "{}\n{}", replay.stdout, replay.stderr);
    let replayed = replay.json();
    assert_eq!(replayed["trigger"], json!("replay"), "{replayed}");
    let replayed_id = replayed["run_id"].as_str().expect("the replay run's id");
    let handled = d.finalized(ID, replayed_id, FINALIZED).await;
    assert_eq!(handled.counts.expect("counts").leavers, 3);
    assert!(
        leavers.iter().all(|id| user_of(&d, id).is_none()),
        "deleted once replayed"
    );
}

/// `syncctl dlq replay` of run `run_id`'s letters whose reason holds `reason`, through the
/// control plane on port `control`, with `more` arguments, as JSON.
fn replay_letters(
    control: u16,
    run_id: &str,
    reason: &str,
    more: &[&str],
) -> peoplesync_testkit::stack::Ran {
    let mut args = vec![
        "dlq", "replay", "--run", run_id, "--reason", reason, "-o", "json",
    ];
    args.extend_from_slice(more);
    Syncctl::new(&format!("http://127.0.0.1:{control}"))
        .token(Some(CONTROL_TOKEN))
        .run(&args)
}

/// A deployment of 100 workers under leaver `action` with a loader of `config`, after a
/// baseline run on 2026-06-15, with one of the employed workers made inactive for the next
/// run; returns it, the loader, the clock and that leaver's id.
async fn one_leaver_after_a_baseline(
    action: LeaverAction,
    config: &str,
) -> (Deployment, Serving, Clock, String) {
    let d = deployment(100).await;
    d.put_config(&policy(action)).await;
    let loader = d.loader("loader-1").config(config).spawn_serving();
    let clock = Clock::new(&d, "2026-06-15");
    let leaver = employed(&d, date("2026-06-15"), 1).remove(0);
    run(&d, &clock).await;
    d.sage
        .patch_worker(&leaver, json!({"currentEmployment": {"active": false}}));
    (d, loader, clock, leaver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_update_waits_for_oomnitza_to_process_it_without_a_dead_letter() {
    // Two deliveries before an event counts as failed, retried after a second.
    let (d, loader, clock, leaver) = one_leaver_after_a_baseline(
        LeaverAction::Update,
        "[consumer]\nack_wait_secs = 4\nmax_deliver = 2\n\
         [retry]\ninitial_delay_ms = 50\nmax_delay_ms = 1000\n",
    )
    .await;
    // A leaver, at the end of a run whose records Oomnitza holds for a while: the update is
    // accepted but not shown by reads, over more deliveries than `max_deliver`.
    d.oomnitza.set_faults(OomnitzaFaults {
        processing_paused: true,
        ..OomnitzaFaults::default()
    });
    let posts = d.oomnitza.stats().bulk_requests;
    let run_id = extract(&d, &clock);
    // The leaver's record and its update are posted; a redelivery does not post the update
    // again while the run's records are processing, but the copy requeued after `max_deliver`
    // deliveries does: a second update post shows the event outlived its deliveries.
    wait_for(
        "the leaver's event requeued after max_deliver deliveries",
        Duration::from_secs(60),
        || async { (d.oomnitza.stats().bulk_requests >= posts + 3).then_some(()) },
    )
    .await;
    // The wait shows on the loader's /readyz (and so in `syncctl status`), and ends with it.
    let note = || async {
        let (_, _, body) = crate::operations::get(&loader.url("/readyz")).await?;
        let readyz: Value = serde_json::from_str(&body).ok()?;
        Some(
            readyz["notes"][format!("leavers {ID}")]
                .as_str()?
                .to_owned(),
        )
    };
    let waiting = note().await.unwrap_or_default();
    assert!(
        waiting.contains(&format!(
            "waiting for Oomnitza to process the records of run {run_id}"
        )),
        "{waiting:?}"
    );
    d.oomnitza.set_faults(OomnitzaFaults::default());
    let record = d.finalized(ID, &run_id, FINALIZED).await;
    assert_eq!(
        note().await,
        None,
        "the note is cleared once the leaver is handled"
    );
    assert_eq!(record.counts.expect("counts").leavers, 1);
    assert_eq!(role_of(&d, &leaver).as_deref(), Some(DISABLED_ROLE));
    d.assert_only_pipeline_letters("the waiting leaver was not dead-lettered")
        .await;
}

/// Loader settings under which an event counts as failed after two deliveries, and Oomnitza
/// is retried for a second.
const TWO_DELIVERIES: &str = "[consumer]\nack_wait_secs = 4\nmax_deliver = 2\n\
     [retry]\ninitial_delay_ms = 50\nmax_delay_ms = 200\nmax_elapsed_secs = 1\n\
     credentials_retry_secs = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oomnitza_outage_met_by_a_leaver_holds_it_without_a_dead_letter() {
    let (d, _loader, clock, _leaver) =
        one_leaver_after_a_baseline(LeaverAction::None, TWO_DELIVERIES).await;
    // Oomnitza's users endpoints, which only leavers need, are down for longer than the
    // leaver's two deliveries take; bulk posts and the credential check still answer.
    d.oomnitza.set_faults(OomnitzaFaults {
        users_outage_for_ms: Some(25_000),
        ..OomnitzaFaults::default()
    });
    let record = run(&d, &clock).await;
    let refused = d.oomnitza.stats().status_counts.get(&503).copied();
    assert!(refused.is_some_and(|n| n > 0), "the loader met the outage");
    assert_eq!(record.counts.expect("counts").leavers, 1);
    d.assert_only_pipeline_letters("the leaver waited out the outage")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_letter_is_not_replayed_once_the_worker_is_employed_again() {
    let (d, first, clock, leaver) =
        one_leaver_after_a_baseline(LeaverAction::Delete, TWO_DELIVERIES).await;
    drop(first);
    let control = peoplesync_testkit::free_port();
    let _loader = d
        .loader("loader-2")
        .config(TWO_DELIVERIES)
        .control(control)
        .spawn();
    // The leaver's delete is refused (a token lacking a right): dead-lettered.
    d.oomnitza.set_faults(OomnitzaFaults {
        forbidden_paths: vec!["/api/v3/users/".into()],
        ..OomnitzaFaults::default()
    });
    let record = run(&d, &clock).await;
    the_leaver_letter(&d, &record, &leaver, &["forbade"]).await;
    // HR corrects the record and the token gets its right; the next run lists the worker as
    // employed again and becomes the baseline.
    d.oomnitza.set_faults(OomnitzaFaults::default());
    d.sage
        .patch_worker(&leaver, json!({"currentEmployment": {"active": true}}));
    let next = run(&d, &clock).await;
    assert_eq!(next.counts.expect("counts").leavers, 0);

    // Replaying the letter now would delete an employed user: it is refused, saying why.
    let replay = replay_letters(control, &record.run_id, "forbade", &[]);
    let replayed = replay.json();
    assert_eq!(replayed["replayed"], json!(0), "{replayed}");
    let failures = replayed["failures"].to_string();
    assert!(
        failures.contains("lists them as employed again") && failures.contains(&next.run_id),
        "{replayed}"
    );
    assert!(user_of(&d, &leaver).is_some(), "nobody is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_whose_user_calls_the_token_may_not_make_is_dead_lettered_saying_so() {
    let (d, loader, clock, leaver) =
        one_leaver_after_a_baseline(LeaverAction::Delete, TWO_DELIVERIES).await;
    // The token may find users but not read one user's assets or delete them, which only a
    // leaver needs; bulk posts and the credential check are allowed.
    d.oomnitza.set_faults(OomnitzaFaults {
        forbidden_paths: vec!["/api/v3/users/".into()],
        ..OomnitzaFaults::default()
    });
    let record = run(&d, &clock).await;
    let counts = record.counts.expect("counts");
    assert_eq!(counts.leavers, 0, "{counts:?}");
    assert!(user_of(&d, &leaver).is_some(), "nobody is deleted");
    let letter = the_leaver_letter(
        &d,
        &record,
        &leaver,
        &["forbade", "lacks a right", "syncctl dlq replay"],
    )
    .await;
    // At its first delivery: no retry gives the token the right.
    assert_eq!(letter.attempts, 1);
    assert_eq!(letter.http_status, Some(403));
    let (status, _, body) = crate::operations::get(&loader.url("/readyz"))
        .await
        .expect("/readyz");
    assert_eq!(status, 200, "{body}");
    crate::loader::assert_never_stopped_pulling(&loader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_update_oomnitza_fails_is_dead_lettered_with_its_reason() {
    let (d, _loader, clock, leaver) =
        one_leaver_after_a_baseline(LeaverAction::Update, TWO_DELIVERIES).await;
    // The leaver update sets a role this tenant does not have: Oomnitza accepts the post and
    // fails the record when it processes it, later than the loader's reads back look (each
    // post again would show in the run log as processing).
    let mut config = policy(LeaverAction::Update);
    config.leavers.set[0] = MappingEntry::new("PERMISSIONS_ID", MappingSource::Value(json!("3")));
    d.put_config(&config).await;
    d.oomnitza
        .set_behavior(OomnitzaBehavior {
            processing_delay_ms: 3_000,
            ..d.oomnitza.behavior()
        })
        .expect("behaviour");
    let record = run(&d, &clock).await;
    assert_eq!(record.counts.expect("counts").leavers, 0);
    the_leaver_letter(
        &d,
        &record,
        &leaver,
        &[
            "did not apply the leaver update",
            "is not a role",
            "syncctl dlq replay",
        ],
    )
    .await;
    assert_ne!(role_of(&d, &leaver).as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_update_naming_a_field_oomnitza_does_not_know_pauses_the_integration_until_fixed()
{
    let (d, _loader, clock, leaver) =
        one_leaver_after_a_baseline(LeaverAction::Update, TWO_DELIVERIES).await;
    // The leavers' end-date field was deleted in Oomnitza after the loader's start-up check
    // (here: the config now names a field id the tenant never had). Regular records do not
    // carry it and load; the leaver update's envelope is refused with a 400.
    let unknown = "ABCDEF0123456789ABCDEF0123456789";
    let mut config = policy(LeaverAction::Update);
    config.leavers.set[1] = MappingEntry::new(
        unknown,
        MappingSource::Template("{{ worker.end_date }}".into()),
    );
    d.put_config(&config).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let run_id = extract(&d, &clock);
    let pauses = d.bus().await.pauses();
    let flag = wait_for("the refusal pause", Duration::from_secs(60), || async {
        pauses.get(ID).await.ok().flatten().filter(|f| f.paused)
    })
    .await;
    let reason = flag.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(unknown) && flag.refused_config_revision.is_some(),
        "paused as a configuration refusal naming the field: {flag:?}"
    );
    // Not dead-lettered: it waits on the stream for the fix (two deliveries would have
    // dead-lettered a failing leaver by now).
    tokio::time::sleep(Duration::from_secs(6)).await;
    d.assert_only_pipeline_letters("the leaver is not dead-lettered for the configuration")
        .await;

    // The operator fixes the config: a newer revision resumes loading and the leaver is handled.
    d.put_config(&policy(LeaverAction::Update)).await;
    let record = d.finalized(ID, &run_id, FINALIZED).await;
    assert_accounted(&record);
    assert_eq!(record.counts.expect("counts").leavers, 1);
    assert_eq!(role_of(&d, &leaver).as_deref(), Some(DISABLED_ROLE));
}

/// The one dead letter of `record`'s run besides the pipeline's: `leaver`'s, at stage
/// `leavers`, its reason saying each of `says`.
async fn the_leaver_letter(
    d: &Deployment,
    record: &RunRecord,
    leaver: &str,
    says: &[&str],
) -> peoplesync_bus::DeadLetter {
    let mut letters: Vec<_> = d
        .dead_letters()
        .await
        .into_iter()
        .filter(|l| l.letter.run_id == record.run_id && l.letter.stage != "pipeline")
        .collect();
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let letter = letters.remove(0).letter;
    assert_eq!(
        (letter.stage.as_str(), letter.worker_id.as_str()),
        ("leavers", leaver)
    );
    assert!(
        says.iter().all(|s| letter.reason.contains(s)),
        "{}",
        letter.reason
    );
    letter
}

/// Sends extractor command `command` until the extractor (starting up, taking its lease)
/// answers.
async fn command<T: serde::de::DeserializeOwned>(d: &Deployment, command: &str, body: Value) -> T {
    answered(d, command, body, Result::ok).await
}

/// Sends extractor command `command` until the extractor answers it with an answer `pick`
/// takes, and returns what it took.
async fn answered<T: serde::de::DeserializeOwned, R>(
    d: &Deployment,
    command: &str,
    body: Value,
    pick: fn(Result<T, control::CommandError>) -> Option<R>,
) -> R {
    let bus = d.bus().await;
    let subject = control::subject(ID, command);
    let payload = serde_json::to_vec(&body).unwrap();
    wait_for(
        &format!("the extractor to answer {command}"),
        Duration::from_secs(60),
        || {
            let (client, subject, payload) =
                (bus.client().clone(), subject.clone(), payload.clone());
            async move {
                let reply = client.request(subject, payload.into()).await.ok()?;
                let reply: control::Reply<T> = serde_json::from_slice(&reply.payload).ok()?;
                pick(reply.into_result())
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_leavers_are_held_until_approved_then_handled_once() {
    let d = deployment(400).await;
    d.put_config(&policy(LeaverAction::Update)).await;
    let _loader = d.loader_with("loader-1", QUICK);
    let clock = Clock::new(&d, "2026-06-15");
    let clock_env = clock.env();
    let env: Vec<(&str, &str)> = clock_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _extractor = d.extractor().envs(&env).spawn();
    let full_run = |trigger: &'static str| {
        let d = &d;
        async move {
            let started: control::RunStarted =
                command(d, control::RUN, json!({"trigger": trigger})).await;
            let record = d.finalized(ID, &started.run_id, FINALIZED).await;
            assert_accounted(&record);
            record
        }
    };
    full_run("first").await;

    // 30 disappear and 30 pass their end date: 60 leavers, above the threshold of 50.
    let ids = employed(&d, date("2026-06-15"), 60);
    for id in &ids[..30] {
        d.sage.remove_worker(id);
    }
    for id in &ids[30..] {
        d.sage
            .patch_worker(id, json!({"currentEmployment": {"endDate": "2026-06-10"}}));
    }
    let held = full_run("second").await;
    assert_eq!((held.removed, held.removals_held), (0, 60));
    assert!(
        ids.iter()
            .all(|id| role_of(&d, id).as_deref() == Some("25")),
        "nothing acted on"
    );

    let listed: control::HeldLeavers = command(&d, control::HELD_LEAVERS, Value::Null).await;
    assert_eq!(listed.run_id.as_deref(), Some(held.run_id.as_str()));
    assert_eq!(listed.count, 60);
    let mut held_ids: Vec<&str> = listed
        .leavers
        .iter()
        .map(|l| l.worker_id.as_str())
        .collect();
    held_ids.sort_unstable();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(held_ids, expected);
    let ended = listed
        .leavers
        .iter()
        .find(|l| l.worker_id == ids[45])
        .unwrap();
    assert_eq!(
        (ended.reason.as_str(), ended.end_date.as_deref()),
        ("end_date", Some("2026-06-10"))
    );

    let released: control::RemovalsReleased = command(
        &d,
        control::APPROVE_REMOVALS,
        json!({"run_id": held.run_id}),
    )
    .await;
    assert_eq!(released.released, 60);
    wait_for("the released leavers to be marked", FINALIZED, || async {
        ids.iter()
            .all(|id| role_of(&d, id).as_deref() == Some(DISABLED_ROLE))
            .then_some(())
    })
    .await;

    let after = full_run("third").await;
    assert_eq!((after.removed, after.removals_held), (0, 0));
    assert_eq!(
        after.counts.unwrap().leavers,
        0,
        "a rerun sends nothing for them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_refused_part_way_keeps_its_portion_open_until_approving_again_finishes_it() {
    let d = deployment(300).await;
    let mut config = policy(LeaverAction::Update);
    d.put_config(&config).await;
    let _loader = d.loader_with("loader-1", QUICK);
    let _extractor = d.extractor().spawn();
    let full_run = |trigger: &'static str| {
        let d = &d;
        async move {
            let started: control::RunStarted =
                command(d, control::RUN, json!({"trigger": trigger})).await;
            d.finalized(ID, &started.run_id, FINALIZED).await
        }
    };
    full_run("first").await;

    // Narrowed to France: everyone else is held (however few after a filter change), and one
    // of them has left Sage People. Releasing them asks Sage People about each.
    config.source_filter = Some("workAddress.country eq 'France'".into());
    d.put_config(&config).await;
    let synced_in = |france: bool| {
        (0..d.sage_config.workers)
            .map(generate::worker_id)
            .find(|id| {
                let in_france = d
                    .sage
                    .worker(id)
                    .is_some_and(|w| w["workAddress"]["country"] == "France");
                in_france == france && user_of(&d, id).is_some()
            })
            .expect("a worker synced in Oomnitza")
    };
    let (gone, french) = (synced_in(false), synced_in(true));
    d.sage.remove_worker(&gone);
    let held = full_run("narrowed").await;
    assert!(held.removals_held > 1, "{held:?}");

    d.sage.set_faults(SageFaults {
        config_error: Some("MISSING_API_PERMISSION".into()),
        ..SageFaults::default()
    });
    let approve = json!({"run_id": held.run_id});
    let refusal = answered::<control::RemovalsReleased, _>(
        &d,
        control::APPROVE_REMOVALS,
        approve.clone(),
        Result::err,
    )
    .await;
    let bus = d.bus().await;
    let release_run = bus
        .removals()
        .load(ID)
        .await
        .unwrap()
        .held
        .and_then(|h| h.release_run)
        .expect("the approval fixed the id of its run");
    let record = |run: String| {
        let bus = bus.clone();
        async move { bus.runs().get(ID, &run).await.unwrap().unwrap().0 }
    };
    let failed = record(release_run.clone()).await;
    assert_eq!(failed.state, peoplesync_bus::RunState::Failed, "{failed:?}");
    let error = failed.error.unwrap_or_default();
    assert!(error.contains(&refusal.message), "{error}");
    assert!(
        error.contains("held removals again to finish this run"),
        "{error}"
    );

    // A run the loader finalizes after it has seen the failed one: the failed approval's
    // portion stays open, since approving again publishes into it.
    d.sage.set_faults(SageFaults::default());
    let synced: control::WorkerSynced = command(&d, control::WORKER, json!({"id": french})).await;
    let later = synced.run_id.expect("the worker is in Sage People");
    d.finalized(ID, &later, FINALIZED).await;
    assert_eq!(
        record(release_run.clone()).await.finalize,
        FinalizeState::Pending,
        "a failed approval that approving again finishes is not finalized"
    );

    let released: control::RemovalsReleased = command(&d, control::APPROVE_REMOVALS, approve).await;
    assert_eq!(released.released, 1);
    let finished = d.finalized(ID, &release_run, FINALIZED).await;
    assert_accounted(&finished);
    assert_eq!(
        (finished.removed, finished.counts.map(|c| c.leavers)),
        (1, Some(1))
    );
    assert_eq!(role_of(&d, &gone).as_deref(), Some(DISABLED_ROLE));
}
