//! A peoplesync deployment for one test: NATS, both simulators, and helpers to start the
//! services against them.

use std::collections::HashMap;
use std::time::Duration;

use peoplesync_bus::{Bus, BusSettings, RunRecord, dlq};
use peoplesync_sims::generate;
use peoplesync_sims::oomnitza::{CustomField, OomnitzaConfig, OomnitzaSim};
use peoplesync_sims::sage::{SageConfig, SageSim};
use peoplesync_testkit::{ChildService, NatsCluster, NatsServer, wait_for};

/// Loader settings for fast redelivery and retries, so failure tests take seconds.
pub const QUICK: &str = r#"
[consumer]
ack_wait_secs = 4
[retry]
initial_delay_ms = 50
max_delay_ms = 1000
credentials_retry_secs = 1
"#;

/// The control plane's bearer token where a test serves it.
pub const CONTROL_TOKEN: &str = "e2e-control-token-0123456789abcdef";

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

/// The NATS a deployment's services use: one server, or a JetStream cluster reached through
/// its seed URLs (comma separated, as `NATS_URL` takes them).
pub enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
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
    fn replicas(&self) -> usize {
        match self {
            Nats::Single(_) => 1,
            Nats::Cluster(_) => 3,
        }
    }
}

/// The trimmed, non-empty text at `path` in a raw Sage People record.
pub fn text(raw: &serde_json::Value, path: &[&str]) -> Option<String> {
    let mut node = raw;
    for key in path {
        node = node.get(key)?;
    }
    let s = node.as_str()?.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Everything a test's services talk to.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub nats: Nats,
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
        Deployment::start_on(
            Nats::Single(NatsServer::start()),
            sage_config,
            oomnitza_config,
        )
        .await
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
        }
    }

    fn sage_env(&self) -> Vec<(String, String)> {
        vec![
            ("NATS_URL".into(), self.nats.url().into()),
            (
                "PEOPLESYNC_STREAM_REPLICAS".into(),
                self.nats.replicas().to_string(),
            ),
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
            (
                "PEOPLESYNC_STREAM_REPLICAS".into(),
                self.nats.replicas().to_string(),
            ),
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
        self.loader_serving(name, config, http_port, None)
    }

    /// [`Deployment::loader_listening`], also serving the control plane on `control_port` with
    /// bearer token [`CONTROL_TOKEN`] when one is given.
    pub fn loader_serving(
        &self,
        name: &str,
        config: &str,
        http_port: u16,
        control_port: Option<u16>,
    ) -> ChildService {
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
        if let Some(port) = control_port {
            env.push(("CONTROL_LISTEN".into(), format!("127.0.0.1:{port}")));
            env.push(("CONTROL_TOKEN".into(), CONTROL_TOKEN.into()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ChildService::spawn("oomnitza-loader", &["--config", &path], &env)
    }

    /// Starts `sage-extractor` as a service (not `--once`): replica `name` with `config`
    /// (TOML) as its configuration file, serving `/metrics` and `/readyz` on `http_port`.
    pub fn extractor_service(&self, name: &str, config: &str, http_port: u16) -> ChildService {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("extractor config");
        let mut env = self.sage_env();
        env.push(("PEOPLESYNC_REPLICA".into(), name.into()));
        env.push((
            "PEOPLESYNC_EXTRACTOR_CONFIG".into(),
            path.to_string_lossy().into_owned(),
        ));
        // Later entries win: replaces the port-0 default.
        env.push((
            "PEOPLESYNC_HTTP_LISTEN".into(),
            format!("127.0.0.1:{http_port}"),
        ));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ChildService::spawn("sage-extractor", &[], &env)
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
        let runs = self.bus().await.runs();
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

    /// Asserts every worker of the Sage People org with an e-mail is stored in Oomnitza exactly
    /// once with the fields the default mapping gives it (as Sage People holds the record now),
    /// and nobody else is; returns the ids of the workers without e-mail, which cannot be
    /// loaded.
    pub fn assert_users_match_sage(&self) -> Vec<String> {
        self.check_users(true)
    }

    /// [`Deployment::assert_users_match_sage`] without the fields, for tests that change the
    /// mapping.
    pub fn assert_each_user_stored_once(&self) -> Vec<String> {
        self.check_users(false)
    }

    fn check_users(&self, fields: bool) -> Vec<String> {
        let mut stored: HashMap<String, serde_json::Map<String, serde_json::Value>> =
            HashMap::new();
        for user in self.oomnitza.users() {
            let email = user
                .get("EMAIL")
                .and_then(|e| e.as_str())
                .unwrap_or_default()
                .to_owned();
            assert!(
                stored.insert(email.clone(), user).is_none(),
                "user {email} stored more than once"
            );
        }
        let mut without_email = Vec::new();
        let mut checked = 0;
        for index in 0..self.sage_config.workers {
            let Some(raw) = self.sage.worker(&generate::worker_id(index)) else {
                continue;
            };
            let id = text(&raw, &["id"]).expect("generated workers have ids");
            // Kept in the case Sage People holds it.
            let Some(email) = text(&raw, &["emailAddress"]) else {
                without_email.push(id);
                continue;
            };
            let user = stored
                .get(&email)
                .unwrap_or_else(|| panic!("worker {id} ({email}) is not in Oomnitza"));
            checked += 1;
            if !fields {
                continue;
            }
            let field = |name: &str| {
                user.get(name)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            assert_eq!(field("USER"), Some(email.clone()), "USER of {id}");
            assert_eq!(
                field("FIRST_NAME"),
                text(&raw, &["firstName"]),
                "FIRST_NAME of {id}"
            );
            assert_eq!(
                field("LAST_NAME"),
                text(&raw, &["lastName"]),
                "LAST_NAME of {id}"
            );
            assert_eq!(
                field("POSITION"),
                text(&raw, &["currentEmployment", "jobTitle"]),
                "POSITION of {id}"
            );
            assert_eq!(
                field("PERMISSIONS_ID").as_deref(),
                Some("25"),
                "role of {id}"
            );
        }
        assert_eq!(
            stored.len(),
            checked,
            "no user beyond the workers with e-mail"
        );
        without_email
    }

    /// The dead letters currently held.
    pub async fn dead_letters(&self) -> Vec<peoplesync_bus::DeadLetterRecord> {
        let bus = self.bus().await;
        let (first, last, held) = dlq::sequence_range(&bus).await.expect("dlq range");
        let mut letters = Vec::new();
        if held == 0 {
            return letters;
        }
        for sequence in first..=last {
            if let Some(letter) = dlq::get(&bus, sequence).await.expect("dlq get") {
                letters.push(letter);
            }
        }
        letters
    }

    pub async fn bus(&self) -> Bus {
        let settings = BusSettings {
            replicas: self.nats.replicas(),
            ..BusSettings::default()
        };
        // A cluster that has just formed may time out the first stream creations.
        wait_for("the test's bus", Duration::from_secs(60), || {
            let settings = settings.clone();
            async move {
                Bus::connect(self.nats.url(), "e2e", settings)
                    .await
                    .inspect_err(|e| eprintln!("connecting the test's bus: {e}"))
                    .ok()
            }
        })
        .await
    }

    /// Waits until the run of `integration` is finalized and returns its record.
    pub async fn finalized_run(&self, integration: &str, timeout: Duration) -> RunRecord {
        let runs = self.bus().await.runs();
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
