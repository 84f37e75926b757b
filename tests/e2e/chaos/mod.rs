//! The chaos suite: a whole deployment — real nats-server processes, both simulators, the
//! extractor as a service and several loader replicas as real binaries — under crashes
//! (`kill -9` of loaders and of the extractor), NATS restarts and the loss of a cluster node,
//! outages of Oomnitza and Sage People longer than the retry budgets, and hostile input. Each
//! test waits for conditions with generous timeouts and then checks the exact final state
//! ([`Stack::assert_exact`]): every worker once in Oomnitza with the right fields, the portion
//! finalized once, the run's counts equal to what Oomnitza holds, nothing left on the work
//! stream, and every worker not loaded accounted for with a reason.
//!
//! CI runs the bounded form. `PEOPLESYNC_CHAOS=long` runs the longer one for release checks
//! (more kills, larger orgs, longer outages); see docs/chaos.md.

mod corpus;
mod crashes;
mod nats;
mod outages;

use std::time::Duration;

use peoplesync_bus::{Bus, FinalizeState, RunRecord, RunState, control, names};
use peoplesync_testkit::{ChildService, free_port, wait_for};

use crate::harness::Deployment;

/// How hard the suite pushes: bounded (CI) unless `PEOPLESYNC_CHAOS=long`.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub long: bool,
}

impl Scale {
    pub fn from_env() -> Scale {
        Scale {
            long: std::env::var("PEOPLESYNC_CHAOS").is_ok_and(|v| v.trim() == "long"),
        }
    }

    /// `bounded` in CI, `long` for release checks.
    pub fn pick<T>(self, bounded: T, long: T) -> T {
        if self.long { long } else { bounded }
    }
}

/// Loader settings of the suite: the tests' quick redelivery and retries, and five seconds of
/// retries per bulk request, so faults play out in seconds and outages outlast the budget.
pub fn loader_config() -> String {
    let config = crate::harness::QUICK.replace("[retry]\n", "[retry]\nmax_elapsed_secs = 5\n");
    assert!(config.contains("max_elapsed_secs = 5"), "{config}");
    config
}

/// Extractor settings of the suite: a short lease, so a standby takes over in seconds, and
/// quick resumption of a run stopped part-way.
pub const EXTRACTOR: &str = r#"
lease_ttl_secs = 3
[run_retry]
first_delay_secs = 1
max_delay_secs = 4
max_attempts = 30
"#;

/// A running service and the port of its `/metrics` and `/readyz`.
pub struct Service {
    pub name: String,
    pub child: ChildService,
    pub http: u16,
    /// The control plane's port (loader-1 only).
    control: Option<u16>,
    config: String,
}

/// A deployment with its services running.
pub struct Stack {
    pub d: Deployment,
    /// The suite's own connection (reconnects by itself after a NATS restart).
    pub bus: Bus,
    pub extractors: Vec<Service>,
    pub loaders: Vec<Service>,
}

impl Stack {
    /// Starts `extractors` extractor replicas with `extractor` (TOML) and `loaders` loader
    /// replicas with `loader`, and waits until one extractor holds the scheduler lease.
    pub async fn start(
        d: Deployment,
        extractors: usize,
        extractor: &str,
        loaders: usize,
        loader: &str,
    ) -> Stack {
        let bus = d.bus().await;
        let mut stack = Stack {
            d,
            bus,
            extractors: Vec::new(),
            loaders: Vec::new(),
        };
        for (kind, count, config) in [
            ("extractor", extractors, extractor),
            ("loader", loaders, loader),
        ] {
            for i in 1..=count {
                let http = free_port();
                let name = format!("{kind}-{i}");
                let control = (kind == "loader" && i == 1).then(free_port);
                let child = if kind == "loader" {
                    stack.d.loader_serving(&name, config, http, control)
                } else {
                    stack.d.extractor_service(&name, config, http)
                };
                let service = Service {
                    name,
                    child,
                    http,
                    control,
                    config: config.to_owned(),
                };
                if kind == "loader" {
                    stack.loaders.push(service);
                } else {
                    stack.extractors.push(service);
                }
            }
        }
        stack.lease_holder(Duration::from_secs(60)).await;
        stack
    }

    /// The extractor replica holding the scheduler lease, waiting up to `timeout` for one.
    pub async fn lease_holder(&self, timeout: Duration) -> String {
        self.lease_holder_other_than("", timeout).await
    }

    /// The extractor replica holding the scheduler lease once it is not `old`, waiting up to
    /// `timeout`.
    pub async fn lease_holder_other_than(&self, old: &str, timeout: Duration) -> String {
        let bus = &self.bus;
        wait_for("an extractor to hold the lease", timeout, || async move {
            let lease = bus.lease_holder("sage-people").await.ok()??;
            (lease.holder != old).then_some(lease.holder)
        })
        .await
    }

    /// Kills loader `index` (`kill -9`) and starts it again under the same name.
    pub fn restart_loader(&mut self, index: usize) {
        let service = &mut self.loaders[index];
        service.child.kill();
        service.child = self.d.loader_serving(
            &service.name,
            &service.config,
            service.http,
            service.control,
        );
    }

    /// Kills extractor `index` (`kill -9`) and starts it again under the same name.
    pub fn restart_extractor(&mut self, index: usize) {
        let service = &mut self.extractors[index];
        service.child.kill();
        service.child = self
            .d
            .extractor_service(&service.name, &service.config, service.http);
    }

    /// Starts a full run through the extractor's command (what `syncctl run` sends) and
    /// returns its id, asking again while no extractor answers.
    pub async fn trigger(&self) -> String {
        let bus = &self.bus;
        let subject = control::subject("sage-people", control::RUN);
        let body = serde_json::json!({"trigger": "chaos"}).to_string();
        let started: control::RunStarted = wait_for(
            "an extractor to start the run",
            Duration::from_secs(60),
            || {
                let (client, subject, body) = (bus.client().clone(), subject.clone(), body.clone());
                async move {
                    let reply = tokio::time::timeout(
                        Duration::from_secs(10),
                        client.request(subject, body.into()),
                    )
                    .await
                    .ok()?
                    .ok()?;
                    serde_json::from_slice::<control::Reply<control::RunStarted>>(&reply.payload)
                        .ok()?
                        .into_result()
                        .ok()
                }
            },
        )
        .await;
        assert!(!started.already_running, "a run was already going");
        started.run_id
    }

    /// Waits until at least `pages` pages of run `run_id` are published (its checkpoint).
    pub async fn pages_published(&self, run_id: &str, pages: u64) {
        let bus = &self.bus;
        let checkpoints = bus.checkpoints();
        wait_for(
            &format!("{pages} pages of run {run_id}"),
            Duration::from_secs(120),
            || {
                let checkpoints = checkpoints.clone();
                async move {
                    let c = checkpoints.load("sage-people").await.ok()??;
                    (c.run_id == run_id && c.pages >= pages).then_some(())
                }
            },
        )
        .await;
    }

    /// Prints what an operator would look at during a fault, under `label` (shown with
    /// `--nocapture`): every service's `/readyz` and `peoplesync_` metrics, and `syncctl runs`.
    pub async fn observe(&self, label: &str) {
        for service in self.extractors.iter().chain(&self.loaders) {
            let get = |path: &str| {
                let url = format!("http://127.0.0.1:{}{path}", service.http);
                async move {
                    match reqwest::get(&url).await {
                        Ok(r) => format!(
                            "{} {}",
                            r.status().as_u16(),
                            r.text().await.unwrap_or_default()
                        ),
                        Err(err) => format!("no answer ({err})"),
                    }
                }
            };
            eprintln!(
                "[chaos] {label}: {} /readyz {}",
                service.name,
                get("/readyz").await
            );
            let metrics = get("/metrics").await;
            let shown: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("peoplesync_") && !l.contains("_bucket"))
                .collect();
            eprintln!(
                "[chaos] {label}: {} /metrics {}",
                service.name,
                shown.join(" | ")
            );
        }
        let Some(control) = self.loaders.iter().find_map(|s| s.control) else {
            return;
        };
        let output = std::process::Command::new(peoplesync_testkit::bin_path("syncctl"))
            .arg("runs")
            .env(
                "PEOPLESYNC_CONTROL_URL",
                format!("http://127.0.0.1:{control}"),
            )
            .env("PEOPLESYNC_CONTROL_TOKEN", crate::harness::CONTROL_TOKEN)
            .output();
        match output {
            Ok(o) => eprintln!(
                "[chaos] {label}: syncctl runs (exit {}):\n{}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(err) => eprintln!("[chaos] {label}: syncctl runs: {err}"),
        }
    }

    /// Waits (up to a minute: a service that cannot make progress must say so by then) until
    /// one of `services` shows a `/readyz` note `key`, and returns it.
    pub async fn readyz_note(&self, services: &[Service], key: &str) -> String {
        let urls: Vec<String> = services
            .iter()
            .map(|s| format!("http://127.0.0.1:{}/readyz", s.http))
            .collect();
        wait_for(
            &format!("a /readyz note {key}"),
            Duration::from_secs(60),
            || {
                let urls = urls.clone();
                async move {
                    for url in urls {
                        let Ok(response) = reqwest::get(&url).await else {
                            continue;
                        };
                        let body: serde_json::Value = response.json().await.ok()?;
                        if let Some(note) = body["notes"][key].as_str() {
                            return Some(note.to_owned());
                        }
                    }
                    None
                }
            },
        )
        .await
    }

    /// Whether run `run_id` is finalized and checked now.
    pub async fn is_settled(&self, run_id: &str) -> bool {
        let runs = self.bus.runs();
        matches!(runs.get("sage-people", run_id).await,
            Ok(Some((r, _))) if r.counts.is_some() && r.is_settled())
    }

    /// Waits (up to `timeout`) until run `run_id` is finalized and checked, and returns it.
    pub async fn settled(&self, run_id: &str, timeout: Duration) -> RunRecord {
        self.d.finalized("sage-people", run_id, timeout).await
    }

    /// Checks the exact final state of `run`, the first run of a fresh deployment: see the
    /// module header.
    pub async fn assert_exact(&self, run: &RunRecord) {
        let d = &self.d;
        assert_eq!(run.state, RunState::Completed, "{run:?}");
        assert!(
            matches!(run.finalize, FinalizeState::Finalized { .. }),
            "{:?}",
            run.finalize
        );
        assert_eq!(
            d.oomnitza.stats().finalize_calls.get(&run.run_id),
            Some(&1),
            "the portion is finalized exactly once"
        );
        let workers = d.sage.stats().workers;
        assert_eq!(
            run.published + run.skipped,
            workers,
            "every Sage People worker is published or skipped"
        );
        let counts = run.counts.expect("final counts");
        assert_eq!(
            counts.total(),
            run.expected(),
            "published = sum of outcomes: {counts:?}"
        );
        let without_email = d.assert_users_match_sage();
        assert_eq!(
            counts.written,
            d.oomnitza.users().len() as u64,
            "written counts exactly what Oomnitza holds: {counts:?}"
        );
        assert_eq!(counts.unchanged, 0, "a first run: {counts:?}");
        // Nothing lost: every worker not loaded is dead-lettered with a reason.
        let letters = d.dead_letters().await;
        let mut lettered: Vec<String> = letters
            .iter()
            .filter(|l| l.letter.run_id == run.run_id)
            .inspect(|l| assert!(!l.letter.reason.trim().is_empty(), "{l:?}"))
            .map(|l| l.letter.worker_id.clone())
            .collect();
        lettered.sort();
        assert_eq!(counts.dead_lettered, lettered.len() as u64);
        let mut expected = without_email;
        expected.sort();
        assert_eq!(
            lettered, expected,
            "dead letters are the workers without e-mail"
        );
        self.assert_drained().await;
    }

    /// Asserts nothing is left on the work stream: no event pending or unacknowledged.
    pub async fn assert_drained(&self) {
        let bus = &self.bus;
        let stream = bus
            .jetstream()
            .get_stream(names::WORKERS_STREAM)
            .await
            .expect("the work stream");
        let consumer = names::loader_consumer("sage-people");
        let info = wait_for("the work stream to drain", Duration::from_secs(60), || {
            let (stream, consumer) = (stream.clone(), consumer.clone());
            async move {
                let info = stream.consumer_info(&consumer).await.ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(info)
            }
        })
        .await;
        // Work-queue retention: an acknowledged event leaves the stream.
        let held = stream
            .clone()
            .info()
            .await
            .expect("work stream info")
            .state
            .messages;
        assert_eq!(held, 0, "events left on the work stream: {info:?}");
    }
}
