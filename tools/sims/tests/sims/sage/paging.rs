//! Paging.

use super::*;

#[tokio::test]
async fn paging_returns_every_worker_once_in_id_order_with_varying_pages() {
    let (sim, client, t) = session(paged(237, PageSize::Varying { min: 10, max: 40 })).await;
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
    let (sim, client, t) = session(SageConfig {
        seed: 7,
        ..config(20)
    })
    .await;
    let body = json(get(&client, &sim.url(), &t, &[]).await).await;
    assert_eq!(body["version"], "4.8");
    assert_eq!(body["data"][0], generate::worker(7, 0));
    assert_eq!(body["data"][3], generate::worker(7, 3));
}

#[tokio::test]
async fn fixed_page_size_and_empty_data_end_style() {
    let (sim, client, t) = session(SageConfig {
        end_style: EndStyle::EmptyData,
        ..paged(10, PageSize::Fixed(4))
    })
    .await;
    let (ids, sizes) = walk(&client, &sim.url(), &t, None).await;
    assert_eq!(ids.len(), 10);
    assert_eq!(sizes, [4, 4, 2]);
    let end = get(&client, &sim.url(), &t, &[("marker", &worker_id(9))]).await;
    assert_eq!(end.status(), StatusCode::OK);
    assert_eq!(json(end).await, json!({"version": "4.8", "data": []}));
}

#[tokio::test]
async fn rereading_a_page_with_the_same_marker_gives_the_same_page() {
    let (sim, client, t) = session(config(500)).await;
    let marker = worker_id(123);
    let a = json(get(&client, &sim.url(), &t, &[("marker", &marker)]).await).await;
    let b = json(get(&client, &sim.url(), &t, &[("marker", &marker)]).await).await;
    assert_eq!(a, b);
    assert_eq!(a["data"][0]["id"], worker_id(124).as_str());
}

#[tokio::test]
async fn a_large_org_is_served_lazily_deep_into_the_list() {
    let (sim, client, t) = session(paged(1_000_000, PageSize::Fixed(400))).await;
    let first = json(get(&client, &sim.url(), &t, &[]).await).await;
    assert_eq!(first["data"].as_array().map(Vec::len), Some(400));
    let deep = json(get(&client, &sim.url(), &t, &[("marker", &worker_id(999_990))]).await).await;
    let data = deep["data"].as_array().expect("data");
    assert_eq!(data.len(), 9);
    assert_eq!(data[8]["id"], worker_id(999_999).as_str());
    let end = get(&client, &sim.url(), &t, &[("marker", &worker_id(999_999))]).await;
    assert_eq!(end.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.stats().workers, 1_000_000);
}

#[tokio::test]
async fn garbled_or_unknown_marker_gives_invalid_marker() {
    let (sim, client, t) = session(config(10)).await;
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
    let (sim, client, t) = session(faulty(
        10,
        SageFaults {
            reject_markers: true,
            ..SageFaults::default()
        },
    ))
    .await;
    assert_eq!(status(&client, &sim.url(), &t, &[]).await, StatusCode::OK);
    let response = get(&client, &sim.url(), &t, &[("marker", &worker_id(2))]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    error_envelope("REQUEST_ERROR", "INVALID_MARKER", "marker")(&json(response).await);
    sim.set_faults(SageFaults::default());
    assert_eq!(
        status(&client, &sim.url(), &t, &[("marker", &worker_id(2))]).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn marker_of_a_removed_worker_still_continues_the_list() {
    let (sim, client, t) = session(paged(10, PageSize::Fixed(3))).await;
    sim.remove_worker(&worker_id(5));
    let page = json(get(&client, &sim.url(), &t, &[("marker", &worker_id(5))]).await).await;
    assert_eq!(page["data"][0]["id"], worker_id(6).as_str());
    let (ids, _) = walk(&client, &sim.url(), &t, None).await;
    assert_eq!(ids.len(), 9);
    assert!(!ids.contains(&worker_id(5)));
    let one = send(
        client
            .get(format!("{}{EMPLOYEES}/{}", sim.url(), worker_id(5)))
            .bearer_auth(&t)
            .header("Accept", "application/json"),
    )
    .await;
    assert_eq!(one.status(), StatusCode::NOT_FOUND);
    assert_eq!(sim.stats().workers, 9);
}

#[tokio::test]
async fn one_employee_is_served_as_one_object_in_data_or_404() {
    let (sim, client, t) = session(config(10)).await;
    let read = |id: String| {
        let client = client.clone();
        let url = format!("{}{EMPLOYEES}/{id}", sim.url());
        let t = t.clone();
        async move {
            send(
                client
                    .get(url)
                    .bearer_auth(t)
                    .header("Accept", "application/json"),
            )
            .await
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
    let (sim, client, t) = session(paged(300, PageSize::Fixed(25))).await;
    let filter = "workAddress.country eq 'France' and currentEmployment.active eq true or hrDepartment eq 'R&D'";
    let (ids, _) = walk(&client, &sim.url(), &t, Some(filter)).await;
    let expected: Vec<String> = (0..300)
        .map(|i| generate::worker(42, i))
        .filter(|w| {
            (w["workAddress"]["country"] == "France" && w["currentEmployment"]["active"] == true)
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
    let (sim, client, t) = session(config(10)).await;
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
    let (sim, client, t) = session(config(10)).await;
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
