//! The running HTTP server behind a simulator handle.
//!
//! Both simulators serve an axum router on a listener they are given; the handle remembers the
//! address, and dropping it (or calling `stop`) starts a graceful shutdown: no new connections,
//! in-flight requests finish, idle keep-alive connections close.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A served router; shuts down when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Serves `app` on `listener` in a background task.
    pub(crate) fn start(listener: TcpListener, app: Router) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // The peer address is available to handlers (Oomnitza's run log shows it).
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                // An error only means the handle was dropped: shut down either way.
                let _ = rx.await;
            })
            .await
        });
        Ok(Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The base URL of the server; see [`url_of`].
    pub(crate) fn url(&self) -> String {
        url_of(self.addr)
    }

    /// Shuts down gracefully and waits until the last connection has closed.
    pub(crate) async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

/// `http://host:port` for a bound address, with an unspecified address (0.0.0.0, ::) shown as
/// 127.0.0.1 so that the URL is usable by clients on the same machine.
pub(crate) fn url_of(mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    format!("http://{addr}")
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
