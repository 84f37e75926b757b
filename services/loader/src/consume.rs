//! Consuming: one intake per integration pulls from that integration's shared consumer while
//! its gate is open (not paused, credentials working), prepares each event
//! ([`crate::pipeline`]) and feeds the batcher. A fetch is asked for only when the
//! prepared-event queue has a place for all it can bring, so every event the server hands
//! over is tracked for progress acks at once. On shutdown an intake stops pulling and hands in
//! what its last fetch delivered.

use std::collections::HashMap;

use futures::FutureExt;
use peoplesync_bus::{Bus, WorkStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::gates::Gates;
use crate::integrations::Integrations;
use crate::pipeline::{self, Item};
use crate::progress::InProgress;

/// The intakes of a replica, one per integration.
pub(crate) struct Intakes {
    shared: IntakeShared,
    running: HashMap<String, JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Intakes {
    /// Intakes working with `shared`, until `shutdown`.
    pub(crate) fn new(shared: IntakeShared, shutdown: CancellationToken) -> Intakes {
        Intakes {
            shared,
            running: HashMap::new(),
            shutdown,
        }
    }

    /// Starts an intake for each of `ids` that has none running: new integrations, and one
    /// whose intake ended while the replica runs (a panic on an event), which is said.
    pub(crate) fn start_new(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            let ended = self.running.get(&id).is_some_and(JoinHandle::is_finished);
            if ended && !self.shutdown.is_cancelled() {
                let why = match self
                    .running
                    .remove(&id)
                    .and_then(|task| task.now_or_never())
                {
                    Some(Err(err)) => err.to_string(),
                    _ => "it returned".to_owned(),
                };
                tracing::error!(integration = %id, reason = %why,
                    "the intake of {id} ended while the loader runs; starting it again");
            }
            self.running.entry(id.clone()).or_insert_with(|| {
                tokio::spawn(intake(self.shared.clone(), id, self.shutdown.clone()))
            });
        }
    }

    /// Waits for every intake to hand in its last fetch (they stop at the shutdown); the
    /// queue of prepared events closes once the last one is done.
    pub(crate) async fn finish(self) {
        let Intakes {
            shared, running, ..
        } = self;
        drop(shared);
        for (_, task) in running {
            let _ = task.await;
        }
    }
}

/// What every intake of a replica works with.
#[derive(Clone)]
pub(crate) struct IntakeShared {
    pub(crate) bus: Bus,
    /// Events per fetch.
    pub(crate) pull_batch: usize,
    pub(crate) integrations: Integrations,
    pub(crate) gates: Gates,
    /// Events held by this replica, kept alive with progress acks.
    pub(crate) held: InProgress,
    /// Where prepared events go (the batcher).
    pub(crate) items: mpsc::Sender<Item>,
}

/// Pulls one integration's events while its gate is open, until `shutdown`.
async fn intake(shared: IntakeShared, integration: String, shutdown: CancellationToken) {
    let IntakeShared {
        bus,
        pull_batch,
        integrations,
        gates,
        held,
        items,
    } = shared;
    // The pause watch may not have delivered this integration's flag yet: read it before the
    // first pull, so a paused integration is not loaded for a moment after a start.
    match bus.pauses().get_with_revision(&integration).await {
        Ok((flag, revision)) => {
            gates.set_flag(&integration, flag.as_ref(), revision);
        }
        Err(err) => {
            tracing::warn!(%integration, error = %err, "cannot read the pause flag; relying on the pause watch");
        }
    }
    let mut work = WorkStream::new(bus, &integration, pull_batch);
    if let Err(err) = work.bind().await {
        tracing::warn!(%integration, error = %err, "cannot bind the consumer yet; will keep trying");
    }
    let lookup = |id: &str| integrations.get_with_revision(id);
    let prepare = |message: async_nats::jetstream::Message| {
        let mut item = pipeline::prepare(message, lookup);
        item.tracked = held.track(item.message.reply.as_ref());
        item
    };
    'fetches: loop {
        if !gates.is_open(&integration) {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = gates.wait_open(&integration) => continue,
            }
        }
        // A fetch is asked for only once the queue has a place for every event it can bring:
        // an event the server has handed over is then prepared and kept alive at once, never
        // left in the client's buffer behind a full queue while its ack timer runs out.
        let mut places = tokio::select! {
            () = shutdown.cancelled() => break,
            places = items.reserve_many(pull_batch) => match places {
                Ok(places) => places,
                Err(_) => {
                    tracing::error!(integration = %integration,
                        "the batcher is gone; this intake stops pulling");
                    return;
                }
            },
        };
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break 'fetches,
                message = work.next_of_fetch() => message,
            };
            let Some(message) = message else {
                break;
            };
            let item = prepare(message);
            match places.next() {
                Some(place) => place.send(item),
                // Not expected (a fetch brings at most `pull_batch`), but never dropped.
                None => {
                    if items.send(item).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    // Hand in what the last fetch delivered, so it is loaded now rather than redelivered later.
    for message in work.drain().await {
        if items.send(prepare(message)).await.is_err() {
            return;
        }
    }
}
