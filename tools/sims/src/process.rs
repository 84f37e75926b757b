//! What the two simulator binaries share: logging to stderr, binding the listen address,
//! announcing the URL on stdout, and waiting for SIGTERM or Ctrl-C. Scripts parse the one stdout
//! line, so nothing else goes there.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

/// Logs with `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
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
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))
}

/// Announces `url` as the only stdout line, then waits for SIGTERM or Ctrl-C: once this returns,
/// the simulator should shut down.
pub async fn serve_until_stopped(url: &str) -> anyhow::Result<()> {
    announce(url).context("writing the listening line to stdout")?;
    shutdown_signal()
        .await
        .context("waiting for SIGTERM or Ctrl-C")?;
    tracing::info!("shutting down");
    Ok(())
}
