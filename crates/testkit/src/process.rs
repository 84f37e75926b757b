//! Service binaries as child processes, for tests that must kill one for real (`kill -9`) or
//! drive a CLI. The binaries are the workspace's own, built before the tests by
//! `scripts/test` (`cargo build --workspace --bins --tests`).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a process a test runs to its end (`sage-extractor --once`, syncctl) may take, and
/// how long a service told to stop may keep running, before the test gives up on it: the
/// process is killed and the test fails saying so, rather than the suite hanging.
pub const PROCESS_LIMIT: Duration = Duration::from_secs(300);

/// The workspace root (where `Cargo.toml` with `[workspace]` is).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The path of a workspace binary in the same target profile as the running test.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --workspace --bins --tests)",
        path.display()
    );
    path
}

/// A running service binary, killed (SIGKILL) when dropped.
pub struct ChildService {
    child: Option<Child>,
    name: String,
}

impl ChildService {
    /// Starts `name` with `args` and `envs`, its output discarded unless `PEOPLESYNC_TEST_LOGS`
    /// is set.
    pub fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)]) -> ChildService {
        let show = std::env::var_os("PEOPLESYNC_TEST_LOGS").is_some();
        let output = || {
            if show {
                Stdio::inherit()
            } else {
                Stdio::null()
            }
        };
        let child = Command::new(bin_path(name))
            .args(args)
            .envs(envs.iter().copied())
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildService::adopt(name, child)
    }

    /// A service started by other means (with its output piped, say), killed on drop as any.
    pub(crate) fn adopt(name: &str, child: Child) -> ChildService {
        ChildService {
            child: Some(child),
            name: name.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the process at once (SIGKILL), as a crash or `kill -9` would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status; a process still running
    /// [`PROCESS_LIMIT`] later is killed and the test fails.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_ref()?;
        let status = self.terminate_within(PROCESS_LIMIT);
        if status.is_none() {
            self.kill();
            panic!(
                "{} still ran {PROCESS_LIMIT:?} after SIGTERM; killed",
                self.name
            );
        }
        status
    }

    /// Sends SIGTERM and waits at most `limit` for the exit status: `None` if the process
    /// was still running then (it is killed when this handle drops).
    pub fn terminate_within(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        self.signal("-TERM");
        self.exit_within(limit)
    }

    /// Waits at most `limit` for the process to exit: its status, or `None` if it was still
    /// running then (or its status could not be read).
    fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.as_mut()?.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => return None,
            }
        }
    }

    /// Stops the process where it is (SIGSTOP), as a stalled host or a long GC pause would;
    /// [`ChildService::thaw`] lets it go on.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Sends `signal` (as `kill` names it) to the process.
    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let sent = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            assert!(
                sent.is_ok_and(|s| s.success()),
                "kill {signal} {}",
                self.name
            );
        }
    }

    /// Waits for the process to exit by itself; one still running after [`PROCESS_LIMIT`] is
    /// killed and the test fails.
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_ref()?;
        let status = self.exit_within(PROCESS_LIMIT);
        if status.is_none() {
            self.kill();
            panic!("{} still ran after {PROCESS_LIMIT:?}; killed", self.name);
        }
        status
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `command` to its end, as [`Command::output`] does (stdin empty, stdout and stderr
/// captured), but gives up after `limit`: the process is then killed and the test fails,
/// showing the end of what it wrote to stderr.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let what = program_of(command);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    finish_within(child, limit, &what)
}

/// [`output_within`] for a process already started: waits for `child` to end and collects
/// what it wrote to the pipes it was given; after `limit` it is killed and the test fails.
pub(crate) fn finish_within(child: Child, limit: Duration, what: &str) -> Output {
    finish_unless(child, limit, what, &AtomicBool::new(false)).unwrap_or_else(|e| panic!("{e}"))
}

/// The name of the program `command` runs, for messages.
fn program_of(command: &Command) -> String {
    std::path::Path::new(command.get_program())
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Waits for `child` to end and collects what it wrote to the pipes it was given. Gives up
/// after `limit`, or as soon as `abandon` is set (the test that waits is ending): the process
/// is killed, and the error says so with the end of its stderr.
pub(crate) fn finish_unless(
    mut child: Child,
    limit: Duration,
    what: &str,
    abandon: &AtomicBool,
) -> Result<Output, String> {
    // Read in threads of their own: a process writing more than a pipe holds would otherwise
    // block on its write and never end.
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let deadline = Instant::now() + limit;
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if abandon.load(Ordering::Relaxed) => break Err("its test ended"),
            Ok(None) if Instant::now() >= deadline => break Err("it ran too long"),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    if ended.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let collect = |pipe: Option<std::thread::JoinHandle<Vec<u8>>>| {
        pipe.and_then(|reader| reader.join().ok())
            .unwrap_or_default()
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    match ended {
        Ok(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        Err(why) => Err(format!(
            "{what} was killed after {limit:?} or less ({why}); the end of its stderr:\n{}",
            tail(&String::from_utf8_lossy(&stderr), 40)
        )),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let mut last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.reverse();
    last.join("\n")
}
