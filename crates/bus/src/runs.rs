//! Run records in KV (`peoplesync_state`, key `run.<integration>.<run_id>`): what a run is
//! doing, how many events it published, and who finalizes its Oomnitza portion. Every change
//! is a compare-and-set on the record's revision, so replicas racing to claim a finalize or
//! to mark a run complete cannot overwrite each other.

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Source, lost_to_another_writer, race_pause};
use crate::{BusError, OutcomeCounts, document, names};

/// How many writes a run-record update may lose to other writers before it fails.
pub const UPDATE_RACES: u32 = 50;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// The extractor is reading Sage People and publishing.
    Running,
    /// Every event is published; loaders are finishing.
    Completed,
    /// The run failed; see `error`.
    Failed,
    /// Sage People's API quota ran out; the next run resumes from the checkpoint.
    QuotaExhausted,
}

/// Who finalizes the run's Oomnitza portion, and whether it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum FinalizeState {
    /// Not yet: the run is going or events are outstanding.
    Pending,
    /// A loader replica has claimed the finalize (RFC 3339 time of the claim).
    Claimed {
        /// The replica.
        by: String,
        /// When.
        at: String,
    },
    /// The portion is finalized in Oomnitza.
    Finalized {
        /// The replica that did it.
        by: String,
        /// When.
        at: String,
    },
    /// Nothing was posted for the run, so there is no portion to finalize.
    NothingToFinalize,
    /// An administrator canceled the portion in Oomnitza: it is not finalized, and nothing
    /// posted to it counts as written.
    Canceled {
        /// The replica that closed the run.
        by: String,
        /// When (RFC 3339).
        at: String,
    },
}

/// How an administrator's cancel of the run's portion in Oomnitza was noticed. Oomnitza tells
/// only that the portion is canceled, not who canceled it or when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelNote {
    /// The loader replica that saw the portion canceled.
    pub noticed_by: String,
    /// When it saw it (RFC 3339).
    pub at: String,
}

/// Where checking a finalized run against what Oomnitza holds is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum VerifyState {
    /// Waiting for a replica to check it.
    Pending,
    /// A replica is checking it (RFC 3339 time of the claim, renewed while it works).
    Claimed {
        /// The replica.
        by: String,
        /// When the claim was taken or last renewed.
        at: String,
    },
    /// Checked: `counts.written` holds only records Oomnitza was seen to hold.
    Verified {
        /// The replica that checked it.
        by: String,
        /// When.
        at: String,
    },
    /// The check could not be completed (Oomnitza kept processing, or could not be read);
    /// `counts.written` holds records accepted, not confirmed.
    Unverified {
        /// The replica that gave up.
        by: String,
        /// When.
        at: String,
        /// Why.
        reason: String,
    },
}

/// The result of checking a run against what Oomnitza holds (see [`VerifyState`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Where the check is.
    #[serde(flatten)]
    pub state: VerifyState,
    /// Records Oomnitza accepted (`200` to their bulk post).
    pub accepted: u64,
    /// Records read back holding the values sent.
    #[serde(default)]
    pub confirmed: u64,
    /// Records accepted but not applied (failed inside Oomnitza, or not holding what was
    /// sent); each is dead-lettered and sent again next run.
    #[serde(default)]
    pub not_applied: u64,
    /// Fields that were sent but that a user read does not show, so they could not be compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unverifiable_fields: Vec<String>,
    /// Oomnitza's own run-log counts, as read at the end of processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_log: Option<RunLogCounts>,
}

/// Counts from a portion's run log in Oomnitza.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLogCounts {
    /// Users created.
    pub added: u64,
    /// Users updated.
    pub updated: u64,
    /// Records that changed nothing.
    pub unchanged: u64,
    /// Records skipped (create only / update only).
    pub skipped: u64,
    /// Records that failed.
    pub failed: u64,
    /// Records discarded because the portion was canceled.
    pub canceled: u64,
}

impl Verification {
    /// A check waiting to start, for a run whose portion took `accepted` records.
    pub fn pending(accepted: u64) -> Verification {
        Verification {
            state: VerifyState::Pending,
            accepted,
            confirmed: 0,
            not_applied: 0,
            unverifiable_fields: Vec::new(),
            run_log: None,
        }
    }
}

/// One run, as recorded in KV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The integration.
    pub integration: String,
    /// The run id (also the Oomnitza portion).
    pub run_id: String,
    /// A full listing (true) or a single-worker sync (false).
    pub full: bool,
    /// What started it: `schedule`, `manual`, `once`, `worker`.
    pub trigger: String,
    /// Where the run is.
    pub state: RunState,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When the extractor finished (RFC 3339).
    pub finished_at: Option<String>,
    /// Upsert events published.
    pub published: u64,
    /// Removed events published.
    pub removed: u64,
    /// Records Sage People returned that could not be normalised.
    pub skipped: u64,
    /// Why it failed or stopped.
    pub error: Option<String>,
    /// The portion's finalize.
    pub finalize: FinalizeState,
    /// Outcome counts, kept when the run is finalized.
    pub counts: Option<OutcomeCounts>,
    /// Removals this full run found but held for an operator's approval (the accidental-deletion
    /// guard); none of them is counted in `removed`. Approving publishes them in a run of their
    /// own and sets this back to 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub removals_held: u64,
    /// Why this full run could not compute its removals, when it could not: it published none.
    /// With a seen list out of order the baseline and any held removals are kept, and the
    /// workers who left wait for a later run that computes them; with the baseline's list gone
    /// this run became the baseline, and they are not announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removals_skipped: Option<String>,
    /// Workers this run found no longer listed but still employed in Sage People: they moved
    /// out of the integration's `source_filter` and are not leavers, so no leaver event was
    /// published for them (a full run, or the approval that released a filtered run's held
    /// removals).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub moved_out: u64,
    /// Every record is sent, even one identical to what was last written (`syncctl run --full`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend_all: bool,
    /// Set when the run's portion was seen canceled in Oomnitza.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled: Option<CancelNote>,
    /// The check of a finalized run against what Oomnitza holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Leavers of the run still holding assets in Oomnitza (kept at finalize, from the run's
    /// leavers report).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leavers_with_assets: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RunRecord {
    /// A new running record.
    pub fn start(integration: &str, run_id: &str, full: bool, trigger: &str) -> RunRecord {
        RunRecord {
            integration: integration.to_owned(),
            run_id: run_id.to_owned(),
            full,
            trigger: trigger.to_owned(),
            state: RunState::Running,
            started_at: chrono::Utc::now().to_rfc3339(),
            finished_at: None,
            published: 0,
            removed: 0,
            skipped: 0,
            error: None,
            finalize: FinalizeState::Pending,
            counts: None,
            removals_held: 0,
            removals_skipped: None,
            moved_out: 0,
            resend_all: false,
            canceled: None,
            verification: None,
            leavers_with_assets: 0,
        }
    }

    /// Events the loaders must account for (upserts and removals).
    pub fn expected(&self) -> u64 {
        self.published + self.removed
    }

    /// Whether the check against what Oomnitza holds has ended, or the run has none (nothing
    /// was accepted, checks are off, or the run was recorded before checks existed).
    pub fn is_checked(&self) -> bool {
        self.verification.as_ref().is_none_or(|v| {
            matches!(
                v.state,
                VerifyState::Verified { .. } | VerifyState::Unverified { .. }
            )
        })
    }

    /// Whether nothing more happens to the run's portion: finalized (or nothing to finalize)
    /// and checked, or closed as canceled.
    pub fn is_settled(&self) -> bool {
        match self.finalize {
            FinalizeState::Finalized { .. } | FinalizeState::NothingToFinalize => self.is_checked(),
            FinalizeState::Canceled { .. } => true,
            FinalizeState::Pending | FinalizeState::Claimed { .. } => false,
        }
    }
}

/// Run records in the state bucket.
#[derive(Clone, Debug)]
pub struct Runs {
    kv: kv::Store,
}

/// The KV key of a run record.
pub fn key(integration: &str, run_id: &str) -> String {
    format!("run.{integration}.{run_id}")
}

impl Runs {
    /// Run records stored in `state` (the `peoplesync_state` bucket).
    pub(crate) fn new(state: kv::Store) -> Runs {
        Runs { kv: state }
    }

    /// Stores a new record; fails if one with that id exists.
    pub async fn create(&self, record: &RunRecord) -> Result<(), BusError> {
        let key = key(&record.integration, &record.run_id);
        self.kv
            .create(&key, encode(record)?)
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "create", &key, e))?;
        Ok(())
    }

    /// Reads a record and its revision.
    pub async fn get(
        &self,
        integration: &str,
        run_id: &str,
    ) -> Result<Option<(RunRecord, u64)>, BusError> {
        let (value, revision) = document::read(&self.kv, &key(integration, run_id)).await?;
        value.map(|v| Ok((decode(&v)?, revision))).transpose()
    }

    /// Applies `change` with compare-and-set, reading again after a concurrent write (up to
    /// [`UPDATE_RACES`] times, each after a short jittered pause). `change` returns
    /// false to leave the record as it is. Returns the record as stored afterwards, or `None`
    /// when there is no such run.
    pub async fn update<F>(
        &self,
        integration: &str,
        run_id: &str,
        mut change: F,
    ) -> Result<Option<RunRecord>, BusError>
    where
        F: FnMut(&mut RunRecord) -> bool,
    {
        let key = key(integration, run_id);
        let mut lost = 0;
        loop {
            let Some((mut record, revision)) = self.get(integration, run_id).await? else {
                return Ok(None);
            };
            if !change(&mut record) {
                return Ok(Some(record));
            }
            match self.kv.update(&key, encode(&record)?, revision).await {
                Ok(_) => return Ok(Some(record)),
                // Another writer was first, or the read came from a server a little behind.
                Err(err) if lost_to_another_writer(&err) && lost < UPDATE_RACES => {
                    lost += 1;
                    tokio::time::sleep(race_pause(lost)).await;
                }
                Err(err) => return Err(BusError::kv(names::STATE_BUCKET, "update", &key, err)),
            }
        }
    }

    /// The KV keys of every run record (`run.<integration>.<run_id>`).
    pub async fn keys(&self) -> Result<Vec<String>, BusError> {
        self.keys_under("run.").await
    }

    /// The keys under `prefix`, read from the subjects of the bucket's stream: one request the
    /// stream leader answers, no consumer. Listing through an ordered consumer (`kv.keys()`)
    /// timed out on every try on loaders that had lived through the loss of a cluster node,
    /// so runs were never finalized. A deleted key may still be listed; reading it gives
    /// nothing.
    async fn keys_under(&self, prefix: &str) -> Result<Vec<String>, BusError> {
        let filter = format!("{}{prefix}>", self.kv.prefix);
        let fail = |e: Source| BusError::kv(names::STATE_BUCKET, "list", &format!("{prefix}>"), e);
        let mut subjects = self
            .kv
            .stream
            .clone()
            .info_with_subjects(&filter)
            .await
            .map_err(|e| fail(e.into()))?;
        let mut keys = Vec::new();
        while let Some((subject, _)) = subjects.try_next().await.map_err(|e| fail(e.into()))? {
            if let Some(key) = subject.strip_prefix(self.kv.prefix.as_str()) {
                keys.push(key.to_owned());
            }
        }
        Ok(keys)
    }

    /// Reads the record stored under `key` (as listed by [`Runs::keys`]).
    pub async fn get_by_key(&self, key: &str) -> Result<Option<RunRecord>, BusError> {
        match self
            .kv
            .get(key)
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "read", key, e))?
        {
            Some(value) => decode(&value).map(Some),
            None => Ok(None),
        }
    }

    /// Every run record, optionally of one integration, newest first.
    pub async fn list(&self, integration: Option<&str>) -> Result<Vec<RunRecord>, BusError> {
        let prefix = match integration {
            Some(id) => format!("run.{id}."),
            None => "run.".to_owned(),
        };
        let keys = self.keys_under(&prefix).await?;
        let mut records = Vec::new();
        for key in keys {
            let Some(entry) = self
                .kv
                .get(&key)
                .await
                .map_err(|e| BusError::kv(names::STATE_BUCKET, "read", &key, e))?
            else {
                continue;
            };
            match decode(&entry) {
                Ok(record) => records.push(record),
                Err(err) => tracing::warn!(key, error = %err, "skipping unreadable run record"),
            }
        }
        records.sort_by(|a: &RunRecord, b: &RunRecord| b.started_at.cmp(&a.started_at));
        Ok(records)
    }

    /// Removals held for an operator's approval, summed over the runs of `integration` whose
    /// removals have not been approved.
    pub async fn removals_held(&self, integration: &str) -> Result<u64, BusError> {
        Ok(self
            .list(Some(integration))
            .await?
            .iter()
            .map(|r| r.removals_held)
            .sum())
    }

    /// Watches every run record change (new records and updates).
    pub async fn watch(&self) -> Result<kv::Watch, BusError> {
        self.kv
            .watch("run.>")
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "watch", "run.>", e))
    }

    /// Removes the record stored under `key` (as listed by [`Runs::keys`]) with its history,
    /// leaving no delete marker behind: for records past their retention.
    pub async fn remove(&self, key: &str) -> Result<(), BusError> {
        let subject = format!("{}{key}", self.kv.prefix);
        self.kv
            .stream
            .purge()
            .filter(subject)
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "remove", key, e))?;
        Ok(())
    }

    /// Watches the record of one run (its changes from now on).
    pub async fn watch_run(&self, integration: &str, run_id: &str) -> Result<kv::Watch, BusError> {
        let key = key(integration, run_id);
        self.kv
            .watch(&key)
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "watch", &key, e))
    }
}

fn encode(record: &RunRecord) -> Result<Bytes, BusError> {
    document::encode("run record", record)
}

/// Decodes a run record from its KV value.
pub fn decode(value: &[u8]) -> Result<RunRecord, BusError> {
    document::decode("run record", value)
}
