//! Admin over HTTP, shutdown.

use super::*;

#[tokio::test]
async fn admin_endpoints_drive_the_sim_and_are_not_api_calls() {
    let (sim, client) = spawn(paged(10, PageSize::Fixed(100))).await;
    let url = sim.url();
    let admin = Admin::new(&client, &url);
    let t = token(&client, &url).await;
    let id2 = worker_id(2);

    let faults = json!({"latency_ms": 1, "token_expiry_after": 100, "reject_markers": false});
    let put = admin.send(Method::PUT, "faults", Some(&faults)).await;
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(sim.faults().token_expiry_after, Some(100));
    let bad = send(client.put(format!("{url}/_admin/faults")).body("{nope")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    sim.set_faults(SageFaults::default());

    let patch = admin
        .send(
            Method::PATCH,
            &format!("workers/{id2}"),
            Some(&json!({"lastName": "Patched"})),
        )
        .await;
    assert_eq!(patch.status(), StatusCode::OK);
    assert_eq!(json(patch).await["lastName"], "Patched");
    // Removing a worker twice: the second time there is none.
    let id3 = worker_id(3);
    for expected in [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND] {
        let deleted = admin
            .send(Method::DELETE, &format!("workers/{id3}"), None)
            .await;
        assert_eq!(deleted.status(), expected);
    }
    // Restoring it once brings it back; it is removed again for the listing below.
    let restore = format!("workers/{id3}/restore");
    for expected in [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND] {
        let restored = admin.send(Method::POST, &restore, None).await;
        assert_eq!(restored.status(), expected);
    }
    assert_eq!(
        admin.get(&format!("workers/{id3}")).await["id"],
        id3.as_str()
    );
    let removed = admin
        .send(Method::DELETE, &format!("workers/{id3}"), None)
        .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let added = admin
        .send(Method::POST, "workers", Some(&json!({"count": 2})))
        .await;
    assert_eq!(json(added).await["total"], 12);
    let usage = admin
        .send(Method::PUT, "api_usage", Some(&json!({"used": 40})))
        .await;
    assert_eq!(usage.status(), StatusCode::NO_CONTENT);

    let body = json(get(&client, &url, &t, &[]).await).await;
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 11);
    assert_eq!(data[2]["lastName"], "Patched");

    let worker = admin.get(&format!("workers/{id2}")).await;
    assert_eq!(worker["lastName"], "Patched");
    let revoke = admin.send(Method::POST, "tokens/revoke", None).await;
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status(&client, &url, &t, &[]).await,
        StatusCode::UNAUTHORIZED
    );

    let stats = admin.get("stats").await;
    assert_eq!(
        stats["api_requests"], 2,
        "admin calls are not API calls: {stats}"
    );
    assert_eq!(stats["api_usage"], 41);
    assert_eq!(stats["workers"], 11);
    assert_eq!(stats["status_counts"]["401"], 1);
}

#[tokio::test]
async fn dropping_the_sim_shuts_the_server_down() {
    let sim = SageSim::spawn(config(5)).await.expect("sim starts");
    let url = sim.url();
    assert!(reqwest::get(format!("{url}/_admin/stats")).await.is_ok());
    drop(sim);
    assert_stopped(&url).await;
}
