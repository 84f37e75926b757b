//! The leavers webhook: after a run that handled leavers is finalized, the replica that
//! finalized it ([`crate::leavers::finalized`]) posts the run's leavers report (the same list `syncctl leavers` shows) as
//! JSON to `PEOPLESYNC_LEAVERS_WEBHOOK_URL`, so a ticketing or chat tool can open a recovery
//! task per leaver. With `PEOPLESYNC_LEAVERS_WEBHOOK_SECRET` (or `_FILE`) the body is signed:
//! header `X-Peoplesync-Signature: sha256=<hex HMAC-SHA256 of the body>`. Failures are
//! retried with backoff (transport errors, 408, 429, 5xx) and then logged; neither the secret
//! nor the URL's path or query (chat webhooks keep their token there) is ever logged.

use std::time::Duration;

use peoplesync_bus::leavers::LeaverEntry;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The webhook's URL.
pub const URL_ENV: &str = "PEOPLESYNC_LEAVERS_WEBHOOK_URL";
/// The signing secret (also `..._FILE`).
pub const SECRET_ENV: &str = "PEOPLESYNC_LEAVERS_WEBHOOK_SECRET";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Peoplesync-Signature";

/// Attempts per post.
const ATTEMPTS: usize = 6;
/// Timeout of one attempt.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The body posted.
#[derive(Debug, Serialize)]
pub struct LeaversReport<'a> {
    /// Always `"leavers"`.
    pub kind: &'static str,
    /// The integration.
    pub integration: &'a str,
    /// The run.
    pub run_id: &'a str,
    /// Leavers handled.
    pub count: usize,
    /// Leavers holding at least one asset.
    pub with_assets: usize,
    /// The leavers.
    pub leavers: &'a [LeaverEntry],
}

/// A configured webhook.
#[derive(Clone)]
pub struct LeaversWebhook {
    url: url::Url,
    secret: Option<SecretString>,
    http: reqwest::Client,
    /// The posts in progress, which a stop waits for a moment and then names.
    posts: tokio_util::task::TaskTracker,
    /// The runs (integration, run id) whose report is being posted.
    posting: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<(String, String)>>>,
}

impl std::fmt::Debug for LeaversWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaversWebhook")
            .field("host", &self.host())
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl LeaversWebhook {
    /// The webhook the environment configures, if any.
    pub fn from_env() -> anyhow::Result<Option<LeaversWebhook>> {
        let Some(url) = std::env::var(URL_ENV).ok().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let url = url::Url::parse(url.trim()).map_err(|e| {
            anyhow::anyhow!("{URL_ENV} is not a URL ({e}); give an http(s) URL or unset it")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("{URL_ENV} must be an http or https URL");
        }
        let secret = peoplesync_runtime::secrets::env_or_file(SECRET_ENV)?;
        // The clients' transport: a connect timeout within the whole, and peoplesync's
        // user agent, so a receiver can tell the report from other traffic.
        let http = peoplesync_retry::transport::client_builder(&[], TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("setting up the leavers webhook client: {e}"))?;
        Ok(Some(LeaversWebhook::new(url, secret, http)))
    }

    fn new(url: url::Url, secret: Option<SecretString>, http: reqwest::Client) -> LeaversWebhook {
        LeaversWebhook {
            url,
            secret,
            http,
            posts: tokio_util::task::TaskTracker::new(),
            posting: std::sync::Arc::default(),
        }
    }

    /// The URL's host, the only part of it that is logged.
    fn host(&self) -> String {
        self.url.host_str().unwrap_or("?").to_owned()
    }

    /// Posts `run_id`'s report `entries` in a task of its own, which [`LeaversWebhook::stop`]
    /// waits for.
    pub fn spawn_post(&self, integration: &str, run_id: &str, entries: Vec<LeaverEntry>) {
        let webhook = self.clone();
        let name = (integration.to_owned(), run_id.to_owned());
        self.posting_set().insert(name.clone());
        self.posts.spawn(async move {
            webhook.post_run(&name.0, &name.1, &entries).await;
            webhook.posting_set().remove(&name);
        });
    }

    fn posting_set(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<(String, String)>> {
        self.posting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// At the loader's stop: waits up to `within` for the posts in progress (each may still be
    /// retrying for minutes), then names, in a warning each, the reports it leaves unposted, so
    /// none is lost without a word: `syncctl leavers --run <run>` lists what it held.
    pub async fn stop(&self, within: std::time::Duration) {
        self.posts.close();
        if tokio::time::timeout(within, self.posts.wait())
            .await
            .is_ok()
        {
            return;
        }
        for (integration, run_id) in self.posting_set().iter() {
            tracing::warn!(integration, run_id, host = %self.host(),
                "the leavers report of run {run_id} was not posted: the loader stopped while \
                 posting it; `syncctl leavers --run {run_id}` lists it");
        }
    }

    /// Posts `run_id`'s report `entries`; logs what happened (never fails the run).
    pub async fn post_run(&self, integration: &str, run_id: &str, entries: &[LeaverEntry]) {
        if entries.is_empty() {
            return;
        }
        let report = LeaversReport {
            kind: "leavers",
            integration,
            run_id,
            count: entries.len(),
            with_assets: entries.iter().filter(|e| !e.assets.is_empty()).count(),
            leavers: entries,
        };
        match self.post(&report).await {
            Ok(status) => tracing::info!(integration, run_id, host = %self.host(), status,
                leavers = report.count, "leavers webhook posted"),
            Err(reason) => tracing::warn!(integration, run_id, host = %self.host(), %reason,
                "the leavers webhook could not be posted; the list stays available with syncctl leavers"),
        }
    }

    /// Posts `report`, retrying transient failures; the final status, or why it failed.
    pub async fn post(&self, report: &LeaversReport<'_>) -> Result<u16, String> {
        let body = serde_json::to_vec(report).map_err(|e| e.to_string())?;
        let signature = self.secret.as_ref().map(|s| {
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(s.expose_secret().as_bytes(), &body))
            )
        });
        let policy = peoplesync_retry::RetryPolicy {
            max_attempts: ATTEMPTS,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        };
        let (body, signature) = (&body, &signature);
        peoplesync_retry::retry(&policy, "leavers webhook", || async move {
            let mut request = self
                .http
                .post(self.url.clone())
                .header("Content-Type", "application/json")
                .body(body.clone());
            if let Some(signature) = signature {
                request = request.header(SIGNATURE_HEADER, signature);
            }
            // The error's text can hold the URL: only its kind is kept.
            match request.send().await {
                Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
                Ok(response) => {
                    let status = response.status().as_u16();
                    Err(Failure {
                        text: format!("the webhook answered {status}"),
                        transient: matches!(status, 408 | 429 | 500..=599),
                    })
                }
                Err(err) => Err(Failure {
                    text: if err.is_timeout() {
                        "timed out"
                    } else if err.is_connect() {
                        "cannot connect"
                    } else {
                        "the request failed"
                    }
                    .to_owned(),
                    transient: true,
                }),
            }
        })
        .await
        .map_err(|gave_up| match gave_up.budget_spent {
            true => format!("{} ({} attempts)", gave_up.error, gave_up.attempts),
            false => gave_up.error.to_string(),
        })
    }
}

/// Why one post failed, without the URL.
#[derive(Debug)]
struct Failure {
    text: String,
    transient: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl peoplesync_retry::Transient for Failure {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_the_secret_nor_the_urls_path_is_shown() {
        let webhook = LeaversWebhook::new(
            url::Url::parse("https://hooks.example.com/services/T0/B0/PATHTOKEN?key=QUERYKEY")
                .unwrap(),
            Some(SecretString::from("s3cret-value")),
            reqwest::Client::new(),
        );
        let shown = format!("{webhook:?}");
        assert!(shown.contains("hooks.example.com"), "{shown}");
        for hidden in ["PATHTOKEN", "QUERYKEY", "s3cret-value"] {
            assert!(!shown.contains(hidden), "{shown}");
        }
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
