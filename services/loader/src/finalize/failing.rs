//! A finalize that keeps failing on this replica is said on `/readyz` (note `finalize
//! <integration>`, which `syncctl status` shows too) and by the gauge
//! `peoplesync_loader_finalize_failing`, not only in the log: the run waits, finalize pending,
//! and is tried again every few seconds. The note stands until the run's portion is finalized
//! or closed, by this replica or another.

use std::collections::HashMap;
use std::sync::Mutex;

use peoplesync_runtime::Readiness;
use peoplesync_runtime::metrics::names::LOADER_FINALIZE_FAILING;

/// The runs whose finalize last failed on this replica.
pub(super) struct FailingFinalizes {
    readiness: Readiness,
    /// Integration → the run whose finalize failed.
    runs: Mutex<HashMap<String, String>>,
}

impl FailingFinalizes {
    /// Notes on `readiness`.
    pub(super) fn new(readiness: Readiness) -> FailingFinalizes {
        FailingFinalizes {
            readiness,
            runs: Mutex::default(),
        }
    }

    /// Finalizing `run_id` of `integration` failed, for `why`.
    pub(super) fn failed(&self, integration: &str, run_id: &str, why: &str) {
        let Ok(mut runs) = self.runs.lock() else {
            return;
        };
        runs.insert(integration.to_owned(), run_id.to_owned());
        self.readiness.note(
            &note_key(integration),
            Some(format!(
                "run {run_id}: {why}; the finalize is tried again every few seconds"
            )),
        );
        metrics::gauge!(LOADER_FINALIZE_FAILING, "integration" => integration.to_owned()).set(1.0);
    }

    /// `run_id` of `integration` needs no finalize any more (finalized or closed, here or by
    /// another replica): its note, if it has one, goes.
    pub(super) fn done(&self, integration: &str, run_id: &str) {
        let Ok(mut runs) = self.runs.lock() else {
            return;
        };
        if runs.get(integration).is_some_and(|failed| failed == run_id) {
            runs.remove(integration);
            self.readiness.note(&note_key(integration), None);
            metrics::gauge!(LOADER_FINALIZE_FAILING, "integration" => integration.to_owned())
                .set(0.0);
        }
    }
}

/// The `/readyz` note's key for `integration`.
fn note_key(integration: &str) -> String {
    format!("finalize {integration}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(readiness: &Readiness) -> Option<String> {
        readiness.status().notes.get("finalize acme").cloned()
    }

    #[test]
    fn a_failed_finalize_is_noted_until_its_run_is_done_not_another() {
        let readiness = Readiness::new();
        let failing = FailingFinalizes::new(readiness.clone());
        failing.failed("acme", "r1", "Oomnitza answered 503");
        let noted = Some(
            "run r1: Oomnitza answered 503; the finalize is tried again every few seconds"
                .to_owned(),
        );
        assert_eq!(note(&readiness), noted);
        failing.done("acme", "r0");
        failing.done("other", "r1");
        assert_eq!(
            note(&readiness),
            noted,
            "another run's or integration's end"
        );
        failing.done("acme", "r1");
        assert_eq!(note(&readiness), None);
    }
}
