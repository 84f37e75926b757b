//! The Oomnitza simulator's offboarding calls: a user's assets, `PATCH` and `DELETE` of a user
//! by id or username, assets assigned through the admin API, and the configurable refusal to
//! delete a user who still holds assets.

use peoplesync_sims::oomnitza::{
    OomnitzaBehavior, OomnitzaConfig, OomnitzaSim, SAGE_USER_ID_FIELD,
};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use super::{Admin, Method, TOKEN, api_get, json, spawn, spawn_default};

/// A user as `insert_user` takes it: field id → value, with `_id`.
fn user(pairs: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect()
}

fn ada() -> serde_json::Map<String, Value> {
    user(&[
        ("_id", "u-ada"),
        ("USER", "ada@example.com"),
        ("EMAIL", "ada@example.com"),
        ("PERMISSIONS_ID", "25"),
        (SAGE_USER_ID_FIELD, "a2G1"),
    ])
}

async fn assign(client: &Client, url: &str, asset: Value) -> reqwest::Response {
    Admin::new(client, url)
        .send(Method::POST, "assets", Some(&asset))
        .await
}

/// Ada, holding the asset `EQ-1`.
async fn ada_holding_an_asset(sim: &OomnitzaSim, client: &Client) {
    sim.insert_user(ada());
    let asset = json!({"equipment_id": "EQ-1", "assigned_to": "u-ada"});
    assign(client, &sim.url(), asset).await;
}

/// `method` on `url` with the API token, with `body` as JSON when given.
async fn call(
    client: &Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = client.request(method, url).header("Authorization2", TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn a_users_assets_are_listed_by_id_or_username() {
    let (sim, client) = spawn_default().await;
    sim.insert_user(ada());
    for (id, serial) in [("EQ-1", "C02X"), ("EQ-2", "F9K7")] {
        let response = assign(
            &client,
            &sim.url(),
            json!({"equipment_id": id, "model": "MacBook Pro", "serial_number": serial, "assigned_to": "ada@example.com"}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    assign(&client, &sim.url(), json!({"equipment_id": "EQ-3"})).await;
    let by_id = json(api_get(&client, &sim.url(), "/api/v3/users/u-ada/assets").await).await;
    let ids: Vec<&str> = by_id
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["equipment_id"].as_str())
        .collect();
    assert_eq!(ids, ["EQ-1", "EQ-2"]);
    assert_eq!(by_id[1]["serial_number"], "F9K7");
    let by_name =
        json(api_get(&client, &sim.url(), "/api/v3/users/ada@example.com/assets").await).await;
    assert_eq!(by_name, by_id);
    let unknown = api_get(&client, &sim.url(), "/api/v3/users/nobody/assets").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let unassigned = assign(
        &client,
        &sim.url(),
        json!({"equipment_id": "EQ-9", "assigned_to": "nobody"}),
    )
    .await;
    assert_eq!(unassigned.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn patch_sets_fields_and_the_user_reads_back_with_them() {
    let (sim, client) = spawn_default().await;
    sim.insert_user(ada());
    let response = call(
        &client,
        reqwest::Method::PATCH,
        format!("{}/api/v3/users/u-ada", sim.url()),
        Some(json!({"PERMISSIONS_ID": "10", "POSITION": "Left"})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let user = json(api_get(&client, &sim.url(), "/api/v3/users/u-ada").await).await;
    assert_eq!(
        (user["role"].as_u64(), user["position"].as_str()),
        (Some(10), Some("Left"))
    );
    let found = json(
        api_get(
            &client,
            &sim.url(),
            "/api/v3/users?filter=role%20eq%20%2710%27",
        )
        .await,
    )
    .await;
    assert_eq!(
        found.as_array().map(Vec::len),
        Some(1),
        "the index follows the patch"
    );
    // Not an object, an unknown field id, an unknown role.
    for (patch, status) in [
        (json!(["not", "an", "object"]), StatusCode::BAD_REQUEST),
        (json!({"NO_SUCH_FIELD": "x"}), StatusCode::BAD_REQUEST),
        (
            json!({"PERMISSIONS_ID": "999"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let refused = call(
            &client,
            reqwest::Method::PATCH,
            format!("{}/api/v3/users/u-ada", sim.url()),
            Some(patch.clone()),
        )
        .await;
        assert_eq!(refused.status(), status, "{patch}");
    }
    let user = json(api_get(&client, &sim.url(), "/api/v3/users/u-ada").await).await;
    assert_eq!(user["role"], 10, "a refused patch changes nothing");
    let unauthenticated = client
        .patch(format!("{}/api/v3/users/u-ada", sim.url()))
        .json(&json!({"POSITION": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn delete_removes_the_user_and_frees_their_assets_and_unique_values() {
    let (sim, client) = spawn_default().await;
    ada_holding_an_asset(&sim, &client).await;
    sim.insert_user(user(&[
        ("_id", "u-bob"),
        ("USER", "bob@example.com"),
        ("EMAIL", "bob@example.com"),
        (SAGE_USER_ID_FIELD, "a2G2"),
    ]));
    let url = format!("{}/api/v3/users/u-ada", sim.url());
    let deleted = call(&client, reqwest::Method::DELETE, url.clone(), None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = call(&client, reqwest::Method::DELETE, url, None).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let users = sim.users();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["_id"], "u-bob");
    let bob = json(
        api_get(
            &client,
            &sim.url(),
            "/api/v3/users?filter=email%20eq%20%27bob%40example.com%27",
        )
        .await,
    )
    .await;
    assert_eq!(
        bob[0]["user_id"], "u-bob",
        "indexes still find the users after it"
    );
    let assets = json(
        client
            .get(format!("{}/_admin/assets", sim.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(assets[0]["assigned_to"], Value::Null);
}

#[tokio::test]
async fn deleting_a_user_holding_assets_can_be_refused() {
    let (sim, client) = spawn(OomnitzaConfig {
        behavior: OomnitzaBehavior {
            refuse_delete_with_assets: true,
            ..OomnitzaBehavior::default()
        },
        ..OomnitzaConfig::default()
    })
    .await;
    ada_holding_an_asset(&sim, &client).await;
    let url = format!("{}/api/v3/users/u-ada", sim.url());
    let refused = call(&client, reqwest::Method::DELETE, url, None).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(sim.users().len(), 1);
}
