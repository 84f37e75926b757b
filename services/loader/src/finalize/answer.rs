//! What Oomnitza's answer to a portion's finalize means for its run: recorded finalized (or as
//! having nothing to finalize), closed as canceled, or tried again later with the reason.

use peoplesync_bus::FinalizeState;
use peoplesync_oomnitza::{ErrorKind, Finalize, PortionStatus};

use super::Finalizer;

/// What follows a claimed run's finalize.
pub(super) enum Next {
    /// Record the run with this finalize state.
    Record(FinalizeState),
    /// The portion was canceled in Oomnitza: close the run as canceled.
    CloseCanceled,
    /// Release the claim and try again later, for this reason.
    RetryLater(String),
}

impl Finalizer {
    /// Finalizes run `run_id`'s portion, whose state read `status` just before (`None`: it
    /// could not be read) and into which the run wrote `written` records, and says what
    /// follows.
    pub(super) async fn finalize_portion(
        &self,
        run_id: &str,
        status: Option<&PortionStatus>,
        written: u64,
    ) -> Next {
        // A replica killed between Oomnitza's finalize and recording it leaves the claim to
        // expire; whoever takes it over finds the portion finalized and only records it (a
        // second call would be answered 409, harmless, but is not made).
        let finalized = || FinalizeState::Finalized {
            by: self.replica.clone(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        if status.is_some_and(|s| s.finalized) {
            return Next::Record(finalized());
        }
        match self.client.finalize(run_id).await {
            Ok(Finalize::Finalized) => Next::Record(finalized()),
            // Oomnitza answers `409` to a portion finalized before, and may to a canceled one
            // (not published; Oomnitza's connector treats a `409` as nothing to do). The read
            // above failed, or the portion changed since: only reading its state again tells
            // which, and until it does, nothing is recorded.
            Ok(Finalize::AlreadyFinalized) => match self.client.portion(run_id).await {
                Ok(Some(status)) if status.canceled => Next::CloseCanceled,
                Ok(Some(status)) if status.finalized => Next::Record(finalized()),
                read => {
                    let why = match read {
                        Err(err) => format!("reading the portion's state failed: {err}"),
                        Ok(None) => "Oomnitza does not know the portion".to_owned(),
                        Ok(Some(_)) => {
                            "the portion reads neither finalized nor canceled".to_owned()
                        }
                    };
                    let why = format!(
                        "Oomnitza answered 409 to the finalize (a portion finalized or \
                         canceled) and {why}, so which one cannot be told yet"
                    );
                    Next::RetryLater(why)
                }
            },
            // A portion never posted to is unknown to Oomnitza: nothing to finalize. One the
            // run wrote records into is not: a changed OOMNITZA_URL or a proxy answering for
            // the tenant, and closing the run would drop the check of what was written.
            Err(err)
                if err.kind() == ErrorKind::Rejected
                    && err.status() == Some(404)
                    && written == 0 =>
            {
                Next::Record(FinalizeState::NothingToFinalize)
            }
            Err(err) if err.status() == Some(404) => Next::RetryLater(format!(
                "Oomnitza does not know the portion the run wrote {written} record(s) into \
                     ({err}); check OOMNITZA_URL (it must be the tenant's base URL, the one the \
                     records were posted to)"
            )),
            Err(err) => {
                // A refused token stops the loaders pulling and shows on `/readyz` and in the
                // credentials alert, as on a post; the finalize is tried again meanwhile.
                if err.kind() == ErrorKind::Unauthorized {
                    self.gates
                        .refuse_if_the_token_is_refused(&self.client, &err, false)
                        .await;
                }
                Next::RetryLater(format!("finalizing the portion failed: {err}"))
            }
        }
    }
}
