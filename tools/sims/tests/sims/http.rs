//! What both simulators' tests share: a simulator's `/_admin` API over HTTP, sending a request
//! that must be answered, reading a header, and reading a JSON body (a body that is not JSON
//! fails the test, showing the text it was).

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;

/// A simulator's `/_admin` API (it takes no credentials).
pub struct Admin {
    client: Client,
    url: String,
}

impl Admin {
    /// The admin API of the simulator at `url`.
    pub fn new(client: &Client, url: &str) -> Admin {
        Admin {
            client: client.clone(),
            url: url.to_owned(),
        }
    }

    /// `method` on `/_admin/{path}`, with `body` as JSON when given.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}/_admin/{path}", self.url));
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("admin request")
    }

    /// `GET /_admin/{path}`, as JSON.
    pub async fn get(&self, path: &str) -> Value {
        json(self.send(Method::GET, path, None).await).await
    }
}

/// Sends `request`; a request that gets no answer fails the test.
pub async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("request")
}

/// The value of the response's header `name`, when it is there and is text.
pub fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
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
