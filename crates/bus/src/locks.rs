//! Short locks in KV (`peoplesync_state`, key `lock.<name>`): an operation that must not run
//! twice at once across replicas — a dead-letter replay of one integration, which two control
//! plane replicas could otherwise both publish — takes one for its length. The holder gives it
//! back when done; a lock whose holder died is taken over once it is older than the taker's
//! `stale_after`, which must be longer than the operation can last.

use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::{BusError, document, names};

/// The prefix of every lock key.
pub const PREFIX: &str = "lock.";

/// Who holds a lock, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The holder (a replica name and what it does).
    pub by: String,
    /// When it took the lock (RFC 3339).
    pub at: String,
}

/// A lock this replica took: give it back with [`Locks::release`].
#[derive(Debug)]
#[must_use = "a lock taken is held until released"]
pub struct Taken {
    key: String,
    revision: u64,
}

/// The locks in the state bucket.
#[derive(Clone, Debug)]
pub struct Locks {
    kv: kv::Store,
}

impl Locks {
    /// Locks stored in `state` (the `peoplesync_state` bucket).
    pub(crate) fn new(state: kv::Store) -> Locks {
        Locks { kv: state }
    }

    /// Takes lock `name` for `by`. While someone else took it less than `stale_after` ago,
    /// answers who (`Err`) and takes nothing; an older one is taken over (its holder died).
    pub async fn take(
        &self,
        name: &str,
        by: &str,
        stale_after: Duration,
    ) -> Result<Result<Taken, LockHolder>, BusError> {
        let key = format!("{PREFIX}{name}");
        let mine = LockHolder {
            by: by.to_owned(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        let value = document::encode("lock", &mine)?;
        let fail = |e: &dyn std::fmt::Display| {
            BusError::request(format!("taking lock {name}"), e.to_string())
        };
        let current = self.kv.entry(&key).await.map_err(|e| fail(&e))?;
        let taken = match current {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let holder: Option<LockHolder> = serde_json::from_slice(&entry.value).ok();
                if let Some(holder) = holder.filter(|h| !stale(h, stale_after)) {
                    return Ok(Err(holder));
                }
                tracing::warn!(lock = name, "taking over a lock its holder never gave back");
                self.kv
                    .update(&key, value, entry.revision)
                    .await
                    .map_err(|e| e.to_string())
            }
            _ => self.kv.create(&key, value).await.map_err(|e| e.to_string()),
        };
        match taken {
            Ok(revision) => Ok(Ok(Taken { key, revision })),
            // Another replica took it between the read and the write: it holds it now.
            Err(_) => match self.holder(name).await? {
                Some(holder) => Ok(Err(holder)),
                None => Err(fail(&"the lock changed while it was taken; try again")),
            },
        }
    }

    /// Who holds lock `name`, if anyone.
    pub async fn holder(&self, name: &str) -> Result<Option<LockHolder>, BusError> {
        let key = format!("{PREFIX}{name}");
        let (value, _) = document::read(&self.kv, &key).await?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Gives `taken` back, unless another replica took it over meanwhile (then it is theirs).
    pub async fn release(&self, taken: Taken) -> Result<(), BusError> {
        match self
            .kv
            .delete_expect_revision(&taken.key, Some(taken.revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(err) => {
                // Taken over (we were too slow) or NATS did not answer: either way the lock
                // goes stale and is taken over, so the next taker is not stopped for ever.
                tracing::warn!(key = %taken.key, error = %err, "cannot give a lock back");
                Err(BusError::kv(names::STATE_BUCKET, "delete", &taken.key, err))
            }
        }
    }
}

/// Whether `holder` took its lock longer than `stale_after` ago (or at a time that cannot be
/// read).
fn stale(holder: &LockHolder, stale_after: Duration) -> bool {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(&holder.at) else {
        return true;
    };
    let age = chrono::Utc::now().signed_duration_since(at);
    age.to_std().is_ok_and(|age| age >= stale_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(ago: chrono::Duration) -> LockHolder {
        LockHolder {
            by: "r1".into(),
            at: (chrono::Utc::now() - ago).to_rfc3339(),
        }
    }

    #[test]
    fn a_lock_is_stale_once_older_than_stale_after_or_unreadable() {
        let ten_minutes = Duration::from_secs(600);
        assert!(!stale(&held(chrono::Duration::seconds(5)), ten_minutes));
        assert!(stale(&held(chrono::Duration::minutes(11)), ten_minutes));
        let garbled = LockHolder {
            by: "r1".into(),
            at: "yesterday".into(),
        };
        assert!(stale(&garbled, ten_minutes));
        // A clock ahead of ours: taken "in the future", not stale.
        assert!(!stale(&held(chrono::Duration::minutes(-3)), ten_minutes));
    }
}
