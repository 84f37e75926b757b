//! Admin over HTTP, shutdown.

use super::*;

#[tokio::test]
async fn admin_endpoints_drive_the_sim_and_are_not_api_calls() {
    let (sim, client) = spawn(SageConfig {
        page_size: PageSize::Fixed(100),
        ..config(10)
    })
    .await;
    let url = sim.url();
    let t = token(&client, &url).await;
    let id2 = worker_id(2);

    let faults = json!({"latency_ms": 1, "token_expiry_after": 100, "reject_markers": false});
    let put = client
        .put(format!("{url}/_admin/faults"))
        .json(&faults)
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(sim.faults().token_expiry_after, Some(100));
    let bad = client
        .put(format!("{url}/_admin/faults"))
        .body("{nope")
        .send()
        .await
        .expect("put");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    sim.set_faults(SageFaults::default());

    let patch = client
        .patch(format!("{url}/_admin/workers/{id2}"))
        .json(&json!({"lastName": "Patched"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.status(), StatusCode::OK);
    assert_eq!(json(patch).await["lastName"], "Patched");
    let deleted = client
        .delete(format!("{url}/_admin/workers/{}", worker_id(3)))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = client
        .delete(format!("{url}/_admin/workers/{}", worker_id(3)))
        .send()
        .await
        .expect("delete");
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let added = client
        .post(format!("{url}/_admin/workers"))
        .json(&json!({"count": 2}))
        .send()
        .await
        .expect("post");
    assert_eq!(json(added).await["total"], 12);
    let usage = client
        .put(format!("{url}/_admin/api_usage"))
        .json(&json!({"used": 40}))
        .send()
        .await
        .expect("put");
    assert_eq!(usage.status(), StatusCode::NO_CONTENT);

    let body = json(get(&client, &url, &t, &[]).await).await;
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 11);
    assert_eq!(data[2]["lastName"], "Patched");

    let worker = json(
        client
            .get(format!("{url}/_admin/workers/{id2}"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(worker["lastName"], "Patched");
    let revoke = client
        .post(format!("{url}/_admin/tokens/revoke"))
        .send()
        .await
        .expect("post");
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(&client, &url, &t, &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let stats = json(
        client
            .get(format!("{url}/_admin/stats"))
            .send()
            .await
            .expect("stats"),
    )
    .await;
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
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        Client::new()
            .get(format!("{url}/_admin/stats"))
            .send()
            .await
            .is_err()
    );
}
