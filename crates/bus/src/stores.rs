//! The typed stores a [`Bus`] hands out. Callers ask the bus for what they need — run
//! records, pause flags, a publisher — and never learn which bucket or stream holds it.

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use tokio_util::sync::CancellationToken;

use crate::outcomes::OutcomeRecorder;
use crate::presence::{self, Announcement};
use crate::{Bus, BusError, Locks, Pauses, Publisher, Runs, names};

impl Bus {
    /// The run records.
    pub fn runs(&self) -> Runs {
        Runs::new(self.state.clone())
    }

    /// The integrations' pause flags.
    pub fn pauses(&self) -> Pauses {
        Pauses::new(self.state.clone())
    }

    /// Locks held across replicas for the length of one operation.
    pub fn locks(&self) -> Locks {
        Locks::new(self.state.clone())
    }

    /// A publisher keeping up to `window` acknowledgements in flight.
    pub fn publisher(&self, window: usize) -> Publisher {
        Publisher::new(self.js.clone(), window)
    }

    /// A recorder of per-event outcomes keeping up to `window` acknowledgements in flight.
    pub fn outcome_recorder(&self, window: usize) -> OutcomeRecorder {
        OutcomeRecorder::new(self.js.clone(), window)
    }

    /// Announces this replica (name, version, and what `readiness` says) until `stop` is
    /// cancelled, then withdraws it; see [`presence`].
    pub async fn announce(
        &self,
        replica: String,
        version: String,
        readiness: peoplesync_runtime::Readiness,
        stop: CancellationToken,
    ) {
        presence::announce(self.state.clone(), replica, version, readiness, stop).await;
    }

    /// The replicas that announced themselves recently, as of `now`.
    pub async fn replicas_seen(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Announcement>, BusError> {
        presence::seen(&self.state, now).await
    }

    /// The worker events of `integration` waiting for a loader, and those delivered but not yet
    /// acknowledged, from its loaders' consumer; `None` while there is no such consumer (no
    /// loader of the integration has started).
    pub async fn backlog(&self, integration: &str) -> Result<Option<(u64, u64)>, BusError> {
        let consumer = names::loader_consumer(integration);
        match self
            .stream(names::WORKERS_STREAM)
            .await?
            .consumer_info(&consumer)
            .await
        {
            Ok(info) => Ok(Some((info.num_pending, info.num_ack_pending as u64))),
            Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
            Err(err) => Err(BusError::request(
                format!("reading consumer {consumer}"),
                err,
            )),
        }
    }

    /// The shared streams that cannot be opened, each with the reason.
    pub async fn missing_streams(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for stream in self.topology_streams() {
            if let Err(err) = self.js.get_stream(stream).await {
                missing.push(format!("{stream} ({err})"));
            }
        }
        missing
    }

    /// The names of the shared streams [`Bus::missing_streams`] checks.
    pub fn topology_streams(&self) -> [&'static str; 5] {
        crate::setup::shared_streams(self.settings()).map(|spec| spec.name)
    }

    /// How many worker events the work stream holds, and their total size in bytes.
    pub async fn work_stream_size(&self) -> Result<(u64, u64), BusError> {
        let what = format!("reading stream {}", names::WORKERS_STREAM);
        // Opening the stream reads its info; that answer is all this needs.
        let stream = self
            .js
            .get_stream(names::WORKERS_STREAM)
            .await
            .map_err(|e| BusError::request(&what, e))?;
        let state = &stream.cached_info().state;
        Ok((state.messages, state.bytes))
    }
}
