//! Test-only helpers shared by every crate's tests: a real `nats-server` per test on a free
//! port with a temporary JetStream store (killed on drop), a three-node JetStream cluster of
//! them, the path of the workspace's service binaries, and polling until a condition holds.
//! With feature `stack`, [`stack`] is the one harness of the end-to-end tests: NATS, both
//! simulators (from `peoplesync-sims`, in-process on port 0) and the service binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod nats;
mod process;
#[cfg(feature = "stack")]
pub mod stack;

pub use cluster::NatsCluster;
pub use nats::NatsServer;
pub use process::{ChildService, PROCESS_LIMIT, bin_path, output_within, workspace_root};

use std::time::Duration;

/// A TCP port free on 127.0.0.1 now (for a child service that must listen on a known port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_for_or(what, timeout, check, || async {}).await
}

/// [`wait_for`], running `before_panic` (to print what a failure needs explained, say) when
/// the wait times out.
pub async fn wait_for_or<T, F, Fut, P, PFut>(
    what: &str,
    timeout: Duration,
    mut check: F,
    before_panic: P,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
    P: FnOnce() -> PFut,
    PFut: std::future::Future<Output = ()>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // A check that hangs (a request to a server that never answers) is given up 30 s after
        // the deadline, so the wait still ends; a merely slow one keeps its answer.
        let attempt = tokio::time::timeout_at(deadline + Duration::from_secs(30), check()).await;
        if let Ok(Some(value)) = attempt {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            let hung = if attempt.is_err() {
                " (the last check did not answer within 30 s after the deadline)"
            } else {
                ""
            };
            before_panic().await;
            panic!("timed out after {timeout:?} waiting for {what}{hung}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
