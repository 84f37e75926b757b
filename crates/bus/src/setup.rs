//! Connecting to NATS and creating or verifying the streams, the loader consumers and the KV
//! buckets (see `docs/architecture.md`, "The bus"). Every service runs this at start-up; it is
//! idempotent, so replicas starting together, or an upgrade that changes a limit, converge on
//! the same topology.

use std::time::Duration;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, consumer, kv, stream};

use crate::connect::{ConnectSettings, NatsServers};
use crate::patience::patiently;
use crate::{BusError, names};

/// Publish acks one connection may have outstanding: room for the largest publish window
/// (65,536) several times over, so only the publishers' own windows bound them.
const MAX_ACKS_IN_FLIGHT: usize = 4 * 65_536;

/// Whether a client error reported while connecting means the server refused the credentials
/// (`authorization violation`) or they could not be used (`failed signing nonce`: a bad NKey
/// seed or creds file): retrying with them cannot succeed.
fn is_refusal(message: &str) -> bool {
    message == async_nats::ConnectErrorKind::AuthorizationViolation.to_string()
        || message == async_nats::ConnectErrorKind::Authentication.to_string()
}

/// Whether a client error reported while connecting is a failed TLS handshake (an untrusted
/// server certificate, a missing client certificate): retrying cannot succeed either.
fn is_tls_failure(message: &str) -> bool {
    message == async_nats::ConnectErrorKind::Tls.to_string()
}

/// Tunables of the bus topology. The defaults suit one machine; operators change them through
/// the services' configuration.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// How long a delivered worker event may stay unacknowledged before redelivery.
    pub ack_wait: Duration,
    /// Deliveries of one event before it is given up on and dead-lettered.
    pub max_deliver: i64,
    /// Unacknowledged events allowed across all loader replicas. A replica holds up to about
    /// 1,100 with the default batch settings, so the default (20,000) lets about fifteen
    /// replicas run with full pipelines, with room for delayed retries; too low a limit
    /// starves the replicas that ask last.
    pub max_ack_pending: i64,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    pub duplicate_window: Duration,
    /// How long run events and dead letters are kept.
    pub history: Duration,
    /// Copies of every stream and bucket in a NATS cluster (1 on a single server, 3 for
    /// production). Never lowered on an existing stream, so a manual increase survives.
    pub replicas: usize,
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            ack_wait: Duration::from_secs(30),
            max_deliver: 8,
            max_ack_pending: 20_000,
            duplicate_window: Duration::from_secs(20 * 60),
            history: Duration::from_secs(30 * 24 * 3600),
            replicas: 1,
        }
    }
}

/// A connection to NATS with every peoplesync stream and bucket ready to use.
#[derive(Clone)]
pub struct Bus {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) config: kv::Store,
    pub(crate) state: kv::Store,
    pub(crate) applied: kv::Store,
    settings: BusSettings,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

/// How long a server that cannot be reached is waited for before a warning says so (and every
/// 30 s after).
pub(crate) const UNREACHABLE_WARNING: Duration = Duration::from_secs(5);

impl Bus {
    /// Connects to `url` (as client `name`) with no credentials besides any in `url`, and sets
    /// the topology up.
    pub async fn connect(url: &str, name: &str, settings: BusSettings) -> Result<Bus, BusError> {
        Bus::connect_with(url, name, settings, &ConnectSettings::default()).await
    }

    /// [`Bus::connect_with`] the authentication and TLS settings of the environment
    /// ([`ConnectSettings::from_env`]): what the services use.
    pub async fn connect_from_env(
        url: &str,
        name: &str,
        settings: BusSettings,
    ) -> Result<Bus, BusError> {
        Bus::connect_with(url, name, settings, &ConnectSettings::from_env()?).await
    }

    /// Connects to the seed servers of `url` (`NATS_URL`: one or more, comma separated) as
    /// client `name`, authenticating and using TLS as `connect` says, and sets the topology
    /// up. A server refusing the credentials ends this with [`BusError::Auth`], and a failed
    /// TLS handshake with [`BusError::Tls`], instead of retrying for ever; an unreachable server
    /// is retried for as long as it takes, with a warning after 5 s and every 30 s.
    pub async fn connect_with(
        url: &str,
        name: &str,
        settings: BusSettings,
        connect: &ConnectSettings,
    ) -> Result<Bus, BusError> {
        let servers = NatsServers::parse(url)?;
        let auth = connect.effective_auth(&servers)?;
        let shown = servers.shown();
        tracing::info!(
            servers = %shown,
            auth = auth.method(),
            tls_required = connect.tls.required,
            "connecting to NATS"
        );
        let (refused_tx, mut refused_rx) = tokio::sync::watch::channel(None::<String>);
        // The last connection event, for the warning while the server cannot be reached.
        let (event_tx, event_rx) = tokio::sync::watch::channel(String::new());
        // Every connection event names the servers (without credentials), so a "disconnected"
        // or "connection refused" line says which NATS it is about.
        let servers_shown = shown.clone();
        let tls_in_use = connect.tls.required
            || connect.tls.ca_file.is_some()
            || connect.tls.client_cert.is_some()
            || url.contains("tls://");
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let refused_tx = refused_tx.clone();
                let servers = servers_shown.clone();
                event_tx.send_replace(event.to_string());
                async move {
                    if let async_nats::Event::ClientError(async_nats::ClientError::Other(message)) =
                        &event
                        && (is_refusal(message) || is_tls_failure(message))
                    {
                        tracing::error!(%event, %servers, "NATS at {servers} refused the connection: {event}");
                        refused_tx.send_replace(Some(message.clone()));
                    } else if tls_in_use
                        && matches!(&event, async_nats::Event::ClientError(async_nats::ClientError::Other(message))
                            if *message == async_nats::ConnectErrorKind::Io.to_string())
                    {
                        tracing::warn!(%event, %servers, "cannot connect to NATS at {servers} ({event}); with TLS this is also how an untrusted server certificate or a refused client certificate shows: check NATS_TLS_CA_FILE, NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE");
                    } else {
                        tracing::info!(%event, %servers, "NATS connection event ({servers}): {event}");
                    }
                }
            });
        let client = connect
            .apply(&auth, options)
            .await?
            .connect(servers.addrs.clone())
            .await
            .map_err(|source| BusError::Connect {
                url: shown.clone(),
                source,
            })?;
        let refusal = |message: String| match is_tls_failure(&message) {
            true => BusError::Tls { url: shown.clone() },
            false => BusError::Auth {
                url: shown.clone(),
                method: auth.method(),
                variables: auth.variables(),
                message,
            },
        };
        // An unreachable server is waited for (the client retries in the background), and
        // said so; the topology is set up once it answers.
        let started = tokio::time::Instant::now();
        let mut warn_at = started + UNREACHABLE_WARNING;
        while client.connection_state() != async_nats::connection::State::Connected {
            tokio::select! {
                Ok(()) = refused_rx.changed() => {
                    return Err(refusal(refused_rx.borrow().clone().unwrap_or_default()));
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if tokio::time::Instant::now() >= warn_at {
                warn_at += Duration::from_secs(30);
                let last = event_rx.borrow().clone();
                tracing::warn!(servers = %shown, waited_secs = started.elapsed().as_secs(), last_event = %last,
                    "cannot reach NATS at {shown} yet; still trying: check NATS_URL and that the server runs and is reachable from here");
            }
        }
        tokio::select! {
            bus = Bus::setup(client, settings) => bus,
            Ok(()) = refused_rx.changed() => {
                Err(refusal(refused_rx.borrow().clone().unwrap_or_default()))
            }
        }
    }

    /// Sets the topology up on an existing client.
    pub async fn setup(client: async_nats::Client, settings: BusSettings) -> Result<Bus, BusError> {
        // async-nats lets 5,000 acks be outstanding per context and makes a send wait for a
        // free one. Publishers keep their acks in their own windows (up to 65,536 for the
        // extractor's), so a window larger than that would wait on permits only it can free:
        // the bound is the publishers' windows, not the context's.
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .build(client.clone());
        for spec in shared_streams(&settings) {
            ensure_stream(&js, spec.config(settings.replicas)).await?;
        }
        let config = ensure_bucket(&js, names::CONFIG_BUCKET, 16, settings.replicas).await?;
        let state = ensure_bucket(&js, names::STATE_BUCKET, 1, settings.replicas).await?;
        let applied = ensure_bucket(&js, names::APPLIED_BUCKET, 1, settings.replicas).await?;
        Ok(Bus {
            client,
            js,
            config,
            state,
            applied,
            settings,
        })
    }

    /// The core NATS client (request/reply, plain subscriptions).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Whether the connection to NATS is up now; otherwise its state, for messages. While it
    /// is not, the client holds requests until it reconnects, whatever their timeouts: what
    /// must answer in time (probes, control-plane calls) asks this first.
    pub fn connected(&self) -> Result<(), async_nats::connection::State> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(state),
        }
    }

    /// The JetStream context, for tests that inspect NATS directly (feature `inspect`).
    #[cfg(feature = "inspect")]
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The integration-config bucket, for tests (feature `inspect`).
    #[cfg(feature = "inspect")]
    pub fn config_kv(&self) -> &kv::Store {
        &self.config
    }

    /// The state bucket: checkpoints, run records, leases, flags; for tests (feature
    /// `inspect`).
    #[cfg(feature = "inspect")]
    pub fn state_kv(&self) -> &kv::Store {
        &self.state
    }

    /// The applied-record bucket, for tests (feature `inspect`).
    #[cfg(feature = "inspect")]
    pub fn applied_kv(&self) -> &kv::Store {
        &self.applied
    }

    /// The settings the topology was created with.
    pub fn settings(&self) -> &BusSettings {
        &self.settings
    }

    /// A handle on stream `name`, without asking the server for its state.
    pub(crate) async fn stream(&self, name: &str) -> Result<stream::Stream<()>, BusError> {
        self.js
            .get_stream_no_info(name)
            .await
            .map_err(|e| BusError::request(format!("opening stream {name}"), e))
    }

    /// The last message stream `name` holds on `subject`, if any: one direct read.
    pub(crate) async fn last_on(
        &self,
        name: &str,
        subject: &str,
    ) -> Result<Option<bytes::Bytes>, BusError> {
        let found = self
            .stream(name)
            .await?
            .get_last_raw_message_by_subject(subject)
            .await;
        match found {
            Ok(message) => Ok(Some(message.payload)),
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(BusError::request(
                format!("reading {subject} from {name}"),
                err,
            )),
        }
    }

    /// Creates `spec`'s stream, or brings an existing one in line with it, with this bus's
    /// replica count (never lowering an existing stream's). For streams outside the shared
    /// topology: the extractor's seen lists, the leavers report.
    pub(crate) async fn ensure_stream(&self, spec: StreamSpec) -> Result<(), BusError> {
        ensure_stream(&self.js, spec.config(self.settings.replicas)).await
    }

    /// The durable pull consumer of the max-deliveries advisories, shared by every replica.
    pub(crate) async fn advisory_consumer(&self) -> Result<consumer::PullConsumer, BusError> {
        let stream = self
            .js
            .get_stream(names::ADVISORIES_STREAM)
            .await
            .map_err(|e| BusError::setup(format!("stream {}", names::ADVISORIES_STREAM), e))?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(names::ADVISORY_CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.settings.ack_wait,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::setup(format!("consumer {}", names::ADVISORY_CONSUMER), e))
    }

    /// Creates the durable pull consumer of `integration`'s worker events, shared by every
    /// loader replica, or brings it in line with the settings; waits while NATS does not
    /// answer, as the topology's set-up does.
    pub async fn prepare_loader_consumer(&self, integration: &str) -> Result<(), BusError> {
        let what = format!("consumer {}", names::loader_consumer(integration));
        patiently(&what, self.settings.replicas, || {
            self.loader_consumer(integration)
        })
        .await
        .map(drop)
    }

    /// The durable pull consumer of `integration`'s worker events (see
    /// [`Bus::prepare_loader_consumer`]).
    pub(crate) async fn loader_consumer(
        &self,
        integration: &str,
    ) -> Result<consumer::PullConsumer, BusError> {
        ensure_loader_consumer(&self.js, &self.settings, integration).await
    }
}

/// The streams every peoplesync deployment shares, as [`Bus::setup`] creates them (the
/// extractor's and the leavers' own streams are created by their services); the control
/// plane's topology check reads the same list.
pub(crate) fn shared_streams(settings: &BusSettings) -> [StreamSpec; 5] {
    let (history, dedup) = (settings.history, settings.duplicate_window);
    [
        StreamSpec {
            name: names::WORKERS_STREAM,
            description: "peoplesync worker events, one per worker per run",
            subjects: &["peoplesync.*.workers"],
            retention: stream::RetentionPolicy::WorkQueue,
            max_age: Duration::ZERO,
            dedup,
            allow_rollup: false,
        },
        StreamSpec::limits(
            (names::RUNS_STREAM, "peoplesync run events"),
            &["peoplesync.*.runs"],
            history,
            dedup,
        ),
        // One subject per letter across runs (`….dlq.<key>`), replaced by a roll-up when a
        // later run refuses the worker again.
        StreamSpec {
            allow_rollup: true,
            ..StreamSpec::limits(
                (names::DLQ_STREAM, "peoplesync dead letters"),
                &["peoplesync.*.dlq.*"],
                history,
                dedup,
            )
        },
        // Outcomes are only needed until the run is finalized (its counts are then kept in
        // the run record and the run's subjects are purged); a week bounds what a stuck run
        // leaves.
        StreamSpec::limits(
            (
                names::OUTCOMES_STREAM,
                "peoplesync per-event outcomes, deduplicated by event",
            ),
            &["peoplesync.*.outcomes.>"],
            Duration::from_secs(7 * 24 * 3600),
            dedup,
        ),
        StreamSpec {
            name: names::ADVISORIES_STREAM,
            description: "max-deliveries advisories of peoplesync worker events",
            subjects: &[names::MAX_DELIVERIES_ADVISORIES],
            retention: stream::RetentionPolicy::WorkQueue,
            max_age: history,
            dedup: Duration::ZERO,
            allow_rollup: false,
        },
    ]
}

/// A file-backed stream as peoplesync creates it.
pub(crate) struct StreamSpec {
    /// The stream's name.
    pub(crate) name: &'static str,
    /// What it holds, for operators.
    pub(crate) description: &'static str,
    /// The subjects it captures.
    pub(crate) subjects: &'static [&'static str],
    /// Work queue (a message goes once acknowledged) or limits (kept until `max_age`).
    pub(crate) retention: stream::RetentionPolicy,
    /// How long a message is kept (`ZERO`: until removed).
    pub(crate) max_age: Duration,
    /// The deduplication window (`ZERO`: the server's default).
    pub(crate) dedup: Duration,
    /// Whether a message may replace its subject's earlier ones (a roll-up).
    pub(crate) allow_rollup: bool,
}

impl StreamSpec {
    /// A stream keeping its messages up to `max_age`.
    pub(crate) fn limits(
        (name, description): (&'static str, &'static str),
        subjects: &'static [&'static str],
        max_age: Duration,
        dedup: Duration,
    ) -> StreamSpec {
        StreamSpec {
            name,
            description,
            subjects,
            retention: stream::RetentionPolicy::Limits,
            max_age,
            dedup,
            allow_rollup: false,
        }
    }

    /// The stream's configuration with `replicas` copies.
    pub(crate) fn config(&self, replicas: usize) -> stream::Config {
        stream::Config {
            name: self.name.into(),
            description: Some(self.description.into()),
            subjects: self.subjects.iter().map(|s| (*s).to_owned()).collect(),
            retention: self.retention,
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            max_age: self.max_age,
            duplicate_window: self.dedup,
            allow_rollup: self.allow_rollup,
            ..Default::default()
        }
    }
}

/// The `/readyz` note (on `nats`) of a service while it connects to NATS and sets its
/// streams, buckets and consumers up: what it waits for is in its log.
pub const SETTING_UP: &str = "connecting to NATS and setting up its streams, buckets and \
     consumers; the log says what it waits for (\"cannot reach NATS\", \"NATS has not answered \
     the set-up\")";

async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<(), BusError> {
    let what = format!("stream {}", config.name);
    let replicas = config.num_replicas;
    patiently(&what, replicas, || ensure_stream_once(js, config.clone())).await
}

async fn ensure_stream_once(
    js: &jetstream::Context,
    mut config: stream::Config,
) -> Result<(), BusError> {
    let name = config.name.clone();
    match js.get_stream(&name).await {
        Ok(existing) => {
            // The look-up's own answer: never lower an existing stream's replicas.
            let replicas = existing.cached_info().config.num_replicas;
            config.num_replicas = config.num_replicas.max(replicas);
            // Bring limits in line with this version (retention policy cannot change).
            js.update_stream(&config)
                .await
                .map_err(|e| BusError::setup(format!("stream {name}"), e))?;
        }
        // Not a "no such stream" (a timeout, JetStream not answering): say so, not create.
        Err(err)
            if !matches!(err.kind(), GetStreamErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            return Err(BusError::setup(format!("stream {name}"), err));
        }
        Err(_) => {
            if let Err(create) = js.create_stream(config.clone()).await {
                // Another replica may have created it between our look-up and create.
                js.get_stream(&name)
                    .await
                    .map_err(|_| BusError::setup(format!("stream {name}"), create))?;
            }
        }
    }
    Ok(())
}

async fn ensure_loader_consumer(
    js: &jetstream::Context,
    settings: &BusSettings,
    integration: &str,
) -> Result<consumer::PullConsumer, BusError> {
    let name = names::loader_consumer(integration);
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!(
            "peoplesync loaders of {integration} (shared by every replica)"
        )),
        filter_subject: names::workers_subject(integration),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: settings.max_deliver,
        backoff: redelivery_backoff(settings.ack_wait, settings.max_deliver),
        max_ack_pending: settings.max_ack_pending,
        ..Default::default()
    };
    let stream = js
        .get_stream(names::WORKERS_STREAM)
        .await
        .map_err(|e| BusError::setup(format!("stream {}", names::WORKERS_STREAM), e))?;
    stream
        .create_consumer(config)
        .await
        .map_err(|e| BusError::setup(format!("consumer {name}"), e))
}

/// The consumer's redelivery schedule after ack timeouts: the ack wait first (JetStream uses
/// the first backoff step *as* the ack wait when a schedule is set, so anything shorter would
/// silently shrink it), then doubling, capped at five minutes or the ack wait if longer.
pub fn redelivery_backoff(ack_wait: Duration, max_deliver: i64) -> Vec<Duration> {
    let steps = usize::try_from(max_deliver.max(1) - 1).unwrap_or(0);
    let cap = ack_wait.max(Duration::from_secs(300));
    (0..steps)
        .map(|i| ack_wait.saturating_mul(1 << i.min(16)).min(cap))
        .collect()
}

async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    history: i64,
    replicas: usize,
) -> Result<kv::Store, BusError> {
    patiently(&format!("bucket {bucket}"), replicas, || async {
        if let Ok(store) = js.get_key_value(bucket).await {
            return Ok(store);
        }
        let created = js
            .create_key_value(kv::Config {
                bucket: bucket.into(),
                history,
                storage: stream::StorageType::File,
                num_replicas: replicas.max(1),
                ..Default::default()
            })
            .await;
        match created {
            Ok(store) => Ok(store),
            Err(err) => js
                .get_key_value(bucket)
                .await
                .map_err(|_| BusError::setup(format!("bucket {bucket}"), err)),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_starts_at_the_ack_wait_and_doubles_to_a_cap() {
        let steps = redelivery_backoff(Duration::from_secs(30), 8);
        assert_eq!(steps.len(), 7);
        assert_eq!(steps[0], Duration::from_secs(30));
        assert_eq!(steps[1], Duration::from_secs(60));
        assert_eq!(steps[6], Duration::from_secs(300));
        assert!(redelivery_backoff(Duration::from_secs(30), 1).is_empty());
        assert_eq!(
            redelivery_backoff(Duration::from_secs(600), 3)[1],
            Duration::from_secs(600)
        );
    }
}
