//! Faults.

use super::*;

#[tokio::test]
async fn transient_failures_come_at_the_configured_rate_with_the_configured_status() {
    let (sim, client, t) = session(faulty(
        5,
        SageFaults {
            transient_failure_rate: 1.0,
            ..SageFaults::default()
        },
    ))
    .await;
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
        if status(&client, &sim.url(), &t, &[]).await == StatusCode::SERVICE_UNAVAILABLE {
            failures += 1;
        }
    }
    assert!((60..140).contains(&failures), "{failures} of 200");

    for code in peoplesync_sims::sage::TRANSIENT_STATUSES {
        sim.set_faults(SageFaults {
            transient_failure_rate: 1.0,
            transient_status: Some(code),
            ..SageFaults::default()
        });
        let answered = status(&client, &sim.url(), &t, &[]).await;
        assert_eq!(answered.as_u16(), code);
    }
}

#[tokio::test]
async fn outage_answers_503_until_it_ends() {
    let (sim, client, t) = session(config(5)).await;
    sim.set_faults(SageFaults {
        outage_for_ms: Some(300),
        ..SageFaults::default()
    });
    let during = get(&client, &sim.url(), &t, &[]).await;
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(during).await[0]["errorCode"], "SERVER_UNAVAILABLE");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status(&client, &sim.url(), &t, &[]).await, StatusCode::OK);
}

#[tokio::test]
async fn configuration_errors_use_the_sage_people_envelope_with_nested_codes() {
    let (sim, client, t) = session(config(5)).await;
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
    let (sim, client, t) = session(config(5)).await;
    let response = get(&client, &sim.url(), &t, &[("$filter", "city eq 'Paris")]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let inner = &json(response).await["error"]["innererror"];
    assert_eq!(inner["code"], "INVALID_FILTER");
    assert_eq!(inner["innererror"]["code"], "UNTERMINATED_LITERAL");
}

#[tokio::test]
async fn the_concurrent_limit_refuses_the_set_number_of_calls_then_lets_them_through() {
    let (sim, client, t) = session(config(5)).await;
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
    assert_eq!(status(&client, &sim.url(), &t, &[]).await, StatusCode::OK);
}

#[tokio::test]
async fn the_concurrent_limit_names_the_limit_it_is_set_to() {
    use peoplesync_sims::sage::ConcurrentLimit;
    let (sim, client, t) = session(config(5)).await;
    for (limit, named) in [
        (
            ConcurrentLimit::LongTxn,
            "ConcurrentPerOrgLongTxn Limit exceeded.",
        ),
        (
            ConcurrentLimit::Requests,
            "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
        ),
        (
            ConcurrentLimit::Apex,
            "ConcurrentPerOrgApex Limit exceeded.",
        ),
    ] {
        sim.set_faults(SageFaults {
            concurrent_limit_calls: 1,
            concurrent_limit: limit,
            ..SageFaults::default()
        });
        let response = get(&client, &sim.url(), &t, &[]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{limit:?}");
        let body = json(response).await;
        assert_eq!(body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
        assert_eq!(body[0]["message"], named);
    }
    // Through the admin endpoint, by its snake_case name.
    let faults: SageFaults =
        serde_json::from_value(serde_json::json!({"concurrent_limit": "requests"}))
            .expect("the faults JSON");
    assert_eq!(faults.concurrent_limit, ConcurrentLimit::Requests);
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
        async move { send(client.get(url).bearer_auth(t)).await }
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
    let anonymous = send(client.get(format!("{}/services/data/v64.0/limits", sim.url()))).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sim.stats().limits_requests, 2);
}

#[tokio::test]
async fn truncated_bodies_are_cut_in_the_middle() {
    let (sim, client, t) = session(faulty(
        50,
        SageFaults {
            truncate_rate: 1.0,
            ..SageFaults::default()
        },
    ))
    .await;
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
    let (sim, client) = spawn_faulty(
        5,
        SageFaults {
            latency_ms: 150,
            ..SageFaults::default()
        },
    )
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
