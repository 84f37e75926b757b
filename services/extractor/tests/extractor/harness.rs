//! What the extractor tests share: a NATS server, simulators, configs and readers of what the
//! extractor left on the bus.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures::StreamExt;
use peoplesync_bus::checkpoint::Checkpoint;
use peoplesync_bus::{Bus, DeadLetterRecord, RunRecord, codec, dlq, names};
use peoplesync_core::IntegrationConfig;
use peoplesync_extractor::config::{CredentialSet, ExtractorConfig, Grant};
use peoplesync_extractor::settings::Sources;
use peoplesync_extractor::{Extraction, RunOptions, RunSummary, SecretSource};
use peoplesync_proto::v1::{RunEvent, WorkerEvent};
use peoplesync_sims::sage::{SageConfig, SageSim};
use peoplesync_testkit::stack::Nats;
pub use peoplesync_testkit::stack::lease_holder;
use peoplesync_testkit::{ChildService, wait_for};

/// The default integration of these tests.
pub const ID: &str = "sage-people";

/// A NATS server, a connection to it, and one simulated org (the stack harness's NATS; the
/// extractor itself runs in-process).
pub struct Setup {
    pub nats: Nats,
    pub bus: Bus,
    pub sim: SageSim,
    dir: tempfile::TempDir,
}

pub async fn setup(sim: SageConfig) -> Setup {
    let nats = Nats::single();
    let bus = nats.bus("extractor-test").await;
    let sim = SageSim::spawn(sim).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    Setup {
        nats,
        bus,
        sim,
        dir,
    }
}

/// An org of `workers` with pages of `min..=max` records.
pub fn org(workers: u64, min: usize, max: usize) -> SageConfig {
    SageConfig {
        workers,
        page_size: peoplesync_sims::sage::PageSize::Varying { min, max },
        ..SageConfig::default()
    }
}

/// [`org`] with every page answered `latency_ms` late.
pub fn slow_org(workers: u64, min: usize, max: usize, latency_ms: u64) -> SageConfig {
    SageConfig {
        faults: peoplesync_sims::sage::SageFaults {
            latency_ms,
            ..Default::default()
        },
        ..org(workers, min, max)
    }
}

/// The client-credentials set `name` for `sim`.
pub fn credential_set(sim: &SageSim) -> CredentialSet {
    CredentialSet {
        login_url: sim.url(),
        grant: Grant::ClientCredentials,
        client_id: "sim-client".into(),
        username: None,
        audience: None,
    }
}

/// The secret variable of set `name`.
pub fn secret_var(name: &str, what: &str) -> String {
    format!(
        "{}_{what}",
        peoplesync_extractor::config::secret_prefix(name)
    )
}

/// A setup whose Employees API answers 503 for ten minutes (its token endpoint still answers),
/// and a config reading it with `sage_retry_secs` at its default: longer than the control plane
/// waits for any command's answer.
pub async fn sage_people_down() -> (Setup, ExtractorConfig, SecretSource) {
    let s = setup(SageConfig {
        faults: peoplesync_sims::sage::SageFaults {
            outage_for_ms: Some(600_000),
            ..Default::default()
        },
        ..org(30, 10, 10)
    })
    .await;
    let (config, secrets) = config(&s.sim, &[ID]);
    assert_eq!(
        config.sage_retry_secs, 120,
        "runs keep the default budget, longer than the control plane waits"
    );
    (s, config, secrets)
}

/// An extractor config serving `integrations` with the `default` set reading `sim`.
pub fn config(sim: &SageSim, integrations: &[&str]) -> (ExtractorConfig, SecretSource) {
    let mut config = ExtractorConfig {
        integrations: integrations.iter().map(|s| (*s).to_owned()).collect(),
        lease_ttl_secs: 2,
        http_listen: "127.0.0.1:0".into(),
        ..ExtractorConfig::default()
    };
    config
        .credentials
        .insert("default".into(), credential_set(sim));
    let secrets = SecretSource::fixed([("SAGE_PEOPLE_CLIENT_SECRET", "sim-secret")]);
    (config, secrets)
}

impl Setup {
    /// Starts the `sage-extractor` binary with `args` against this setup, with a lease TTL of
    /// 2 s and as replica `replica` when one is given; killed (SIGKILL) when dropped.
    pub fn spawn_binary(&self, args: &[&str], replica: Option<&str>) -> ChildService {
        let file = self.dir.path().join("extractor.toml");
        std::fs::write(&file, "lease_ttl_secs = 2\n").unwrap();
        let url = self.sim.url();
        let mut env = vec![
            ("NATS_URL", self.nats.url()),
            ("SAGE_PEOPLE_LOGIN_URL", url.as_str()),
            ("SAGE_PEOPLE_CLIENT_ID", "sim-client"),
            ("SAGE_PEOPLE_CLIENT_SECRET", "sim-secret"),
            ("PEOPLESYNC_EXTRACTOR_CONFIG", file.to_str().unwrap()),
            ("PEOPLESYNC_HTTP_LISTEN", "127.0.0.1:0"),
        ];
        if let Some(replica) = replica {
            env.push(("PEOPLESYNC_REPLICA", replica));
        }
        ChildService::spawn("sage-extractor", args, &env)
    }

    /// Full runs of `integration` reading `self.sim` with the default set.
    pub fn extraction(&self, integration: &str) -> Extraction {
        let (config, secrets) = config(&self.sim, &[integration]);
        extraction(&self.bus, config, secrets, integration)
    }

    /// The extractor service serving [`ID`] from `self.sim` with the default [`config`], once
    /// it holds the scheduler lease.
    pub async fn serve(&self) -> Running {
        let (config, secrets) = config(&self.sim, &[ID]);
        serve(&self.bus, config, secrets, true).await
    }

    /// A full run of [`ID`] that must complete: its summary.
    pub async fn full_run(&self) -> RunSummary {
        run_to_completion(&self.extraction(ID)).await
    }

    pub async fn run_record(&self, integration: &str, run_id: &str) -> RunRecord {
        self.bus
            .runs()
            .get(integration, run_id)
            .await
            .unwrap()
            .expect("run record")
            .0
    }

    /// Waits up to `timeout` until run `run_id` of [`ID`] is in `state` and returns its record.
    pub async fn run_in_state(
        &self,
        run_id: &str,
        state: peoplesync_bus::RunState,
        timeout: Duration,
    ) -> RunRecord {
        in_state(&self.bus, ID, run_id, state, timeout).await
    }

    pub async fn checkpoint(&self, integration: &str) -> Option<Checkpoint> {
        self.bus.checkpoints().load(integration).await.unwrap()
    }

    /// Waits until `integration` has no checkpoint (`what` names the wait in its failure). A
    /// run that ends without one to resume records its state, and says so on the runs subject,
    /// before it drops the checkpoint: a test that saw the record change, while the service's
    /// run still ends, waits for the checkpoint to go rather than reading it once.
    pub async fn checkpoint_dropped(&self, integration: &str, what: &str) {
        wait_for(what, Duration::from_secs(10), || async {
            self.checkpoint(integration).await.is_none().then_some(())
        })
        .await;
    }
}

/// A full run of `extraction` that must complete: its summary.
pub async fn run_to_completion(extraction: &Extraction) -> RunSummary {
    extraction
        .run_full("test", tokio_util::sync::CancellationToken::new())
        .await
        .unwrap()
}

pub fn extraction(
    bus: &Bus,
    config: ExtractorConfig,
    secrets: SecretSource,
    integration: &str,
) -> Extraction {
    let options = RunOptions {
        publish_window: config.publish_window,
        quota_share: config.quota_share,
        removals: config.removals,
    };
    let sources = Arc::new(Sources::new(Arc::new(config), secrets));
    Extraction::new(bus.clone(), integration, sources, options)
}

/// Stores `config` as the integration config of its id.
pub async fn put_integration(bus: &Bus, config: &IntegrationConfig) {
    bus.config_kv()
        .put(&config.id, config.to_toml().into_bytes().into())
        .await
        .unwrap();
}

/// The JetStream stream `name` (it must exist).
async fn stream(bus: &Bus, name: &str) -> async_nats::jetstream::stream::Stream {
    bus.jetstream().get_stream(name).await.unwrap()
}

/// Every worker event of `integration` published so far (consumed: a second call returns only
/// newer ones).
pub async fn drain_workers(bus: &Bus, integration: &str) -> Vec<WorkerEvent> {
    let stream = stream(bus, names::WORKERS_STREAM).await;
    let name = format!("test-{integration}");
    let consumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: names::workers_subject(integration),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut events = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .unwrap();
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            events.push(codec::decode_worker_event(&message.payload).unwrap());
            message.ack().await.unwrap();
            got += 1;
        }
        if got == 0 {
            return events;
        }
    }
}

/// Every run event of `integration` so far.
pub async fn run_events(bus: &Bus, integration: &str) -> Vec<RunEvent> {
    let stream = stream(bus, names::RUNS_STREAM).await;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: names::runs_subject(integration),
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.unwrap();
    let mut events = Vec::new();
    while (events.len() as u64) < pending {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        events.push(codec::decode_run_event(&message.payload).unwrap());
    }
    events
}

/// Checks that `events` hold each of the org's first `workers` workers exactly once, as upserts
/// of `run_id`.
/// The latest dead letter of each worker of the default integration.
pub async fn letters(bus: &Bus) -> BTreeMap<String, DeadLetterRecord> {
    let mut letters = BTreeMap::new();
    let mut sequence = 1;
    while let Some(record) = dlq::next(bus, ID, sequence).await.unwrap() {
        sequence = record.sequence + 1;
        letters.insert(record.letter.worker_id.clone(), record);
    }
    letters
}

pub fn assert_each_worker_once(events: &[WorkerEvent], workers: u64, run_id: &str) {
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.worker.as_ref().map(|w| w.id.as_str()).unwrap_or_default())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "duplicate worker events on the stream"
    );
    assert_eq!(ids.len() as u64, workers, "workers on the stream");
    for index in 0..workers {
        let id = peoplesync_sims::generate::worker_id(index);
        assert!(unique.contains(id.as_str()), "worker {id} is missing");
    }
    assert!(
        events.iter().all(|e| e.run_id == run_id),
        "events of another run"
    );
}

/// Waits until the checkpoint of `integration` has at least `pages` pages.
pub async fn wait_for_pages(bus: &Bus, integration: &str, pages: u64) -> Checkpoint {
    let checkpoints = bus.checkpoints();
    wait_for(
        "the run to checkpoint pages",
        Duration::from_secs(30),
        || {
            let checkpoints = checkpoints.clone();
            async move {
                checkpoints
                    .load(integration)
                    .await
                    .ok()
                    .flatten()
                    .filter(|c| c.pages >= pages)
            }
        },
    )
    .await
}

/// Secrets of several sets.
pub fn secrets(pairs: &[(String, &str)]) -> SecretSource {
    SecretSource::Fixed(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), secrecy::SecretString::from((*v).to_owned())))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// `config` for replica `name`.
pub fn as_replica(config: ExtractorConfig, name: &str) -> ExtractorConfig {
    ExtractorConfig {
        replica: Some(name.into()),
        ..config
    }
}

/// A running extractor service (in-process) for `config`, and what stops it.
pub struct Running {
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn shutdown(self) {
        self.stop.cancel();
        ended(self.task, "the service told to stop").await;
    }
}

/// Waits for `task` (`what`, for the failure) to end: at most five minutes, so that a test
/// whose service or run does not end fails instead of holding the suite.
pub async fn ended<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(300), task)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within 300 s"))
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// Starts the service of `config` and waits until it schedules `integration` when `leader`.
pub async fn serve(
    bus: &Bus,
    config: ExtractorConfig,
    secrets: SecretSource,
    leader: bool,
) -> Running {
    let replica = config.replica_name();
    let integration = config.integrations[0].clone();
    let service = peoplesync_extractor::Service::build(config, bus.clone(), secrets)
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { service.run(stop).await.unwrap() }
    });
    if leader {
        wait_for_holder(bus, &integration, &replica, Duration::from_secs(10)).await;
    }
    Running { stop, task }
}

pub async fn wait_for_holder(bus: &Bus, integration: &str, replica: &str, timeout: Duration) {
    wait_for("the scheduler lease", timeout, || async {
        (lease_holder(bus, integration).await.as_deref() == Some(replica)).then_some(())
    })
    .await;
}

/// Sends `command` for `integration` and decodes the reply, which must come within 10 s.
pub async fn command<T: serde::de::DeserializeOwned>(
    bus: &Bus,
    integration: &str,
    name: &str,
    body: serde_json::Value,
) -> Result<T, peoplesync_bus::control::CommandError> {
    command_within(bus, integration, name, body, Duration::from_secs(10)).await
}

/// Sends `command` for `integration` and decodes the reply, which must come within `wait`
/// (for a command the control plane waits on, its wait: a later answer is never shown).
pub async fn command_within<T: serde::de::DeserializeOwned>(
    bus: &Bus,
    integration: &str,
    name: &str,
    body: serde_json::Value,
    wait: Duration,
) -> Result<T, peoplesync_bus::control::CommandError> {
    let subject = peoplesync_bus::control::subject(integration, name);
    // A replica that just took the lease subscribes a moment later: retry "no responders".
    let mut attempts = 0;
    let reply = loop {
        // The request's own timeout is the wait, as the control plane sets it: the client's
        // default (10 s) would end a longer command early.
        let request = async_nats::Request::new()
            .payload(body.to_string().into())
            .timeout(Some(wait));
        match bus.client().send_request(subject.clone(), request).await {
            Ok(reply) => break reply,
            Err(err) if err.kind() == async_nats::RequestErrorKind::TimedOut => {
                panic!("no reply to {subject} within {wait:?}")
            }
            Err(err) if attempts < 50 => {
                attempts += 1;
                let _ = err;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no reply to {subject}: {err}"),
        }
    };
    serde_json::from_slice::<peoplesync_bus::control::Reply<T>>(&reply.payload)
        .unwrap()
        .into_result()
}

/// Waits until run `run_id` of `integration` is completed and returns its record.
pub async fn completed(bus: &Bus, integration: &str, run_id: &str) -> RunRecord {
    in_state(
        bus,
        integration,
        run_id,
        peoplesync_bus::RunState::Completed,
        Duration::from_secs(30),
    )
    .await
}

/// Waits up to `timeout` until run `run_id` of `integration` is in `state` and returns its
/// record.
pub async fn in_state(
    bus: &Bus,
    integration: &str,
    run_id: &str,
    state: peoplesync_bus::RunState,
    timeout: Duration,
) -> RunRecord {
    let runs = bus.runs();
    wait_for(&format!("the run to be {state:?}"), timeout, || {
        let runs = runs.clone();
        async move {
            runs.get(integration, run_id)
                .await
                .ok()
                .flatten()
                .map(|(r, _)| r)
                .filter(|r| r.state == state)
        }
    })
    .await
}
