//! Admin over HTTP.

use super::*;

#[tokio::test]
async fn admin_endpoints_drive_the_sim_and_are_not_api_calls() {
    let (sim, client) = spawn_default().await;
    let url = sim.url();
    let inserted = client
        .post(format!("{url}/_admin/users"))
        .json(&json!({"USER": "pre@example.com", "EMAIL": "pre@example.com"}))
        .send()
        .await
        .expect("request");
    assert_eq!(inserted.status(), StatusCode::CREATED);
    let users = json(
        client
            .get(format!("{url}/_admin/users"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(users[0]["EMAIL"], "pre@example.com");
    assert!(users[0]["_id"].is_string());

    let faults = json!({"poison_emails": ["user1@example.com"]});
    let put = client
        .put(format!("{url}/_admin/faults"))
        .json(&faults)
        .send()
        .await
        .expect("request");
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(sim.faults().poison_emails, ["user1@example.com"]);
    assert_eq!(
        post(&client, &url, &batch("p", vec![record(1)]))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let bad = client
        .put(format!("{url}/_admin/faults"))
        .body("[]")
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    sim.set_faults(OomnitzaFaults::default());

    let custom = client
        .put(format!("{url}/_admin/bulk_response"))
        .json(&json!({"ok": true}))
        .send()
        .await
        .expect("request");
    assert_eq!(custom.status(), StatusCode::NO_CONTENT);
    let accepted = post(&client, &url, &batch("p", vec![record(2)])).await;
    assert_eq!(json(accepted).await, json!({"ok": true}));
    let idle = client
        .get(format!("{url}/_admin/wait_idle?portion=p&timeout_ms=10000"))
        .send()
        .await
        .expect("request");
    assert_eq!(idle.status(), StatusCode::OK);
    assert_eq!(json(idle).await, json!({"idle": true, "processing": 0}));

    let portion = json(
        client
            .get(format!("{url}/_admin/portions/p"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (&portion["added"], &portion["bulk_requests"]),
        (&json!(1), &json!(2))
    );
    let saas = client
        .get(format!("{url}/_admin/saas_users"))
        .send()
        .await
        .expect("request");
    assert_eq!(json(saas).await, json!([]));
    client
        .post(format!("{url}/_admin/portions/p/cancel"))
        .send()
        .await
        .expect("request");
    assert!(sim.portion("p").is_some_and(|p| p.canceled));

    let stats = json(
        client
            .get(format!("{url}/_admin/stats"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        stats["api_requests"], 2,
        "admin calls are not API calls: {stats}"
    );
    assert_eq!(stats["status_counts"]["422"], 1);
    assert_eq!(stats["records_created"], 1);
}

#[tokio::test]
async fn dropping_the_sim_shuts_the_server_down() {
    let sim = OomnitzaSim::spawn(OomnitzaConfig::default())
        .await
        .expect("sim starts");
    let url = sim.url();
    drop(sim);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        Client::new()
            .get(format!("{url}/_admin/stats"))
            .send()
            .await
            .is_err()
    );
}
