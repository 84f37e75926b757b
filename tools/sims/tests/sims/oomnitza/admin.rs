//! Admin over HTTP.

use super::*;

#[tokio::test]
async fn admin_endpoints_drive_the_sim_and_are_not_api_calls() {
    let (sim, client) = spawn_default().await;
    let url = sim.url();
    let admin = Admin::new(&client, &url);
    let inserted = admin
        .send(
            Method::POST,
            "users",
            Some(&json!({"USER": "pre@example.com", "EMAIL": "pre@example.com"})),
        )
        .await;
    assert_eq!(inserted.status(), StatusCode::CREATED);
    let users = admin.get("users").await;
    assert_eq!(users[0]["EMAIL"], "pre@example.com");
    assert!(users[0]["_id"].is_string());

    let faults = json!({"poison_emails": ["user1@example.com"]});
    let put = admin.send(Method::PUT, "faults", Some(&faults)).await;
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(sim.faults().poison_emails, ["user1@example.com"]);
    assert_eq!(
        post(&client, &url, &batch("p", vec![record(1)]))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let bad = send(client.put(format!("{url}/_admin/faults")).body("[]")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    sim.set_faults(OomnitzaFaults::default());

    let custom = admin
        .send(Method::PUT, "bulk_response", Some(&json!({"ok": true})))
        .await;
    assert_eq!(custom.status(), StatusCode::NO_CONTENT);
    let accepted = post(&client, &url, &batch("p", vec![record(2)])).await;
    assert_eq!(json(accepted).await, json!({"ok": true}));
    let idle = admin
        .send(Method::GET, "wait_idle?portion=p&timeout_ms=10000", None)
        .await;
    assert_eq!(idle.status(), StatusCode::OK);
    assert_eq!(json(idle).await, json!({"idle": true, "processing": 0}));

    let portion = admin.get("portions/p").await;
    assert_eq!(
        fields(&portion, ["added", "bulk_requests"]),
        [json!(1), json!(2)]
    );
    let saas = admin.send(Method::GET, "saas_users", None).await;
    assert_eq!(json(saas).await, json!([]));
    admin.send(Method::POST, "portions/p/cancel", None).await;
    assert!(sim.portion("p").is_some_and(|p| p.canceled));

    let stats = admin.get("stats").await;
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
    assert_stopped(&url).await;
}
