//! Waiting for Oomnitza to process a finalized portion before its check: each read of the run
//! log ends the wait (nothing is processing), continues it (records still processing, or a
//! read that may succeed later), or gives it up (the time is up, or Oomnitza's answer will not
//! change by waiting). Pure: the caller reads, sleeps and renews its claim.

use std::time::Duration;

use peoplesync_oomnitza::{Error, ErrorKind, RunLog};

/// What one read of the run log means for the wait.
#[derive(Debug)]
pub(super) enum Waited {
    /// Nothing is processing: the counts are final.
    Processed(RunLog),
    /// Read again later; the text says what is awaited.
    Waiting(String),
    /// Stop waiting: the run cannot be checked, for this reason.
    GiveUp(String),
}

/// Reads `read`, the run log read after `waited` of at most `limit`
/// (`verify.processing_timeout_secs`).
pub(super) fn after_read(read: Result<RunLog, Error>, waited: Duration, limit: Duration) -> Waited {
    let last = match read {
        Ok(log) if log.processing() == 0 => return Waited::Processed(log),
        Ok(log) => format!("{} record(s) still processing", log.processing()),
        // A run log not found yet (`404`) is waited for as a busy answer is: when Oomnitza
        // creates it after a finalize is not published.
        Err(err) if err.kind() == ErrorKind::Transient || err.status() == Some(404) => {
            format!("cannot read the run log: {err}")
        }
        // A refusal (401, 403, 400, ...) or an answer of the wrong shape is the same on every
        // read: waiting it out would only hold the check for the whole timeout.
        Err(err) => {
            return Waited::GiveUp(format!(
                "stopped waiting for Oomnitza to process the portion: reading its run log failed \
                 in a way that does not pass by waiting ({err}); fix that, and the next run sends \
                 this run's records again. The run's written count holds records accepted, not \
                 confirmed"
            ));
        }
    };
    if waited < limit {
        return Waited::Waiting(last);
    }
    Waited::GiveUp(format!(
        "Oomnitza did not finish processing the portion within {} s ({last}); the run's written \
         count holds records accepted, not confirmed. If Oomnitza is only slow, raise \
         `verify.processing_timeout_secs` (PEOPLESYNC_LOADER__VERIFY__PROCESSING_TIMEOUT_SECS)",
        limit.as_secs()
    ))
}

#[cfg(test)]
mod tests {
    use peoplesync_oomnitza::RunCounts;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(600);

    fn processing(records: u64) -> RunLog {
        RunLog {
            counts: RunCounts {
                processing: records,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn give_up(waited: Waited) -> String {
        match waited {
            Waited::GiveUp(reason) => reason,
            other => panic!("kept waiting: {other:?}"),
        }
    }

    #[test]
    fn the_wait_ends_when_nothing_is_processing() {
        let waited = after_read(Ok(processing(0)), Duration::ZERO, LIMIT);
        assert!(matches!(waited, Waited::Processed(_)), "{waited:?}");
        let waited = after_read(Ok(processing(3)), Duration::from_secs(10), LIMIT);
        assert!(
            matches!(&waited, Waited::Waiting(w) if w.contains("3 record(s)")),
            "{waited:?}"
        );
    }

    #[test]
    fn a_timeout_names_the_setting_to_raise() {
        let reason = give_up(after_read(Ok(processing(3)), LIMIT, LIMIT));
        assert!(
            reason.contains("within 600 s (3 record(s) still processing)")
                && reason.contains("verify.processing_timeout_secs")
                && reason.contains("PEOPLESYNC_LOADER__VERIFY__PROCESSING_TIMEOUT_SECS"),
            "{reason}"
        );
    }

    #[test]
    fn a_read_refused_for_good_stops_the_wait_at_once_and_a_busy_or_missing_one_does_not() {
        for (kind, status) in [(ErrorKind::Rejected, 400), (ErrorKind::Unauthorized, 403)] {
            let refused = Error::new(
                kind,
                format!("Oomnitza refused reading the run log ({status})"),
            )
            .with_status(status);
            let reason = give_up(after_read(Err(refused), Duration::ZERO, LIMIT));
            assert!(
                reason.contains(&format!("({status})"))
                    && reason.contains("does not pass by waiting"),
                "{reason}"
            );
        }
        let busy = Error::new(ErrorKind::Transient, "Oomnitza is busy (503)").with_status(503);
        let missing = Error::new(ErrorKind::Rejected, "no run log yet (404)").with_status(404);
        for error in [busy, missing] {
            let waited = after_read(Err(error), Duration::ZERO, LIMIT);
            assert!(matches!(&waited, Waited::Waiting(_)), "{waited:?}");
        }
    }
}
