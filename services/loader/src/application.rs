//! The loader's composition root: [`Application::build`] connects to NATS and Oomnitza and
//! loads the integration configs; [`Application::run_until_stopped`] starts the parts — the
//! config and pause watches, the credential probe, the advisories, progress acks, the
//! finalizer, one intake per integration ([`crate::consume`]), the batcher and the dispatcher
//! — and drains them on shutdown. Batches are delivered concurrently: at most
//! `batch.in_flight` bulk requests at Oomnitza at once, and two more batches between intake and
//! ack, so checking applied hashes and settling one batch overlap with another's request. The
//! queue of prepared events holds two fetches and the queue of batches one: an event waits in a
//! replica no longer than keeping the requests busy needs (a replica holds at most about
//! `(in_flight + 5) × size + 2 × max(pull_batch, size)` events), so fewer events are held where
//! they go cold, and more are left for other replicas. On shutdown the intakes stop pulling and
//! hand in what their last fetch delivered, partial batches are flushed and in-flight
//! deliveries finish (or their events are nak'ed) within the grace period.

use crate::webhook::LeaversWebhook;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use peoplesync_bus::{Bus, PauseFlag};
use peoplesync_oomnitza::OomnitzaClient;
use peoplesync_runtime::restart::{RestartDelays, keep_running};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::batcher::{self, Batch};
use crate::consume::{IntakeShared, Intakes};
use crate::deliver::Deliverer;
use crate::finalize::{Finalizer, Poke};
use crate::gates::Gates;
use crate::integrations::{Integrations, SeedError};
use crate::limiter::AdaptiveLimiter;
use crate::pipeline::Item;
use crate::progress::InProgress;

use crate::verify::Verifier;
use crate::{LoaderConfig, ack, advisories};

/// A loader replica, connected and ready to run.
pub struct Application {
    config: LoaderConfig,
    bus: Bus,
    client: OomnitzaClient,
    integrations: Integrations,
    gates: Gates,
    replica: String,
    /// Read at start-up, so a wrong URL or secret stops the replica before it reports ready.
    webhook: Option<LeaversWebhook>,
}

impl Application {
    /// Connects to NATS (setting up the topology), builds the Oomnitza client, and loads the
    /// configured integrations' configs, seeding them when absent (with `seed`, the text of an
    /// `--integration` file, for its own id). Pauses, Oomnitza failures and refused configs are
    /// noted on `readiness`, so `/readyz` says why this replica is not loading an integration.
    pub async fn build(
        config: LoaderConfig,
        seed: Option<String>,
        readiness: peoplesync_runtime::Readiness,
    ) -> anyhow::Result<Application> {
        let oomnitza = config.oomnitza_config()?;
        let webhook = LeaversWebhook::from_env()?;
        let client = OomnitzaClient::new(oomnitza).context("setting up the Oomnitza client")?;
        let bus = Bus::connect_from_env(&config.nats_url, "oomnitza-loader", config.bus_settings())
            .await
            .context("connecting to NATS")?;
        peoplesync_bus::leavers::ensure(&bus)
            .await
            .context("creating the leavers report stream")?;
        let integrations = Integrations::noting_on(readiness.clone());
        let seed_id = match &seed {
            Some(text) => Some(
                peoplesync_core::IntegrationConfig::from_toml(text)
                    .map_err(|e| anyhow::anyhow!("--integration file: {e}"))?
                    .id,
            ),
            None => None,
        };
        let mut ids = config.integrations.clone();
        if let Some(id) = &seed_id
            && !ids.contains(id)
        {
            ids.push(id.clone());
        }
        for id in &ids {
            let text = (seed_id.as_deref() == Some(id.as_str()))
                .then_some(seed.as_deref())
                .flatten();
            // Read just after the set-up, so asked again as patiently while NATS does not answer.
            let what = format!("the config of integration {id}");
            let loaded = peoplesync_bus::patiently(&what, bus.settings().replicas, || async {
                match integrations.load_or_seed(&bus, id, text).await {
                    Err(SeedError::Bus(err)) => Err(err),
                    other => Ok(other),
                }
            })
            .await;
            loaded
                .map_err(SeedError::Bus)
                .and_then(|seeded| seeded)
                .with_context(|| format!("loading the config of integration {id}"))?;
        }
        let replica = config.replica_name();
        Ok(Application {
            config,
            bus,
            client,
            integrations,
            gates: Gates::noting_on(readiness),
            replica,
            webhook,
        })
    }

    /// The bus connection (for the control plane and tests).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The Oomnitza client (for the control plane).
    pub fn client(&self) -> &OomnitzaClient {
        &self.client
    }

    /// The integration configs this replica loads with.
    pub fn integrations(&self) -> &Integrations {
        &self.integrations
    }

    /// The pause and credential gates (for the start-up checks).
    pub fn gates(&self) -> &Gates {
        &self.gates
    }

    /// Runs until `shutdown` is cancelled, then drains.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(replica = %self.replica, "loader running");
        let background_stop = CancellationToken::new();
        let held = InProgress::default();
        let mut background = self.spawn_background(&held, &background_stop);
        let (poke_tx, poke_rx) = mpsc::channel::<Poke>(1024);
        let verifier = Verifier::new(
            self.bus.clone(),
            self.client.clone(),
            self.integrations.clone(),
            self.replica.clone(),
            self.config.verify.clone(),
        );
        let finalizer = Finalizer::new(
            self.bus.clone(),
            self.client.clone(),
            self.replica.clone(),
            self.config.run_retention(),
            verifier,
            self.webhook.clone(),
            self.gates.clone(),
        );
        let finalizer_task = tokio::spawn(finalizer.run(poke_rx, background_stop.clone()));
        let (items, delivery) = self.start_delivery(poke_tx);

        // One intake per integration; new integrations are picked up as their configs appear.
        let shared = IntakeShared {
            bus: self.bus.clone(),
            pull_batch: self.config.batch.pull_batch,
            integrations: self.integrations.clone(),
            gates: self.gates.clone(),
            held,
            items,
        };
        let mut intakes = Intakes::new(shared, shutdown.clone());
        let mut discovery = tokio::time::interval(DISCOVERY);
        let mut failed = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = discovery.tick() => {
                    // A task that should run until the shutdown and has ended (a panic, a bug)
                    // leaves the replica looking ready while it loads nothing: stop it instead,
                    // so the failure shows and the orchestrator starts a fresh one.
                    let ended_background = background.try_join_next();
                    if let Some(task) = delivery
                        .ended()
                        .or_else(|| finalizer_task.is_finished().then_some("the finalizer"))
                        .or_else(|| ended_background.as_ref().map(|_| "a background task"))
                    {
                        let cause = match &ended_background {
                            Some(Err(err)) => err.to_string(),
                            _ => "it returned".to_owned(),
                        };
                        tracing::error!(task, %cause, "{task} ended while the loader runs; stopping this replica");
                        failed = Some(task);
                        shutdown.cancel();
                        break;
                    }
                    // Bounded: with NATS gone long enough for the client's queue to fill, a KV
                    // call waits to be sent for as long as the outage lasts, and this loop
                    // would no longer see the shutdown nor a task that ended.
                    let resumed = resume_refused(&self.bus, &self.integrations, &self.gates);
                    if tokio::time::timeout(DISCOVERY, resumed).await.is_err() {
                        tracing::warn!("NATS did not answer the check of refused configs within {} s; trying again", DISCOVERY.as_secs());
                    }
                    intakes.start_new(self.integrations.ids());
                }
            }
        }

        delivery.drain(intakes, self.config.shutdown_grace()).await;
        background_stop.cancel();
        // The finalizer stops between two checks; a check waiting on NATS that does not
        // answer (the client holds requests while it reconnects) is dropped instead: it is
        // repeated by another replica or at the next start, as after a crash.
        let stopping = std::time::Instant::now();
        let mut finalizer_task = finalizer_task;
        if tokio::time::timeout(FINALIZER_STOP, &mut finalizer_task)
            .await
            .is_err()
        {
            finalizer_task.abort();
            tracing::warn!(
                "the finalizer's check did not end within {} s of the stop (NATS not answering?); dropped it, to be checked again",
                FINALIZER_STOP.as_secs()
            );
        }
        // Within the same part of the stop margin: leavers reports still being posted.
        if let Some(webhook) = &self.webhook {
            webhook
                .stop(FINALIZER_STOP.saturating_sub(stopping.elapsed()))
                .await;
        }
        background.abort_all();
        match failed {
            Some(task) => anyhow::bail!("{task} ended while the loader was running"),
            None => Ok(()),
        }
    }

    /// Starts what runs beside the intakes until `stop`: the config and pause watches, the
    /// Oomnitza credential probe, the advisories and the progress acks of `held` events.
    fn spawn_background(&self, held: &InProgress, stop: &CancellationToken) -> JoinSet<()> {
        let mut background = JoinSet::new();
        {
            let (integrations, bus) = (self.integrations.clone(), self.bus.clone());
            background.spawn(keep_running(
                "integration config watch".to_owned(),
                stop.clone(),
                RestartDelays::default(),
                move || {
                    let (integrations, bus) = (integrations.clone(), bus.clone());
                    async move { integrations.watch(&bus).await }
                },
            ));
        }
        {
            let (gates, bus, stop) = (self.gates.clone(), self.bus.clone(), stop.clone());
            background.spawn(keep_running(
                "pause flag watch".to_owned(),
                stop.clone(),
                RestartDelays::default(),
                move || {
                    let (gates, bus, stop) = (gates.clone(), bus.clone(), stop.clone());
                    async move {
                        gates.watch_pauses(&bus, stop).await;
                        Ok::<(), std::convert::Infallible>(())
                    }
                },
            ));
        }
        {
            let (gates, client, stop) = (self.gates.clone(), self.client.clone(), stop.clone());
            let interval = Duration::from_secs(self.config.retry.credentials_retry_secs.max(1));
            background.spawn(async move { gates.probe_oomnitza(client, interval, stop).await });
        }
        {
            let (bus, stop) = (self.bus.clone(), stop.clone());
            background.spawn(async move { advisories::capture(bus, stop).await });
        }
        {
            let (held, client, stop) = (held.clone(), self.bus.client().clone(), stop.clone());
            let ack_wait = self.bus.settings().ack_wait;
            background.spawn(async move { held.keep_alive(client, ack_wait, stop).await });
        }
        background
    }

    /// Starts the batcher and the dispatcher, which pokes the finalizer through `pokes` after
    /// each batch it settles; returns the queue the intakes feed them through.
    fn start_delivery(&self, pokes: mpsc::Sender<Poke>) -> (mpsc::Sender<Item>, Delivery) {
        let batch = &self.config.batch;
        // Room for two fetches (the next is asked for once one has been taken), and one
        // finished batch waiting for the dispatcher.
        let (items, item_rx) = mpsc::channel::<Item>(batch.pull_batch.max(batch.size) * 2);
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
        let batcher = tokio::spawn(batcher::run(
            item_rx,
            batch_tx,
            batch.size,
            Duration::from_millis(batch.linger_ms),
        ));
        let r = &self.config.rate_limit;
        let limiter = AdaptiveLimiter::new(r.min_per_second, r.max_per_second, r.recover_step);
        let deliverer = Deliverer::new(
            self.bus.clone(),
            self.client.clone(),
            self.config.retry.clone(),
            limiter,
            self.gates.clone(),
            batch.in_flight,
            self.replica.clone(),
        );
        let max_deliver = u64::try_from(self.bus.settings().max_deliver).unwrap_or(1);
        let dispatcher = tokio::spawn(dispatch(
            self.bus.clone(),
            deliverer,
            batch_rx,
            batch.in_flight,
            max_deliver,
            pokes,
        ));
        (
            items,
            Delivery {
                batcher,
                dispatcher,
            },
        )
    }
}

/// The running batcher and dispatcher.
struct Delivery {
    batcher: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
}

impl Delivery {
    /// Which of the two has ended, if one has: both run until the intakes stop.
    fn ended(&self) -> Option<&'static str> {
        if self.batcher.is_finished() {
            Some("the batcher")
        } else if self.dispatcher.is_finished() {
            Some("the dispatcher")
        } else {
            None
        }
    }

    /// Once the intakes are told to stop: lets them hand in what they hold (they own the item
    /// queue's senders, so the batcher ends after them), flushes partial batches and waits for
    /// deliveries in flight, within the grace period.
    async fn drain(self, intakes: Intakes, grace: Duration) {
        tracing::info!("stopped pulling; flushing batches and finishing deliveries");
        let drained = tokio::time::timeout(grace, async {
            intakes.finish().await;
            let _ = self.batcher.await;
            let _ = self.dispatcher.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "deliveries did not finish within the grace period; their events will be redelivered"
            );
        }
    }
}

/// How long the finalizer's check in progress may take to end once deliveries are drained
/// (part of [`crate::config::STOP_MARGIN`]).
const FINALIZER_STOP: Duration = Duration::from_secs(2);
/// How often new integrations (configs appearing in KV) are picked up.
const DISCOVERY: Duration = Duration::from_secs(2);

/// Resumes each integration that a loader paused because Oomnitza refused its records as a
/// whole, once a newer config revision than the refused one is active: storing a fixed config
/// (`syncctl integration put`) is how an operator answers a refusal.
async fn resume_refused(bus: &Bus, integrations: &Integrations, gates: &Gates) {
    for (id, refused) in gates.refusals() {
        let Some(active) = integrations.revision(&id) else {
            continue;
        };
        if active <= refused {
            continue;
        }
        let pauses = bus.pauses();
        // Only the refusal's own pause is lifted: an operator's pause set since then stays.
        match pauses.get(&id).await {
            Ok(Some(flag)) if flag.paused && flag.refused_config_revision == Some(refused) => {
                let reason = format!(
                    "config revision {active} was stored after Oomnitza refused revision {refused}"
                );
                let flag = PauseFlag::now(false, "oomnitza-loader (config updated)", Some(reason));
                match pauses.set(&id, &flag).await {
                    Ok(revision) => {
                        tracing::info!(integration = %id, refused, active, "a new config was stored after a configuration refusal; resuming");
                        gates.set_flag(&id, Some(&flag), revision);
                    }
                    Err(err) => {
                        tracing::warn!(integration = %id, error = %err, "cannot resume after the config was fixed; will retry")
                    }
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(integration = %id, error = %err, "cannot read the pause flag")
            }
        }
    }
}

/// Runs deliveries of batches — at most `in_flight + 2` batches at once (the deliverer itself
/// keeps bulk requests to `in_flight`) — then settles each.
async fn dispatch(
    bus: Bus,
    deliverer: Deliverer,
    mut batches: mpsc::Receiver<Batch>,
    in_flight: usize,
    max_deliver: u64,
    pokes: mpsc::Sender<Poke>,
) {
    let permits = Arc::new(Semaphore::new(in_flight.saturating_add(2)));
    let mut deliveries = JoinSet::new();
    while let Some(batch) = batches.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (deliverer, bus, pokes) = (deliverer.clone(), bus.clone(), pokes.clone());
        deliveries.spawn(async move {
            let key = batch.key.clone();
            let settled = deliverer.deliver(batch).await;
            if let Err(err) = ack::settle(&bus, settled, max_deliver).await {
                tracing::warn!(error = %err, "recording outcomes failed; the batch's events will be redelivered");
            }
            let _ = pokes.try_send((key.integration, key.run_id));
            drop(permit);
        });
        while deliveries.try_join_next().is_some() {}
    }
    while deliveries.join_next().await.is_some() {}
}
