//! Keeping a background KV watch alive. A JetStream watch ends or fails when the NATS node
//! serving it is lost; left alone, configs or pause flags would silently stop updating. Each
//! watch runs under [`keep_watching`], which logs why it ended and re-creates it after a
//! growing delay until the loader stops. Re-created watches replay the current values, which
//! the receivers apply idempotently (by KV revision).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Delays between re-creations of a watch.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay after the first end.
    pub first: Duration,
    /// Longest delay; each further end in a row doubles the delay up to this.
    pub max: Duration,
    /// A watch that ran at least this long before ending starts again from `first`.
    pub healthy: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            healthy: Duration::from_secs(60),
        }
    }
}

/// Runs `watch` (named `what` in logs) until `stop` is cancelled, re-creating it with
/// `backoff` whenever it ends (`Ok`) or fails (`Err`, the reason).
pub async fn keep_watching<F, Fut>(
    what: &'static str,
    stop: CancellationToken,
    backoff: Backoff,
    mut watch: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut delay = backoff.first;
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = watch() => outcome,
        };
        if stop.is_cancelled() {
            return;
        }
        if started.elapsed() >= backoff.healthy {
            delay = backoff.first;
        }
        match outcome {
            Ok(()) => tracing::warn!(
                watch = what,
                retry_in = ?delay,
                "watch ended (NATS node lost or stream closed); re-creating it"
            ),
            Err(error) => tracing::error!(
                watch = what,
                %error,
                retry_in = ?delay,
                "watch failed; re-creating it"
            ),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = delay.saturating_mul(2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_watch_that_ends_or_fails_is_re_created_until_stopped() {
        let calls = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let backoff = Backoff {
            first: Duration::from_millis(5),
            max: Duration::from_millis(10),
            healthy: Duration::from_secs(60),
        };
        let run = keep_watching("test", stop.clone(), backoff, || {
            let (calls, stop) = (calls.clone(), stop.clone());
            async move {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Ok(()),
                    2 => Err("node lost".to_owned()),
                    _ => {
                        // The fourth watch stays up until the loader stops.
                        stop.cancel();
                        std::future::pending().await
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("keep_watching returns once stopped");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn nothing_is_re_created_after_stop() {
        let calls = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let run = keep_watching("test", stop.clone(), Backoff::default(), || {
            let (calls, stop) = (calls.clone(), stop.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                stop.cancel();
                Ok(())
            }
        });
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("keep_watching returns without waiting out a delay");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
