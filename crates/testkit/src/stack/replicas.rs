//! A deployment with several replicas of each service running, as the chaos suite drives it:
//! extractors as services (one holds the scheduler lease) and loaders serving `/metrics` and
//! `/readyz` on known ports (the first also the control plane), started again under the same
//! name after a `kill -9`; what an operator would look at during a fault; and the exact final
//! state a fault must still end in ([`Stack::assert_exact`]).

use std::time::Duration;

use peoplesync_bus::{Bus, FinalizeState, RunRecord, RunState, control, names};

use super::launch::{Launch, Spec};
use super::{CONTROL_TOKEN, Deployment, Syncctl};
use crate::{ChildService, free_port, wait_for, wait_for_or};

/// A running service and the port of its `/metrics` and `/readyz`.
pub struct Replica {
    /// The replica name.
    pub name: String,
    /// The process.
    pub child: ChildService,
    /// The port of its `/metrics` and `/readyz`.
    pub http: u16,
    /// The control plane's port (loader-1 only).
    control: Option<u16>,
    spec: Spec,
}

impl Replica {
    fn start(launch: Launch<'_>, name: String, http: u16, control: Option<u16>) -> Replica {
        let (child, spec) = launch.spawn_replica();
        Replica {
            name,
            child,
            http,
            control,
            spec,
        }
    }

    /// Kills the replica (`kill -9`) and starts it again the same way.
    fn restart(&mut self, d: &Deployment) {
        self.child.kill();
        self.child = Launch::again(d, self.spec.clone()).spawn();
    }
}

/// A deployment with its services running.
pub struct Stack {
    /// What the services talk to.
    pub d: Deployment,
    /// The suite's own connection (reconnects by itself after a NATS restart).
    pub bus: Bus,
    /// The extractor replicas, `extractor-1` first.
    pub extractors: Vec<Replica>,
    /// The loader replicas, `loader-1` (serving the control plane) first.
    pub loaders: Vec<Replica>,
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
        for i in 1..=extractors {
            let (name, http) = (format!("extractor-{i}"), free_port());
            let launch = stack
                .d
                .extractor()
                .named(&name)
                .config(extractor)
                .http(http);
            let replica = Replica::start(launch, name, http, None);
            stack.extractors.push(replica);
        }
        for i in 1..=loaders {
            let (name, http) = (format!("loader-{i}"), free_port());
            let mut launch = stack.d.loader(&name).config(loader).http(http);
            let control = (i == 1).then(free_port);
            if let Some(port) = control {
                launch = launch.control(port);
            }
            let replica = Replica::start(launch, name, http, control);
            stack.loaders.push(replica);
        }
        // Generous: on a fresh three-node cluster the services' first stream and bucket
        // set-up sometimes takes long (the whole cluster test took 14 to 153 s in four runs
        // alone on this machine; why is not found yet), and a loaded two-core machine adds to
        // it. Fast when it is fast.
        stack.lease_holder(Duration::from_secs(300)).await;
        stack
    }

    /// The extractor replica holding the scheduler lease, waiting up to `timeout` for one.
    pub async fn lease_holder(&self, timeout: Duration) -> String {
        self.lease_holder_other_than("", timeout).await
    }

    /// The extractor replica holding the scheduler lease once it is not `old`, waiting up to
    /// `timeout`. A timeout first prints what every replica's `/readyz` says, so that the
    /// failure shows why no extractor took the lease.
    pub async fn lease_holder_other_than(&self, old: &str, timeout: Duration) -> String {
        wait_for_or(
            "an extractor to hold the lease",
            timeout,
            || async {
                lease_holder(&self.bus, "sage-people")
                    .await
                    .filter(|holder| holder != old)
            },
            || self.observe("no extractor took the lease"),
        )
        .await
    }

    /// Kills loader `index` (`kill -9`) and starts it again under the same name.
    pub fn restart_loader(&mut self, index: usize) {
        self.loaders[index].restart(&self.d);
    }

    /// Kills extractor `index` (`kill -9`) and starts it again under the same name.
    pub fn restart_extractor(&mut self, index: usize) {
        self.extractors[index].restart(&self.d);
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
    /// Fails at once if the run completes first: a fault meant for the middle of the listing
    /// would come too late.
    pub async fn pages_published(&self, run_id: &str, pages: u64) {
        let (checkpoints, runs) = (&self.bus.checkpoints(), &self.bus.runs());
        wait_for(
            &format!("{pages} pages of run {run_id}"),
            Duration::from_secs(120),
            || async move {
                if let Ok(Some(c)) = checkpoints.load("sage-people").await {
                    return (c.run_id == run_id && c.pages >= pages).then_some(());
                }
                if let Ok(Some((run, _))) = runs.get("sage-people", run_id).await {
                    assert_ne!(
                        run.state,
                        RunState::Completed,
                        "run {run_id} completed before {pages} pages were published"
                    );
                }
                None
            },
        )
        .await;
    }

    /// Waits (up to two minutes) until the Oomnitza simulator has accepted at least `records`
    /// records in bulk posts (a record sent again counts again), so that a test can act at a
    /// point of the load whatever the machine's speed. False if run `run_id` settled first.
    pub async fn records_accepted_before_settling(&self, run_id: &str, records: u64) -> bool {
        wait_for_or(
            &format!("Oomnitza to accept {records} records of run {run_id}"),
            Duration::from_secs(120),
            || async {
                if self.d.oomnitza.stats().bulk_records >= records {
                    Some(true)
                } else if self.is_settled(run_id).await {
                    Some(false)
                } else {
                    None
                }
            },
            || self.observe("the load did not reach its mark"),
        )
        .await
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
        let ran = Syncctl::new(&format!("http://127.0.0.1:{control}"))
            .token(Some(CONTROL_TOKEN))
            .run(&["runs"]);
        eprintln!(
            "[chaos] {label}: syncctl runs (exit {}):\n{}{}",
            ran.code, ran.stdout, ran.stderr
        );
    }

    /// Waits (up to a minute: a service that cannot make progress must say so by then) until
    /// one of `services` shows a `/readyz` note `key`, and returns it.
    pub async fn readyz_note(&self, services: &[Replica], key: &str) -> String {
        let urls: Vec<String> = services
            .iter()
            .map(|s| format!("http://127.0.0.1:{}/readyz", s.http))
            .collect();
        wait_for(
            &format!("a /readyz note {key}"),
            Duration::from_secs(60),
            || async {
                for url in &urls {
                    let Ok(response) = reqwest::get(url).await else {
                        continue;
                    };
                    let body: serde_json::Value = response.json().await.ok()?;
                    if let Some(note) = body["notes"][key].as_str() {
                        return Some(note.to_owned());
                    }
                }
                None
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
            // A letter is the run's while the run is among its recent ones, as the control
            // plane counts it: a later run refusing the worker again (the daily 02:00 UTC
            // schedule firing during the test) replaces it and takes its latest run id.
            .filter(|l| l.letter.run_id == run.run_id || l.seen.includes(&run.run_id))
            .inspect(|l| assert!(!l.letter.reason.trim().is_empty(), "{l:?}"))
            .map(|l| l.letter.worker_id.clone())
            .collect();
        lettered.sort();
        if counts.dead_lettered != lettered.len() as u64 {
            // Say enough for the cause to be told: letters of other runs, or none held at all.
            let range = peoplesync_bus::dlq::sequence_range(&d.bus().await).await;
            let sample: Vec<(u64, &str, &str, &str)> = letters
                .iter()
                .take(5)
                .map(|l| {
                    let letter = &l.letter;
                    (
                        l.sequence,
                        letter.run_id.as_str(),
                        letter.worker_id.as_str(),
                        letter.stage.as_str(),
                    )
                })
                .collect();
            panic!(
                "the run counts {} dead-lettered events but {} letters carry its id; the DLQ \
                 holds {} letters (first, last, count: {range:?}); the first: {sample:?}",
                counts.dead_lettered,
                lettered.len(),
                letters.len()
            );
        }
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

/// The extractor replica holding the scheduler lease of `integration` now, if any.
pub async fn lease_holder(bus: &Bus, integration: &str) -> Option<String> {
    bus.lease_holder(integration).await.ok()?.map(|v| v.holder)
}
