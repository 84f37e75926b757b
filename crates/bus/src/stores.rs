//! The typed stores a [`Bus`] hands out. Callers ask the bus for what they need — run
//! records, pause flags, a publisher — and never learn which bucket or stream holds it.

use tokio_util::sync::CancellationToken;

use crate::outcomes::OutcomeRecorder;
use crate::presence::{self, Announcement};
use crate::{Bus, BusError, Pauses, Publisher, Runs};

impl Bus {
    /// The run records.
    pub fn runs(&self) -> Runs {
        Runs::new(self.state.clone())
    }

    /// The integrations' pause flags.
    pub fn pauses(&self) -> Pauses {
        Pauses::new(self.state.clone())
    }

    /// A publisher keeping up to `window` acknowledgements in flight.
    pub fn publisher(&self, window: usize) -> Publisher {
        Publisher::new(self.js.clone(), window)
    }

    /// A recorder of per-event outcomes keeping up to `window` acknowledgements in flight.
    pub fn outcome_recorder(&self, window: usize) -> OutcomeRecorder {
        OutcomeRecorder::new(self.js.clone(), window)
    }

    /// Announces this replica (name and version) until `stop` is cancelled, then withdraws it;
    /// see [`presence`].
    pub async fn announce(&self, replica: String, version: String, stop: CancellationToken) {
        presence::announce(self.state.clone(), replica, version, stop).await;
    }

    /// The replicas that announced themselves recently, as of `now`.
    pub async fn replicas_seen(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Announcement>, BusError> {
        presence::seen(&self.state, now).await
    }
}
