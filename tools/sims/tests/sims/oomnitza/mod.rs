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
use peoplesync_sims::oomnitza::{OomnitzaConfig, OomnitzaFaults, OomnitzaSim, SAGE_USER_ID_FIELD};
use reqwest::Method;
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

/// `POST /api/v3/bulk/{portion}/finalize`.
pub(super) async fn finalize(client: &Client, url: &str, portion: &str) -> reqwest::Response {
    client
        .post(format!("{url}/api/v3/bulk/{portion}/finalize"))
        .header("Authorization2", TOKEN)
        .json(&json!({}))
        .send()
        .await
        .expect("finalize request")
}

pub(super) async fn api_get(client: &Client, url: &str, path: &str) -> reqwest::Response {
    send(
        client
            .get(format!("{url}{path}"))
            .header("Authorization2", TOKEN),
    )
    .await
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
