//! OAuth.

use super::*;

#[tokio::test]
async fn client_credentials_grant_issues_a_bearer_token_without_expiry() {
    let (sim, client) = spawn(config(5)).await;
    let response = token_response(&client, &sim.url(), &CLIENT_CREDENTIALS).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("sforce-limit-info").is_none());
    let body = json(response).await;
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["instance_url"], sim.url().as_str());
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with(&sim.url()))
    );
    assert!(body["signature"].is_string());
    let issued: i64 = body["issued_at"]
        .as_str()
        .expect("string")
        .parse()
        .expect("ms");
    assert!((issued - chrono::Utc::now().timestamp_millis()).abs() < 60_000);
    assert!(body.get("expires_in").is_none());
    assert_eq!(sim.stats().token_requests["client_credentials"], 1);
    assert_eq!(sim.stats().tokens_issued, 1);
    assert_eq!(
        sim.stats().api_requests,
        0,
        "the token endpoint is not an API call"
    );
}

#[tokio::test]
async fn a_public_url_is_announced_as_the_instance_url_for_clients_in_other_containers() {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let sim = SageSim::spawn_advertising(
        config(1),
        listener,
        Some("http://sage-people-sim:8080/".into()),
    )
    .await
    .expect("sim starts");
    let body = json(token_response(&Client::new(), &sim.url(), &CLIENT_CREDENTIALS).await).await;
    assert_eq!(body["instance_url"], "http://sage-people-sim:8080");
}

#[tokio::test]
async fn wrong_client_credentials_give_invalid_client() {
    let (sim, client) = spawn(config(5)).await;
    for (id, secret) in [
        ("sim-client", "wrong"),
        ("other-client", "sim-secret"),
        ("", ""),
    ] {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ];
        let response = token_response(&client, &sim.url(), &form).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = json(response).await;
        assert_eq!(body["error"], "invalid_client");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
    }
    assert_eq!(sim.stats().token_failures, 3);
    assert_eq!(sim.stats().tokens_issued, 0);
}

#[tokio::test]
async fn password_grant_needs_the_exact_user_and_password() {
    let (sim, client) = spawn(config(5)).await;
    let form = |user: &'static str, password: &'static str| {
        [
            ("grant_type", "password"),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
            ("username", user),
            ("password", password),
        ]
    };
    let ok = token_response(
        &client,
        &sim.url(),
        &form("integration@example.com", "sim-password"),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    for (user, password) in [
        ("integration@example.com", "wrong"),
        ("integration@example.com", "sim-passwordEXTRA"),
        ("someone@example.com", "sim-password"),
    ] {
        let response = token_response(&client, &sim.url(), &form(user, password)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json(response).await["error"], "invalid_grant");
    }
    assert_eq!(sim.stats().token_requests["password"], 4);
}

#[tokio::test]
async fn missing_or_unknown_grant_type_is_unsupported() {
    let (sim, client) = spawn(config(5)).await;
    for form in [
        vec![("grant_type", "authorization_code")],
        vec![("client_id", "sim-client")],
    ] {
        let response = token_response(&client, &sim.url(), &form).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json(response).await["error"], "unsupported_grant_type");
    }
    assert_eq!(sim.stats().token_requests["other"], 2);
}

fn assertion(key: &[u8], iss: &str, sub: &str, aud: &str, exp_in_secs: i64) -> String {
    let claims = json!({
        "iss": iss, "sub": sub, "aud": aud,
        "exp": chrono::Utc::now().timestamp() + exp_in_secs,
    });
    let key = EncodingKey::from_rsa_pem(key).expect("test key");
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("signed")
}

async fn jwt_grant(client: &Client, url: &str, assertion: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion),
    ];
    token_response(client, url, &form).await
}

fn jwt_config() -> SageConfig {
    SageConfig {
        jwt_public_key_pem: Some(TEST_PUBLIC_KEY.into()),
        ..config(5)
    }
}

#[tokio::test]
async fn jwt_bearer_grant_accepts_the_login_and_test_audiences_only() {
    let (sim, client) = spawn(SageConfig {
        jwt_extra_audiences: vec!["https://acme.my.site.com".into()],
        ..jwt_config()
    })
    .await;
    let user = "integration@example.com";
    for aud in [
        "https://login.salesforce.com",
        "https://test.salesforce.com",
        "https://acme.my.site.com",
    ] {
        let a = assertion(TEST_PRIVATE_KEY, "sim-client", user, aud, 120);
        let response = jwt_grant(&client, &sim.url(), &a).await;
        assert_eq!(response.status(), StatusCode::OK, "aud {aud}");
        let token = json(response).await["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        assert_eq!(
            status(&client, &sim.url(), &token, &[]).await,
            StatusCode::OK
        );
    }
    // The host the token request goes to (the org's My Domain) is not an audience.
    let my_domain = assertion(TEST_PRIVATE_KEY, "sim-client", user, &sim.url(), 120);
    let response = jwt_grant(&client, &sim.url(), &my_domain).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(response).await["error"], "invalid_grant");
    let stats = sim.stats();
    assert_eq!(stats.token_requests["jwt_bearer"], 4);
    assert_eq!(stats.jwt_audiences["https://login.salesforce.com"], 1);
    assert_eq!(stats.jwt_audiences[&sim.url()], 1);
}

#[tokio::test]
async fn jwt_bearer_grant_refuses_bad_assertions_with_invalid_grant() {
    let (sim, client) = spawn(jwt_config()).await;
    let url = sim.url();
    let login = "https://login.salesforce.com";
    let user = "integration@example.com";
    let cases = [
        (
            "signed with another key",
            assertion(OTHER_PRIVATE_KEY, "sim-client", user, login, 120),
        ),
        (
            "wrong issuer",
            assertion(TEST_PRIVATE_KEY, "other-client", user, login, 120),
        ),
        (
            "wrong subject",
            assertion(TEST_PRIVATE_KEY, "sim-client", "x@example.com", login, 120),
        ),
        (
            "wrong audience",
            assertion(
                TEST_PRIVATE_KEY,
                "sim-client",
                user,
                "https://evil.example",
                120,
            ),
        ),
        (
            "expired",
            assertion(TEST_PRIVATE_KEY, "sim-client", user, login, -30),
        ),
        (
            "more than 3 minutes ahead",
            assertion(TEST_PRIVATE_KEY, "sim-client", user, login, 600),
        ),
        ("not a JWT", "garbage".to_string()),
        ("empty", String::new()),
    ];
    for (case, a) in cases {
        let response = jwt_grant(&client, &url, &a).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        assert_eq!(json(response).await["error"], "invalid_grant", "{case}");
    }
    assert_eq!(sim.stats().tokens_issued, 0);
}

#[tokio::test]
async fn jwt_bearer_grant_is_refused_without_a_configured_key() {
    let (sim, client) = spawn(config(5)).await;
    let a = assertion(
        TEST_PRIVATE_KEY,
        "sim-client",
        "integration@example.com",
        &sim.url(),
        120,
    );
    let response = jwt_grant(&client, &sim.url(), &a).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(response).await["error"], "invalid_grant");
}
