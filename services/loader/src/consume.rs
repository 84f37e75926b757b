//! The loader's main loop: pull events from the shared consumer, prepare each one, and feed
//! the batcher; deliveries run concurrently up to `batch.in_flight`. On shutdown the loop stops
//! pulling, partial batches are flushed and in-flight deliveries finish (or their events are
//! nak'ed) within the grace period.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use peoplesync_bus::{Bus, BusSettings, WorkStream};
use peoplesync_oomnitza::OomnitzaClient;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batcher::{self, Batch};
use crate::deliver::Deliverer;
use crate::finalize::{Finalizer, Poke};
use crate::integrations::Integrations;
use crate::{LoaderConfig, ack, pipeline};

/// How long in-flight deliveries may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// A loader replica, connected and ready to run.
pub struct Loader {
    config: LoaderConfig,
    bus: Bus,
    client: OomnitzaClient,
    integrations: Integrations,
    replica: String,
}

impl Loader {
    /// Connects to NATS (setting up the topology), builds the Oomnitza client, and loads the
    /// configured integrations' configs, seeding them when absent (with `seed`, the text of an
    /// `--integration` file, for its own id).
    pub async fn build(config: LoaderConfig, seed: Option<String>) -> anyhow::Result<Loader> {
        let oomnitza = config.oomnitza_config()?;
        let client = OomnitzaClient::new(oomnitza).context("setting up the Oomnitza client")?;
        let bus = Bus::connect(&config.nats_url, "oomnitza-loader", BusSettings::default())
            .await
            .context("connecting to NATS")?;
        let integrations = Integrations::default();
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
            integrations
                .load_or_seed(&bus, id, text)
                .await
                .with_context(|| format!("loading the config of integration {id}"))?;
        }
        let replica = config.replica_name();
        Ok(Loader {
            config,
            bus,
            client,
            integrations,
            replica,
        })
    }

    /// The bus connection (for the control plane and tests).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Runs until `shutdown` is cancelled, then drains.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Loader {
            config,
            bus,
            client,
            integrations,
            replica,
        } = self;
        tracing::info!(%replica, "loader running");
        let mut background = JoinSet::new();
        {
            let integrations = integrations.clone();
            let bus = bus.clone();
            background.spawn(async move {
                if let Err(err) = integrations.watch(&bus).await {
                    tracing::error!(error = %err, "integration config watch stopped; configs no longer update");
                }
            });
        }
        let (poke_tx, poke_rx) = mpsc::channel::<Poke>(1024);
        let finalizer = Finalizer::new(bus.clone(), client.clone(), replica.clone());
        let finalizer_stop = CancellationToken::new();
        let finalizer_task = tokio::spawn(finalizer.run(poke_rx, finalizer_stop.clone()));

        let batch = &config.batch;
        let (item_tx, item_rx) = mpsc::channel(batch.pull_batch.max(batch.size) * 2);
        let (batch_tx, mut batch_rx) = mpsc::channel::<Batch>(batch.in_flight);
        let batcher_task = tokio::spawn(batcher::run(
            item_rx,
            batch_tx,
            batch.size,
            Duration::from_millis(batch.linger_ms),
        ));

        let deliverer = Deliverer::new(client, config.retry.clone(), bus.settings().ack_wait);
        let permits = Arc::new(Semaphore::new(batch.in_flight));
        let dispatcher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut deliveries = JoinSet::new();
                while let Some(batch) = batch_rx.recv().await {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    let deliverer = deliverer.clone();
                    let bus = bus.clone();
                    let poke_tx = poke_tx.clone();
                    deliveries.spawn(async move {
                        let key = batch.key.clone();
                        let settled = deliverer.deliver(batch).await;
                        if let Err(err) = ack::settle(&bus, settled).await {
                            tracing::warn!(error = %err, "recording outcomes failed; the batch's events will be redelivered");
                        }
                        let _ = poke_tx.try_send((key.integration, key.run_id));
                        drop(permit);
                    });
                    while deliveries.try_join_next().is_some() {}
                }
                while deliveries.join_next().await.is_some() {}
            })
        };

        let mut work = WorkStream::new(bus.clone(), batch.pull_batch);
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = work.next() => message,
            };
            let subject_integration = message
                .subject
                .split('.')
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            if integrations.get(&subject_integration).is_none()
                && let Err(err) = integrations
                    .load_or_seed(&bus, &subject_integration, None)
                    .await
            {
                tracing::warn!(integration = %subject_integration, error = %err, "no usable config for the event's integration");
            }
            let item = pipeline::prepare(message, |id| {
                integrations.get(id).zip(integrations.revision(id))
            });
            if item_tx.send(item).await.is_err() {
                break;
            }
        }

        tracing::info!("stopped pulling; flushing batches and finishing deliveries");
        drop(item_tx);
        drop(work);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            let _ = batcher_task.await;
            let _ = dispatcher.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "deliveries did not finish within the grace period; their events will be redelivered"
            );
        }
        finalizer_stop.cancel();
        let _ = finalizer_task.await;
        background.abort_all();
        Ok(())
    }
}
