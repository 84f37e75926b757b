//! Service binaries as child processes, for tests that must kill one for real (`kill -9`) or
//! drive a CLI. The binaries are the workspace's own, built before the tests by
//! `scripts/test` (`cargo build --workspace --bins --tests`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

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

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.signal("-TERM");
        let status = self.child.as_mut()?.wait().ok();
        self.child = None;
        status
    }

    /// Sends SIGTERM and waits at most `limit` for the exit status: `None` if the process
    /// was still running then (it is killed when this handle drops).
    pub fn terminate_within(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        self.signal("-TERM");
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self.child.as_mut()?.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
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

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.wait().ok();
        self.child = None;
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
