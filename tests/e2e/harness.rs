//! A peoplesync deployment for one test: NATS, both simulators, and helpers to start the
//! services against them.

use std::time::Duration;

use peoplesync_bus::{Bus, BusSettings, RunRecord, Runs};
use peoplesync_sims::oomnitza::{CustomField, OomnitzaConfig, OomnitzaSim};
use peoplesync_sims::sage::{SageConfig, SageSim};
use peoplesync_testkit::{ChildService, NatsServer, wait_for};

/// Everything a test's services talk to.
pub struct Deployment {
    pub nats: NatsServer,
    pub sage: SageSim,
    pub oomnitza: OomnitzaSim,
    pub sage_config: SageConfig,
    pub oomnitza_config: OomnitzaConfig,
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

impl Deployment {
    pub async fn start(sage_config: SageConfig, oomnitza_config: OomnitzaConfig) -> Deployment {
        let nats = NatsServer::start();
        let sage = SageSim::spawn(sage_config.clone()).await.expect("sage sim");
        let oomnitza = OomnitzaSim::spawn(oomnitza_config.clone())
            .await
            .expect("oomnitza sim");
        Deployment {
            nats,
            sage,
            oomnitza,
            sage_config,
            oomnitza_config,
        }
    }

    fn sage_env(&self) -> Vec<(String, String)> {
        vec![
            ("NATS_URL".into(), self.nats.url().into()),
            ("SAGE_PEOPLE_LOGIN_URL".into(), self.sage.url()),
            (
                "SAGE_PEOPLE_CLIENT_ID".into(),
                self.sage_config.client_id.clone(),
            ),
            (
                "SAGE_PEOPLE_CLIENT_SECRET".into(),
                self.sage_config.client_secret.clone(),
            ),
            ("RUST_LOG".into(), "info".into()),
        ]
    }

    fn oomnitza_env(&self) -> Vec<(String, String)> {
        vec![
            ("NATS_URL".into(), self.nats.url().into()),
            ("OOMNITZA_URL".into(), self.oomnitza.url()),
            (
                "OOMNITZA_API_TOKEN".into(),
                self.oomnitza_config.api_token.clone(),
            ),
            ("RUST_LOG".into(), "info".into()),
        ]
    }

    /// Starts a loader replica named `name`.
    pub fn loader(&self, name: &str, args: &[&str]) -> ChildService {
        let mut env = self.oomnitza_env();
        env.push(("PEOPLESYNC_REPLICA".into(), name.into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ChildService::spawn("oomnitza-loader", args, &env)
    }

    /// Runs `sage-extractor --once` to completion and returns its exit status.
    pub fn extract_once(&self) -> std::process::ExitStatus {
        let env = self.sage_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut extractor = ChildService::spawn("sage-extractor", &["--once"], &env);
        extractor.wait().expect("extractor exit status")
    }

    pub async fn bus(&self) -> Bus {
        Bus::connect(self.nats.url(), "e2e", BusSettings::default())
            .await
            .expect("bus")
    }

    /// Waits until the run of `integration` is finalized and returns its record.
    pub async fn finalized_run(&self, integration: &str, timeout: Duration) -> RunRecord {
        let runs = Runs::new(self.bus().await.state_kv().clone());
        wait_for("the run to be finalized", timeout, || {
            let runs = runs.clone();
            async move {
                let records = runs.list(Some(integration)).await.ok()?;
                records.into_iter().find(|r| r.counts.is_some())
            }
        })
        .await
    }
}
