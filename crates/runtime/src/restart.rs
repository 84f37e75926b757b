//! Keeping a background task alive. A JetStream KV watch or a NATS subscription ends or fails
//! when the NATS node serving it is lost; left alone, configs or pause flags would silently
//! stop updating and commands would go unanswered. Each such task runs under [`keep_running`],
//! which logs why it ended and starts it again after a growing delay until the service stops.
//! A re-created KV watch replays the current values, which its receiver applies idempotently
//! (by KV revision).

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Delays between restarts of a task.
#[derive(Debug, Clone, Copy)]
pub struct RestartDelays {
    /// Delay after the first end.
    pub first: Duration,
    /// Longest delay; each further end in a row doubles the delay up to this.
    pub max: Duration,
    /// A task that ran at least this long before ending starts again from `first`.
    pub healthy: Duration,
}

impl Default for RestartDelays {
    fn default() -> Self {
        RestartDelays {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            healthy: Duration::from_secs(60),
        }
    }
}

/// Runs `task` (named `what` in logs) until `stop` is cancelled, starting it again after
/// `delays` whenever it ends (`Ok`) or fails (`Err`, the reason), with a log line each time
/// (a warning when it ended, an error when it failed), so a lost watch or subscription never goes unnoticed.
pub async fn keep_running<F, Fut, E>(
    what: String,
    stop: CancellationToken,
    delays: RestartDelays,
    mut task: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut delay = delays.first;
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = task() => outcome,
        };
        if stop.is_cancelled() {
            return;
        }
        if started.elapsed() >= delays.healthy {
            delay = delays.first;
        }
        match outcome {
            Ok(()) => tracing::warn!(
                task = %what,
                retry_in = ?delay,
                "ended (NATS node lost or subscription closed); starting it again"
            ),
            Err(error) => tracing::error!(
                task = %what,
                %error,
                retry_in = ?delay,
                "failed; starting it again"
            ),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = delay.saturating_mul(2).min(delays.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_task_that_ends_or_fails_is_started_again_until_stopped() {
        let calls = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let delays = RestartDelays {
            first: Duration::from_millis(5),
            max: Duration::from_millis(10),
            healthy: Duration::from_secs(60),
        };
        let run = keep_running("test".to_owned(), stop.clone(), delays, || {
            let (calls, stop) = (calls.clone(), stop.clone());
            async move {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Ok(()),
                    2 => Err("node lost"),
                    _ => {
                        // The fourth run stays up until the service stops.
                        stop.cancel();
                        std::future::pending().await
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("keep_running returns once stopped");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn nothing_is_started_again_after_stop() {
        let calls = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let run = keep_running(
            "test".to_owned(),
            stop.clone(),
            RestartDelays::default(),
            || {
                let (calls, stop) = (calls.clone(), stop.clone());
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    stop.cancel();
                    Ok::<(), String>(())
                }
            },
        );
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("keep_running returns without waiting out a delay");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
