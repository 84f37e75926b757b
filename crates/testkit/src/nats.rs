//! A `nats-server` child process per test: JetStream on (or off, to test waiting for it), a
//! random port, a temporary store. The binary is `$NATS_SERVER_BIN`, else the one
//! `scripts/install-nats` put in `.tools/`, else `nats-server` on `PATH`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace_root;

/// A running nats-server, stopped and its store deleted when dropped.
pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    url: String,
    config: Option<PathBuf>,
    jetstream: bool,
}

impl NatsServer {
    /// Starts a server on a random free port and waits until it accepts connections.
    pub fn start() -> NatsServer {
        NatsServer::start_inner(None, true)
    }

    /// Like [`NatsServer::start`], with `config` (nats-server configuration syntax, e.g. an
    /// `authorization { user: a, password: b }` block) given as its configuration file. The
    /// port, JetStream and store still come from the command line.
    pub fn start_with_config(config: &str) -> NatsServer {
        NatsServer::start_inner(Some(config), true)
    }

    /// Like [`NatsServer::start`] with JetStream off, as a server started without `-js` (or a
    /// node whose JetStream has not started yet) answers: clients connect, and JetStream
    /// requests find no responder. [`NatsServer::restart_with_jetstream`] turns it on.
    pub fn start_without_jetstream() -> NatsServer {
        NatsServer::start_inner(None, false)
    }

    fn start_inner(config: Option<&str>, jetstream: bool) -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir for nats-server");
        let config = config.map(|text| {
            let path = dir.path().join("nats-server.conf");
            std::fs::write(&path, text).expect("writing the nats-server configuration");
            path
        });
        let (child, port) = spawn(&dir, None, config.as_deref(), jetstream);
        NatsServer {
            child: Some(child),
            url: format!("nats://127.0.0.1:{port}"),
            dir,
            port,
            config,
            jetstream,
        }
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server (as a crash would: SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let (child, _) = spawn(
            &self.dir,
            Some(self.port),
            self.config.as_deref(),
            self.jetstream,
        );
        self.child = Some(child);
    }

    /// Starts the server again on the same port and store with JetStream on.
    pub fn restart_with_jetstream(&mut self) {
        self.jetstream = true;
        self.restart();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nats-server binary: `$NATS_SERVER_BIN`, else the installed one, else `PATH`'s.
pub(crate) fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let installed = workspace_root().join(".tools/bin/nats-server");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("nats-server")
}

// The child is handed to `NatsServer`, which kills and waits for it on drop.
#[allow(clippy::zombie_processes)]
fn spawn(
    dir: &tempfile::TempDir,
    port: Option<u16>,
    config: Option<&std::path::Path>,
    jetstream: bool,
) -> (Child, u16) {
    let ports_dir = dir.path().join(format!("ports-{}", port.unwrap_or(0)));
    let _ = std::fs::remove_dir_all(&ports_dir);
    std::fs::create_dir_all(&ports_dir).expect("ports dir");
    let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let mut command = Command::new(binary());
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    command.args(["-a", "127.0.0.1", "-p", &port_arg]);
    if jetstream {
        command.arg("-js");
    }
    let mut child = command
        .arg("-sd")
        .arg(dir.path().join("store"))
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| cannot_start(&e));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(port) = read_port(&ports_dir)
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return (child, port);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nats-server did not start within 10s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a test that cannot start nats-server, saying how to get one.
pub(crate) fn cannot_start(error: &std::io::Error) -> ! {
    panic!("cannot start nats-server ({error}); run scripts/install-nats or set NATS_SERVER_BIN")
}

fn read_port(dir: &std::path::Path) -> Option<u16> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = json.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}
