//! One retry policy for every outbound call peoplesync makes (Sage People, Oomnitza reads and
//! control calls, the loader's bulk posts): exponential backoff on backon's schedule, each delay
//! spread over its upper half ("equal jitter", so clients that failed together do not retry
//! together while the cap still holds), a server's `Retry-After` honoured as a floor, and the
//! whole bounded by a number of attempts and by the time elapsed since the first one.
//!
//! The schedule is pure ([`Backoff`]); [`retry`] drives an async operation with it on tokio's
//! clock, so tests can run it under `tokio::time::pause`. Callers say which of their errors are
//! worth another attempt, and how an error reads once the retries are spent, by implementing
//! [`Transient`]; the API clients call [`retry_call`], which hands back their own error type.
//! [`transport`] says in words what went wrong when a request got no answer, for both clients,
//! and [`ApiError`] is the error skeleton both clients' `Error` types are made of.

mod api_error;
pub mod transport;

pub use api_error::{ApiError, ApiErrorKind};

use std::fmt::{self, Display};
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;
use tokio::time::Instant;

/// How one call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included. `0` is treated as `1`;
    /// [`RetryPolicy::UNCOUNTED`] leaves the count open, so `max_elapsed` alone ends the
    /// retries.
    pub max_attempts: usize,
    /// Delay before the first retry; each later delay doubles.
    pub initial_delay: Duration,
    /// Cap on a backoff delay; a longer `Retry-After` is still honoured while it fits in
    /// `max_elapsed`.
    pub max_delay: Duration,
    /// No retry starts once it would end this long after the first attempt.
    pub max_elapsed: Duration,
}

impl RetryPolicy {
    /// A `max_attempts` that sets no count: the elapsed budget alone ends the retries. For a
    /// budget an operator sets in time (`sage_retry_secs`), which a count would cut short.
    pub const UNCOUNTED: usize = usize::MAX;

    /// How long a call that always fails at once keeps retrying: the sum of the delays with
    /// the jitter at `unit` (`0.0` for the shortest delays, as in [`Backoff::next_delay`]). It
    /// shows which bound ends the retries, the count or the elapsed budget.
    pub fn span(&self, unit: f64) -> Duration {
        let mut backoff = Backoff::new(self);
        let mut elapsed = Duration::ZERO;
        while let Some(delay) = backoff.next_delay(elapsed, None, unit) {
            elapsed += delay;
        }
        elapsed
    }

    /// Ten attempts, 2 ms doubling to at most 20 ms apart, within 20 s: for tests against the
    /// simulators, which should see a client retry without waiting for it.
    pub const QUICK: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        initial_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(20),
    };
}

/// The delays between attempts of one call.
#[derive(Debug)]
pub struct Backoff {
    schedule: ExponentialBackoff,
    max_delay: Duration,
    max_elapsed: Duration,
}

impl Backoff {
    /// A fresh schedule for one call.
    pub fn new(policy: &RetryPolicy) -> Backoff {
        Backoff {
            // `UNCOUNTED` (`usize::MAX`) leaves a limit no call reaches: time alone ends it.
            schedule: ExponentialBuilder::default()
                .with_min_delay(policy.initial_delay)
                .with_max_delay(policy.max_delay)
                .with_factor(2.0)
                .with_max_times(policy.max_attempts.saturating_sub(1))
                .build(),
            max_delay: policy.max_delay,
            max_elapsed: policy.max_elapsed,
        }
    }

    /// The delay before the next attempt, or `None` once attempts or time are used up.
    ///
    /// `elapsed` is the time since the first attempt started; the backoff delay `d` is spread
    /// over `[d/2, d)` by `unit` (random in `[0, 1)`); the server's `retry_after` is a floor.
    pub fn next_delay(
        &mut self,
        elapsed: Duration,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        let base = self.schedule.next()?.min(self.max_delay);
        let jittered = base.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0);
        let delay = jittered.max(retry_after.unwrap_or(Duration::ZERO));
        (elapsed + delay <= self.max_elapsed).then_some(delay)
    }
}

/// How often a call that keeps failing is logged at `warn`: its first retry, then at most one
/// retry in this long; the others are logged at `debug`.
pub const RETRY_WARN_INTERVAL: Duration = Duration::from_secs(30);

/// Which retries of one call are logged at `warn`, so that at the default log level an operator
/// sees within a minute why a call does not progress without a line per attempt: the first
/// retry, then at most one per [`RETRY_WARN_INTERVAL`].
#[derive(Debug, Default)]
struct RetryVoice {
    last_warned: Option<Duration>,
}

/// When a call of each service last had its first retry logged at `warn`: many calls failing
/// at once (bulk posts throttled by `429`, each retried on its own) give one such line per
/// service and [`RETRY_WARN_INTERVAL`], not one per call.
static FIRST_WARNED: std::sync::Mutex<Vec<(String, std::time::Instant)>> =
    std::sync::Mutex::new(Vec::new());

/// Whether the first retry of a call to `service` is logged at `warn` now (none was in the last
/// [`RETRY_WARN_INTERVAL`]); a `true` counts as the latest.
fn first_warning_due(service: &str, now: std::time::Instant) -> bool {
    let mut warned = FIRST_WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match warned.iter_mut().find(|(name, _)| name == service) {
        Some((_, last)) if now.duration_since(*last) < RETRY_WARN_INTERVAL => false,
        Some((_, last)) => {
            *last = now;
            true
        }
        None => {
            warned.push((service.to_owned(), now));
            true
        }
    }
}

impl RetryVoice {
    /// Whether the retry about to start `elapsed` after the call's first attempt is logged at
    /// `warn`; a `true` counts as the latest warning.
    fn warn_now(&mut self, elapsed: Duration) -> bool {
        let due = self
            .last_warned
            .is_none_or(|last| elapsed.saturating_sub(last) >= RETRY_WARN_INTERVAL);
        if due {
            self.last_warned = Some(elapsed);
        }
        due
    }
}

/// An error that may go away if the call is made again.
pub trait Transient {
    /// Whether another attempt may succeed (a timeout, a 5xx, a 429, a cut-off body).
    fn is_transient(&self) -> bool;

    /// How long the server asked to wait (`Retry-After`), if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// The error to report once a transient error outlasted the retries: by default the error
    /// as it came; an API client adds how hard it tried (`spent`) and what to do next.
    fn exhausted(self, spent: Spent) -> Self
    where
        Self: Sized,
    {
        let _ = spent;
        self
    }
}

/// How hard a call tried before it gave up; shown as `gave up after 6 attempts over 12.3 s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// Attempts made.
    pub attempts: usize,
    /// Time since the first attempt started.
    pub elapsed: Duration,
}

impl Display for Spent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.attempts == 1 {
            "attempt"
        } else {
            "attempts"
        };
        write!(
            f,
            "gave up after {} {noun} over {:.1} s",
            self.attempts,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Why [`retry`] stopped.
#[derive(Debug)]
pub struct GaveUp<E> {
    /// The last error.
    pub error: E,
    /// Attempts made.
    pub attempts: usize,
    /// Time since the first attempt started.
    pub elapsed: Duration,
    /// The error was transient and the attempts or the time ran out (otherwise it was not
    /// worth retrying and was returned at once).
    pub budget_spent: bool,
}

impl<E: Transient> GaveUp<E> {
    /// The error to report: when the budget was spent, [`Transient::exhausted`] says how many
    /// attempts were made over how long; otherwise the error as it came.
    pub fn into_error(self) -> E {
        match self.budget_spent {
            true => self.error.exhausted(Spent {
                attempts: self.attempts,
                elapsed: self.elapsed,
            }),
            false => self.error,
        }
    }
}

/// Runs `operation` until it succeeds, fails with an error that is not [`Transient`], or the
/// policy's attempts or time are spent. `service` names the other side in the log: a call's
/// first retry is logged at `warn` with the error (what was being done, the status) and the
/// delay, unless another call to `service` had its first retry logged so in the last
/// [`RETRY_WARN_INTERVAL`]; later ones at most once per interval at `warn`; the others at
/// `debug`.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    service: &str,
    mut operation: F,
) -> Result<T, GaveUp<E>>
where
    E: Transient + Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut backoff = Backoff::new(policy);
    let mut voice = RetryVoice::default();
    let mut attempts = 0usize;
    loop {
        attempts += 1;
        let error = match operation().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let gave_up = |error, budget_spent| GaveUp {
            error,
            attempts,
            elapsed: started.elapsed(),
            budget_spent,
        };
        if !error.is_transient() {
            return Err(gave_up(error, false));
        }
        let unit = rand::rng().random::<f64>();
        let elapsed = started.elapsed();
        match backoff.next_delay(elapsed, error.retry_after(), unit) {
            Some(delay) => {
                // The call's first retry is loud only when no other call to the service was
                // just as loud; its later ones follow the call's own interval.
                let first = voice.last_warned.is_none();
                let loud = voice.warn_now(elapsed)
                    && (!first || first_warning_due(service, std::time::Instant::now()));
                if loud {
                    tracing::warn!(attempt = attempts, ?delay, error = %error, "{service} call failed; retrying in {delay:.1?}");
                } else {
                    tracing::debug!(attempt = attempts, ?delay, error = %error, "retrying {service} call");
                }
                tokio::time::sleep(delay).await;
            }
            None => return Err(gave_up(error, true)),
        }
    }
}

/// Runs `operation` as [`retry`] does and returns the caller's own error: rewritten by
/// [`Transient::exhausted`] when the attempts or the time ran out, as it came otherwise. This is
/// the form the API clients use; `service` names the other side in the log, as in [`retry`].
pub async fn retry_call<T, E, F, Fut>(
    policy: &RetryPolicy,
    service: &str,
    operation: F,
) -> Result<T, E>
where
    E: Transient + Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry(policy, service, operation)
        .await
        .map_err(GaveUp::into_error)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(120),
        }
    }

    /// A test error: transient or not, with an optional `Retry-After`.
    #[derive(Debug)]
    struct Failure {
        transient: bool,
        after: Option<Duration>,
    }

    impl Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failure")
        }
    }

    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            self.transient
        }
        fn retry_after(&self) -> Option<Duration> {
            self.after
        }
    }

    const DOWN: Failure = Failure {
        transient: true,
        after: None,
    };

    #[test]
    fn delays_double_up_to_the_cap_and_stop_with_the_attempts() {
        let mut backoff = Backoff::new(&policy());
        let delays: Vec<_> = std::iter::from_fn(|| backoff.next_delay(Duration::ZERO, None, 1.0))
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(delays, [200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_spreads_over_the_upper_half() {
        for (unit, millis) in [(0.0, 100), (0.5, 150)] {
            let mut backoff = Backoff::new(&policy());
            assert_eq!(
                backoff.next_delay(Duration::ZERO, None, unit),
                Some(Duration::from_millis(millis))
            );
        }
    }

    #[test]
    fn retry_after_is_a_floor_within_the_budget() {
        let mut backoff = Backoff::new(&RetryPolicy {
            max_elapsed: Duration::from_secs(30),
            ..policy()
        });
        assert_eq!(
            backoff.next_delay(Duration::ZERO, Some(Duration::from_secs(2)), 0.0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            backoff.next_delay(Duration::from_secs(10), Some(Duration::from_secs(25)), 0.0),
            None
        );
    }

    #[test]
    fn stops_when_the_elapsed_budget_would_be_crossed() {
        let mut backoff = Backoff::new(&RetryPolicy {
            max_elapsed: Duration::from_secs(5),
            ..policy()
        });
        let at = Duration::from_millis(4_700);
        assert!(backoff.next_delay(at, None, 1.0).is_some());
        assert!(backoff.next_delay(at, None, 1.0).is_none());
    }

    #[test]
    fn an_uncounted_policy_retries_until_the_elapsed_budget_is_spent() {
        let budget = Duration::from_secs(1_800);
        let uncounted = RetryPolicy {
            max_attempts: RetryPolicy::UNCOUNTED,
            max_elapsed: budget,
            ..policy()
        };
        let spent = uncounted.span(0.0);
        assert!(
            spent > budget - uncounted.max_delay && spent <= budget,
            "{spent:?}"
        );
        let counted = RetryPolicy {
            max_elapsed: budget,
            ..policy()
        };
        let counted = counted.span(1.0);
        assert!(
            counted < Duration::from_secs(4),
            "the count ends these: {counted:?}"
        );
    }

    #[test]
    fn one_attempt_means_no_retry() {
        for max_attempts in [0, 1] {
            let mut backoff = Backoff::new(&RetryPolicy {
                max_attempts,
                ..policy()
            });
            assert_eq!(backoff.next_delay(Duration::ZERO, None, 0.5), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_the_attempts_run_out() {
        let calls = AtomicUsize::new(0);
        let started = Instant::now();
        let result: Result<(), _> = retry(&policy(), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(DOWN)
        })
        .await;
        let gave_up = result.expect_err("always failing");
        assert_eq!((calls.load(Ordering::SeqCst), gave_up.attempts), (6, 6));
        assert!(gave_up.budget_spent);
        // Five delays of at least half of 200, 400, 800, 1000, 1000 ms, and at most their sum.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1_700), "{waited:?}");
        assert!(waited <= Duration::from_millis(3_400), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_between_attempts() {
        let started = Instant::now();
        let busy = RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_elapsed: Duration::from_secs(30),
        };
        let result: Result<(), _> = retry(&busy, "test", || async {
            Err(Failure {
                transient: true,
                after: Some(Duration::from_secs(1)),
            })
        })
        .await;
        assert_eq!(result.expect_err("busy").attempts, 4);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[test]
    fn spent_says_how_hard_the_call_tried() {
        let spent = |attempts, millis| Spent {
            attempts,
            elapsed: Duration::from_millis(millis),
        };
        assert_eq!(
            spent(6, 12_340).to_string(),
            "gave up after 6 attempts over 12.3 s"
        );
        assert_eq!(
            spent(1, 0).to_string(),
            "gave up after 1 attempt over 0.0 s"
        );
    }

    /// A client's error: says how hard the call tried once the retries are spent.
    #[derive(Debug, PartialEq)]
    struct Reported {
        text: String,
        transient: bool,
    }

    impl Display for Reported {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.text)
        }
    }

    impl Transient for Reported {
        fn is_transient(&self) -> bool {
            self.transient
        }
        fn exhausted(self, spent: Spent) -> Self {
            Reported {
                text: format!("{} ({spent})", self.text),
                ..self
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_call_reports_a_spent_budget_through_the_callers_error() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..policy()
        };
        let fail = |transient| {
            retry_call(&policy, "test", move || async move {
                Err::<(), _>(Reported {
                    text: "down".to_owned(),
                    transient,
                })
            })
        };
        let spent = fail(true).await.expect_err("always failing");
        assert!(
            spent
                .text
                .starts_with("down (gave up after 3 attempts over "),
            "{spent}"
        );
        let refused = fail(false).await.expect_err("refused");
        assert_eq!(
            refused.text, "down",
            "an error not worth retrying comes as it is"
        );
    }

    #[test]
    fn the_first_retry_and_then_one_per_interval_are_loud() {
        let mut voice = RetryVoice::default();
        let loud: Vec<u64> = [0, 1, 3, 29, 30, 31, 59, 61, 62, 200]
            .into_iter()
            .filter(|&secs| voice.warn_now(Duration::from_secs(secs)))
            .collect();
        assert_eq!(loud, [0, 30, 61, 200]);
    }

    /// The lines a test subscriber printed at `warn` and above while `run` ran.
    async fn warnings<F: Future>(run: F) -> Vec<String> {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("not poisoned").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        run.await;
        drop(guard);
        let text = String::from_utf8(lines.0.lock().expect("not poisoned").clone())
            .expect("the log is text");
        text.lines().map(str::to_owned).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_call_warns_at_once_and_then_every_half_minute() {
        let calls = AtomicUsize::new(0);
        let slow = RetryPolicy {
            max_attempts: 1_000,
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(120),
        };
        let lines = warnings(async {
            let result: Result<(), _> = retry(&slow, "Test API", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(DOWN)
            })
            .await;
            assert!(result.is_err());
        })
        .await;
        let retries = calls.load(Ordering::SeqCst) - 1;
        // Retries 5 to 10 s apart over two minutes: the first is loud, then one in 30 s.
        assert!(
            (3..=5).contains(&lines.len()) && lines.len() < retries,
            "{retries} retries, warnings: {lines:#?}"
        );
        let first = &lines[0];
        assert!(
            first.contains("WARN")
                && first.contains("Test API call failed; retrying in")
                && first.contains("error=failure")
                && first.contains("attempt=1"),
            "{first}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_failures_is_returned_with_one_warning() {
        let calls = AtomicUsize::new(0);
        let lines = warnings(async {
            let value = retry(&policy(), "one-warning test", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(DOWN)
                } else {
                    Ok(7)
                }
            })
            .await;
            assert_eq!(value.ok(), Some(7));
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(lines.len(), 1, "the first retry only: {lines:#?}");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_failing_together_give_one_first_warning_per_service() {
        let lines = warnings(async {
            let failing = || async {
                let result: Result<(), _> =
                    retry(&policy(), "throttled test", || async { Err(DOWN) }).await;
                assert!(result.is_err());
            };
            tokio::join!(failing(), failing(), failing());
        })
        .await;
        assert_eq!(lines.len(), 1, "one line for three calls: {lines:#?}");
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_returned_at_once() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = retry(&policy(), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Failure {
                transient: false,
                after: None,
            })
        })
        .await;
        let gave_up = result.expect_err("refused");
        assert!(!gave_up.budget_spent);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_elapsed_budget_bounds_slow_attempts() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy {
            max_attempts: 100,
            max_elapsed: Duration::from_secs(10),
            ..policy()
        };
        let result: Result<(), _> = retry(&policy, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3)).await;
            Err(DOWN)
        })
        .await;
        assert!(result.is_err());
        let calls = calls.load(Ordering::SeqCst);
        assert!((3..=4).contains(&calls), "{calls}");
    }
}
