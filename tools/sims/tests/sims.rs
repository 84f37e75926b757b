//! Integration tests of both simulators through real HTTP: every documented behaviour, error
//! body and fault of `shared/reference/*-api.md`, the `/_admin` endpoints, and the binaries as
//! processes. Each test spawns its own simulator on a free port.

mod sage {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use peoplesync_sims::generate::{self, worker_id};
    use peoplesync_sims::sage::{EndStyle, PageSize, SageConfig, SageFaults, SageSim};
    use reqwest::{Client, StatusCode};
    use serde_json::{Value, json};

    const EMPLOYEES: &str = "/services/apexrest/spapi/v4/employees";
    const TEST_PUBLIC_KEY: &str = include_str!("../testdata/jwt-test-key.pub.pem");
    const TEST_PRIVATE_KEY: &[u8] = include_bytes!("../testdata/jwt-test-key.pem");
    const OTHER_PRIVATE_KEY: &[u8] = include_bytes!("../testdata/jwt-other-key.pem");

    fn config(workers: u64) -> SageConfig {
        SageConfig {
            workers,
            ..SageConfig::default()
        }
    }

    async fn spawn(config: SageConfig) -> (SageSim, Client) {
        let sim = SageSim::spawn(config).await.expect("sim starts");
        (sim, Client::new())
    }

    async fn token_response(
        client: &Client,
        url: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        client
            .post(format!("{url}/services/oauth2/token"))
            .form(form)
            .send()
            .await
            .expect("token request")
    }

    async fn token(client: &Client, url: &str) -> String {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
        ];
        let body: Value = token_response(client, url, &form)
            .await
            .json()
            .await
            .expect("json");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    async fn get(
        client: &Client,
        url: &str,
        token: &str,
        query: &[(&str, &str)],
    ) -> reqwest::Response {
        client
            .get(format!("{url}{EMPLOYEES}"))
            .bearer_auth(token)
            .header("Accept", "application/json")
            .query(query)
            .send()
            .await
            .expect("employees request")
    }

    async fn json(response: reqwest::Response) -> Value {
        let text = response.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Walks the whole list; returns the ids and the size of each page.
    async fn walk(
        client: &Client,
        url: &str,
        token: &str,
        filter: Option<&str>,
    ) -> (Vec<String>, Vec<usize>) {
        let mut ids = Vec::new();
        let mut sizes = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut query = Vec::new();
            if let Some(m) = &marker {
                query.push(("marker", m.as_str()));
            }
            if let Some(f) = filter {
                query.push(("$filter", f));
            }
            let response = get(client, url, token, &query).await;
            if response.status() == StatusCode::NO_CONTENT {
                return (ids, sizes);
            }
            assert_eq!(response.status(), StatusCode::OK);
            let body = json(response).await;
            let data = body["data"].as_array().expect("data array").clone();
            if data.is_empty() {
                return (ids, sizes);
            }
            sizes.push(data.len());
            for record in &data {
                ids.push(record["id"].as_str().expect("id").to_string());
            }
            marker = ids.last().cloned();
            assert!(sizes.len() < 10_000, "paging does not end");
        }
    }

    fn error_envelope(code: &str, inner: &str, target: &str) -> impl Fn(&Value) {
        let (code, inner, target) = (code.to_string(), inner.to_string(), target.to_string());
        move |body: &Value| {
            let e = &body["error"];
            assert_eq!(e["code"], code.as_str(), "{body}");
            assert_eq!(e["innererror"]["code"], inner.as_str(), "{body}");
            assert_eq!(e["target"], target.as_str(), "{body}");
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
            assert_eq!(e["details"], json!([]), "{body}");
        }
    }

    fn invalid_session() -> Value {
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    }

    // ---- OAuth ----

    #[tokio::test]
    async fn client_credentials_grant_issues_a_bearer_token_without_expiry() {
        let (sim, client) = spawn(config(5)).await;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
        ];
        let response = token_response(&client, &sim.url(), &form).await;
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
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
        ];
        let body = json(token_response(&Client::new(), &sim.url(), &form).await).await;
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
                get(&client, &sim.url(), &token, &[]).await.status(),
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

    // ---- paging ----

    #[tokio::test]
    async fn paging_returns_every_worker_once_in_id_order_with_varying_pages() {
        let (sim, client) = spawn(SageConfig {
            page_size: PageSize::Varying { min: 10, max: 40 },
            ..config(237)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        let (ids, sizes) = walk(&client, &sim.url(), &t, None).await;
        let expected: Vec<String> = (0..237).map(worker_id).collect();
        assert_eq!(ids, expected);
        assert!(sizes.iter().all(|n| (10..=40).contains(n)), "{sizes:?}");
        assert!(
            sizes.iter().collect::<BTreeSet<_>>().len() > 1,
            "sizes vary: {sizes:?}"
        );
        let stats = sim.stats();
        assert_eq!(stats.pages_served, sizes.len() as u64);
        assert_eq!(stats.records_served, 237);
        assert_eq!(stats.end_of_list, 1);
        assert_eq!(stats.status_counts[&204], 1);
    }

    #[tokio::test]
    async fn served_records_are_the_generated_ones() {
        let (sim, client) = spawn(SageConfig {
            seed: 7,
            ..config(20)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        let body = json(get(&client, &sim.url(), &t, &[]).await).await;
        assert_eq!(body["version"], "4.8");
        assert_eq!(body["data"][0], generate::worker(7, 0));
        assert_eq!(body["data"][3], generate::worker(7, 3));
    }

    #[tokio::test]
    async fn fixed_page_size_and_empty_data_end_style() {
        let (sim, client) = spawn(SageConfig {
            page_size: PageSize::Fixed(4),
            end_style: EndStyle::EmptyData,
            ..config(10)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        let (ids, sizes) = walk(&client, &sim.url(), &t, None).await;
        assert_eq!(ids.len(), 10);
        assert_eq!(sizes, [4, 4, 2]);
        let end = get(&client, &sim.url(), &t, &[("marker", &worker_id(9))]).await;
        assert_eq!(end.status(), StatusCode::OK);
        assert_eq!(json(end).await, json!({"version": "4.8", "data": []}));
    }

    #[tokio::test]
    async fn rereading_a_page_with_the_same_marker_gives_the_same_page() {
        let (sim, client) = spawn(config(500)).await;
        let t = token(&client, &sim.url()).await;
        let marker = worker_id(123);
        let a = json(get(&client, &sim.url(), &t, &[("marker", &marker)]).await).await;
        let b = json(get(&client, &sim.url(), &t, &[("marker", &marker)]).await).await;
        assert_eq!(a, b);
        assert_eq!(a["data"][0]["id"], worker_id(124).as_str());
    }

    #[tokio::test]
    async fn a_large_org_is_served_lazily_deep_into_the_list() {
        let (sim, client) = spawn(SageConfig {
            page_size: PageSize::Fixed(400),
            ..config(1_000_000)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        let first = json(get(&client, &sim.url(), &t, &[]).await).await;
        assert_eq!(first["data"].as_array().map(Vec::len), Some(400));
        let deep =
            json(get(&client, &sim.url(), &t, &[("marker", &worker_id(999_990))]).await).await;
        let data = deep["data"].as_array().expect("data");
        assert_eq!(data.len(), 9);
        assert_eq!(data[8]["id"], worker_id(999_999).as_str());
        let end = get(&client, &sim.url(), &t, &[("marker", &worker_id(999_999))]).await;
        assert_eq!(end.status(), StatusCode::NO_CONTENT);
        assert_eq!(sim.stats().workers, 1_000_000);
    }

    #[tokio::test]
    async fn garbled_or_unknown_marker_gives_invalid_marker() {
        let (sim, client) = spawn(config(10)).await;
        let t = token(&client, &sim.url()).await;
        let check = error_envelope("REQUEST_ERROR", "INVALID_MARKER", "marker");
        for marker in [
            "nonsense".to_string(),
            worker_id(10),
            worker_id(5).to_lowercase(),
            String::new(),
        ] {
            let response = get(&client, &sim.url(), &t, &[("marker", &marker)]).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{marker:?}");
            check(&json(response).await);
        }
    }

    #[tokio::test]
    async fn reject_markers_fault_refuses_every_marker_but_not_the_first_page() {
        let faults = SageFaults {
            reject_markers: true,
            ..SageFaults::default()
        };
        let (sim, client) = spawn(SageConfig {
            faults,
            ..config(10)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        assert_eq!(
            get(&client, &sim.url(), &t, &[]).await.status(),
            StatusCode::OK
        );
        let response = get(&client, &sim.url(), &t, &[("marker", &worker_id(2))]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        error_envelope("REQUEST_ERROR", "INVALID_MARKER", "marker")(&json(response).await);
        sim.set_faults(SageFaults::default());
        assert_eq!(
            get(&client, &sim.url(), &t, &[("marker", &worker_id(2))])
                .await
                .status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn marker_of_a_removed_worker_still_continues_the_list() {
        let (sim, client) = spawn(SageConfig {
            page_size: PageSize::Fixed(3),
            ..config(10)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        sim.remove_worker(&worker_id(5));
        let page = json(get(&client, &sim.url(), &t, &[("marker", &worker_id(5))]).await).await;
        assert_eq!(page["data"][0]["id"], worker_id(6).as_str());
        let (ids, _) = walk(&client, &sim.url(), &t, None).await;
        assert_eq!(ids.len(), 9);
        assert!(!ids.contains(&worker_id(5)));
        let one = client
            .get(format!("{}{EMPLOYEES}/{}", sim.url(), worker_id(5)))
            .bearer_auth(&t)
            .header("Accept", "application/json")
            .send()
            .await
            .expect("request");
        assert_eq!(one.status(), StatusCode::NOT_FOUND);
        assert_eq!(sim.stats().workers, 9);
    }

    #[tokio::test]
    async fn one_employee_is_served_as_one_object_in_data_or_404() {
        let (sim, client) = spawn(config(10)).await;
        let t = token(&client, &sim.url()).await;
        let read = |id: String| {
            let client = client.clone();
            let url = format!("{}{EMPLOYEES}/{id}", sim.url());
            let t = t.clone();
            async move {
                client
                    .get(url)
                    .bearer_auth(t)
                    .header("Accept", "application/json")
                    .send()
                    .await
                    .expect("request")
            }
        };
        let ok = read(worker_id(4)).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let body = json(ok).await;
        assert_eq!(body["version"], "4.8");
        assert_eq!(body["data"], generate::worker(42, 4));
        assert!(
            body["data"].is_object(),
            "EmployeeResponse: data is one object"
        );
        for missing in [worker_id(10), "not-an-id".to_string()] {
            let response = read(missing).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            assert_eq!(json(response).await["error"]["code"], "REQUEST_ERROR");
        }
    }

    #[tokio::test]
    async fn filter_selects_by_nested_fields_booleans_and_or() {
        let (sim, client) = spawn(SageConfig {
            page_size: PageSize::Fixed(25),
            ..config(300)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        let filter = "workAddress.country eq 'France' and currentEmployment.active eq true or hrDepartment eq 'R&D'";
        let (ids, _) = walk(&client, &sim.url(), &t, Some(filter)).await;
        let expected: Vec<String> = (0..300)
            .map(|i| generate::worker(42, i))
            .filter(|w| {
                (w["workAddress"]["country"] == "France"
                    && w["currentEmployment"]["active"] == true)
                    || w["hrDepartment"] == "R&D"
            })
            .map(|w| w["id"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(
            expected.len() > 20 && expected.len() < 200,
            "a selective filter: {}",
            expected.len()
        );
        assert_eq!(ids, expected);
    }

    #[tokio::test]
    async fn unsupported_filter_gives_invalid_filter() {
        let (sim, client) = spawn(config(10)).await;
        let t = token(&client, &sim.url()).await;
        for filter in [
            "workAddress.country like 'F%'",
            "nonsense",
            "salary gt 5",
            "workAddress.country eq France",
        ] {
            let response = get(&client, &sim.url(), &t, &[("$filter", filter)]).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{filter}");
            error_envelope("REQUEST_ERROR", "INVALID_FILTER", "$filter")(&json(response).await);
        }
    }

    #[tokio::test]
    async fn patched_and_added_workers_are_served() {
        let (sim, client) = spawn(config(10)).await;
        let t = token(&client, &sim.url()).await;
        let id = worker_id(2);
        sim.patch_worker(
            &id,
            json!({"hrDepartment": "Moon Base", "workAddress": {"city": "Tranquility"}}),
        );
        sim.add_workers(5);
        let body = json(get(&client, &sim.url(), &t, &[]).await).await;
        let data = body["data"].as_array().expect("data");
        assert_eq!(data.len(), 15);
        assert_eq!(data[2]["hrDepartment"], "Moon Base");
        assert_eq!(data[2]["workAddress"]["city"], "Tranquility");
        let original = generate::worker(42, 2);
        if original["workAddress"].is_object() {
            assert_eq!(
                data[2]["workAddress"]["country"],
                original["workAddress"]["country"]
            );
        }
        assert_eq!(data[14]["id"], worker_id(14).as_str());
        let (ids, _) = walk(&client, &sim.url(), &t, Some("hrDepartment eq 'Moon Base'")).await;
        assert_eq!(ids, [id]);
    }

    // ---- auth, quota, headers ----

    #[tokio::test]
    async fn missing_unknown_or_revoked_token_gives_invalid_session_id() {
        let (sim, client) = spawn(config(5)).await;
        let url = format!("{}{EMPLOYEES}", sim.url());
        let no_auth = client
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
            .expect("request");
        assert_eq!(no_auth.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json(no_auth).await, invalid_session());
        let unknown = get(&client, &sim.url(), "00Dxx!made-up", &[]).await;
        assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json(unknown).await, invalid_session());
        let t = token(&client, &sim.url()).await;
        assert_eq!(
            get(&client, &sim.url(), &t, &[]).await.status(),
            StatusCode::OK
        );
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
        let faults = SageFaults {
            token_expiry_after: Some(2),
            ..SageFaults::default()
        };
        let (sim, client) = spawn(SageConfig {
            faults,
            ..config(5)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        assert_eq!(
            get(&client, &sim.url(), &t, &[]).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            get(&client, &sim.url(), &t, &[]).await.status(),
            StatusCode::OK
        );
        let expired = get(&client, &sim.url(), &t, &[]).await;
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json(expired).await, invalid_session());
        let fresh = token(&client, &sim.url()).await;
        assert_eq!(
            get(&client, &sim.url(), &fresh, &[]).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn accept_header_without_json_gives_406_invalid_accept_header() {
        let (sim, client) = spawn(config(5)).await;
        let t = token(&client, &sim.url()).await;
        for accept in ["*/*", "application/xml", "text/html"] {
            let response = client
                .get(format!("{}{EMPLOYEES}", sim.url()))
                .bearer_auth(&t)
                .header("Accept", accept)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE, "{accept}");
            error_envelope("REQUEST_ERROR", "INVALID_ACCEPT_HEADER", "Accept")(
                &json(response).await,
            );
        }
    }

    #[tokio::test]
    async fn every_api_response_carries_sforce_limit_info_and_each_call_counts_once() {
        let (sim, client) = spawn(SageConfig {
            api_quota: 5000,
            ..config(5)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        let limit = |r: &reqwest::Response| {
            r.headers()
                .get("sforce-limit-info")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
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
        let (sim, client) = spawn(SageConfig {
            api_quota: 3,
            ..config(5)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        for _ in 0..3 {
            assert_eq!(
                get(&client, &sim.url(), &t, &[]).await.status(),
                StatusCode::OK
            );
        }
        let refused = get(&client, &sim.url(), &t, &[]).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            refused
                .headers()
                .get("sforce-limit-info")
                .and_then(|v| v.to_str().ok()),
            Some("api-usage=3/3")
        );
        assert_eq!(
            json(refused).await,
            json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
        );
        sim.set_api_usage(1);
        assert_eq!(
            get(&client, &sim.url(), &t, &[]).await.status(),
            StatusCode::OK
        );
    }

    // ---- faults ----

    #[tokio::test]
    async fn transient_failures_are_server_unavailable_at_the_configured_rate() {
        let faults = SageFaults {
            transient_failure_rate: 1.0,
            ..SageFaults::default()
        };
        let (sim, client) = spawn(SageConfig {
            faults,
            ..config(5)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        let response = get(&client, &sim.url(), &t, &[]).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = json(response).await;
        assert_eq!(body[0]["errorCode"], "SERVER_UNAVAILABLE");
        assert!(body[0]["message"].is_string());

        sim.set_faults(SageFaults {
            transient_failure_rate: 0.5,
            ..SageFaults::default()
        });
        let mut failures = 0;
        for _ in 0..200 {
            if get(&client, &sim.url(), &t, &[]).await.status() == StatusCode::SERVICE_UNAVAILABLE {
                failures += 1;
            }
        }
        assert!((60..140).contains(&failures), "{failures} of 200");
    }

    #[tokio::test]
    async fn outage_answers_503_until_it_ends() {
        let (sim, client) = spawn(config(5)).await;
        let t = token(&client, &sim.url()).await;
        sim.set_faults(SageFaults {
            outage_for_ms: Some(300),
            ..SageFaults::default()
        });
        let during = get(&client, &sim.url(), &t, &[]).await;
        assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json(during).await[0]["errorCode"], "SERVER_UNAVAILABLE");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            get(&client, &sim.url(), &t, &[]).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn configuration_errors_use_the_sage_people_envelope_with_nested_codes() {
        let (sim, client) = spawn(config(5)).await;
        let t = token(&client, &sim.url()).await;
        for code in [
            "MISSING_API_PERMISSION",
            "INACCESSIBLE_FIELD",
            "OBJECT_NOT_ACCESSIBLE",
        ] {
            sim.set_faults(SageFaults {
                config_error: Some(code.into()),
                ..SageFaults::default()
            });
            let response = get(&client, &sim.url(), &t, &[]).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{code}");
            let body = json(response).await;
            assert_eq!(body["error"]["code"], "SAGE_PEOPLE_CONFIGURATION");
            assert_eq!(body["error"]["innererror"]["code"], code);
        }
        sim.set_faults(SageFaults {
            config_error: Some("INVALID_FILTER".into()),
            ..SageFaults::default()
        });
        let response = get(&client, &sim.url(), &t, &[]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            json(response).await["error"]["innererror"]["code"],
            "INVALID_FILTER"
        );
        sim.set_faults(SageFaults {
            config_error: Some("INVALID_FILTER/UNEXPECTED_TOKEN".into()),
            config_error_status: Some(500),
            config_error_target: Some("$filter".into()),
            ..SageFaults::default()
        });
        let response = get(&client, &sim.url(), &t, &[]).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let error = &json(response).await["error"];
        assert_eq!(error["target"], "$filter");
        assert_eq!(error["innererror"]["code"], "INVALID_FILTER");
        assert_eq!(
            error["innererror"]["innererror"]["code"],
            "UNEXPECTED_TOKEN"
        );
    }

    #[tokio::test]
    async fn a_filter_the_parser_refuses_names_the_specific_code_under_invalid_filter() {
        let (sim, client) = spawn(config(5)).await;
        let t = token(&client, &sim.url()).await;
        let response = get(&client, &sim.url(), &t, &[("$filter", "city eq 'Paris")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let inner = &json(response).await["error"]["innererror"];
        assert_eq!(inner["code"], "INVALID_FILTER");
        assert_eq!(inner["innererror"]["code"], "UNTERMINATED_LITERAL");
    }

    #[tokio::test]
    async fn the_concurrent_limit_refuses_the_set_number_of_calls_then_lets_them_through() {
        let (sim, client) = spawn(config(5)).await;
        let t = token(&client, &sim.url()).await;
        sim.set_faults(SageFaults {
            concurrent_limit_calls: 2,
            ..SageFaults::default()
        });
        for _ in 0..2 {
            let response = get(&client, &sim.url(), &t, &[]).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            let body = json(response).await;
            assert_eq!(body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
            assert!(
                body[0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("ConcurrentPerOrgLongTxn"))
            );
        }
        assert_eq!(
            get(&client, &sim.url(), &t, &[]).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn limits_report_daily_api_requests_and_the_header_can_be_left_off() {
        let (sim, client) = spawn(SageConfig {
            api_quota: 1_000,
            limit_info_header: false,
            ..config(5)
        })
        .await;
        sim.set_api_usage(250);
        let t = token(&client, &sim.url()).await;
        let page = get(&client, &sim.url(), &t, &[]).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers().get("sforce-limit-info").is_none());
        let limits = |version: &'static str| {
            let client = client.clone();
            let url = format!("{}/services/data/{version}/limits", sim.url());
            let t = t.clone();
            async move {
                client
                    .get(url)
                    .bearer_auth(t)
                    .send()
                    .await
                    .expect("request")
            }
        };
        let response = limits("v64.0").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("sforce-limit-info").is_some());
        let body = json(response).await;
        assert_eq!(
            body["DailyApiRequests"],
            json!({"Max": 1_000, "Remaining": 749})
        );
        assert_eq!(limits("latest").await.status(), StatusCode::NOT_FOUND);
        let anonymous = client
            .get(format!("{}/services/data/v64.0/limits", sim.url()))
            .send()
            .await
            .expect("request");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(sim.stats().limits_requests, 2);
    }

    #[tokio::test]
    async fn truncated_bodies_are_cut_in_the_middle() {
        let faults = SageFaults {
            truncate_rate: 1.0,
            ..SageFaults::default()
        };
        let (sim, client) = spawn(SageConfig {
            faults,
            ..config(50)
        })
        .await;
        let t = token(&client, &sim.url()).await;
        let response = get(&client, &sim.url(), &t, &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.expect("body");
        assert!(
            text.starts_with("{\"data\":["),
            "{}",
            &text[..40.min(text.len())]
        );
        assert!(serde_json::from_str::<Value>(&text).is_err());
        sim.set_faults(SageFaults::default());
        let whole = get(&client, &sim.url(), &t, &[])
            .await
            .text()
            .await
            .expect("body");
        assert!(serde_json::from_str::<Value>(&whole).is_ok());
        assert_eq!(text.len(), whole.len() / 2);
    }

    #[tokio::test]
    async fn latency_delays_every_request() {
        let faults = SageFaults {
            latency_ms: 150,
            ..SageFaults::default()
        };
        let (sim, client) = spawn(SageConfig {
            faults,
            ..config(5)
        })
        .await;
        let started = Instant::now();
        let t = token(&client, &sim.url()).await;
        let _ = get(&client, &sim.url(), &t, &[]).await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    // ---- admin over HTTP, shutdown ----

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
}

/// Oomnitza: bulk posts are accepted, then processed; tests wait for processing
/// (`wait_idle`) before they look at users or run logs. Tests of the asynchronous contract
/// itself are in `sims/oomnitza_async.rs`.
mod oomnitza {
    use std::time::{Duration, Instant};

    use peoplesync_sims::oomnitza::{
        OomnitzaConfig, OomnitzaFaults, OomnitzaSim, SAGE_USER_ID_FIELD,
    };
    use reqwest::{Client, StatusCode};
    use serde_json::{Map, Value, json};

    pub(super) const TOKEN: &str = "sim-oomnitza-token";

    pub(super) async fn spawn(config: OomnitzaConfig) -> (OomnitzaSim, Client) {
        (
            OomnitzaSim::spawn(config).await.expect("sim starts"),
            Client::new(),
        )
    }

    pub(super) async fn spawn_default() -> (OomnitzaSim, Client) {
        spawn(OomnitzaConfig::default()).await
    }

    pub(super) fn record(n: u32) -> Value {
        let email = format!("user{n}@example.com");
        json!({
            "USER": email, "EMAIL": email, "FIRST_NAME": format!("First{n}"), "LAST_NAME": "Last",
            "PERMISSIONS_ID": "25", SAGE_USER_ID_FIELD: format!("a2G7E{n:013}"),
        })
    }

    pub(super) fn batch(portion: &str, records: Vec<Value>) -> Value {
        json!({
            "connector_version": "0.1.0", "connector_name": "sage-people", "portion": portion,
            "data_type": "users", "sync_field": ["EMAIL"], "insert_only": false, "update_only": false,
            "test_run": false, "error": null, "records": records,
        })
    }

    pub(super) async fn post(client: &Client, url: &str, body: &Value) -> reqwest::Response {
        client
            .post(format!("{url}/api/v3/bulk"))
            .header("Authorization2", TOKEN)
            .json(body)
            .send()
            .await
            .expect("bulk request")
    }

    pub(super) async fn api_get(client: &Client, url: &str, path: &str) -> reqwest::Response {
        client
            .get(format!("{url}{path}"))
            .header("Authorization2", TOKEN)
            .send()
            .await
            .expect("request")
    }

    pub(super) async fn json(response: reqwest::Response) -> Value {
        let text = response.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    pub(super) async fn run_log(client: &Client, url: &str, portion: &str) -> Value {
        json(
            api_get(
                client,
                url,
                &format!("/api/v3/connector_run_logs/connectors/{portion}"),
            )
            .await,
        )
        .await
    }

    /// The run log's counts, after waiting until nothing of the portion is processing.
    pub(super) async fn counts(sim: &OomnitzaSim, client: &Client, portion: &str) -> Value {
        sim.wait_portion_idle(portion).await;
        run_log(client, &sim.url(), portion).await["objects"].clone()
    }

    // ---- auth ----

    #[tokio::test]
    async fn missing_or_wrong_authorization2_gives_401() {
        let (sim, client) = spawn_default().await;
        let url = format!("{}/api/v3/users", sim.url());
        let none = client.get(&url).send().await.expect("request");
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
        assert!(json(none).await["message"].is_string());
        let wrong = client
            .get(&url)
            .header("Authorization2", "nope")
            .send()
            .await
            .expect("request");
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let bearer = client
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(
            bearer.status(),
            StatusCode::UNAUTHORIZED,
            "the header is Authorization2"
        );
        assert_eq!(
            api_get(&client, &sim.url(), "/api/v3/users").await.status(),
            StatusCode::OK
        );
        assert_eq!(sim.stats().status_counts[&401], 3);
    }

    #[tokio::test]
    async fn request_token_with_login_and_password_issues_a_usable_token() {
        let (sim, client) = spawn_default().await;
        let url = sim.url();
        let ok = client
            .post(format!("{url}/api/request_token"))
            .form(&[("login", "admin"), ("password", "admin-password")])
            .send()
            .await
            .expect("request");
        assert_eq!(ok.status(), StatusCode::OK);
        let token = json(ok).await["token"].as_str().expect("token").to_string();
        assert_ne!(token, TOKEN);
        let users = client
            .get(format!("{url}/api/v3/users"))
            .header("Authorization2", &token)
            .send()
            .await;
        assert_eq!(users.expect("request").status(), StatusCode::OK);
        let bad = client
            .post(format!("{url}/api/request_token"))
            .form(&[("login", "admin"), ("password", "wrong")])
            .send()
            .await
            .expect("request");
        assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn forbidden_fault_gives_403_to_a_valid_token() {
        let faults = OomnitzaFaults {
            forbidden: true,
            ..OomnitzaFaults::default()
        };
        let (sim, client) = spawn(OomnitzaConfig {
            faults,
            ..OomnitzaConfig::default()
        })
        .await;
        assert_eq!(
            api_get(&client, &sim.url(), "/api/v3/users").await.status(),
            StatusCode::FORBIDDEN
        );
        let response = post(&client, &sim.url(), &batch("p", vec![record(1)])).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(sim.users().is_empty());
    }

    // ---- bulk ----

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
        assert_eq!(users[0][SAGE_USER_ID_FIELD], "a2G7E0000000000001");
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
            (&log["connector"], &log["test_run"], &log["status"]),
            (&json!("sage-people"), &json!(false), &json!("in_progress"))
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
        assert_eq!(
            post(&client, &sim.url(), &body).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            post(&client, &sim.url(), &body).await.status(),
            StatusCode::OK
        );
        let log = counts(&sim, &client, "p1").await;
        assert_eq!(sim.users().len(), 2);
        assert_eq!((&log["added"], &log["unchanged"]), (&json!(2), &json!(4)));
        assert_eq!(sim.stats().max_writes_per_user, 1);
    }

    #[tokio::test]
    async fn changed_fields_update_the_user_matched_by_the_first_sync_field_with_a_hit() {
        let (sim, client) = spawn_default().await;
        let mut pre = Map::new();
        pre.insert("USER".into(), json!("old@example.com"));
        pre.insert("EMAIL".into(), json!("old@example.com"));
        pre.insert(SAGE_USER_ID_FIELD.into(), json!("a2G7E0000000000001"));
        sim.insert_user(pre);
        let mut moved = record(1);
        moved["USER"] = json!("old@example.com");
        let mut body = batch("p", vec![moved]);
        body["sync_field"] = json!(["EMAIL", SAGE_USER_ID_FIELD]);
        assert_eq!(
            post(&client, &sim.url(), &body).await.status(),
            StatusCode::OK
        );
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
        assert_eq!(
            post(&client, &sim.url(), &create_only).await.status(),
            StatusCode::OK
        );
        let log = counts(&sim, &client, "p1").await;
        assert_eq!((&log["skipped"], &log["added"]), (&json!(1), &json!(1)));
        assert_eq!(sim.users()[0]["LAST_NAME"], "Last");

        let mut update_only = batch("p2", vec![changed, record(3)]);
        update_only["update_only"] = json!(true);
        assert_eq!(
            post(&client, &sim.url(), &update_only).await.status(),
            StatusCode::OK
        );
        let log = counts(&sim, &client, "p2").await;
        assert_eq!((&log["skipped"], &log["updated"]), (&json!(1), &json!(1)));
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
        let not_json = client
            .post(format!("{}/api/v3/bulk", sim.url()))
            .header("Authorization2", TOKEN)
            .body("{not json")
            .send()
            .await
            .expect("request");
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
        assert_eq!(
            (&objects["added"], &objects["failed"]),
            (&json!(1), &json!(3))
        );
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
        let (sim, client) = spawn(OomnitzaConfig {
            faults,
            ..OomnitzaConfig::default()
        })
        .await;
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
        assert_eq!(
            (&objects["added"], &objects["failed"]),
            (&json!(2), &json!(1))
        );
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
        let finalize = || {
            client
                .post(format!("{url}/api/v3/bulk/p/finalize"))
                .header("Authorization2", TOKEN)
                .json(&json!({}))
                .send()
        };
        assert_eq!(finalize().await.expect("request").status(), StatusCode::OK);
        let again = finalize().await.expect("request");
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
        let finalize = client
            .post(format!("{url}/api/v3/bulk/p/finalize"))
            .header("Authorization2", TOKEN)
            .json(&json!({}))
            .send()
            .await
            .expect("request");
        assert_eq!(finalize.status(), StatusCode::CONFLICT);
        sim.wait_idle().await;
        assert_eq!(sim.users().len(), 1);
        assert_eq!(sim.stats().records_canceled, 2);

        let cancel = client
            .post(format!("{url}/_admin/portions/q/cancel"))
            .send()
            .await
            .expect("request");
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

    // ---- reading users ----

    async fn seeded_users() -> (OomnitzaSim, Client) {
        let (sim, client) = spawn_default().await;
        let mut records: Vec<Value> = (1..=5).map(record).collect();
        records[1]["POSITION"] = json!("Engineer");
        records[2]["PERMISSIONS_ID"] = json!("10");
        post(&client, &sim.url(), &batch("p", records)).await;
        sim.wait_idle().await;
        (sim, client)
    }

    async fn list(client: &Client, url: &str, query: &[(&str, &str)]) -> reqwest::Response {
        client
            .get(format!("{url}/api/v3/users"))
            .header("Authorization2", TOKEN)
            .query(query)
            .send()
            .await
            .expect("request")
    }

    async fn emails(response: reqwest::Response) -> Vec<String> {
        assert_eq!(response.status(), StatusCode::OK);
        json(response)
            .await
            .as_array()
            .expect("array")
            .iter()
            .map(|u| u["email"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[tokio::test]
    async fn users_are_listed_with_lower_case_attribute_names() {
        let (sim, client) = seeded_users().await;
        let response = list(
            &client,
            &sim.url(),
            &[("filter", "email eq 'user2@example.com'")],
        )
        .await;
        assert_eq!(
            response
                .headers()
                .get("x-total-count")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let users = json(response).await;
        let u = &users[0];
        assert_eq!(u["username"], "user2@example.com");
        assert_eq!(u["first_name"], "First2");
        assert_eq!(u["last_name"], "Last");
        assert_eq!(u["position"], "Engineer");
        assert_eq!(u["role"], "25");
        assert_eq!(u[SAGE_USER_ID_FIELD.to_lowercase()], "a2G7E0000000000002");
        assert!(u["phone_number"].is_null() && u["address"].is_null());
        assert!(u.get("USER").is_none());
        let id = u["id"].as_str().expect("id");
        let one = api_get(&client, &sim.url(), &format!("/api/v3/users/{id}")).await;
        assert_eq!(json(one).await, *u);
        let missing = api_get(&client, &sim.url(), "/api/v3/users/no-such-user").await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn user_filters_support_in_like_is_null_and_or() {
        let (sim, client) = seeded_users().await;
        let url = sim.url();
        let cases: [(&str, &[&str]); 5] = [
            (
                "email IN ['user1@example.com', 'user4@example.com']",
                &["user1@example.com", "user4@example.com"],
            ),
            (
                "email LIKE 'user_@example.com' and role eq '10'",
                &["user3@example.com"],
            ),
            ("position IS NOT NULL", &["user2@example.com"]),
            (
                "position IS NULL and (email eq 'user5@example.com' or email LIKE '%1@%')",
                &["user1@example.com", "user5@example.com"],
            ),
            ("email eq 'nobody@example.com'", &[]),
        ];
        for (filter, expected) in cases {
            assert_eq!(
                emails(list(&client, &url, &[("filter", filter)]).await).await,
                expected,
                "{filter}"
            );
        }
    }

    #[tokio::test]
    async fn users_are_sorted_and_paged() {
        let (sim, client) = seeded_users().await;
        let url = sim.url();
        let page = list(
            &client,
            &url,
            &[("sortby", "email desc"), ("skip", "1"), ("limit", "2")],
        )
        .await;
        assert_eq!(
            page.headers()
                .get("x-total-count")
                .and_then(|v| v.to_str().ok()),
            Some("5")
        );
        assert_eq!(
            emails(page).await,
            ["user4@example.com", "user3@example.com"]
        );
        let asc = list(&client, &url, &[("sortby", "email asc"), ("limit", "1")]).await;
        assert_eq!(emails(asc).await, ["user1@example.com"]);
    }

    #[tokio::test]
    async fn bad_user_queries_are_400() {
        let (sim, client) = seeded_users().await;
        for query in [
            ("filter", "email = 'x'"),
            ("filter", "salary eq 5"),
            ("filter", "email IN 'x'"),
            ("limit", "-1"),
            ("skip", "many"),
            ("sortby", "salary asc"),
        ] {
            let response = list(&client, &sim.url(), &[query]).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query:?}");
            assert!(json(response).await["message"].is_string());
        }
    }

    // ---- faults ----

    #[tokio::test]
    async fn rate_limit_answers_429_with_retry_after() {
        let faults = OomnitzaFaults {
            rate_limit_per_sec: Some(3),
            retry_after_secs: Some(7),
            ..OomnitzaFaults::default()
        };
        let (sim, client) = spawn(OomnitzaConfig {
            faults,
            ..OomnitzaConfig::default()
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let response = api_get(&client, &sim.url(), "/api/v3/users").await;
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                    Some("7")
                );
            }
            statuses.push(response.status().as_u16());
        }
        assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
        assert_eq!(sim.stats().requests_429, 3);
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        assert_eq!(
            api_get(&client, &sim.url(), "/api/v3/users").await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn retry_after_defaults_to_one_second() {
        let faults = OomnitzaFaults {
            rate_limit_per_sec: Some(0),
            ..OomnitzaFaults::default()
        };
        let (sim, client) = spawn(OomnitzaConfig {
            faults,
            ..OomnitzaConfig::default()
        })
        .await;
        let response = api_get(&client, &sim.url(), "/api/v3/users").await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }

    #[tokio::test]
    async fn transient_failures_and_outages_answer_503() {
        let faults = OomnitzaFaults {
            transient_failure_rate: 1.0,
            ..OomnitzaFaults::default()
        };
        let (sim, client) = spawn(OomnitzaConfig {
            faults,
            ..OomnitzaConfig::default()
        })
        .await;
        let response = post(&client, &sim.url(), &batch("p", vec![record(1)])).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(sim.users().is_empty());

        sim.set_faults(OomnitzaFaults {
            transient_failure_rate: 0.3,
            ..OomnitzaFaults::default()
        });
        let mut failures = 0;
        for _ in 0..200 {
            if api_get(&client, &sim.url(), "/api/v3/users").await.status()
                == StatusCode::SERVICE_UNAVAILABLE
            {
                failures += 1;
            }
        }
        assert!((30..90).contains(&failures), "{failures} of 200");

        sim.set_faults(OomnitzaFaults {
            outage_for_ms: Some(300),
            ..OomnitzaFaults::default()
        });
        assert_eq!(
            api_get(&client, &sim.url(), "/api/v3/users").await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            api_get(&client, &sim.url(), "/api/v3/users").await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn latency_applies_and_concurrent_requests_are_tracked() {
        let faults = OomnitzaFaults {
            latency_ms: 200,
            ..OomnitzaFaults::default()
        };
        let (sim, client) = spawn(OomnitzaConfig {
            faults,
            ..OomnitzaConfig::default()
        })
        .await;
        let started = Instant::now();
        let requests: Vec<_> = (0..5)
            .map(|_| {
                let (client, url) = (client.clone(), sim.url());
                tokio::spawn(async move { api_get(&client, &url, "/api/v3/users").await.status() })
            })
            .collect();
        for r in requests {
            assert_eq!(r.await.expect("task"), StatusCode::OK);
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert!(
            elapsed < Duration::from_millis(900),
            "requests overlap: {elapsed:?}"
        );
        assert!(
            sim.stats().max_in_flight >= 4,
            "{}",
            sim.stats().max_in_flight
        );
    }

    // ---- admin over HTTP ----

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
}

#[path = "sims/oomnitza_async.rs"]
mod oomnitza_async;

#[path = "sims/oomnitza_offboard.rs"]
mod oomnitza_offboard;

#[path = "sims/sage_leavers.rs"]
mod sage_leavers;

mod binaries {
    use std::process::Stdio;
    use std::time::Duration;

    use serde_json::{Value, json};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    use tokio::process::{Child, Command};

    type Stdout = BufReader<tokio::process::ChildStdout>;

    /// Starts a simulator binary and reads its one stdout line.
    async fn start(mut command: Command) -> (Child, Stdout, String) {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("binary starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
            .await
            .expect("announces in time")
            .expect("reads stdout");
        let url = line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("listening on "))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        (child, stdout, url)
    }

    /// Sends SIGTERM, expects a clean exit, and checks nothing else went to stdout.
    async fn terminate(mut child: Child, mut stdout: Stdout) {
        let pid = child.id().expect("running").to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(kill.success());
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait");
        assert!(status.success(), "{status:?}");
        let mut rest = String::new();
        stdout
            .read_to_string(&mut rest)
            .await
            .expect("reads stdout");
        assert!(rest.is_empty(), "extra stdout: {rest:?}");
    }

    /// A client-credentials token from the simulator at `url`, and the first page read with it.
    async fn first_page(
        client: &reqwest::Client,
        url: &str,
        secret: &str,
    ) -> (String, reqwest::Response) {
        let token: Value = client
            .post(format!("{url}/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "sim-client"),
                ("client_secret", secret),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        let t = token["access_token"].as_str().expect("token").to_owned();
        let page = client
            .get(format!("{url}/services/apexrest/spapi/v4/employees"))
            .bearer_auth(&t)
            .header("Accept", "application/json")
            .send()
            .await
            .expect("page");
        (t, page)
    }

    #[tokio::test]
    async fn sage_people_sim_can_leave_the_limit_header_off_and_serve_the_limits() {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sage-people-sim"));
        command
            .args(["--listen", "127.0.0.1:0", "--api-quota", "50"])
            .env("SAGE_SIM_NO_LIMIT_INFO_HEADER", "true")
            .env("SAGE_SIM_WORKERS", "3");
        let (child, stdout, url) = start(command).await;
        let client = reqwest::Client::new();
        let (token, page) = first_page(&client, &url, "sim-secret").await;
        assert_eq!(page.status(), reqwest::StatusCode::OK);
        assert!(page.headers().get("sforce-limit-info").is_none());
        let limits: Value = client
            .get(format!("{url}/services/data/v60.0/limits"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("limits")
            .json()
            .await
            .expect("json");
        assert_eq!(
            limits["DailyApiRequests"],
            json!({"Max": 50, "Remaining": 49})
        );
        terminate(child, stdout).await;
    }

    #[tokio::test]
    async fn sage_people_sim_serves_with_flags_and_env_and_stops_on_sigterm() {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sage-people-sim"));
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--page-size",
                "2",
                "--client-secret",
                "flag-secret",
            ])
            .args(["--api-quota", "50", "--api-usage", "10"])
            .env("SAGE_SIM_WORKERS", "3");
        let (child, stdout, url) = start(command).await;
        let client = reqwest::Client::new();
        let (_, page) = first_page(&client, &url, "flag-secret").await;
        assert_eq!(
            page.headers()
                .get("sforce-limit-info")
                .and_then(|v| v.to_str().ok()),
            Some("api-usage=11/50")
        );
        let body: Value = page.json().await.expect("json");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
        let stats: Value = client
            .get(format!("{url}/_admin/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        assert_eq!(stats["workers"], 3);
        terminate(child, stdout).await;
    }

    #[tokio::test]
    async fn oomnitza_sim_serves_with_flags_and_stops_on_sigterm() {
        let mut command = Command::new(env!("CARGO_BIN_EXE_oomnitza-sim"));
        command
            .args(["--api-token", "flag-token", "--forbidden"])
            .args([
                "--processing-delay-ms",
                "0",
                "--refuse",
                "EMAIL=@blocked\\.example$",
            ])
            .env("OOMNITZA_SIM_REQUIRE", "FIRST_NAME=^[A-Z]\nLAST_NAME=.")
            .env("OOMNITZA_SIM_CUSTOM_FIELD_NAMES", "id");
        let (child, stdout, url) = start(command).await;
        let client = reqwest::Client::new();
        let forbidden = client
            .get(format!("{url}/api/v3/users"))
            .header("Authorization2", "flag-token")
            .send()
            .await
            .expect("request");
        assert_eq!(forbidden.status(), reqwest::StatusCode::FORBIDDEN);
        let faults: Value = client
            .get(format!("{url}/_admin/faults"))
            .send()
            .await
            .expect("faults")
            .json()
            .await
            .expect("json");
        assert_eq!(faults["forbidden"], true);
        let behavior: Value = client
            .get(format!("{url}/_admin/behavior"))
            .send()
            .await
            .expect("behavior")
            .json()
            .await
            .expect("json");
        assert_eq!(behavior["processing_delay_ms"], 0);
        assert_eq!(behavior["custom_field_names"], "id");
        let rules: Vec<(&str, &str, bool)> = behavior["validation_rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| {
                (
                    r["field"].as_str().unwrap_or_default(),
                    r["pattern"].as_str().unwrap_or_default(),
                    r["must_match"].as_bool().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            rules,
            [
                ("EMAIL", "@blocked\\.example$", false),
                ("FIRST_NAME", "^[A-Z]", true),
                ("LAST_NAME", ".", true)
            ]
        );
        terminate(child, stdout).await;
    }
}
