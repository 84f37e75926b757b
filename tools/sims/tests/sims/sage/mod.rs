//! The Sage People simulator: OAuth grants, paging, the API's auth, quota and headers, faults,
//! and the admin endpoints. What the areas share is here.

mod admin;
mod api;
mod faults;
mod leavers;
mod oauth;
mod paging;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::http::{Admin, assert_stopped, header, json, send};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use peoplesync_sims::generate::{self, worker_id};
use peoplesync_sims::sage::{EndStyle, PageSize, SageConfig, SageFaults, SageSim};
use reqwest::Method;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const EMPLOYEES: &str = "/services/apexrest/spapi/v4/employees";
const TEST_PUBLIC_KEY: &str = include_str!("../../../testdata/jwt-test-key.pub.pem");
const TEST_PRIVATE_KEY: &[u8] = include_bytes!("../../../testdata/jwt-test-key.pem");
const OTHER_PRIVATE_KEY: &[u8] = include_bytes!("../../../testdata/jwt-other-key.pem");
/// The client-credentials grant of the default connected app.
const CLIENT_CREDENTIALS: [(&str, &str); 3] = [
    ("grant_type", "client_credentials"),
    ("client_id", "sim-client"),
    ("client_secret", "sim-secret"),
];

fn config(workers: u64) -> SageConfig {
    SageConfig {
        workers,
        ..SageConfig::default()
    }
}

/// An org of `workers` workers served in pages of `page_size`.
fn paged(workers: u64, page_size: PageSize) -> SageConfig {
    SageConfig {
        page_size,
        ..config(workers)
    }
}

async fn spawn(config: SageConfig) -> (SageSim, Client) {
    let sim = SageSim::spawn(config).await.expect("sim starts");
    (sim, Client::new())
}

/// An org of `workers` workers whose API quota is `api_quota` calls.
fn with_quota(workers: u64, api_quota: u64) -> SageConfig {
    SageConfig {
        api_quota,
        ..config(workers)
    }
}

/// An org of `workers` workers with `faults` on from the start.
fn faulty(workers: u64, faults: SageFaults) -> SageConfig {
    SageConfig {
        faults,
        ..config(workers)
    }
}

/// A simulator of `workers` workers with `faults` on from the start, and a client.
async fn spawn_faulty(workers: u64, faults: SageFaults) -> (SageSim, Client) {
    spawn(faulty(workers, faults)).await
}

/// A simulator of `config`, a client, and an access token of the default connected app.
async fn session(config: SageConfig) -> (SageSim, Client, String) {
    let (sim, client) = spawn(config).await;
    let t = token(&client, &sim.url()).await;
    (sim, client, t)
}

async fn token_response(client: &Client, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client
        .post(format!("{url}/services/oauth2/token"))
        .form(form)
        .send()
        .await
        .expect("token request")
}

async fn token(client: &Client, url: &str) -> String {
    let body: Value = token_response(client, url, &CLIENT_CREDENTIALS)
        .await
        .json()
        .await
        .expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

async fn get(client: &Client, url: &str, token: &str, query: &[(&str, &str)]) -> reqwest::Response {
    client
        .get(format!("{url}{EMPLOYEES}"))
        .bearer_auth(token)
        .header("Accept", "application/json")
        .query(query)
        .send()
        .await
        .expect("employees request")
}

/// The status of a list request with `token` and `query`.
async fn status(client: &Client, url: &str, token: &str, query: &[(&str, &str)]) -> StatusCode {
    get(client, url, token, query).await.status()
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
