//! Faults.

use super::*;

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let faults = OomnitzaFaults {
        rate_limit_per_sec: Some(3),
        retry_after_secs: Some(7),
        ..OomnitzaFaults::default()
    };
    let (sim, client) = spawn_faulty(faults).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = api_get(&client, &sim.url(), "/api/v3/users").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(header(&response, "retry-after"), Some("7"));
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    assert_eq!(sim.stats().requests_429, 3);
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(users_status(&client, &sim.url()).await, StatusCode::OK);
}

#[tokio::test]
async fn a_429_carries_retry_after_only_when_the_faults_give_one() {
    let faults = OomnitzaFaults {
        rate_limit_per_sec: Some(0),
        ..OomnitzaFaults::default()
    };
    let (sim, client) = spawn_faulty(faults).await;
    let response = api_get(&client, &sim.url(), "/api/v3/users").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), None);
}

#[tokio::test]
async fn transient_failures_and_outages_answer_503() {
    let faults = OomnitzaFaults {
        transient_failure_rate: 1.0,
        ..OomnitzaFaults::default()
    };
    let (sim, client) = spawn_faulty(faults).await;
    let response = post(&client, &sim.url(), &batch("p", vec![record(1)])).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(sim.users().is_empty());

    sim.set_faults(OomnitzaFaults {
        transient_failure_rate: 0.3,
        ..OomnitzaFaults::default()
    });
    let mut failures = 0;
    for _ in 0..200 {
        if users_status(&client, &sim.url()).await == StatusCode::SERVICE_UNAVAILABLE {
            failures += 1;
        }
    }
    assert!((30..90).contains(&failures), "{failures} of 200");

    sim.set_faults(OomnitzaFaults {
        outage_for_ms: Some(300),
        ..OomnitzaFaults::default()
    });
    assert_eq!(
        users_status(&client, &sim.url()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(users_status(&client, &sim.url()).await, StatusCode::OK);
}

#[tokio::test]
async fn latency_applies_and_concurrent_requests_are_tracked() {
    let faults = OomnitzaFaults {
        latency_ms: 200,
        ..OomnitzaFaults::default()
    };
    let (sim, client) = spawn_faulty(faults).await;
    let started = Instant::now();
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let (client, url) = (client.clone(), sim.url());
            tokio::spawn(async move { users_status(&client, &url).await })
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

#[tokio::test]
async fn failing_portion_reads_answer_503_and_nothing_else_does() {
    let faults = OomnitzaFaults {
        portion_reads_failing: true,
        ..OomnitzaFaults::default()
    };
    let (sim, client) = spawn_faulty(faults).await;
    let url = sim.url();
    post_accepted(&client, &url, &batch("p", vec![record(1)])).await;
    let read = api_get(&client, &url, "/api/v3/bulk/p").await;
    assert_eq!(read.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(users_status(&client, &url).await, StatusCode::OK);
    assert_eq!(
        counts(&sim, &client, "p").await["added"],
        1,
        "the run log answers"
    );
    assert_eq!(finalize(&client, &url, "p").await.status(), StatusCode::OK);
    sim.set_faults(OomnitzaFaults::default());
    let read = json(api_get(&client, &url, "/api/v3/bulk/p").await).await;
    assert_eq!(read["finalized"], true);
}
