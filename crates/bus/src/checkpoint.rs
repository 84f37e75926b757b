//! The extractor's checkpoint per integration (KV `peoplesync_state`, key
//! `checkpoint.<integration>`; [`Bus::checkpoints`]): the run in progress and the marker after which the next page
//! starts. It is written only after a page is fully published, so a restarted extractor
//! resumes the same run and re-publishes at most a page or two, which the stream's dedup
//! window drops. Once the listing has ended it also keeps the run's removal decision, so a run
//! interrupted while publishing removals finishes them the same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::removals::Decision;
use crate::{Bus, BusError, document, names};

/// How long a checkpoint write is tried again while NATS does not answer.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(120);

/// Where an unfinished run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The run being extracted.
    pub run_id: String,
    /// Id of the last worker of the last fully published page; `None` before the first page.
    pub marker: Option<String>,
    /// Upsert events published so far.
    pub published: u64,
    /// Records skipped so far (not normalisable).
    pub skipped: u64,
    /// Pages read so far.
    pub pages: u64,
    /// Every worker id up to and including this one is published (and listed in the run's
    /// seen list). Equal to `marker` except after Sage People refused a marker and the listing
    /// restarted from the beginning: records up to here are then read again but not published.
    #[serde(default)]
    pub done_through: Option<String>,
    /// The `$filter` the run lists with; a run is not resumed under another filter.
    #[serde(default)]
    pub filter: Option<String>,
    /// The credential set the run reads with, and the host of its login URL: the Sage People
    /// org it lists. A run is not resumed against another org ([`Checkpoint::org_change`]).
    /// `None` in a checkpoint of an older version: not known.
    #[serde(default)]
    pub credentials: Option<String>,
    /// See [`Checkpoint::credentials`].
    #[serde(default)]
    pub login_host: Option<String>,
    /// Times the run was resumed (part of the seen-list chunk ids).
    #[serde(default)]
    pub resumes: u64,
    /// Times the listing restarted after a refused marker.
    #[serde(default)]
    pub restarts: u64,
    /// Set once the listing ended: what happens to removals.
    #[serde(default)]
    pub ending: Option<Decision>,
    /// Every record is sent, even one identical to what was last written (drift repair).
    #[serde(default)]
    pub resend_all: bool,
}

impl Checkpoint {
    /// The checkpoint of a new run listing with `filter`.
    pub fn start(run_id: &str, filter: Option<String>) -> Checkpoint {
        Checkpoint {
            run_id: run_id.to_owned(),
            marker: None,
            published: 0,
            skipped: 0,
            pages: 0,
            done_through: None,
            filter,
            credentials: None,
            login_host: None,
            resumes: 0,
            restarts: 0,
            ending: None,
            resend_all: false,
        }
    }
}

impl Checkpoint {
    /// How the org the run would now read — credential set `credentials`, whose login URL's
    /// host is `login_host` — differs from the one it started on, if it does: its marker and
    /// seen list belong to that org. What is not known (a checkpoint of an older version, a
    /// set not configured) is no change.
    pub fn org_change(&self, credentials: &str, login_host: Option<&str>) -> Option<String> {
        // A set not configured fails the run on its settings, which keeps the checkpoint for
        // when the integration names a usable set again.
        let now = login_host?;
        if let Some(was) = &self.credentials
            && was != credentials
        {
            return Some(format!(
                "the integration's credential set changed from {was:?} to {credentials:?}"
            ));
        }
        match &self.login_host {
            Some(was) if !was.eq_ignore_ascii_case(now) => Some(format!(
                "the login host of credential set {credentials:?} changed from {was} to {now}"
            )),
            _ => None,
        }
    }
}

/// Checkpoints in the state bucket. One value (and its clones) is one writer: once it has read
/// or written the checkpoint, it writes only over the revision it knows, so a replica that lost
/// the scheduler lease mid-page cannot move a run back after the new leader resumed it — its
/// write fails and its run stops.
#[derive(Clone)]
pub struct Checkpoints {
    kv: kv::Store,
    revision: Arc<Mutex<Option<u64>>>,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints")
            .field("revision", &self.known_revision())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// The extractor's checkpoints: a new writer, which fences itself off once another one
    /// moved the checkpoint it read or wrote (see [`Checkpoints`]).
    pub fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(self.state.clone())
    }
}

impl Checkpoints {
    fn new(state: kv::Store) -> Checkpoints {
        Checkpoints {
            kv: state,
            revision: Arc::default(),
        }
    }

    fn known_revision(&self) -> Option<u64> {
        self.revision.lock().ok().and_then(|r| *r)
    }

    fn set_revision(&self, revision: Option<u64>) {
        if let Ok(mut slot) = self.revision.lock() {
            *slot = revision;
        }
    }

    /// The checkpoint of `integration`, if a run is unfinished.
    pub async fn load(&self, integration: &str) -> Result<Option<Checkpoint>, BusError> {
        let key = names::checkpoint_key(integration);
        // A deleted checkpoint still has a revision to write the next one after.
        let (value, revision) = document::read(&self.kv, &key).await?;
        self.set_revision((revision != 0).then_some(revision));
        let Some(value) = value else {
            return Ok(None);
        };
        match serde_json::from_slice(&value) {
            Ok(checkpoint) => Ok(Some(checkpoint)),
            Err(err) => {
                tracing::warn!(integration, error = %err, "ignoring an unreadable checkpoint: the run it belonged to cannot be resumed, and the next run starts from the first page");
                Ok(None)
            }
        }
    }

    /// Stores `checkpoint` for `integration`.
    pub async fn save(&self, integration: &str, checkpoint: &Checkpoint) -> Result<(), BusError> {
        let key = names::checkpoint_key(integration);
        let value = document::encode("checkpoint", checkpoint)?;
        let revision = match self.known_revision() {
            Some(known) => match self.kv.update(&key, value.clone(), known).await {
                Ok(revision) => revision,
                Err(err) => self.recover_write(&key, &value, known, err).await?,
            },
            None => self
                .kv
                .put(&key, value)
                .await
                .map_err(|e| BusError::kv(names::STATE_BUCKET, "write", &key, e))?,
        };
        self.set_revision(Some(revision));
        Ok(())
    }

    /// After a compare-and-set write failed: a write whose answer was lost (NATS restarted, a
    /// node went away) may have landed, and then the stored value is ours; a write that did not
    /// land is tried again while NATS recovers (up to [`WRITE_DEADLINE`]). Only a value written
    /// by someone else fences this writer off.
    async fn recover_write(
        &self,
        key: &str,
        value: &Bytes,
        known: u64,
        first: kv::UpdateError,
    ) -> Result<u64, BusError> {
        let fenced = || {
            BusError::kv(
                names::STATE_BUCKET,
                "write",
                key,
                "another extractor replica moved this run's checkpoint (it took over the \
                 scheduler lease); this replica stops the run",
            )
        };
        let started = tokio::time::Instant::now();
        tracing::warn!(key, error = %first, "a checkpoint write failed; checking whether it landed");
        let mut last_error;
        let mut pause = Duration::from_millis(200);
        loop {
            match self.kv.entry(key).await {
                Ok(Some(entry)) if entry.value == *value => return Ok(entry.revision),
                Ok(Some(entry)) if entry.revision == known => {
                    match self.kv.update(key, value.clone(), known).await {
                        Ok(revision) => return Ok(revision),
                        Err(err) => last_error = err.to_string(),
                    }
                }
                Ok(_) => return Err(fenced()),
                Err(err) => last_error = err.to_string(),
            }
            if started.elapsed() >= WRITE_DEADLINE {
                return Err(BusError::kv(
                    names::STATE_BUCKET,
                    "write",
                    key,
                    format!(
                        "not stored within {} s: {last_error}",
                        WRITE_DEADLINE.as_secs()
                    ),
                ));
            }
            tracing::warn!(key, error = %last_error, "cannot store the checkpoint yet; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Forgets the checkpoint of `integration` (the run ended).
    pub async fn clear(&self, integration: &str) -> Result<(), BusError> {
        let key = names::checkpoint_key(integration);
        self.kv
            .delete(&key)
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "delete", &key, e))?;
        self.set_revision(None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(credentials: &str, login_host: &str) -> Checkpoint {
        Checkpoint {
            credentials: Some(credentials.to_owned()),
            login_host: Some(login_host.to_owned()),
            ..Checkpoint::start("r1", None)
        }
    }

    #[test]
    fn another_credential_set_or_login_host_is_another_org() {
        let sandbox = reading("sandbox", "acme--uat.sandbox.my.salesforce.com");
        let set = sandbox
            .org_change("production", Some("acme--uat.sandbox.my.salesforce.com"))
            .expect("a change");
        assert!(set.contains("\"sandbox\" to \"production\""), "{set}");
        let host = sandbox
            .org_change("sandbox", Some("acme.my.salesforce.com"))
            .expect("a change");
        assert!(host.contains("to acme.my.salesforce.com"), "{host}");
        assert_eq!(
            sandbox.org_change("sandbox", Some("ACME--uat.sandbox.my.salesforce.com")),
            None
        );
    }

    #[test]
    fn what_is_not_known_is_no_change() {
        // Written by an older version.
        let old: Checkpoint = serde_json::from_str(
            r#"{"run_id":"r1","marker":null,"published":0,"skipped":0,"pages":0}"#,
        )
        .expect("an old checkpoint");
        assert_eq!(
            old.org_change("production", Some("acme.my.salesforce.com")),
            None
        );
        // The set named now is not configured: the run fails on its settings, keeping this.
        let sandbox = reading("sandbox", "acme--uat.sandbox.my.salesforce.com");
        assert_eq!(sandbox.org_change("apac", None), None);
    }
}
