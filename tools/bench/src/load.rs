//! `peoplesync-bench load`: how fast loader replicas write a run to Oomnitza. N synthetic worker
//! events (the simulator's generated org) and a completed run record are put on the bus first;
//! then K `oomnitza-loader` replicas start against an Oomnitza simulator answering after L ms,
//! and the clock runs until the run is finalized (its record has counts).
//!
//! `--one-at-a-time` is the baseline: the same records posted one per bulk request, one request
//! after the other, as Oomnitza's own connector loads users.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use peoplesync_bus::{Bus, BusSettings, RunRecord, RunState, codec, names};
use peoplesync_core::{Evaluation, Integration, IntegrationConfig, RecordInput, Tracking, Worker};
use peoplesync_oomnitza::{BulkRequest, OomnitzaAuth, OomnitzaClient, OomnitzaConfig};
use peoplesync_proto::v1::{WorkerEvent, WorkerEventKind};
use peoplesync_sims::generate;

use crate::procs::{self, Binaries, Nats, Proc};

const INTEGRATION: &str = "sage-people";
const SEED: u64 = 42;
const TOKEN: &str = "sim-oomnitza-token";

/// Options of `load`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Worker events in the run.
    #[arg(long, default_value_t = 20_000)]
    workers: u64,
    /// Loader replicas.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Latency the Oomnitza simulator adds to every request, in ms.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Baseline: one record per request, sequentially, without NATS or loaders.
    #[arg(long)]
    one_at_a_time: bool,
    /// A loader config file (TOML) for the replicas, instead of the defaults.
    #[arg(long)]
    loader_config: Option<std::path::PathBuf>,
    /// Worker threads of each replica's runtime (`TOKIO_WORKER_THREADS`; default: one per core).
    #[arg(long)]
    loader_threads: Option<usize>,
    /// The replicas' log filter (`RUST_LOG` syntax).
    #[arg(long, default_value = "warn")]
    loader_log: String,
    /// Keep the processes' logs in this folder (default: a temporary folder, removed at the end).
    #[arg(long)]
    log_dir: Option<std::path::PathBuf>,
}

fn custom_fields() -> String {
    peoplesync_core::default_custom_fields()
        .into_iter()
        .map(|f| {
            let mut spec = format!("{}:{}", f.id, f.label);
            if f.unique {
                spec.push_str(":unique");
            }
            spec
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn oomnitza_sim(
    bins: &Binaries,
    dir: &std::path::Path,
    latency_ms: u64,
) -> anyhow::Result<(Proc, String)> {
    let latency = latency_ms.to_string();
    let fields = custom_fields();
    // Records are applied as soon as the simulator's worker gets to them.
    Proc::simulator(
        bins,
        "oomnitza-sim",
        &[
            "--latency-ms",
            &latency,
            "--custom-field",
            &fields,
            "--processing-delay-ms",
            "0",
        ],
        dir,
    )
}

/// How long a load took.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// From starting the replicas until the run was finalized and checked (start-up included).
    total: Duration,
    /// From Oomnitza receiving the first bulk request until the run was finalized and checked.
    load: Duration,
    /// Of `load`, the time from the finalized record to the end of its check against what
    /// Oomnitza holds (zero when the loaders do not check runs).
    check: Duration,
}

/// Runs the benchmark and prints a report.
pub async fn run(bins: &Binaries, options: &Options) -> anyhow::Result<()> {
    let temp = tempfile::tempdir().context("temporary folder")?;
    let dir = match &options.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let dir = dir.as_path();
    let (sim, url) = oomnitza_sim(bins, dir, options.latency_ms)?;
    let (timing, mode) = if options.one_at_a_time {
        let elapsed = one_at_a_time(&url, options.workers).await?;
        let timing = Timing {
            total: elapsed,
            load: elapsed,
            check: Duration::ZERO,
        };
        (timing, "one record per request".to_owned())
    } else {
        (
            loaders(bins, dir, &sim, &url, options).await?,
            format!("{} loader replica(s)", options.replicas),
        )
    };
    let rate = |d: Duration| options.workers as f64 / d.as_secs_f64();
    let (workers, latency) = (options.workers, options.latency_ms);
    let (start, start_rate) = (timing.total.as_secs_f64(), rate(timing.total));
    let (load, load_rate) = (timing.load.as_secs_f64(), rate(timing.load));
    let check = timing.check.as_secs_f64();
    println!(
        "{workers} workers, Oomnitza latency {latency} ms, {mode}: {start:.2} s from start ({start_rate:.0} workers/s), {load:.2} s from the first request ({load_rate:.0} workers/s)"
    );
    let loaded = timing.load.saturating_sub(timing.check).as_secs_f64();
    println!(
        "checking the run against Oomnitza took {check:.2} s after finalize: {:.1}% of the {loaded:.2} s to finalize",
        100.0 * check / loaded.max(f64::EPSILON),
    );
    println!();
    println!(
        "| workers | latency | mode | from start | workers/s | from first request | workers/s | check after finalize |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    println!(
        "| {workers} | {latency} ms | {mode} | {start:.2} s | {start_rate:.0} | {load:.2} s | {load_rate:.0} | {check:.2} s |"
    );
    Ok(())
}

/// The generated org's worker `index` as the loader sees it.
fn worker(index: u64) -> anyhow::Result<(serde_json::Value, Worker)> {
    let raw = generate::worker(SEED, index);
    let worker = Worker::from_raw(&raw).context("a generated worker without id")?;
    Ok((raw, worker))
}

async fn loaders(
    bins: &Binaries,
    dir: &std::path::Path,
    sim: &Proc,
    url: &str,
    options: &Options,
) -> anyhow::Result<Timing> {
    // A fresh store every time, even when the logs go to a kept folder.
    let store = tempfile::tempdir().context("temporary folder")?;
    let nats = Nats::start(bins, store.path())?;
    let bus = Bus::connect(nats.url(), "peoplesync-bench", BusSettings::default())
        .await
        .context("connecting to NATS")?;
    let run_id = uuid::Uuid::now_v7().to_string();
    let runs = bus.runs();
    runs.create(&RunRecord::start(INTEGRATION, &run_id, true, "bench"))
        .await
        .context("creating the run record")?;
    let mut publisher = bus.publisher(1024);
    let subject = names::workers_subject(INTEGRATION);
    let tracking = peoplesync_proto::v1::Tracking {
        credentials: "default".into(),
        hostname: "bench.my.salesforce.com".into(),
    };
    for index in 0..options.workers {
        let (raw, worker) = worker(index)?;
        let event = WorkerEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            integration_id: INTEGRATION.into(),
            run_id: run_id.clone(),
            kind: WorkerEventKind::Upsert.into(),
            observed_at: Some(codec::now()),
            worker: Some(codec::worker_to_proto(&worker)),
            raw: serde_json::to_vec(&raw)?.into(),
            tracking: Some(tracking.clone()),
            sequence: index + 1,
            resend: false,
        };
        publisher
            .publish(
                subject.clone(),
                names::event_msg_id(&run_id, &worker.id),
                codec::encode_worker_event(&event),
                None,
            )
            .await?;
    }
    publisher.flush().await?;
    let workers = options.workers;
    runs.update(INTEGRATION, &run_id, |r| {
        r.state = RunState::Completed;
        r.published = workers;
        r.finished_at = Some(chrono::Utc::now().to_rfc3339());
        true
    })
    .await?;

    let (messages, bytes) = bus.work_stream_size().await?;
    println!(
        "on the bus: {messages} events, {} bytes each on average",
        bytes / messages.max(1)
    );
    let cpu_before = (nats.cpu(), sim.cpu());
    let started = Instant::now();
    let program = bins.path("oomnitza-loader")?;
    let mut replicas = Vec::new();
    for n in 1..=options.replicas.max(1) {
        let name = format!("bench-loader-{n}");
        let config = options
            .loader_config
            .as_ref()
            .map(|path| path.to_string_lossy().into_owned());
        let args: Vec<&str> = config
            .as_deref()
            .map(|path| vec!["--config", path])
            .unwrap_or_default();
        let threads = options.loader_threads.map(|n| n.to_string());
        let mut env = vec![
            ("NATS_URL", nats.url()),
            ("OOMNITZA_URL", url),
            ("OOMNITZA_API_TOKEN", TOKEN),
            ("PEOPLESYNC_REPLICA", name.as_str()),
            ("PEOPLESYNC_HTTP_LISTEN", "127.0.0.1:0"),
            ("RUST_LOG", options.loader_log.as_str()),
        ];
        if let Some(threads) = &threads {
            env.push(("TOKIO_WORKER_THREADS", threads.as_str()));
        }
        env.extend(procs::image_env());
        let mut replica = Proc::spawn(
            &name,
            &program,
            &args,
            &env,
            &dir.join(format!("{name}.log")),
        )?;
        replica.discard_stdout();
        replicas.push(replica);
    }
    let deadline = started + Duration::from_secs(3600);
    let mut finalized_at: Option<(Instant, i64)> = None;
    loop {
        let record = runs.get(INTEGRATION, &run_id).await?.map(|(r, _)| r);
        if finalized_at.is_none() && record.as_ref().is_some_and(|r| r.counts.is_some()) {
            finalized_at = Some((Instant::now(), chrono::Utc::now().timestamp_millis()));
        }
        if let Some(record) = record.filter(|r| r.is_settled())
            && let Some(counts) = record.counts
            && let Some((finalized, finalized_at_ms)) = finalized_at
        {
            let elapsed = started.elapsed();
            let check = finalized.elapsed();
            let checked_at_ms = chrono::Utc::now().timestamp_millis();
            println!("finalized and checked: {counts:?}");
            if let Some(verification) = &record.verification {
                println!(
                    "verification: accepted {}, confirmed {}, not applied {}, unverifiable fields {:?}",
                    verification.accepted,
                    verification.confirmed,
                    verification.not_applied,
                    verification.unverifiable_fields
                );
            }
            let per_event = |cpu: Duration| cpu.as_secs_f64() * 1e6 / workers as f64;
            let loaders: Duration = replicas.iter().map(Proc::cpu).sum();
            println!(
                "CPU per event: nats-server {:.1} µs, loaders {:.1} µs, oomnitza-sim {:.1} µs",
                per_event(nats.cpu().saturating_sub(cpu_before.0)),
                per_event(loaders),
                per_event(sim.cpu().saturating_sub(cpu_before.1)),
            );
            let stats: serde_json::Value = reqwest::get(format!("{url}/_admin/stats"))
                .await?
                .json()
                .await?;
            let number = |key: &str| {
                stats
                    .get(key)
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            };
            println!(
                "Oomnitza: {} bulk requests, {:.1} records per request, at most {} in flight, at most {} write(s) per user",
                number("bulk_requests"),
                number("bulk_records") as f64 / number("bulk_requests").max(1) as f64,
                number("max_in_flight"),
                number("max_writes_per_user"),
            );
            let first_request_ms = stats
                .get("first_bulk_at_ms")
                .and_then(serde_json::Value::as_i64)
                .context("Oomnitza received no bulk request")?;
            let load_ms = u64::try_from(checked_at_ms - first_request_ms).unwrap_or(0);
            if let Some(last_request_ms) = stats
                .get("last_bulk_at_ms")
                .and_then(serde_json::Value::as_i64)
            {
                println!(
                    "from the first to the last bulk request: {} ms; from the last to finalized: {} ms",
                    last_request_ms - first_request_ms,
                    finalized_at_ms - last_request_ms
                );
            }
            return Ok(Timing {
                total: elapsed,
                load: Duration::from_millis(load_ms),
                check,
            });
        }
        if Instant::now() > deadline {
            bail!(
                "the run was not finalized within an hour; see the loader logs in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn one_at_a_time(url: &str, workers: u64) -> anyhow::Result<Duration> {
    let client = OomnitzaClient::new(OomnitzaConfig::new(
        url,
        OomnitzaAuth::ApiToken(TOKEN.to_owned().into()),
    ))?;
    let config = IntegrationConfig::default_for(INTEGRATION);
    let sync_field = config.sync_keys.clone();
    let integration = Integration::compile(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tracking = Tracking {
        credentials: "default".into(),
        hostname: "bench.my.salesforce.com".into(),
    };
    let portion = uuid::Uuid::now_v7().to_string();
    let started = Instant::now();
    let mut posted = 0;
    for index in 0..workers {
        let (raw, worker) = worker(index)?;
        let input = RecordInput {
            raw: &raw,
            worker: &worker,
            tracking: &tracking,
        };
        let Evaluation::Load { record } = integration.evaluate(&input) else {
            continue;
        };
        let request = BulkRequest {
            portion: &portion,
            sync_field: &sync_field,
            insert_only: false,
            update_only: false,
            records: std::slice::from_ref(&record),
            error: None,
        };
        if let Err(err) = client.post_bulk(&request).await {
            // A record Oomnitza refuses is a result, not a reason to stop the baseline.
            eprintln!("worker {}: {err}", worker.id);
        }
        posted += 1;
    }
    client.finalize(&portion).await?;
    let elapsed = started.elapsed();
    println!("posted {posted} records one at a time");
    Ok(elapsed)
}
