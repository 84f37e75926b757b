//! Auth, quota, headers.

use super::*;

#[tokio::test]
async fn missing_unknown_or_revoked_token_gives_invalid_session_id() {
    let (sim, client) = spawn(config(5)).await;
    let url = format!("{}{EMPLOYEES}", sim.url());
    let no_auth = send(client.get(&url).header("Accept", "application/json")).await;
    assert_eq!(no_auth.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(no_auth).await, invalid_session());
    let unknown = get(&client, &sim.url(), "00Dxx!made-up", &[]).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(unknown).await, invalid_session());
    let t = token(&client, &sim.url()).await;
    assert_eq!(status(&client, &sim.url(), &t, &[]).await, StatusCode::OK);
    sim.revoke_tokens();
    let revoked = get(&client, &sim.url(), &t, &[]).await;
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sim.stats().unauthorized, 3);
    assert_eq!(
        sim.stats().api_usage,
        1,
        "refused sessions do not count against the quota"
    );
}

#[tokio::test]
async fn expired_token_gives_invalid_session_id_and_a_new_token_works() {
    let (sim, client, t) = session(faulty(
        5,
        SageFaults {
            token_expiry_after: Some(2),
            ..SageFaults::default()
        },
    ))
    .await;
    assert_eq!(status(&client, &sim.url(), &t, &[]).await, StatusCode::OK);
    assert_eq!(status(&client, &sim.url(), &t, &[]).await, StatusCode::OK);
    let expired = get(&client, &sim.url(), &t, &[]).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(expired).await, invalid_session());
    let fresh = token(&client, &sim.url()).await;
    assert_eq!(
        status(&client, &sim.url(), &fresh, &[]).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn accept_header_without_json_gives_406_invalid_accept_header() {
    let (sim, client, t) = session(config(5)).await;
    for accept in ["*/*", "application/xml", "text/html"] {
        let response = send(
            client
                .get(format!("{}{EMPLOYEES}", sim.url()))
                .bearer_auth(&t)
                .header("Accept", accept),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE, "{accept}");
        error_envelope("REQUEST_ERROR", "INVALID_ACCEPT_HEADER", "Accept")(&json(response).await);
    }
}

#[tokio::test]
async fn every_api_response_carries_sforce_limit_info_and_each_call_counts_once() {
    let (sim, client, t) = session(with_quota(5, 5000)).await;
    let limit = |r: &reqwest::Response| header(r, "sforce-limit-info").map(str::to_string);
    let first = get(&client, &sim.url(), &t, &[]).await;
    assert_eq!(limit(&first).as_deref(), Some("api-usage=1/5000"));
    let second = get(&client, &sim.url(), &t, &[("marker", "bad")]).await;
    assert_eq!(second.status(), StatusCode::BAD_REQUEST);
    assert_eq!(limit(&second).as_deref(), Some("api-usage=2/5000"));
    let unauthorized = get(&client, &sim.url(), "nope", &[]).await;
    assert_eq!(limit(&unauthorized).as_deref(), Some("api-usage=2/5000"));
    assert_eq!(sim.stats().api_usage, 2);
    assert_eq!(sim.stats().api_requests, 3);
}

#[tokio::test]
async fn exhausted_quota_gives_request_limit_exceeded() {
    let (sim, client, t) = session(with_quota(5, 3)).await;
    for _ in 0..3 {
        assert_eq!(status(&client, &sim.url(), &t, &[]).await, StatusCode::OK);
    }
    let refused = get(&client, &sim.url(), &t, &[]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&refused, "sforce-limit-info"), Some("api-usage=3/3"));
    assert_eq!(
        json(refused).await,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    sim.set_api_usage(1);
    assert_eq!(status(&client, &sim.url(), &t, &[]).await, StatusCode::OK);
}
