//! `syncctl` as a process against a test's control plane: what it printed and how it exited.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::process::finish_within;
use crate::{PROCESS_LIMIT, bin_path, output_within};

/// What a syncctl run printed and how it exited.
#[derive(Debug)]
pub struct Ran {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<std::process::Output> for Ran {
    fn from(output: std::process::Output) -> Ran {
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Ran {
    /// Standard output as JSON (panics, showing both outputs, when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

/// `syncctl` pointed at one control plane (`PEOPLESYNC_CONTROL_URL`), with a token or none; the
/// test process's own token and integration variables are not passed on.
#[derive(Clone, Debug)]
pub struct Syncctl {
    url: String,
    token: Option<String>,
}

impl Syncctl {
    /// syncctl for the control plane at `url`, without a token.
    pub fn new(url: &str) -> Syncctl {
        Syncctl {
            url: url.to_owned(),
            token: None,
        }
    }

    /// With `token` as `PEOPLESYNC_CONTROL_TOKEN` (or none).
    pub fn token(mut self, token: Option<&str>) -> Syncctl {
        self.token = token.map(str::to_owned);
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin_path("syncctl"));
        command
            .args(args)
            .env("PEOPLESYNC_CONTROL_URL", &self.url)
            .env_remove("PEOPLESYNC_CONTROL_TOKEN")
            .env_remove("PEOPLESYNC_CONTROL_TOKEN_FILE")
            .env_remove("PEOPLESYNC_INTEGRATION");
        if let Some(token) = &self.token {
            command.env("PEOPLESYNC_CONTROL_TOKEN", token);
        }
        command
    }

    /// Runs syncctl with `args` to its end.
    pub fn run(&self, args: &[&str]) -> Ran {
        Ran::from(output_within(&mut self.command(args), PROCESS_LIMIT))
    }

    /// Runs syncctl with `args` and `text` on its standard input.
    pub fn run_with_stdin(&self, args: &[&str], text: &str) -> Ran {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run syncctl");
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .expect("write syncctl's input");
        }
        Ran::from(finish_within(child, PROCESS_LIMIT, "syncctl"))
    }

    /// Runs syncctl with `args` writing into a pipe whose reader has already gone, as under
    /// `syncctl … | head -1` once `head` has its line: every write to stdout fails with a
    /// broken pipe. Only stderr is captured.
    pub fn run_with_stdout_closed(&self, args: &[&str]) -> Ran {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("run syncctl");
        Ran::from(finish_within(child, PROCESS_LIMIT, "syncctl"))
    }
}
