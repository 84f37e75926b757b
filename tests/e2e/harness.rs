//! A peoplesync deployment for one test: NATS, both simulators, and helpers to start the
//! services against them.

use std::collections::HashMap;
use std::time::Duration;

use peoplesync_bus::{Bus, BusSettings, RunRecord, Runs, dlq};
use peoplesync_sims::generate;
use peoplesync_sims::oomnitza::{CustomField, OomnitzaConfig, OomnitzaSim};
use peoplesync_sims::sage::{SageConfig, SageSim};
use peoplesync_testkit::{ChildService, NatsServer, wait_for};

/// Loader settings for fast redelivery and retries, so failure tests take seconds.
pub const QUICK: &str = r#"
[consumer]
ack_wait_secs = 4
[retry]
initial_delay_ms = 50
max_delay_ms = 1000
credentials_retry_secs = 1
"#;

/// A deployment with a generated org of `workers` and the default Oomnitza tenant.
pub async fn deployment(workers: u64) -> Deployment {
    let sage = SageConfig {
        workers,
        ..SageConfig::default()
    };
    Deployment::start(sage, oomnitza_config()).await
}

/// Checks the run invariant: every published event has exactly one outcome.
pub fn assert_accounted(run: &RunRecord) {
    let counts = run.counts.expect("final counts");
    assert_eq!(
        counts.total(),
        run.expected(),
        "published = written + unchanged + filtered + dead-lettered + canceled + stale: {counts:?}"
    );
}

/// Everything a test's services talk to.
pub struct Deployment {
    pub dir: tempfile::TempDir,
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
            dir: tempfile::tempdir().expect("temp dir"),
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
            // Several services per test: never the fixed default port.
            ("PEOPLESYNC_HTTP_LISTEN".into(), "127.0.0.1:0".into()),
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
            // Several services per test: never the fixed default port.
            ("PEOPLESYNC_HTTP_LISTEN".into(), "127.0.0.1:0".into()),
            ("RUST_LOG".into(), "info".into()),
        ]
    }

    /// Starts a loader replica named `name`.
    pub fn loader(&self, name: &str, args: &[&str]) -> ChildService {
        self.loader_env(name, args, &[])
    }

    /// Starts a loader replica named `name` with `extra` environment variables.
    pub fn loader_env(&self, name: &str, args: &[&str], extra: &[(&str, &str)]) -> ChildService {
        let mut env = self.oomnitza_env();
        env.push(("PEOPLESYNC_REPLICA".into(), name.into()));
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra);
        ChildService::spawn("oomnitza-loader", args, &env)
    }

    /// Starts `sage-extractor` as a service (scheduler and commands) with `extra` environment
    /// variables.
    pub fn extractor(&self, extra: &[(&str, &str)]) -> ChildService {
        let env = self.sage_env();
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra);
        ChildService::spawn("sage-extractor", &[], &env)
    }

    /// Starts a loader replica with `config` (TOML) as its `--config` file.
    pub fn loader_with(&self, name: &str, config: &str) -> ChildService {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("loader config");
        let path = path.to_string_lossy().into_owned();
        self.loader(name, &["--config", &path])
    }

    /// Starts a loader replica with `config` (TOML) serving `/metrics`, `/healthz` and `/readyz`
    /// on `http_port`.
    pub fn loader_listening(&self, name: &str, config: &str, http_port: u16) -> ChildService {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("loader config");
        let path = path.to_string_lossy().into_owned();
        let mut env = self.oomnitza_env();
        env.push(("PEOPLESYNC_REPLICA".into(), name.into()));
        // Later entries win: replaces the port-0 default.
        env.push((
            "PEOPLESYNC_HTTP_LISTEN".into(),
            format!("127.0.0.1:{http_port}"),
        ));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ChildService::spawn("oomnitza-loader", &["--config", &path], &env)
    }

    /// Runs `sage-extractor --once` to completion and returns its exit status.
    pub fn extract_once(&self) -> std::process::ExitStatus {
        self.run_extractor(&[]).0
    }

    /// Runs `sage-extractor --once` and returns the run id it reports.
    pub fn extract_run(&self) -> String {
        self.extract_run_with(&[])
    }

    /// [`Deployment::extract_run`] with `extra` environment variables.
    pub fn extract_run_with(&self, extra: &[(&str, &str)]) -> String {
        let (status, stdout) = self.run_extractor(extra);
        assert!(status.success(), "sage-extractor --once failed: {status}");
        stdout
            .lines()
            .find_map(|l| {
                l.split(" run ")
                    .nth(1)?
                    .split_whitespace()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no run id in {stdout:?}"))
    }

    /// `sage-extractor --once` with this deployment's environment, not started yet.
    pub fn extractor_command(&self) -> std::io::Result<std::process::Command> {
        let mut command =
            std::process::Command::new(peoplesync_testkit::bin_path("sage-extractor"));
        command
            .arg("--once")
            .envs(self.sage_env())
            .stderr(std::process::Stdio::null());
        Ok(command)
    }

    fn run_extractor(&self, extra: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
        let output = self
            .extractor_command()
            .and_then(|mut c| c.envs(extra.iter().copied()).output())
            .expect("run sage-extractor");
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    /// Waits until run `run_id` is finalized and checked against Oomnitza (or closed as
    /// canceled) and returns its record.
    pub async fn finalized(&self, integration: &str, run_id: &str, timeout: Duration) -> RunRecord {
        let runs = Runs::new(self.bus().await.state_kv().clone());
        wait_for(&format!("run {run_id} to be finalized"), timeout, || {
            let runs = runs.clone();
            async move {
                let (record, _) = runs.get(integration, run_id).await.ok()??;
                (record.counts.is_some() && record.is_settled()).then_some(record)
            }
        })
        .await
    }

    /// The generated workers that have an e-mail, by e-mail as Sage People holds it (trimmed,
    /// case kept: that is what reaches Oomnitza), and the ids of those without one.
    pub fn expected(&self) -> (HashMap<String, serde_json::Value>, Vec<String>) {
        let mut with_email = HashMap::new();
        let mut without = Vec::new();
        for index in 0..self.sage_config.workers {
            let raw = generate::worker(self.sage_config.seed, index);
            let id = raw["id"].as_str().unwrap_or_default().to_owned();
            match raw["emailAddress"]
                .as_str()
                .map(str::trim)
                .filter(|e| !e.is_empty())
            {
                Some(email) => {
                    with_email.insert(email.to_owned(), raw);
                }
                None => without.push(id),
            }
        }
        (with_email, without)
    }

    /// Asserts every worker with an e-mail is stored in Oomnitza exactly once and nobody else is.
    pub fn assert_each_user_stored_once(&self) {
        let (expected, _) = self.expected();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for user in self.oomnitza.users() {
            let email = user
                .get("EMAIL")
                .and_then(|e| e.as_str())
                .unwrap_or_default()
                .to_owned();
            *seen.entry(email).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "users stored more than once: {twice:?}");
        let missing: Vec<_> = expected
            .keys()
            .filter(|e| !seen.contains_key(*e))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "workers missing in Oomnitza, e.g. {missing:?}"
        );
        assert_eq!(
            seen.len(),
            expected.len(),
            "no user beyond the workers with e-mail"
        );
    }

    /// The dead letters currently held.
    pub async fn dead_letters(&self) -> Vec<peoplesync_bus::DeadLetterRecord> {
        let bus = self.bus().await;
        let (first, last, held) = dlq::sequence_range(bus.jetstream())
            .await
            .expect("dlq range");
        let mut letters = Vec::new();
        if held == 0 {
            return letters;
        }
        for sequence in first..=last {
            if let Some(letter) = dlq::get(bus.jetstream(), sequence).await.expect("dlq get") {
                letters.push(letter);
            }
        }
        letters
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
                records
                    .into_iter()
                    .find(|r| r.counts.is_some() && r.is_settled())
            }
        })
        .await
    }
}
