//! The processes a benchmark starts: nats-server with a temporary store, the simulators (which
//! print `listening on URL` first), the services; each killed when dropped. Peak memory and CPU
//! time of a child come from `/proc/<pid>/status` (VmHWM) and `/proc/<pid>/stat`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The allocator setting the production image gives the services (`ENV MIMALLOC_PURGE_DELAY=10`
/// in the Dockerfile), so that the figures are the image's. `None` when the bench's own
/// environment sets the variable: the services then inherit that value (to measure another).
pub fn image_env() -> Option<(&'static str, &'static str)> {
    const PURGE_DELAY: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "10");
    std::env::var_os(PURGE_DELAY.0)
        .is_none()
        .then_some(PURGE_DELAY)
}

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
    nats: PathBuf,
}

impl Binaries {
    /// `dir`, or this executable's folder; nats-server from `NATS_SERVER_BIN`, `.tools/bin` or
    /// `PATH`.
    pub fn locate(dir: Option<PathBuf>) -> anyhow::Result<Binaries> {
        let dir = match dir {
            Some(dir) => dir,
            None => std::env::current_exe()
                .context("locating this executable")?
                .parent()
                .map(Path::to_path_buf)
                .context("this executable has no folder")?,
        };
        let nats = match std::env::var_os("NATS_SERVER_BIN") {
            Some(path) => PathBuf::from(path),
            None => [
                dir.join("../../.tools/bin/nats-server"),
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/nats-server"),
            ]
            .into_iter()
            .find(|path| path.exists())
            .unwrap_or_else(|| PathBuf::from("nats-server")),
        };
        Ok(Binaries { dir, nats })
    }

    /// The path of workspace binary `name`, checked to exist.
    pub fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.exists() {
            bail!(
                "{} is missing; build it first: cargo build --release --bins",
                path.display()
            );
        }
        Ok(path)
    }
}

/// A child process, killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    /// Starts `program` with `args` and `envs`; stderr goes to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let stderr =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Proc {
            child,
            name: name.to_owned(),
        })
    }

    /// Starts the simulator binary `name` with `args` (warnings only, its log in
    /// `dir/<name>.log`) and returns it with the URL it announces.
    pub fn simulator(
        bins: &Binaries,
        name: &str,
        args: &[&str],
        dir: &Path,
    ) -> anyhow::Result<(Proc, String)> {
        let mut sim = Proc::spawn(
            name,
            &bins.path(name)?,
            args,
            &[("RUST_LOG", "warn")],
            &dir.join(format!("{name}.log")),
        )?;
        let url = sim.listening_url()?;
        Ok((sim, url))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the first stdout line `listening on URL` and returns the URL.
    pub fn listening_url(&mut self) -> anyhow::Result<String> {
        let stdout = self
            .child
            .stdout
            .take()
            .with_context(|| format!("{} has no stdout", self.name))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .with_context(|| format!("reading the first line of {}", self.name))?;
        match line.trim().strip_prefix("listening on ") {
            Some(url) => Ok(url.to_owned()),
            None => bail!("{} did not announce its URL (printed {line:?})", self.name),
        }
    }

    /// Waits for the process to end, sampling its peak memory meanwhile; returns its exit
    /// status, peak RSS (bytes), CPU time and stdout.
    pub fn wait_measured(mut self) -> anyhow::Result<Measured> {
        let pid = self.pid();
        let mut stdout = self.child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(out) = stdout.as_mut() {
                let _ = std::io::Read::read_to_string(out, &mut text);
            }
            text
        });
        let started = Instant::now();
        let mut peak = 0;
        let mut cpu = Duration::ZERO;
        let status = loop {
            if let Some(hwm) = vm_hwm(pid) {
                peak = peak.max(hwm);
            }
            if let Some(time) = cpu_time(pid) {
                cpu = time;
            }
            if let Some(status) = self.child.try_wait().context("waiting for the process")? {
                break status;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = reader.join().unwrap_or_default();
        Ok(Measured {
            status,
            peak_rss: peak,
            cpu,
            wall: started.elapsed(),
            stdout,
        })
    }

    /// CPU time used so far.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid()).unwrap_or_default()
    }

    /// Reads and drops whatever the process prints, so a full pipe never blocks it.
    pub fn discard_stdout(&mut self) {
        if let Some(mut out) = self.child.stdout.take() {
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a measured process ended.
#[derive(Debug)]
pub struct Measured {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// Peak resident memory in bytes (VmHWM), as last sampled.
    pub peak_rss: u64,
    /// CPU time (user + system), as last sampled.
    pub cpu: Duration,
    /// Wall time from the start of waiting.
    pub wall: Duration,
    /// What it printed.
    pub stdout: String,
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A nats-server with JetStream on a free port and a temporary store.
#[derive(Debug)]
pub struct Nats {
    proc: Proc,
    url: String,
}

impl Nats {
    /// Starts it in `dir`.
    pub fn start(bins: &Binaries, dir: &Path) -> anyhow::Result<Nats> {
        let ports = dir.join("ports");
        std::fs::create_dir_all(&ports)?;
        let store = dir.join("store");
        let store = store.to_string_lossy().into_owned();
        let ports_arg = ports.to_string_lossy().into_owned();
        let proc = Proc::spawn(
            "nats-server",
            &bins.nats,
            &[
                "-a",
                "127.0.0.1",
                "-p",
                "-1",
                "-js",
                "-sd",
                &store,
                "--ports_file_dir",
                &ports_arg,
            ],
            &[],
            &dir.join("nats.log"),
        )
        .context("starting nats-server (run scripts/install-nats or set NATS_SERVER_BIN)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(port) = read_port(&ports)
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return Ok(Nats {
                    proc,
                    url: format!("nats://127.0.0.1:{port}"),
                });
            }
            if Instant::now() > deadline {
                bail!(
                    "nats-server did not start within 10 s; see {}",
                    dir.join("nats.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// CPU time used so far.
    pub fn cpu(&self) -> Duration {
        self.proc.cpu()
    }
}

fn read_port(dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("nats")?
        .get(0)?
        .as_str()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// Mebibytes, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
