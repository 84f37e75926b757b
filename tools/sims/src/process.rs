//! What the two simulator binaries share: checking their flags' rates, logging to stderr,
//! binding the listen address, announcing the URL on stdout, waiting for SIGTERM or Ctrl-C, and
//! shutting down gracefully ([`run`]). Scripts parse the one stdout line, so nothing else goes
//! there.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::oomnitza::OomnitzaSim;
use crate::sage::SageSim;

/// A running simulator as [`run`] serves it: the URL it announces, and its graceful shutdown.
pub trait Simulator {
    /// The base URL clients reach it by.
    fn url(&self) -> String;
    /// Shuts down gracefully and waits for in-flight requests to finish.
    fn shutdown(self) -> impl Future<Output = std::io::Result<()>>;
}

impl Simulator for OomnitzaSim {
    fn url(&self) -> String {
        OomnitzaSim::url(self)
    }

    fn shutdown(self) -> impl Future<Output = std::io::Result<()>> {
        OomnitzaSim::shutdown(self)
    }
}

impl Simulator for SageSim {
    fn url(&self) -> String {
        SageSim::url(self)
    }

    fn shutdown(self) -> impl Future<Output = std::io::Result<()>> {
        SageSim::shutdown(self)
    }
}

/// Refuses a share flag (`--transient-failure-rate`...) outside 0..=1.
pub fn ensure_rate(flag: &str, rate: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&rate),
        "{flag} must be between 0 and 1, not {rate}"
    );
    Ok(())
}

/// A simulator binary's life once its flags are checked: logs to stderr, binds `listen`, starts
/// the simulator (`name`, for errors) on it with `start`, announces its URL as the only stdout
/// line, serves until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn run<S, F>(
    listen: SocketAddr,
    name: &str,
    start: impl FnOnce(TcpListener) -> F,
) -> anyhow::Result<()>
where
    S: Simulator,
    F: Future<Output = std::io::Result<S>>,
{
    init_tracing();
    let listener = bind(listen).await?;
    let sim = start(listener)
        .await
        .with_context(|| format!("starting {name}"))?;
    serve_until_stopped(&sim.url()).await?;
    sim.shutdown().await.context("shutting the server down")
}

/// Logs with `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Prints `listening on <url>` as the only stdout line, and flushes it.
fn announce(url: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {url}")?;
    out.flush()
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// Binds the address a simulator listens on (port 0 picks a free port).
async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))
}

/// Announces `url` as the only stdout line, then waits for SIGTERM or Ctrl-C: once this returns,
/// the simulator should shut down.
async fn serve_until_stopped(url: &str) -> anyhow::Result<()> {
    announce(url).context("writing the listening line to stdout")?;
    shutdown_signal()
        .await
        .context("waiting for SIGTERM or Ctrl-C")?;
    tracing::info!("shutting down");
    Ok(())
}
