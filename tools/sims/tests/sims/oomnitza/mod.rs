//! The Oomnitza simulator: auth, bulk loading, reading users, faults and the admin endpoints.
//! What the areas share is here.

mod admin;
mod auth;
mod bulk;
mod faults;
mod offboard;
mod users;

use std::time::{Duration, Instant};

use crate::http::{Admin, assert_stopped, header, json, send};
use peoplesync_sims::generate::worker_id;
use peoplesync_sims::oomnitza::{OomnitzaConfig, OomnitzaFaults, OomnitzaSim, SAGE_USER_ID_FIELD};
use reqwest::Method;
use reqwest::{Client, RequestBuilder, StatusCode};
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

/// A simulator with `faults` on from the start, and a client.
pub(super) async fn spawn_faulty(faults: OomnitzaFaults) -> (OomnitzaSim, Client) {
    spawn(OomnitzaConfig {
        faults,
        ..OomnitzaConfig::default()
    })
    .await
}

pub(super) fn record(n: u32) -> Value {
    let email = format!("user{n}@example.com");
    json!({
        "USER": email, "EMAIL": email, "FIRST_NAME": format!("First{n}"), "LAST_NAME": "Last",
        "PERMISSIONS_ID": "25", SAGE_USER_ID_FIELD: worker_id(u64::from(n)),
    })
}

pub(super) fn batch(portion: &str, records: Vec<Value>) -> Value {
    json!({
        "connector_version": "0.1.0", "connector_name": "sage-people", "portion": portion,
        "data_type": "users", "sync_field": ["EMAIL"], "insert_only": false, "update_only": false,
        "test_run": false, "error": null, "records": records,
    })
}

/// A `method` request to `{url}{path}` carrying the API token.
pub(super) fn api(client: &Client, method: Method, url: &str, path: &str) -> RequestBuilder {
    client
        .request(method, format!("{url}{path}"))
        .header("Authorization2", TOKEN)
}

/// `POST {path}` with the API token and `body` as JSON.
async fn api_post(client: &Client, url: &str, path: &str, body: &Value) -> reqwest::Response {
    send(api(client, Method::POST, url, path).json(body)).await
}

/// `GET /api/v3/users` with `query`, with the API token.
pub(super) async fn list_users(
    client: &Client,
    url: &str,
    query: &[(&str, &str)],
) -> reqwest::Response {
    send(api(client, Method::GET, url, "/api/v3/users").query(query)).await
}

/// `POST /api/request_token` with the simulator's login and `password`.
pub(super) async fn request_token(client: &Client, url: &str, password: &str) -> reqwest::Response {
    let form = [("login", "admin"), ("password", password)];
    send(client.post(format!("{url}/api/request_token")).form(&form)).await
}

/// `POST /api/v3/bulk`.
pub(super) async fn post(client: &Client, url: &str, body: &Value) -> reqwest::Response {
    api_post(client, url, "/api/v3/bulk", body).await
}

/// `POST /api/v3/bulk`, which the simulator must accept (`200`).
pub(super) async fn post_accepted(client: &Client, url: &str, body: &Value) {
    assert_eq!(post(client, url, body).await.status(), StatusCode::OK);
}

/// `POST /api/v3/bulk/{portion}/finalize`.
pub(super) async fn finalize(client: &Client, url: &str, portion: &str) -> reqwest::Response {
    let path = format!("/api/v3/bulk/{portion}/finalize");
    api_post(client, url, &path, &json!({})).await
}

pub(super) async fn api_get(client: &Client, url: &str, path: &str) -> reqwest::Response {
    send(api(client, Method::GET, url, path)).await
}

/// The status of `GET /api/v3/users` with the API token.
pub(super) async fn users_status(client: &Client, url: &str) -> StatusCode {
    api_get(client, url, "/api/v3/users").await.status()
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

/// The fields `keys` of `value`, in order, to compare at once.
pub(super) fn fields<const N: usize>(value: &Value, keys: [&str; N]) -> [Value; N] {
    keys.map(|key| value[key].clone())
}

/// The run log's counts, after waiting until nothing of the portion is processing.
pub(super) async fn counts(sim: &OomnitzaSim, client: &Client, portion: &str) -> Value {
    sim.wait_portion_idle(portion).await;
    run_log(client, &sim.url(), portion).await["objects"].clone()
}
