//! The one stack harness of the end-to-end tests (feature `stack`): a [`Deployment`] is NATS (one
//! server or a JetStream cluster), both simulators in-process on port 0 and a temporary folder;
//! [`Launch`] starts `oomnitza-loader` and `sage-extractor` against it as child processes (the
//! workspace's binaries, found by [`crate::bin_path`]); [`Stack`] is a deployment with several
//! replicas of each running, for the chaos suite; [`Syncctl`] drives the CLI. The checks of
//! what a run left behind (every worker once in Oomnitza, every event accounted for) are in
//! `checks`.
//!
//! The binaries are built beforehand (`cargo build --workspace --bins --tests`); only the tests in the
//! `tests/` package start them.

mod checks;
mod launch;
mod replicas;
mod syncctl;

pub use checks::{assert_accounted, text};
pub use launch::{Launch, Serving};
pub use replicas::{Replica, Stack, lease_holder};
pub use syncctl::{Ran, Syncctl};

use std::path::PathBuf;
use std::time::Duration;

use peoplesync_bus::{Bus, BusSettings};
use peoplesync_sims::oomnitza::{CustomField, OomnitzaConfig, OomnitzaFaults, OomnitzaSim};
use peoplesync_sims::sage::{SageConfig, SageSim};

use crate::{NatsCluster, NatsServer, wait_for};

/// Loader settings for fast redelivery and retries, so failure tests take seconds.
pub const QUICK: &str = r#"
[consumer]
ack_wait_secs = 4
[retry]
initial_delay_ms = 50
max_delay_ms = 1000
credentials_retry_secs = 1
"#;

/// The control plane's bearer token wherever a test's loader serves it.
pub const CONTROL_TOKEN: &str = "e2e-control-token-0123456789abcdef";

/// The folder of the throw-away TLS material (`ca.pem`, `server.pem`, `server.key`) a loader
/// serves the control plane with under [`Launch::tls`].
pub fn tls_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tls")
}

/// A deployment with a generated org of `workers` and the default Oomnitza tenant.
pub async fn deployment(workers: u64) -> Deployment {
    let sage = SageConfig {
        workers,
        ..SageConfig::default()
    };
    Deployment::start(sage, oomnitza_config()).await
}

/// An Oomnitza tenant set up as docs/mapping.md tells an operator to: the default config's
/// custom fields exist.
pub fn oomnitza_config() -> OomnitzaConfig {
    OomnitzaConfig {
        custom_fields: peoplesync_core::default_custom_fields()
            .into_iter()
            .map(|f| CustomField {
                id: f.id,
                label: f.label,
                unique: f.unique,
            })
            .collect(),
        ..OomnitzaConfig::default()
    }
}

/// The NATS a deployment's services use: one server, or a JetStream cluster reached through
/// its seed URLs (comma separated, as `NATS_URL` takes them).
pub enum Nats {
    /// One `nats-server`.
    Single(NatsServer),
    /// A JetStream cluster; every stream and bucket gets three replicas.
    Cluster(NatsCluster),
}

impl Nats {
    /// A new single server.
    pub fn single() -> Nats {
        Nats::Single(NatsServer::start())
    }

    /// What the services get as `NATS_URL`.
    pub fn url(&self) -> &str {
        match self {
            Nats::Single(server) => server.url(),
            Nats::Cluster(cluster) => cluster.urls(),
        }
    }

    /// The single server (panics for a cluster).
    pub fn server(&mut self) -> &mut NatsServer {
        match self {
            Nats::Single(server) => server,
            Nats::Cluster(_) => panic!("this deployment runs a NATS cluster"),
        }
    }

    /// The cluster (panics for a single server).
    pub fn cluster(&mut self) -> &mut NatsCluster {
        match self {
            Nats::Cluster(cluster) => cluster,
            Nats::Single(_) => panic!("this deployment runs a single NATS server"),
        }
    }

    /// Copies of each stream and bucket: 3 on a cluster.
    pub fn replicas(&self) -> usize {
        match self {
            Nats::Single(_) => 1,
            Nats::Cluster(_) => 3,
        }
    }

    /// A test's own connection named `name`, with the streams and buckets set up; retried for a
    /// minute, as a cluster that has just formed may time out the first stream creations.
    pub async fn bus(&self, name: &str) -> Bus {
        let settings = BusSettings {
            replicas: self.replicas(),
            ..BusSettings::default()
        };
        wait_for("the test's bus", Duration::from_secs(60), || {
            let settings = settings.clone();
            async move {
                Bus::connect(self.url(), name, settings)
                    .await
                    .inspect_err(|e| eprintln!("connecting the test's bus: {e}"))
                    .ok()
            }
        })
        .await
    }
}

/// Everything a test's services talk to.
pub struct Deployment {
    /// Where configuration files of the services are written.
    pub dir: tempfile::TempDir,
    /// The NATS the services connect to.
    pub nats: Nats,
    /// The Sage People simulator.
    pub sage: SageSim,
    /// The Oomnitza simulator.
    pub oomnitza: OomnitzaSim,
    /// What the Sage People simulator was started with.
    pub sage_config: SageConfig,
    /// What the Oomnitza simulator was started with.
    pub oomnitza_config: OomnitzaConfig,
    /// Tells the processes the test runs in the background to stop when it is dropped.
    background: launch::Background,
}

impl Deployment {
    /// A deployment on a new single nats-server.
    pub async fn start(sage_config: SageConfig, oomnitza_config: OomnitzaConfig) -> Deployment {
        Deployment::start_on(Nats::single(), sage_config, oomnitza_config).await
    }

    /// A deployment on `nats`; on a cluster, every stream and bucket has three replicas.
    pub async fn start_on(
        nats: Nats,
        sage_config: SageConfig,
        oomnitza_config: OomnitzaConfig,
    ) -> Deployment {
        let sage = SageSim::spawn(sage_config.clone()).await.expect("sage sim");
        let oomnitza = OomnitzaSim::spawn(oomnitza_config.clone())
            .await
            .expect("oomnitza sim");
        Deployment {
            dir: tempfile::tempdir().expect("temp dir"),
            nats,
            sage,
            oomnitza,
            sage_config,
            oomnitza_config,
            background: launch::Background::default(),
        }
    }

    /// Has the Oomnitza simulator answer every request `latency_ms` late (and fail none).
    pub fn oomnitza_latency(&self, latency_ms: u64) {
        self.oomnitza.set_faults(OomnitzaFaults {
            latency_ms,
            ..OomnitzaFaults::default()
        });
    }

    /// The test's own connection to the deployment's NATS.
    pub async fn bus(&self) -> Bus {
        self.nats.bus("e2e").await
    }

    /// Stores `config` as its integration's config, over whatever is stored; the services
    /// watching the config take it up.
    pub async fn put_config(&self, config: &peoplesync_core::IntegrationConfig) {
        self.bus()
            .await
            .config_kv()
            .put(&config.id, config.to_toml().into_bytes().into())
            .await
            .expect("storing the config");
    }
}
