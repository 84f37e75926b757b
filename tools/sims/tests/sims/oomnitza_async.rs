//! The Oomnitza simulator's asynchronous contract: a `200` only accepts a batch, records are
//! processed afterwards in the order accepted, refusals show in the run log, canceled portions
//! discard, test runs apply nothing; and the token check, the session's CSRF token, and reading
//! back many users by key.

use std::time::Duration;

use peoplesync_sims::generate::worker_id;
use peoplesync_sims::oomnitza::{
    CustomFieldNames, OomnitzaBehavior, OomnitzaConfig, OomnitzaFaults, OomnitzaSim,
    SAGE_USER_ID_FIELD, ValidationRule,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::oomnitza::{
    TOKEN, api_get, batch, counts, fields, finalize, list_users, post, post_accepted, record,
    request_token, run_log, spawn,
};
use crate::http::{Admin, header, json, send};

/// Long enough that a client's next request comes before processing starts, even on a busy
/// machine; the tests that use it wait for processing, they do not measure it.
const SLOW: Duration = Duration::from_millis(1_500);

fn config(delay: Duration) -> OomnitzaConfig {
    OomnitzaConfig {
        behavior: OomnitzaBehavior {
            processing_delay_ms: delay.as_millis() as u64,
            ..OomnitzaBehavior::default()
        },
        ..OomnitzaConfig::default()
    }
}

/// Stops processing, so that what was accepted stays `processing` until [`resume`].
fn pause(sim: &OomnitzaSim) {
    sim.set_faults(OomnitzaFaults {
        processing_paused: true,
        ..OomnitzaFaults::default()
    });
}

fn resume(sim: &OomnitzaSim) {
    sim.set_faults(OomnitzaFaults::default());
}

fn messages(log: &Value, outcome: &str) -> Vec<String> {
    log["logs"][outcome]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_200_only_accepts_and_records_are_applied_after_the_processing_delay() {
    let (sim, client) = spawn(config(SLOW)).await;
    let response = post(&client, &sim.url(), &batch("p", vec![record(1), record(2)])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(sim.users().is_empty(), "nothing is applied yet");
    let log = run_log(&client, &sim.url(), "p").await;
    assert_eq!(
        (&log["objects"]["processing"], &log["objects"]["added"]),
        (&json!(2), &json!(0))
    );
    let users = api_get(&client, &sim.url(), "/api/v3/users").await;
    assert_eq!(json(users).await, json!([]));
    assert_eq!(sim.stats().records_processing, 2);

    sim.wait_idle().await;
    assert_eq!(sim.users().len(), 2);
    let objects = counts(&sim, &client, "p").await;
    assert_eq!(
        fields(&objects, ["processing", "added"]),
        [json!(0), json!(2)]
    );
    assert_eq!(sim.stats().records_processing, 0);
}

#[tokio::test]
async fn records_of_a_portion_are_applied_in_the_order_accepted() {
    let (sim, client) = spawn(config(Duration::ZERO)).await;
    let url = sim.url();
    for position in ["First", "Second", "Third"] {
        let mut r = record(1);
        r["POSITION"] = json!(position);
        post_accepted(&client, &url, &batch("p", vec![r])).await;
    }
    let objects = counts(&sim, &client, "p").await;
    assert_eq!(fields(&objects, ["added", "updated"]), [json!(1), json!(2)]);
    assert_eq!(sim.users()[0]["POSITION"], "Third");
}

#[tokio::test]
async fn a_duplicate_unique_value_across_posts_fails_only_that_record() {
    let (sim, client) = spawn(config(Duration::ZERO)).await;
    let url = sim.url();
    post(&client, &url, &batch("p", vec![record(1)])).await;
    let mut clash = record(2);
    clash[SAGE_USER_ID_FIELD] = record(1)[SAGE_USER_ID_FIELD].clone();
    let response = post(&client, &url, &batch("p", vec![clash, record(3)])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let objects = counts(&sim, &client, "p").await;
    assert_eq!(fields(&objects, ["added", "failed"]), [json!(2), json!(1)]);
    let failed = messages(&run_log(&client, &url, "p").await, "failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].contains("user2@example.com") && failed[0].contains("already belongs"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn tenant_validation_rules_fail_records_when_processed() {
    let (sim, client) = spawn(config(Duration::ZERO)).await;
    let url = sim.url();
    let admin = Admin::new(&client, &url);
    let rules = json!({"validation_rules": [
        {"field": "EMAIL", "pattern": "^user2@", "message": "EMAIL is on the tenant's block list"}
    ]});
    let put = admin.send(Method::PUT, "behavior", Some(&rules)).await;
    assert_eq!(put.status(), StatusCode::OK);
    let behavior = json(put).await;
    assert_eq!(
        behavior["processing_delay_ms"], 0,
        "other settings are kept"
    );
    let response = post(&client, &url, &batch("p", vec![record(1), record(2)])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(counts(&sim, &client, "p").await["failed"], 1);
    let failed = messages(&run_log(&client, &url, "p").await, "failed");
    assert_eq!(
        failed,
        [
            "USER 'user2@example.com', EMAIL 'user2@example.com': EMAIL is on the tenant's block list"
        ]
    );

    sim.set_validation_rules(vec![ValidationRule {
        field: "FIRST_NAME".into(),
        pattern: "^First[0-9]$".into(),
        must_match: true,
        message: None,
    }])
    .expect("valid rule");
    post(&client, &url, &batch("q", vec![record(2), record(12)])).await;
    let objects = counts(&sim, &client, "q").await;
    assert_eq!(fields(&objects, ["added", "failed"]), [json!(1), json!(1)]);
    assert!(
        sim.set_validation_rules(vec![ValidationRule {
            field: "EMAIL".into(),
            pattern: "[".into(),
            must_match: false,
            message: None,
        }])
        .is_err()
    );
    let bad = admin
        .send(
            Method::PUT,
            "behavior",
            Some(&json!({"validation_rules": [{"field": "EMAIL", "pattern": "("}]})),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn canceling_discards_records_still_processing() {
    let (sim, client) = spawn(config(Duration::ZERO)).await;
    let url = sim.url();
    pause(&sim);
    post(&client, &url, &batch("p", vec![record(1), record(2)])).await;
    post(&client, &url, &batch("q", vec![record(3)])).await;
    assert_eq!(sim.portion("p").map(|p| p.processing), Some(2));
    sim.cancel_portion("p");
    let log = run_log(&client, &url, "p").await;
    assert_eq!(
        (&log["objects"]["processing"], &log["objects"]["canceled"]),
        (&json!(0), &json!(2))
    );
    resume(&sim);
    sim.wait_idle().await;
    let emails: Vec<Value> = sim.users().iter().map(|u| u["EMAIL"].clone()).collect();
    assert_eq!(emails, [json!("user3@example.com")]);
    let portion = sim.portion("p").expect("portion");
    assert_eq!((portion.canceled_records, portion.added), (2, 0));
}

#[tokio::test]
async fn finalize_lets_processing_finish_before_the_run_is_finished() {
    let (sim, client) = spawn(config(Duration::ZERO)).await;
    let url = sim.url();
    pause(&sim);
    post(&client, &url, &batch("p", vec![record(1)])).await;
    let finalized = finalize(&client, &url, "p").await;
    assert_eq!(finalized.status(), StatusCode::OK);
    let log = run_log(&client, &url, "p").await;
    assert_eq!(
        (&log["status"], &log["objects"]["processing"]),
        (&json!("in_progress"), &json!(1))
    );
    let late = post(&client, &url, &batch("p", vec![record(2)])).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    resume(&sim);
    sim.wait_idle().await;
    let log = run_log(&client, &url, "p").await;
    assert_eq!(
        (&log["status"], &log["objects"]["added"]),
        (&json!("finished"), &json!(1))
    );
}

#[tokio::test]
async fn a_test_run_checks_records_as_processing_would_and_applies_nothing() {
    let (sim, client) = spawn(config(Duration::ZERO)).await;
    let url = sim.url();
    post(&client, &url, &batch("real", vec![record(1)])).await;
    sim.wait_idle().await;
    let mut changed = record(1);
    changed["POSITION"] = json!("CTO");
    let mut bad = record(2);
    bad["PERMISSIONS_ID"] = json!("999");
    let mut body = batch("test", vec![changed, bad, record(3)]);
    body["test_run"] = json!(true);
    assert_eq!(post(&client, &url, &body).await.status(), StatusCode::OK);
    let objects = counts(&sim, &client, "test").await;
    assert_eq!(
        fields(&objects, ["updated", "failed", "added"]),
        [json!(1), json!(1), json!(1)]
    );
    let log = run_log(&client, &url, "test").await;
    assert_eq!(log["test_run"], true);
    let results: Vec<&str> = log["test_run_payload"]
        .as_array()
        .expect("payload")
        .iter()
        .filter_map(|e| e["result"].as_str())
        .collect();
    assert_eq!(results, ["updated", "failed", "added"]);
    assert_eq!(sim.users().len(), 1, "nothing applied");
    assert!(sim.users()[0].get("POSITION").is_none());
    assert_eq!(sim.stats().test_run_records, 3);
}

#[tokio::test]
async fn an_unknown_field_is_a_400_even_for_a_canceled_portion() {
    let (sim, client) = spawn(config(Duration::ZERO)).await;
    sim.cancel_portion("p");
    let mut r = record(1);
    r["0123456789ABCDEF0123456789ABCDEF"] = json!("x");
    let response = post(&client, &sim.url(), &batch("p", vec![r])).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let message = json(response).await["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("0123456789ABCDEF0123456789ABCDEF"),
        "{message}"
    );
}

#[tokio::test]
async fn the_connectors_token_check_answers_200_401_and_403() {
    let (sim, client) = spawn(config(Duration::ZERO)).await;
    let url = sim.url();
    let check = |token: &'static str| {
        send(
            client
                .get(format!("{url}/api/v2/mappings?name=AuthTest"))
                .header("Authorization2", token),
        )
    };
    assert_eq!(check(TOKEN).await.status(), StatusCode::OK);
    assert_eq!(check("nope").await.status(), StatusCode::UNAUTHORIZED);
    sim.set_faults(OomnitzaFaults {
        forbidden: true,
        ..OomnitzaFaults::default()
    });
    assert_eq!(check(TOKEN).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(sim.stats().user_reads, 0, "the check reads no users");
}

#[tokio::test]
async fn a_password_session_gets_a_csrf_token_whose_echo_is_counted_and_may_be_required() {
    let (sim, client) = spawn(config(Duration::ZERO)).await;
    let url = sim.url();
    let login = request_token(&client, &url, "admin-password").await;
    let csrf = header(&login, "X-CSRF-Token")
        .expect("a CSRF token")
        .to_string();
    let token = json(login).await["token"]
        .as_str()
        .expect("token")
        .to_string();
    let get = |echo: Option<&str>| {
        let mut request = client
            .get(format!("{url}/api/v3/users"))
            .header("Authorization2", &token);
        if let Some(echo) = echo {
            request = request.header("X-CSRF-Token", echo);
        }
        send(request)
    };
    assert_eq!(get(Some(&csrf)).await.status(), StatusCode::OK);
    assert_eq!(get(None).await.status(), StatusCode::OK);
    assert_eq!(get(Some("forged")).await.status(), StatusCode::OK);
    let stats = sim.stats();
    assert_eq!((stats.csrf_echoed, stats.csrf_missing), (1, 2));
    api_get(&client, &url, "/api/v3/users").await;
    assert_eq!(sim.stats().csrf_missing, 2, "API tokens have no CSRF token");

    sim.set_behavior(OomnitzaBehavior {
        require_csrf_echo: true,
        ..sim.behavior()
    })
    .expect("valid behavior");
    assert_eq!(get(None).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(get(Some(&csrf)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn custom_fields_can_be_read_under_their_exact_ids() {
    let mut config = config(Duration::ZERO);
    config.behavior.custom_field_names = CustomFieldNames::Id;
    let (sim, client) = spawn(config).await;
    post(&client, &sim.url(), &batch("p", vec![record(1)])).await;
    sim.wait_idle().await;
    let filter = format!("{SAGE_USER_ID_FIELD} eq '{}'", worker_id(1));
    let users = list_users(&client, &sim.url(), &[("filter", filter.as_str())]).await;
    let users = json(users).await;
    assert_eq!(users[0][SAGE_USER_ID_FIELD], worker_id(1).as_str());
    assert!(users[0].get(SAGE_USER_ID_FIELD.to_lowercase()).is_none());
}

/// A verifier's read-back of a large load: 100,000 records posted with no processing delay,
/// then every user read by pages of 1,000 and by `IN` lists of 300 keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_records_are_applied_and_read_back_by_pages_and_by_key() {
    const USERS: u32 = 100_000;
    let (sim, client) = spawn(config(Duration::ZERO)).await;
    let url = sim.url();
    for chunk in 0..(USERS / 10_000) {
        let records = (chunk * 10_000..(chunk + 1) * 10_000).map(record).collect();
        post_accepted(&client, &url, &batch("big", records)).await;
    }
    let objects = counts(&sim, &client, "big").await;
    assert_eq!(
        fields(&objects, ["added", "processing"]),
        [json!(USERS), json!(0)]
    );

    let mut seen = 0;
    let mut skip = 0;
    loop {
        let skip_text = skip.to_string();
        let page = list_users(&client, &url, &[("limit", "1000"), ("skip", &skip_text)]).await;
        let page = json(page).await;
        let page = page.as_array().expect("array");
        if page.is_empty() {
            break;
        }
        assert_eq!(
            page[0]["email"],
            format!("user{skip}@example.com"),
            "pages follow creation order"
        );
        seen += page.len();
        skip += page.len();
    }
    assert_eq!(seen, USERS as usize);

    let mut found = 0;
    for start in (0..USERS).step_by(300 * 37) {
        let keys: Vec<String> = (start..(start + 300).min(USERS))
            .map(|n| format!("'user{n}@example.com'"))
            .collect();
        let filter = format!("email IN [{}]", keys.join(", "));
        let query = [("filter", filter.as_str()), ("limit", "1000")];
        let response = list_users(&client, &url, &query).await;
        assert_eq!(response.status(), StatusCode::OK);
        let users = json(response).await;
        assert_eq!(users.as_array().map(Vec::len), Some(keys.len()));
        found += keys.len();
    }
    let stats = sim.stats();
    assert_eq!(stats.users_returned, (USERS as usize + found) as u64);
    assert!(stats.user_reads >= 101);
}
