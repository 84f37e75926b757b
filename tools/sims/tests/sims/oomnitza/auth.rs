//! Auth.

use super::*;

#[tokio::test]
async fn missing_or_wrong_authorization2_gives_401() {
    let (sim, client) = spawn_default().await;
    let url = format!("{}/api/v3/users", sim.url());
    let none = send(client.get(&url)).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(json(none).await["message"].is_string());
    let wrong = send(client.get(&url).header("Authorization2", "nope")).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let bearer = send(client.get(&url).bearer_auth(TOKEN)).await;
    assert_eq!(
        bearer.status(),
        StatusCode::UNAUTHORIZED,
        "the header is Authorization2"
    );
    assert_eq!(users_status(&client, &sim.url()).await, StatusCode::OK);
    assert_eq!(sim.stats().status_counts[&401], 3);
}

#[tokio::test]
async fn request_token_with_login_and_password_issues_a_usable_token() {
    let (sim, client) = spawn_default().await;
    let url = sim.url();
    let ok = request_token(&client, &url, "admin-password").await;
    assert_eq!(ok.status(), StatusCode::OK);
    let token = json(ok).await["token"].as_str().expect("token").to_string();
    assert_ne!(token, TOKEN);
    let users = send(
        client
            .get(format!("{url}/api/v3/users"))
            .header("Authorization2", &token),
    )
    .await;
    assert_eq!(users.status(), StatusCode::OK);
    let bad = request_token(&client, &url, "wrong").await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forbidden_fault_gives_403_to_a_valid_token() {
    let faults = OomnitzaFaults {
        forbidden: true,
        ..OomnitzaFaults::default()
    };
    let (sim, client) = spawn_faulty(faults).await;
    assert_eq!(
        users_status(&client, &sim.url()).await,
        StatusCode::FORBIDDEN
    );
    let response = post(&client, &sim.url(), &batch("p", vec![record(1)])).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(sim.users().is_empty());
}

#[tokio::test]
async fn forbidden_paths_give_403_to_those_paths_alone() {
    let faults = OomnitzaFaults {
        forbidden_paths: vec!["/api/v3/bulk/p/finalize".into(), "/api/v3/users/".into()],
        ..OomnitzaFaults::default()
    };
    let (sim, client) = spawn_faulty(faults).await;
    let url = sim.url();
    post_accepted(&client, &url, &batch("p", vec![record(1)])).await;
    assert_eq!(
        finalize(&client, &url, "p").await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(finalize(&client, &url, "q").await.status(), StatusCode::OK);
    let one = api_get(&client, &url, "/api/v3/users/user1@example.com").await;
    assert_eq!(one.status(), StatusCode::FORBIDDEN);
    assert_eq!(users_status(&client, &url).await, StatusCode::OK);
    let check = "/api/v2/mappings?name=AuthTest";
    assert_eq!(
        api_get(&client, &url, check).await.status(),
        StatusCode::OK,
        "the credential check answers"
    );
    let unauthenticated = send(client.get(format!("{url}/api/v3/users/x"))).await;
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    sim.set_faults(OomnitzaFaults {
        forbidden_paths: vec!["/api/v2/mappings".into()],
        ..OomnitzaFaults::default()
    });
    assert_eq!(
        api_get(&client, &url, check).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(finalize(&client, &url, "p").await.status(), StatusCode::OK);
}
