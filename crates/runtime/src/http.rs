//! The operations endpoint every service serves on `PEOPLESYNC_HTTP_LISTEN` (default
//! `127.0.0.1:9090`): `/metrics` (Prometheus text), `/healthz` (the process answers: 200) and
//! `/readyz` (200 when every [`Readiness`] condition holds, 503 naming the ones that do not).
//!
//! Docker health checks, Kubernetes probes and Prometheus scrapes use it; it carries no data
//! and takes no input, so it has no authentication. Bind it to a private interface.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Readiness;

/// The environment variable holding the listen address.
pub const LISTEN_ENV: &str = "PEOPLESYNC_HTTP_LISTEN";

/// The listen address when [`LISTEN_ENV`] is unset: loopback only, so an unconfigured process
/// exposes nothing. Containers set `0.0.0.0:9090`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";

/// How often histogram samples are folded in, so an unscraped process does not grow.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address is not `IP:PORT`.
    #[error("{LISTEN_ENV}={value:?} is not an IP:PORT address (e.g. 0.0.0.0:9090): {source}")]
    BadAddress {
        /// The value given.
        value: String,
        /// Why it did not parse.
        source: std::net::AddrParseError,
    },
    /// The address cannot be bound (in use, or not an address of this host).
    #[error("cannot listen on {addr} for /metrics, /healthz and /readyz ({LISTEN_ENV}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The listen address from [`LISTEN_ENV`], or [`DEFAULT_LISTEN`].
pub fn listen_addr() -> Result<SocketAddr, HttpError> {
    parse_listen(std::env::var(LISTEN_ENV).ok().as_deref())
}

fn parse_listen(value: Option<&str>) -> Result<SocketAddr, HttpError> {
    let value = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_LISTEN);
    value.parse().map_err(|source| HttpError::BadAddress {
        value: value.to_owned(),
        source,
    })
}

/// A running endpoint.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// The address actually bound (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server has stopped (after its shutdown token is cancelled).
    pub async fn stopped(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(err) => Err(std::io::Error::other(err)),
        }
    }
}

/// Serves the endpoint on the address from [`LISTEN_ENV`]; see [`serve`].
pub async fn serve_from_env(
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<HttpServer, HttpError> {
    serve(listen_addr()?, readiness, shutdown).await
}

/// Binds `listen` and serves `/metrics`, `/healthz` and `/readyz` until `shutdown` is cancelled.
/// Installs the metrics recorder if nobody has (a failure only leaves `/metrics` empty-handed).
///
/// Services pass a token they cancel *after* draining, so that probes keep answering while
/// in-flight work finishes. Logs `http listening on ADDR`.
pub async fn serve(
    listen: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<HttpServer, HttpError> {
    if let Err(err) = crate::metrics::install() {
        tracing::warn!(error = %err, "/metrics will answer 503");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: listen,
        source,
    })?;
    tracing::info!(%addr, "http listening on {addr}");
    let app = router(readiness);
    let task = tokio::spawn(async move {
        let upkeep = tokio::spawn(upkeep(shutdown.clone()));
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        upkeep.abort();
        result
    });
    Ok(HttpServer { addr, task })
}

/// The endpoint's routes, for embedding or testing without a socket.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(move || readyz(readiness.clone())))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(readiness: Readiness) -> Response {
    let status = readiness.status();
    let ready = status.is_ready();
    let body = serde_json::json!({
        "ready": ready,
        "not_ready": status.not_ready(),
        "checks": status.conditions,
        "notes": status.notes,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics() -> Response {
    match crate::metrics::handle() {
        Some(handle) => {
            crate::metrics::collect_process();
            handle.run_upkeep();
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the metrics recorder is not installed\n",
        )
            .into_response(),
    }
}

async fn upkeep(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Some(handle) = crate::metrics::handle() {
                    handle.run_upkeep();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_defaults_to_loopback_9090() {
        assert_eq!(
            parse_listen(None).unwrap(),
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(
            parse_listen(Some("  ")).unwrap(),
            "127.0.0.1:9090".parse().unwrap()
        );
    }

    #[test]
    fn listen_address_accepts_ipv4_ipv6_and_port_zero() {
        assert_eq!(parse_listen(Some("0.0.0.0:9090")).unwrap().port(), 9090);
        assert!(parse_listen(Some("[::]:9090")).unwrap().is_ipv6());
        assert_eq!(parse_listen(Some("127.0.0.1:0")).unwrap().port(), 0);
    }

    #[test]
    fn a_bad_listen_address_names_the_variable_and_an_example() {
        let err = parse_listen(Some("localhost:9090"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(LISTEN_ENV), "{err}");
        assert!(err.contains("0.0.0.0:9090"), "{err}");
    }
}
