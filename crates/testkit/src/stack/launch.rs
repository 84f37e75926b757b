//! Starting the service binaries against a [`Deployment`]: one builder for both programs, so
//! that the environment a service gets (NATS, the simulator's URL and credentials, a port-0
//! HTTP listener, the replica name, the configuration file, the control plane) is written once.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{ChildStderr, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::{CONTROL_TOKEN, Deployment, tls_dir};
use crate::process::{finish_unless, tail};
use crate::{ChildService, PROCESS_LIMIT, bin_path, output_within};

/// Which service binary a [`Launch`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    Loader,
    Extractor,
}

impl Program {
    fn binary(self) -> &'static str {
        match self {
            Program::Loader => "oomnitza-loader",
            Program::Extractor => "sage-extractor",
        }
    }
}

/// How a service is started: kept by a [`super::Replica`] to start it again the same way.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    program: Program,
    name: Option<String>,
    args: Vec<String>,
    config: Option<String>,
    http: Option<u16>,
    control: Option<u16>,
    tls: bool,
    env: Vec<(String, String)>,
}

/// A service started by [`Launch::spawn_serving`]: the process (killed when dropped), the
/// address of its `/healthz`, `/readyz` and `/metrics`, and the warnings it logged.
pub struct Serving {
    _service: ChildService,
    http: SocketAddr,
    warnings: Warnings,
}

/// The `WARN` and `ERROR` entries of a service's JSON log, as read so far.
type Warnings = Arc<Mutex<Vec<serde_json::Value>>>;

impl Serving {
    /// The URL of `path` (`/readyz`, say) on the service's HTTP endpoint.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The warnings and errors the service has logged so far, as JSON log entries (`level`,
    /// `message` and the event's fields), oldest first.
    pub fn warnings(&self) -> Vec<serde_json::Value> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status; the warnings it logs while stopping are
    /// read on after it.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self._service.terminate()
    }
}

/// A service binary about to be started against a deployment; see [`Deployment::loader`] and
/// [`Deployment::extractor`].
pub struct Launch<'a> {
    d: &'a Deployment,
    spec: Spec,
}

impl Deployment {
    /// `oomnitza-loader` as replica `name` (`PEOPLESYNC_REPLICA`), not started yet.
    pub fn loader(&self, name: &str) -> Launch<'_> {
        Launch::new(self, Program::Loader).named(name)
    }

    /// `sage-extractor` (as a service unless [`Launch::once`] runs it), not started yet.
    pub fn extractor(&self) -> Launch<'_> {
        Launch::new(self, Program::Extractor)
    }

    /// Starts a loader replica with `config` (TOML) as its `--config` file.
    pub fn loader_with(&self, name: &str, config: &str) -> ChildService {
        self.loader(name).config(config).spawn()
    }

    /// Runs `sage-extractor --once` to completion and returns its exit status.
    pub fn extract_once(&self) -> ExitStatus {
        self.extractor().once().0
    }

    /// Runs `sage-extractor --once` and returns the run id it reports.
    pub fn extract_run(&self) -> String {
        self.extract_run_with(&[])
    }

    /// [`Deployment::extract_run`] with `extra` environment variables.
    pub fn extract_run_with(&self, extra: &[(&str, &str)]) -> String {
        run_id_of(&self.extractor().envs(extra).once_output())
    }

    /// [`Deployment::extract_run`] in the background: the task gives the run's id once the
    /// extraction has ended, and a test can act on the loaders while the run is being read.
    pub fn extract_run_in_background(&self) -> tokio::task::JoinHandle<String> {
        let extraction = self.extract_in_background();
        tokio::spawn(async move { run_id_of(&extraction.await.expect("the extraction")) })
    }

    /// `sage-extractor --once` in the background, whatever its outcome: the task gives its
    /// exit status and output. Like every process a test runs to its end, it is killed after
    /// [`PROCESS_LIMIT`], and at once when the deployment is dropped (a test failing while it
    /// runs must neither leave it behind nor hang on it).
    pub fn extract_in_background(&self) -> tokio::task::JoinHandle<Output> {
        let mut command = self.extractor().args(&["--once"]).command();
        let abandon = Arc::clone(&self.background.0);
        tokio::task::spawn_blocking(move || {
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start sage-extractor --once");
            finish_unless(child, PROCESS_LIMIT, "sage-extractor --once", &abandon)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    }
}

/// Set when a [`Deployment`] is dropped: the processes it runs in the background are then
/// killed (see [`Deployment::extract_in_background`]).
#[derive(Debug, Default)]
pub(crate) struct Background(Arc<AtomicBool>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The run id `sage-extractor --once` printed, having ended with success; a failure shows
/// the end of what it logged.
fn run_id_of(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sage-extractor --once failed: {}; the end of its log:\n{}",
        output.status,
        tail(&String::from_utf8_lossy(&output.stderr), 40)
    );
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

impl<'a> Launch<'a> {
    fn new(d: &'a Deployment, program: Program) -> Launch<'a> {
        Launch {
            d,
            spec: Spec {
                program,
                name: None,
                args: Vec::new(),
                config: None,
                http: None,
                control: None,
                tls: false,
                env: Vec::new(),
            },
        }
    }

    pub(crate) fn again(d: &'a Deployment, spec: Spec) -> Launch<'a> {
        Launch { d, spec }
    }

    /// The replica name (`PEOPLESYNC_REPLICA`); also names its configuration file.
    pub fn named(mut self, name: &str) -> Self {
        self.spec.name = Some(name.to_owned());
        self
    }

    /// Command-line arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.spec.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// `config` (TOML) as the service's configuration file: the loader's `--config`, the
    /// extractor's `PEOPLESYNC_EXTRACTOR_CONFIG`.
    pub fn config(mut self, config: &str) -> Self {
        self.spec.config = Some(config.to_owned());
        self
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `port` (else on a port of its own choosing).
    pub fn http(mut self, port: u16) -> Self {
        self.spec.http = Some(port);
        self
    }

    /// Serves the control plane on `port` with bearer token [`CONTROL_TOKEN`] (the loader).
    pub fn control(mut self, port: u16) -> Self {
        self.spec.control = Some(port);
        self
    }

    /// Serves the control plane over TLS with the certificate in [`tls_dir`].
    pub fn tls(mut self) -> Self {
        self.spec.tls = true;
        self
    }

    /// One more environment variable; it wins over the deployment's value of the same name.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.spec.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// More environment variables, as [`Launch::env`].
    pub fn envs(self, pairs: &[(&str, &str)]) -> Self {
        pairs.iter().fold(self, |launch, (k, v)| launch.env(k, v))
    }

    /// Starts the service; it is killed when the handle is dropped.
    pub fn spawn(self) -> ChildService {
        let (args, env) = self.prepare();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ChildService::spawn(self.spec.program.binary(), &args, &env)
    }

    /// Starts the service with JSON logs and its HTTP endpoint on port 0, and waits (30 s at
    /// most) for the address it logs as `http listening on ADDR`, as an operator reading the
    /// logs would find it. Its logs show on stderr when `PEOPLESYNC_TEST_LOGS` is set.
    pub fn spawn_serving(self) -> Serving {
        assert!(
            self.spec.http.is_none(),
            "spawn_serving learns the port from the log: set none"
        );
        let program = self.spec.program.binary();
        let mut child = self
            .env("LOG_FORMAT", "json")
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let warnings = Warnings::default();
        let logged = read_log(
            child.stderr.take().expect("piped stderr"),
            Arc::clone(&warnings),
        );
        let service = ChildService::adopt(program, child);
        match logged.recv_timeout(Duration::from_secs(30)) {
            Ok(http) => Serving {
                _service: service,
                http,
                warnings,
            },
            // Dropping the service kills it.
            Err(_) => panic!("{program} did not log `http listening on ADDR` within 30s"),
        }
    }

    /// Starts the service as a [`super::Replica`] that can be started again the same way.
    pub(crate) fn spawn_replica(self) -> (ChildService, Spec) {
        let spec = self.spec.clone();
        (self.spawn(), spec)
    }

    /// The command that would start the service, for a test that runs it itself.
    pub fn command(&self) -> Command {
        let (args, env) = self.prepare();
        let mut command = Command::new(bin_path(self.spec.program.binary()));
        command.args(args).envs(env);
        command
    }

    /// Runs the service with `--once` to completion: the exit status and what it printed.
    pub fn once(self) -> (ExitStatus, String) {
        let output = self.once_output();
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    /// Runs the service with `--once` to completion (killed, failing the test, after
    /// [`PROCESS_LIMIT`]): its exit status and both outputs.
    fn once_output(self) -> Output {
        output_within(&mut self.args(&["--once"]).command(), PROCESS_LIMIT)
    }

    /// The arguments and environment of the service; writes its configuration file.
    fn prepare(&self) -> (Vec<String>, Vec<(String, String)>) {
        let d = self.d;
        let spec = &self.spec;
        let mut args = spec.args.clone();
        let mut env: Vec<(String, String)> = vec![
            ("NATS_URL".into(), d.nats.url().into()),
            (
                "PEOPLESYNC_STREAM_REPLICAS".into(),
                d.nats.replicas().to_string(),
            ),
        ];
        match spec.program {
            Program::Loader => env.extend([
                ("OOMNITZA_URL".into(), d.oomnitza.url()),
                (
                    "OOMNITZA_API_TOKEN".into(),
                    d.oomnitza_config.api_token.clone(),
                ),
            ]),
            Program::Extractor => env.extend([
                ("SAGE_PEOPLE_LOGIN_URL".into(), d.sage.url()),
                (
                    "SAGE_PEOPLE_CLIENT_ID".into(),
                    d.sage_config.client_id.clone(),
                ),
                (
                    "SAGE_PEOPLE_CLIENT_SECRET".into(),
                    d.sage_config.client_secret.clone(),
                ),
            ]),
        }
        // Several services per test: never the fixed default port.
        let http = spec
            .http
            .map_or_else(|| "127.0.0.1:0".to_owned(), |p| format!("127.0.0.1:{p}"));
        env.push(("PEOPLESYNC_HTTP_LISTEN".into(), http));
        env.push(("RUST_LOG".into(), "info".into()));
        if let Some(name) = &spec.name {
            env.push(("PEOPLESYNC_REPLICA".into(), name.clone()));
        }
        if let Some(config) = &spec.config {
            let file = spec.name.as_deref().unwrap_or(spec.program.binary());
            let path = d.dir.path().join(format!("{file}.toml"));
            std::fs::write(&path, config).expect("the service's configuration file");
            let path = path.to_string_lossy().into_owned();
            match spec.program {
                Program::Loader => args.extend(["--config".to_owned(), path]),
                Program::Extractor => env.push(("PEOPLESYNC_EXTRACTOR_CONFIG".into(), path)),
            }
        }
        if let Some(port) = spec.control {
            env.push(("CONTROL_LISTEN".into(), format!("127.0.0.1:{port}")));
            env.push(("PEOPLESYNC_CONTROL_TOKEN".into(), CONTROL_TOKEN.into()));
        }
        if spec.tls {
            for (key, file) in [
                ("CONTROL_TLS_CERT_FILE", "server.pem"),
                ("CONTROL_TLS_KEY_FILE", "server.key"),
            ] {
                let path = tls_dir().join(file).display().to_string();
                env.push((key.into(), path));
            }
        }
        env.extend(spec.env.iter().cloned());
        (args, env)
    }
}

/// Reads a service's JSON log lines from `stderr` on a thread of their own (echoing them when
/// `PEOPLESYNC_TEST_LOGS` is set), keeps its warnings and errors in `warnings`, and sends the
/// address of each `http listening on ADDR`.
fn read_log(stderr: ChildStderr, warnings: Warnings) -> mpsc::Receiver<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    let show = std::env::var_os("PEOPLESYNC_TEST_LOGS").is_some();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if show {
                eprintln!("{line}");
            }
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if matches!(entry["level"].as_str(), Some("WARN" | "ERROR")) {
                if let Ok(mut kept) = warnings.lock() {
                    kept.push(entry);
                }
                continue;
            }
            if let Some(addr) = entry["message"]
                .as_str()
                .and_then(|m| m.strip_prefix("http listening on "))
                .and_then(|a| a.parse().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    rx
}
