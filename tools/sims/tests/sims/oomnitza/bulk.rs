//! Bulk.

use super::*;

#[tokio::test]
async fn bulk_creates_users_and_the_run_log_counts_them() {
    let (sim, client) = spawn_default().await;
    let response = post(
        &client,
        &sim.url(),
        &batch("p1", vec![record(1), record(2), record(3)]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(json(response).await.is_object());
    sim.wait_idle().await;
    let users = sim.users();
    assert_eq!(users.len(), 3);
    assert_eq!(users[0]["EMAIL"], "user1@example.com");
    assert_eq!(users[0][SAGE_USER_ID_FIELD], worker_id(1).as_str());
    assert!(users[0]["_id"].is_string());

    let log = run_log(&client, &sim.url(), "p1").await;
    assert_eq!(
        log["objects"],
        json!({"added": 3, "updated": 0, "failed": 0, "skipped": 0, "unchanged": 0,
               "canceled": 0, "processing": 0})
    );
    assert_eq!(log["logs"]["failed"], json!([]));
    assert_eq!(log["logs"]["Fatal Error"], json!([]));
    assert_eq!(
        fields(&log, ["connector", "test_run", "status"]),
        [json!("sage-people"), json!(false), json!("in_progress")]
    );
    assert!(log["start_time"].as_i64().is_some_and(|t| t > 0));
    let portion = json(api_get(&client, &sim.url(), "/api/v3/bulk/p1").await).await;
    assert_eq!(
        portion,
        json!({"portion": "p1", "canceled": false, "finalized": false})
    );
    let stats = sim.stats();
    assert_eq!(
        (
            stats.bulk_requests,
            stats.bulk_records,
            stats.records_created
        ),
        (1, 3, 3)
    );
}

#[tokio::test]
async fn posting_the_same_records_again_is_harmless() {
    let (sim, client) = spawn_default().await;
    let body = batch("p1", vec![record(1), record(2), record(1)]);
    post_accepted(&client, &sim.url(), &body).await;
    post_accepted(&client, &sim.url(), &body).await;
    let log = counts(&sim, &client, "p1").await;
    assert_eq!(sim.users().len(), 2);
    assert_eq!(fields(&log, ["added", "unchanged"]), [json!(2), json!(4)]);
    assert_eq!(sim.stats().max_writes_per_user, 1);
}

#[tokio::test]
async fn changed_fields_update_the_user_matched_by_the_first_sync_field_with_a_hit() {
    let (sim, client) = spawn_default().await;
    let mut pre = Map::new();
    pre.insert("USER".into(), json!("old@example.com"));
    pre.insert("EMAIL".into(), json!("old@example.com"));
    pre.insert(SAGE_USER_ID_FIELD.into(), json!(worker_id(1)));
    sim.insert_user(pre);
    let mut moved = record(1);
    moved["USER"] = json!("old@example.com");
    let mut body = batch("p", vec![moved]);
    body["sync_field"] = json!(["EMAIL", SAGE_USER_ID_FIELD]);
    post_accepted(&client, &sim.url(), &body).await;
    assert_eq!(counts(&sim, &client, "p").await["updated"], 1);
    let users = sim.users();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["EMAIL"], "user1@example.com");
    assert_eq!(users[0]["FIRST_NAME"], "First1");
    assert_eq!(sim.stats().records_updated, 1);
}

#[tokio::test]
async fn create_only_skips_existing_users_and_update_only_skips_unknown_ones() {
    let (sim, client) = spawn_default().await;
    post(&client, &sim.url(), &batch("p0", vec![record(1)])).await;
    sim.wait_idle().await;
    let mut changed = record(1);
    changed["LAST_NAME"] = json!("Changed");
    let mut create_only = batch("p1", vec![changed.clone(), record(2)]);
    create_only["insert_only"] = json!(true);
    post_accepted(&client, &sim.url(), &create_only).await;
    let log = counts(&sim, &client, "p1").await;
    assert_eq!(fields(&log, ["skipped", "added"]), [json!(1), json!(1)]);
    assert_eq!(sim.users()[0]["LAST_NAME"], "Last");

    let mut update_only = batch("p2", vec![changed, record(3)]);
    update_only["update_only"] = json!(true);
    post_accepted(&client, &sim.url(), &update_only).await;
    let log = counts(&sim, &client, "p2").await;
    assert_eq!(fields(&log, ["skipped", "updated"]), [json!(1), json!(1)]);
    assert_eq!(sim.users().len(), 2);
    assert_eq!(sim.users()[0]["LAST_NAME"], "Changed");
}

#[tokio::test]
async fn envelope_errors_are_400_naming_the_problem() {
    let (sim, client) = spawn_default().await;
    let good = batch("p", vec![record(1)]);
    let with = |key: &str, value: Value| {
        let mut b = good.clone();
        b[key] = value;
        b
    };
    let without = |key: &str| {
        let mut b = good.clone();
        b.as_object_mut().map(|o| o.remove(key));
        b
    };
    let mut both = with("insert_only", json!(true));
    both["update_only"] = json!(true);
    let mut bad_field = record(1);
    bad_field["work.email"] = json!("x");
    let mut unknown_field = record(1);
    unknown_field["SALARY"] = json!(1);
    let cases = [
        (without("portion"), "portion"),
        (with("data_type", json!("assets")), "data_type"),
        (without("data_type"), "data_type"),
        (both, "insert_only and update_only"),
        (with("records", json!("not a list")), "records"),
        (with("sync_field", json!([])), "sync_field"),
        (with("sync_field", json!(["NOT_A_FIELD"])), "NOT_A_FIELD"),
        (with("records", json!([bad_field])), "work.email"),
        (with("records", json!([unknown_field])), "SALARY"),
    ];
    for (body, needle) in cases {
        let response = post(&client, &sim.url(), &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{needle}");
        let message = json(response).await["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains(needle),
            "{message:?} should name {needle:?}"
        );
    }
    let not_json =
        send(api(&client, Method::POST, &sim.url(), "/api/v3/bulk").body("{not json")).await;
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    assert!(sim.users().is_empty());
    assert_eq!(
        api_get(&client, &sim.url(), "/api/v3/bulk/p")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(sim.stats().bulk_requests, 10);
}

#[tokio::test]
async fn invalid_records_are_accepted_and_fail_alone_when_processed() {
    let (sim, client) = spawn_default().await;
    let mut no_user = record(2);
    no_user.as_object_mut().map(|o| o.remove("USER"));
    let mut bad_email = record(3);
    bad_email["EMAIL"] = json!("not an email");
    let mut bad_role = record(4);
    bad_role["PERMISSIONS_ID"] = json!("999");
    let body = batch("p", vec![record(1), no_user, bad_email, bad_role]);
    let response = post(&client, &sim.url(), &body).await;
    assert_eq!(response.status(), StatusCode::OK, "a 200 means accepted");
    let objects = counts(&sim, &client, "p").await;
    assert_eq!(fields(&objects, ["added", "failed"]), [json!(1), json!(3)]);
    assert_eq!(sim.users().len(), 1);
    let log = run_log(&client, &sim.url(), "p").await;
    let failed: Vec<&str> = log["logs"]["failed"]
        .as_array()
        .expect("failed messages")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(failed.len(), 3);
    assert!(
        failed[0].contains("user2@example.com") && failed[0].contains("USER"),
        "{failed:?}"
    );
    assert!(
        failed[1].contains("USER 'user3@example.com'") && failed[1].contains("not an e-mail"),
        "{failed:?}"
    );
    assert!(
        failed[2].contains("user4@example.com") && failed[2].contains("PERMISSIONS_ID"),
        "{failed:?}"
    );
    let portion = sim.portion("p").expect("portion");
    assert_eq!(portion.failed_records[2].record["PERMISSIONS_ID"], "999");
    assert_eq!(sim.stats().records_failed, 3);
}

#[tokio::test]
async fn poison_emails_refuse_their_batch() {
    let faults = OomnitzaFaults {
        poison_emails: vec!["USER2@example.com".into()],
        ..OomnitzaFaults::default()
    };
    let (sim, client) = spawn_faulty(faults).await;
    let response = post(&client, &sim.url(), &batch("p", vec![record(1), record(2)])).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json(response).await["records"][0]["index"], 1);
    assert!(sim.users().is_empty());
    let ok = post(&client, &sim.url(), &batch("p", vec![record(1)])).await;
    assert_eq!(ok.status(), StatusCode::OK);
    sim.wait_idle().await;
    assert_eq!(sim.users().len(), 1);
}

#[tokio::test]
async fn client_reported_failures_are_logged_as_failed_and_change_nothing() {
    let (sim, client) = spawn_default().await;
    let mut body = batch(
        "p",
        vec![json!({"emailAddress": null, "workAddress.city": "Paris"})],
    );
    body["error"] = json!("no e-mail: cannot build USER");
    let response = post(&client, &sim.url(), &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(counts(&sim, &client, "p").await["failed"], 1);
    assert!(sim.users().is_empty());
    let log = run_log(&client, &sim.url(), "p").await;
    assert!(
        log["logs"]["failed"][0]
            .as_str()
            .is_some_and(|m| m.ends_with("no e-mail: cannot build USER")),
        "{log}"
    );
    let failed = &sim.portion("p").expect("portion").failed_records[0];
    assert_eq!(failed.reason, "no e-mail: cannot build USER");
    assert_eq!(failed.record["workAddress.city"], "Paris");
    assert_eq!(sim.stats().records_failed, 1);
}

#[tokio::test]
async fn a_unique_field_clash_fails_the_record_in_the_run_log_not_the_batch() {
    let (sim, client) = spawn_default().await;
    let mut clash = record(2);
    clash[SAGE_USER_ID_FIELD] = record(1)[SAGE_USER_ID_FIELD].clone();
    let response = post(
        &client,
        &sim.url(),
        &batch("p", vec![record(1), clash, record(3)]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let objects = counts(&sim, &client, "p").await;
    assert_eq!(fields(&objects, ["added", "failed"]), [json!(2), json!(1)]);
    assert_eq!(sim.users().len(), 2);
    let log = run_log(&client, &sim.url(), "p").await;
    let message = log["logs"]["failed"][0].as_str().unwrap_or_default();
    assert!(message.contains(SAGE_USER_ID_FIELD), "{message}");
    assert!(message.starts_with("USER 'user2@example.com'"), "{message}");
}

#[tokio::test]
async fn saas_blocks_create_and_update_saas_user_records() {
    let (sim, client) = spawn_default().await;
    let mut r = record(1);
    r["SAAS"] = json!({"sync_key": "user1@example.com", "name": "Sage People"});
    assert_eq!(
        post(&client, &sim.url(), &batch("p", vec![r.clone()]))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        post(&client, &sim.url(), &batch("p", vec![r]))
            .await
            .status(),
        StatusCode::OK
    );
    sim.wait_idle().await;
    let saas = sim.saas_users();
    assert_eq!(saas.len(), 1);
    assert_eq!(saas[0]["sync_key"], "user1@example.com");
    assert_eq!(saas[0]["name"], "Sage People");
    assert_eq!(saas[0]["user_id"], sim.users()[0]["_id"]);
    let mut bad = record(2);
    bad["SAAS"] = json!({"name": "Sage People"});
    let response = post(&client, &sim.url(), &batch("p", vec![bad])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(counts(&sim, &client, "p").await["failed"], 1);
    assert_eq!(sim.users().len(), 1);
}

#[tokio::test]
async fn finalize_closes_the_portion_once_and_later_posts_get_409() {
    let (sim, client) = spawn_default().await;
    let url = sim.url();
    post(&client, &url, &batch("p", vec![record(1)])).await;
    assert_eq!(finalize(&client, &url, "p").await.status(), StatusCode::OK);
    let again = finalize(&client, &url, "p").await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let late = post(&client, &url, &batch("p", vec![record(2)])).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert!(
        json(late).await["message"]
            .as_str()
            .is_some_and(|m| m.contains("finalized"))
    );
    sim.wait_idle().await;
    assert_eq!(sim.users().len(), 1);
    let portion = json(api_get(&client, &url, "/api/v3/bulk/p").await).await;
    assert_eq!(portion["finalized"], true);
    let log = run_log(&client, &url, "p").await;
    assert_eq!(log["status"], "finished");
    assert!(log["end_time"].as_i64() >= log["start_time"].as_i64());
    assert_eq!(sim.stats().finalize_calls["p"], 2);
    assert!(sim.portion("p").is_some_and(|p| p.finalized && !p.canceled));
}

#[tokio::test]
async fn a_canceled_portion_takes_posts_and_discards_them() {
    let (sim, client) = spawn_default().await;
    let url = sim.url();
    let admin = Admin::new(&client, &url);
    post(&client, &url, &batch("p", vec![record(1)])).await;
    sim.wait_idle().await;
    sim.cancel_portion("p");
    let portion = json(api_get(&client, &url, "/api/v3/bulk/p").await).await;
    assert_eq!(portion["canceled"], true);
    let response = post(&client, &url, &batch("p", vec![record(2), record(3)])).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "nothing tells the client but the poll"
    );
    let log = run_log(&client, &url, "p").await;
    assert_eq!(
        (
            &log["objects"]["added"],
            &log["objects"]["canceled"],
            &log["objects"]["processing"]
        ),
        (&json!(1), &json!(2), &json!(0))
    );
    assert_eq!(log["status"], "canceled");
    assert!(log["logs"]["canceled"][0].is_string());
    let finalized = finalize(&client, &url, "p").await;
    assert_eq!(finalized.status(), StatusCode::CONFLICT);
    sim.wait_idle().await;
    assert_eq!(sim.users().len(), 1);
    assert_eq!(sim.stats().records_canceled, 2);

    let cancel = admin.send(Method::POST, "portions/q/cancel", None).await;
    assert_eq!(cancel.status(), StatusCode::OK);
    assert_eq!(
        post(&client, &url, &batch("q", vec![record(3)]))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(counts(&sim, &client, "q").await["canceled"], 1);
    assert_eq!(sim.users().len(), 1);
}

#[tokio::test]
async fn unknown_portions_are_404() {
    let (sim, client) = spawn_default().await;
    assert_eq!(
        api_get(&client, &sim.url(), "/api/v3/bulk/nope")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let log = api_get(
        &client,
        &sim.url(),
        "/api/v3/connector_run_logs/connectors/nope",
    )
    .await;
    assert_eq!(log.status(), StatusCode::NOT_FOUND);
    assert!(sim.portion("nope").is_none());
}

#[tokio::test]
async fn concurrent_posts_never_create_a_user_twice() {
    let (sim, client) = spawn_default().await;
    let url = sim.url();
    let posts = (0..16).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        let body = batch(&format!("p{}", i % 2), vec![record(1), record(2)]);
        tokio::spawn(async move { post(&client, &url, &body).await.status() })
    });
    for handle in posts.collect::<Vec<_>>() {
        assert_eq!(handle.await.expect("task"), StatusCode::OK);
    }
    sim.wait_idle().await;
    assert_eq!(sim.users().len(), 2);
    let stats = sim.stats();
    assert_eq!((stats.records_created, stats.records_unchanged), (2, 30));
    assert_eq!(stats.max_writes_per_user, 1);
}

#[tokio::test]
async fn a_batch_above_two_megabytes_is_accepted() {
    let (sim, client) = spawn_default().await;
    let records: Vec<Value> = (0..3_000)
        .map(|n| {
            let mut r = record(n);
            r["ADDRESS"] = json!("x".repeat(1_000));
            r
        })
        .collect();
    let response = post(&client, &sim.url(), &batch("big", records)).await;
    assert_eq!(response.status(), StatusCode::OK);
    sim.wait_idle().await;
    assert_eq!(sim.users().len(), 3_000);
}

#[tokio::test]
async fn a_tenant_can_store_usernames_and_emails_in_lower_case() {
    let (sim, client) = spawn(OomnitzaConfig {
        behavior: peoplesync_sims::oomnitza::OomnitzaBehavior {
            lower_case_identities: true,
            ..Default::default()
        },
        ..OomnitzaConfig::default()
    })
    .await;
    let mut ada = record(1);
    ada["USER"] = json!("Ada.Lovelace@Example.com");
    ada["EMAIL"] = json!("Ada.Lovelace@Example.com");
    post_accepted(&client, &sim.url(), &batch("p1", vec![ada.clone()])).await;
    // The same person sent again in other letters is the same user, updated.
    ada["EMAIL"] = json!("ADA.LOVELACE@EXAMPLE.COM");
    ada["FIRST_NAME"] = json!("Augusta");
    post_accepted(&client, &sim.url(), &batch("p1", vec![ada])).await;
    let log = counts(&sim, &client, "p1").await;
    assert_eq!(fields(&log, ["added", "updated"]), [json!(1), json!(1)]);
    let users = sim.users();
    assert_eq!(users.len(), 1);
    assert_eq!(
        fields(
            &Value::Object(users[0].clone()),
            ["USER", "EMAIL", "FIRST_NAME"]
        ),
        [
            json!("ada.lovelace@example.com"),
            json!("ada.lovelace@example.com"),
            json!("Augusta")
        ]
    );
}
