//! What both simulators' tests share: a simulator's `/_admin` API over HTTP, and reading a JSON
//! body (a body that is not JSON fails the test, showing the text it was).

use std::time::Duration;

use reqwest::{Client, Method, Response};
use serde_json::Value;

/// `method` on `{url}/_admin/{path}` (the admin API takes no credentials), with `body` as JSON
/// when given.
pub async fn admin(
    client: &Client,
    method: Method,
    url: &str,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let mut request = client.request(method, format!("{url}/_admin/{path}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("admin request")
}

/// `GET {url}/_admin/{path}`, as JSON.
pub async fn admin_get(client: &Client, url: &str, path: &str) -> Value {
    json(admin(client, Method::GET, url, path, None).await).await
}

/// The body as JSON.
pub async fn json(response: Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Once the simulator that served `url` is dropped, its server stops answering.
pub async fn assert_stopped(url: &str) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        Client::new()
            .get(format!("{url}/_admin/stats"))
            .send()
            .await
            .is_err()
    );
}
