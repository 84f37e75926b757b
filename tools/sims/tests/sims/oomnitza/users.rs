//! Reading users.

use super::*;

async fn seeded_users() -> (OomnitzaSim, Client) {
    let (sim, client) = spawn_default().await;
    let mut records: Vec<Value> = (1..=5).map(record).collect();
    records[1]["POSITION"] = json!("Engineer");
    records[2]["PERMISSIONS_ID"] = json!("10");
    post(&client, &sim.url(), &batch("p", records)).await;
    sim.wait_idle().await;
    (sim, client)
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
    let response = list_users(
        &client,
        &sim.url(),
        &[("filter", "email eq 'user2@example.com'")],
    )
    .await;
    assert_eq!(header(&response, "x-total-count"), Some("1"));
    let users = json(response).await;
    let u = &users[0];
    assert_eq!(u["username"], "user2@example.com");
    assert_eq!(u["first_name"], "First2");
    assert_eq!(u["last_name"], "Last");
    assert_eq!(u["position"], "Engineer");
    assert_eq!(
        u["role"], 25,
        "an integer, as the published user schema types it"
    );
    assert_eq!(u[SAGE_USER_ID_FIELD.to_lowercase()], worker_id(2).as_str());
    assert!(u["phone_number"].is_null() && u["address"].is_null());
    assert!(u.get("USER").is_none());
    let id = u["user_id"].as_str().expect("user_id");
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
            emails(list_users(&client, &url, &[("filter", filter)]).await).await,
            expected,
            "{filter}"
        );
    }
}

#[tokio::test]
async fn users_are_sorted_and_paged() {
    let (sim, client) = seeded_users().await;
    let url = sim.url();
    let page = list_users(
        &client,
        &url,
        &[("sortby", "email desc"), ("skip", "1"), ("limit", "2")],
    )
    .await;
    assert_eq!(header(&page, "x-total-count"), Some("5"));
    assert_eq!(
        emails(page).await,
        ["user4@example.com", "user3@example.com"]
    );
    let asc = list_users(&client, &url, &[("sortby", "email asc"), ("limit", "1")]).await;
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
        let response = list_users(&client, &sim.url(), &[query]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query:?}");
        assert!(json(response).await["message"].is_string());
    }
}
