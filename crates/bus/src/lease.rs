//! The scheduler lease: of several extractor replicas serving an integration, exactly one
//! schedules and runs its full runs ([`Bus::lease`]). The lease is a key in KV
//! `peoplesync_state` (`lease.extractor.<integration>`, [`key`]) whose holder renews it every
//! third of the TTL with a compare-and-set on its revision; the control plane reads who holds
//! it ([`Bus::lease_holder`]).
//!
//! A standby looks at the key every sixth of the TTL, timing its revision on its own monotonic
//! clock: when the revision has not changed for two thirds of the TTL (two missed renewals),
//! the holder is taken for dead and the standby takes the key over with a compare-and-set, so
//! two standbys cannot both win. A standby therefore takes over at most one TTL after the
//! holder's last renewal. A holder that cannot renew for half the TTL steps down first. No
//! wall clock is compared across machines, and tokio's clock drives it all, so tests can
//! shorten the TTL freely.
//!
//! Beside the lease, the holder records the planned start of each scheduled run it fired
//! ([`Bus::record_scheduled`], key `schedule.<integration>`), so that a replica taking the lease
//! over can tell a start that fell while nobody scheduled the integration.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::lost_to_another_writer;
use crate::{Bus, BusError, document, names};

/// The KV key of an integration's lease.
pub fn key(integration: &str) -> String {
    format!("lease.extractor.{integration}")
}

/// What the key holds (for operators and the status call; only the revision decides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The replica holding the lease.
    pub holder: String,
    /// When it last renewed (RFC 3339), informative only.
    pub renewed_at: String,
}

/// The scheduled start of an integration that a lease holder fired last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleMark {
    /// The planned start time (not when its run began).
    pub planned: DateTime<Utc>,
}

impl Bus {
    /// The scheduled start of `integration` fired last (`None` before the first one).
    pub async fn last_scheduled(
        &self,
        integration: &str,
    ) -> Result<Option<ScheduleMark>, BusError> {
        document::get(
            &self.state,
            "schedule mark",
            &names::schedule_key(integration),
        )
        .await
    }

    /// Records that the scheduled start `mark` of `integration` fired.
    pub async fn record_scheduled(
        &self,
        integration: &str,
        mark: &ScheduleMark,
    ) -> Result<(), BusError> {
        document::put(
            &self.state,
            "schedule mark",
            &names::schedule_key(integration),
            mark,
        )
        .await
        .map(drop)
    }

    /// `holder`'s claim on the scheduler lease of `integration`, held for `ttl` per renewal.
    pub fn lease(&self, integration: &str, holder: &str, ttl: Duration) -> Lease {
        Lease::new(self.state.clone(), integration, holder, ttl)
    }

    /// What the lease of `integration` holds now (`None` when nobody holds it).
    pub async fn lease_holder(&self, integration: &str) -> Result<Option<LeaseValue>, BusError> {
        document::get(&self.state, "scheduler lease", &key(integration)).await
    }
}

/// One replica's claim on one integration's lease.
pub struct Lease {
    kv: kv::Store,
    key: String,
    holder: String,
    ttl: Duration,
    held: Option<u64>,
    last_renewed: Option<Instant>,
    observed: Option<(u64, Instant)>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .field("held", &self.held.is_some())
            .finish()
    }
}

impl Lease {
    fn new(state: kv::Store, integration: &str, holder: &str, ttl: Duration) -> Lease {
        Lease {
            kv: state,
            key: key(integration),
            holder: holder.to_owned(),
            ttl,
            held: None,
            last_renewed: None,
            observed: None,
        }
    }

    /// Holds the lease whenever it can until `stop`, reporting on `leader` whether it does;
    /// releases it on the way out so a standby takes over at once.
    pub async fn run(mut self, leader: watch::Sender<bool>, stop: CancellationToken) {
        loop {
            // Each look is bounded: while the client's queue is full (NATS gone for a while) a
            // request waits to be handed over without end, and a holder that never hears back
            // must still step down before a standby may take over.
            let limit = self.step_limit();
            let holding = match tokio::time::timeout(limit, self.step()).await {
                Ok(holding) => holding,
                Err(_) => self.unanswered(&format!(
                    "NATS did not answer within {} ms",
                    limit.as_millis()
                )),
            };
            leader.send_if_modified(|current| {
                let changed = *current != holding;
                *current = holding;
                changed
            });
            let pause = if holding { self.ttl / 3 } else { self.ttl / 6 };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pause.max(Duration::from_millis(50))) => {}
            }
        }
        leader.send_replace(false);
        self.release().await;
    }

    /// One look at the key: renew it, take it, or keep watching it. Returns whether this
    /// replica holds the lease afterwards.
    pub async fn step(&mut self) -> bool {
        if let Some(revision) = self.held {
            match self.kv.update(&self.key, self.value(), revision).await {
                Ok(next) => {
                    self.held = Some(next);
                    self.last_renewed = Some(Instant::now());
                    return true;
                }
                Err(err) if lost_to_another_writer(&err) => {
                    tracing::warn!(key = %self.key, "the scheduler lease was taken over by another replica; standing by");
                    self.held = None;
                    return false;
                }
                Err(err) => return self.unanswered(&err.to_string()),
            }
        }
        let entry = match self.kv.entry(&self.key).await {
            Ok(entry) => entry,
            Err(err) => {
                tracing::warn!(key = %self.key, error = %err, "cannot read the scheduler lease");
                return false;
            }
        };
        let revision = match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let theirs: Option<LeaseValue> = serde_json::from_slice(&entry.value).ok();
                // A replica restarted under its name takes its lease back at once; a holder
                // that must never do so (`--once`) has a name of its own.
                let mine = theirs.as_ref().is_some_and(|v| v.holder == self.holder);
                let expired = match self.observed {
                    Some((seen, since)) if seen == entry.revision => {
                        since.elapsed() >= self.ttl * 2 / 3
                    }
                    _ => {
                        self.observed = Some((entry.revision, Instant::now()));
                        false
                    }
                };
                if !(mine || expired) {
                    return false;
                }
                if expired {
                    tracing::info!(key = %self.key,
                        previous = theirs.map(|v| v.holder).unwrap_or_default(),
                        "the scheduler lease was not renewed in time; taking over");
                }
                Some(entry.revision)
            }
            _ => None,
        };
        let taken = match revision {
            Some(revision) => self
                .kv
                .update(&self.key, self.value(), revision)
                .await
                .map_err(|e| e.to_string()),
            None => self
                .kv
                .create(&self.key, self.value())
                .await
                .map_err(|e| e.to_string()),
        };
        match taken {
            Ok(revision) => {
                tracing::info!(key = %self.key, holder = %self.holder, "holding the scheduler lease");
                self.held = Some(revision);
                self.last_renewed = Some(Instant::now());
                self.observed = None;
                true
            }
            Err(err) => {
                tracing::debug!(key = %self.key, error = %err, "another replica got the lease first");
                false
            }
        }
    }

    /// How long one look at the key ([`Lease::step`]) or the release may take. A holder's
    /// renewal may take until two thirds of the TTL after its last one, when a standby may
    /// take over (a renewal landing before then keeps the lease, slow as it was); other looks
    /// and the release a quarter of the TTL. Either way a holder whose requests go unanswered
    /// steps down before a standby may take over.
    fn step_limit(&self) -> Duration {
        let renewal = match (self.held, self.last_renewed) {
            (Some(_), Some(at)) => (self.ttl * 2 / 3).checked_sub(at.elapsed()),
            _ => None,
        };
        renewal.map_or_else(
            || self.quarter(),
            |left| left.max(Duration::from_millis(50)),
        )
    }

    /// A quarter of the TTL (at least 50 ms): how long a look at the key or the release may
    /// take.
    fn quarter(&self) -> Duration {
        (self.ttl / 4).max(Duration::from_millis(50))
    }

    /// A renewal (or a look at the key) NATS did not answer (`error`, or no answer in time):
    /// a holder holds on while the lease cannot have expired for the others and steps down
    /// before it can. Returns whether it still holds the lease.
    fn unanswered(&mut self, error: &str) -> bool {
        if self.held.is_none() {
            tracing::warn!(key = %self.key, error, "cannot read the scheduler lease");
            return false;
        }
        let fresh = self
            .last_renewed
            .is_some_and(|at| at.elapsed() < self.ttl / 2);
        tracing::warn!(key = %self.key, error, still_holding = fresh,
            "cannot renew the scheduler lease");
        if !fresh {
            self.held = None;
        }
        fresh
    }

    /// Gives the lease up if held (a compare-and-delete, so a lease already taken over is left
    /// alone). A NATS that does not answer within a quarter of the TTL is not waited for: the
    /// lease then expires after its TTL.
    pub async fn release(&mut self) {
        if let Some(revision) = self.held.take() {
            let released = tokio::time::timeout(
                self.quarter(),
                self.kv.delete_expect_revision(&self.key, Some(revision)),
            )
            .await;
            match released {
                Ok(Ok(())) => tracing::info!(key = %self.key, "released the scheduler lease"),
                Ok(Err(err)) => {
                    tracing::warn!(key = %self.key, error = %err, "could not release the scheduler lease; it expires after its TTL")
                }
                Err(_) => {
                    tracing::warn!(key = %self.key, "NATS did not answer the release of the scheduler lease; it expires after its TTL")
                }
            }
        }
    }

    fn value(&self) -> Bytes {
        let value = LeaseValue {
            holder: self.holder.clone(),
            renewed_at: chrono::Utc::now().to_rfc3339(),
        };
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }
}
