//! What a run left behind, checked against what the simulators hold: every worker of the org
//! once in Oomnitza with the fields the default mapping gives it, every published event
//! accounted for, the dead letters, and waiting for a run to be finalized.

use std::collections::HashMap;
use std::time::Duration;

use peoplesync_bus::{RunRecord, dlq};
use peoplesync_sims::generate;

use super::Deployment;
use crate::wait_for;

/// Checks the run invariant: every published event has exactly one outcome.
pub fn assert_accounted(run: &RunRecord) {
    let counts = run.counts.expect("final counts");
    assert_eq!(
        counts.total(),
        run.expected(),
        "published = written + unchanged + filtered + dead-lettered + canceled + stale: {counts:?}"
    );
}

/// The trimmed, non-empty text at `path` in a raw Sage People record.
pub fn text(raw: &serde_json::Value, path: &[&str]) -> Option<String> {
    let mut node = raw;
    for key in path {
        node = node.get(key)?;
    }
    let s = node.as_str()?.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl Deployment {
    /// Runs `sage-extractor --once` of integration `sage-people` and waits (up to `timeout`)
    /// until its run is finalized and checked; returns the run's record.
    pub async fn run_to_end(&self, timeout: Duration) -> RunRecord {
        let run_id = self.extract_run();
        self.finalized("sage-people", &run_id, timeout).await
    }

    /// Waits (up to `timeout`) until run `run_id` of `sage-people` is finalized, then asserts
    /// every event is accounted for and Oomnitza holds exactly the org's workers with e-mail
    /// ([`Deployment::assert_users_match_sage`]); returns the run's record.
    pub async fn assert_loaded(&self, run_id: &str, timeout: Duration) -> RunRecord {
        let run = self.finalized("sage-people", run_id, timeout).await;
        assert_accounted(&run);
        self.assert_users_match_sage();
        run
    }

    /// Waits until run `run_id` is finalized and checked against Oomnitza (or closed as
    /// canceled) and returns its record.
    pub async fn finalized(&self, integration: &str, run_id: &str, timeout: Duration) -> RunRecord {
        let runs = self.bus().await.runs();
        wait_for(&format!("run {run_id} to be finalized"), timeout, || {
            let runs = runs.clone();
            async move {
                let (record, _) = runs.get(integration, run_id).await.ok()??;
                (record.counts.is_some() && record.is_settled()).then_some(record)
            }
        })
        .await
    }

    /// The generated workers that have an e-mail, by e-mail as Sage People holds it (trimmed,
    /// case kept: that is what reaches Oomnitza), and the ids of those without one.
    pub fn expected(&self) -> (HashMap<String, serde_json::Value>, Vec<String>) {
        let mut with_email = HashMap::new();
        let mut without = Vec::new();
        for index in 0..self.sage_config.workers {
            let raw = generate::worker(self.sage_config.seed, index);
            let id = raw["id"].as_str().unwrap_or_default().to_owned();
            match raw["emailAddress"]
                .as_str()
                .map(str::trim)
                .filter(|e| !e.is_empty())
            {
                Some(email) => {
                    with_email.insert(email.to_owned(), raw);
                }
                None => without.push(id),
            }
        }
        (with_email, without)
    }

    /// Asserts every worker of the Sage People org with an e-mail is stored in Oomnitza exactly
    /// once with the fields the default mapping gives it (as Sage People holds the record now),
    /// and nobody else is; returns the ids of the workers without e-mail, which cannot be
    /// loaded.
    pub fn assert_users_match_sage(&self) -> Vec<String> {
        self.check_users(true)
    }

    /// [`Deployment::assert_users_match_sage`] without the fields, for tests that change the
    /// mapping.
    pub fn assert_each_user_stored_once(&self) -> Vec<String> {
        self.check_users(false)
    }

    fn check_users(&self, fields: bool) -> Vec<String> {
        let mut stored: HashMap<String, serde_json::Map<String, serde_json::Value>> =
            HashMap::new();
        for user in self.oomnitza.users() {
            let email = user
                .get("EMAIL")
                .and_then(|e| e.as_str())
                .unwrap_or_default()
                .to_owned();
            assert!(
                stored.insert(email.clone(), user).is_none(),
                "user {email} stored more than once"
            );
        }
        let mut without_email = Vec::new();
        let mut checked = 0;
        for index in 0..self.sage_config.workers {
            let Some(raw) = self.sage.worker(&generate::worker_id(index)) else {
                continue;
            };
            let id = text(&raw, &["id"]).expect("generated workers have ids");
            // Kept in the case Sage People holds it.
            let Some(email) = text(&raw, &["emailAddress"]) else {
                without_email.push(id);
                continue;
            };
            let user = stored
                .get(&email)
                .unwrap_or_else(|| panic!("worker {id} ({email}) is not in Oomnitza"));
            checked += 1;
            if !fields {
                continue;
            }
            let field = |name: &str| {
                user.get(name)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            assert_eq!(field("USER"), Some(email.clone()), "USER of {id}");
            assert_eq!(
                field("FIRST_NAME"),
                text(&raw, &["firstName"]),
                "FIRST_NAME of {id}"
            );
            assert_eq!(
                field("LAST_NAME"),
                text(&raw, &["lastName"]),
                "LAST_NAME of {id}"
            );
            assert_eq!(
                field("POSITION"),
                text(&raw, &["currentEmployment", "jobTitle"]),
                "POSITION of {id}"
            );
            assert_eq!(
                field("PERMISSIONS_ID").as_deref(),
                Some("25"),
                "role of {id}"
            );
        }
        assert_eq!(
            stored.len(),
            checked,
            "no user beyond the workers with e-mail"
        );
        without_email
    }

    /// The dead letters currently held.
    pub async fn dead_letters(&self) -> Vec<peoplesync_bus::DeadLetterRecord> {
        let bus = self.bus().await;
        let (first, last, held) = dlq::sequence_range(&bus).await.expect("dlq range");
        let mut letters = Vec::new();
        if held == 0 {
            return letters;
        }
        for sequence in first..=last {
            if let Some(letter) = dlq::get(&bus, sequence).await.expect("dlq get") {
                letters.push(letter);
            }
        }
        letters
    }

    /// Asserts that every dead letter held is one of the pipeline's (no record was
    /// dead-lettered by delivery or by Oomnitza); `why` says what that shows.
    pub async fn assert_only_pipeline_letters(&self, why: &str) {
        let letters = self.dead_letters().await;
        assert!(
            letters.iter().all(|l| l.letter.stage == "pipeline"),
            "{why}: {letters:?}"
        );
    }

    /// Waits until the run of `integration` is finalized and returns its record.
    pub async fn finalized_run(&self, integration: &str, timeout: Duration) -> RunRecord {
        let runs = self.bus().await.runs();
        wait_for("the run to be finalized", timeout, || {
            let runs = runs.clone();
            async move {
                let records = runs.list(Some(integration)).await.ok()?;
                records
                    .into_iter()
                    .find(|r| r.counts.is_some() && r.is_settled())
            }
        })
        .await
    }
}
