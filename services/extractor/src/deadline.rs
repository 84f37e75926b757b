//! The time a command's Sage People calls may take while the control plane waits for its
//! answer (`check`, `fetch`, `worker`): a retry budget and a deadline derived from that wait
//! (`peoplesync_bus::control::*_WAIT`), so that the reply carries Sage People's own answer —
//! what failed, after how many attempts — before the control plane gives up and can only say
//! that the extractor did not answer. Runs keep the client's full budget (`sage_retry_secs`).

use std::future::Future;
use std::time::Duration;

use peoplesync_sage_people::{Error, ErrorKind, SageClient};
use tokio::time::Instant;

/// Time kept between a command's deadline and the end of the control plane's wait, for the
/// reply (and, for `worker`, the run's journal and event) to reach it.
const REPLY_MARGIN: Duration = Duration::from_secs(5);

/// Time kept between the end of the retries and the deadline, for a call started just before
/// the retries end: an unanswered request is otherwise ended only by the request timeout
/// (`request_timeout_secs`, 30 s by default).
const LAST_CALL_MARGIN: Duration = Duration::from_secs(10);

/// How long one command's Sage People calls may take, together, counted from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandTime {
    /// What the command does, as the message of a call given up names it ("the check",
    /// "reading one worker": "… within the 40 s the check may take").
    pub command: &'static str,
    /// No retry starts after this.
    pub retry_budget: Duration,
    /// A call still waiting is abandoned then.
    pub deadline: Duration,
}

impl CommandTime {
    /// The time of `command`, whose answer the control plane waits `wait` for: the deadline
    /// is the wait less [`REPLY_MARGIN`], the retry budget the deadline less
    /// [`LAST_CALL_MARGIN`]. A wait too short to leave any retry time fails to compile where
    /// the result is a constant.
    pub const fn within(wait: Duration, command: &'static str) -> CommandTime {
        let deadline = wait.saturating_sub(REPLY_MARGIN);
        let retry_budget = deadline.saturating_sub(LAST_CALL_MARGIN);
        assert!(
            !retry_budget.is_zero(),
            "the control plane's wait leaves the command no time to retry Sage People"
        );
        CommandTime {
            command,
            retry_budget,
            deadline,
        }
    }
}

/// The time one command's Sage People calls share, started when the command is.
pub struct Budget {
    time: CommandTime,
    /// No retry starts after this.
    retries_end: Instant,
    /// A call still waiting is abandoned then.
    deadline: Instant,
}

impl Budget {
    /// The budget of one command of `time`, starting now.
    pub fn start(time: CommandTime) -> Budget {
        let now = Instant::now();
        Budget {
            time,
            retries_end: now + time.retry_budget,
            deadline: now + time.deadline,
        }
    }

    /// When a call still waiting is abandoned.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs `call` (`what` it does, for the message) with a clone of `client` that retries
    /// only for what is left of the budget, and gives up on it at the deadline.
    pub async fn call<T, Fut>(
        &self,
        client: &SageClient,
        what: &str,
        call: impl FnOnce(SageClient) -> Fut,
    ) -> Result<T, Error>
    where
        Fut: Future<Output = Result<T, Error>>,
    {
        let left = self.retries_end.saturating_duration_since(Instant::now());
        let client = client.with_retry_budget(left);
        match tokio::time::timeout_at(self.deadline, call(client.clone())).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "Sage People at {} did not answer {what} within the {} s {} may take: check \
                     the network path to the org (proxy, firewall, HTTPS_PROXY) and the \
                     Salesforce status page, then try again",
                    client.hostname(),
                    self.time.deadline.as_secs(),
                    self.time.command
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_leaves_the_reply_five_seconds_and_the_retries_end_ten_before_it() {
        let time = CommandTime::within(Duration::from_secs(60), "the worker command");
        assert_eq!(time.deadline, Duration::from_secs(55));
        assert_eq!(time.retry_budget, Duration::from_secs(45));
    }

    #[test]
    #[should_panic(expected = "no time to retry")]
    fn a_wait_too_short_for_both_margins_is_refused() {
        CommandTime::within(Duration::from_secs(15), "the check");
    }
}
