//! `peoplesync-bench extract`: one `sage-extractor --once` over a simulated org of N workers,
//! timed and measured (peak RSS, CPU), with the stream checked to hold exactly N events.

use std::time::Duration;

use anyhow::{Context, bail};
use peoplesync_bus::names;

use crate::procs::{self, Binaries, Nats, Proc, mib};

/// Options of `extract`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Workers in the simulated org.
    #[arg(long, default_value_t = 100_000)]
    workers: u64,
    /// Smallest page the simulator serves.
    #[arg(long, default_value_t = 50)]
    page_size_min: usize,
    /// Largest page the simulator serves.
    #[arg(long, default_value_t = 400)]
    page_size_max: usize,
    /// Repetitions (each with a fresh NATS store and simulator); the report shows each and the
    /// best.
    #[arg(long, default_value_t = 1)]
    runs: u32,
}

struct Sample {
    run_secs: f64,
    wall: Duration,
    peak_rss: u64,
    extractor_cpu: Duration,
    sim_cpu: Duration,
    nats_cpu: Duration,
}

/// Runs the benchmark and prints a report.
pub async fn run(bins: &Binaries, options: &Options) -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for round in 1..=options.runs.max(1) {
        let sample = once(bins, options)
            .await
            .with_context(|| format!("round {round}"))?;
        println!(
            "round {round}: {} workers in {:.2} s ({:.0} workers/s; process wall {:.2} s), peak RSS {:.1} MiB, CPU: extractor {:.2} s, simulator {:.2} s, nats-server {:.2} s",
            options.workers,
            sample.run_secs,
            options.workers as f64 / sample.run_secs,
            sample.wall.as_secs_f64(),
            mib(sample.peak_rss),
            sample.extractor_cpu.as_secs_f64(),
            sample.sim_cpu.as_secs_f64(),
            sample.nats_cpu.as_secs_f64(),
        );
        samples.push(sample);
    }
    let best = samples
        .iter()
        .min_by(|a, b| a.run_secs.total_cmp(&b.run_secs))
        .context("no sample")?;
    let worst_rss = samples.iter().map(|s| s.peak_rss).max().unwrap_or(0);
    println!();
    println!("| workers | pages | best time | workers/s | peak RSS (max of runs) |");
    println!("|---:|---|---:|---:|---:|");
    println!(
        "| {} | {}..{} | {:.2} s | {:.0} | {:.1} MiB |",
        options.workers,
        options.page_size_min,
        options.page_size_max,
        best.run_secs,
        options.workers as f64 / best.run_secs,
        mib(worst_rss)
    );
    Ok(())
}

async fn once(bins: &Binaries, options: &Options) -> anyhow::Result<Sample> {
    let dir = tempfile::tempdir().context("temporary folder")?;
    let nats = Nats::start(bins, dir.path())?;
    let workers = options.workers.to_string();
    let (min, max) = (
        options.page_size_min.to_string(),
        options.page_size_max.to_string(),
    );
    let (sim, sim_url) = Proc::simulator(
        bins,
        "sage-people-sim",
        &[
            "--workers",
            &workers,
            "--page-size-min",
            &min,
            "--page-size-max",
            &max,
        ],
        dir.path(),
    )?;
    let mut env = vec![
        ("NATS_URL", nats.url()),
        ("SAGE_PEOPLE_LOGIN_URL", &sim_url),
        ("SAGE_PEOPLE_CLIENT_ID", "sim-client"),
        ("SAGE_PEOPLE_CLIENT_SECRET", "sim-secret"),
        ("RUST_LOG", "warn"),
    ];
    env.extend(procs::image_env());
    let extractor = Proc::spawn(
        "sage-extractor",
        &bins.path("sage-extractor")?,
        &["--once"],
        &env,
        &dir.path().join("sage-extractor.log"),
    )?;
    let measured = tokio::task::spawn_blocking(move || extractor.wait_measured()).await??;
    if !measured.status.success() {
        let log =
            std::fs::read_to_string(dir.path().join("sage-extractor.log")).unwrap_or_default();
        bail!("sage-extractor failed ({}):\n{log}", measured.status);
    }
    // "sage-people: run <id> published <n> workers (...) in <secs>s"
    let line = measured
        .stdout
        .lines()
        .find(|l| l.contains(" published "))
        .with_context(|| format!("no summary line from the extractor: {:?}", measured.stdout))?;
    let published: u64 = line
        .split(" published ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot read the count in {line:?}"))?;
    let run_secs: f64 = line
        .rsplit(" in ")
        .next()
        .and_then(|rest| rest.trim().trim_end_matches('s').parse().ok())
        .with_context(|| format!("cannot read the time in {line:?}"))?;
    if published != options.workers {
        bail!(
            "the extractor published {published} workers, not {}",
            options.workers
        );
    }
    let client = async_nats::connect(nats.url())
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(names::WORKERS_STREAM)
        .await
        .context("the workers stream")?;
    let stored = stream.info().await.context("stream info")?.state.messages;
    if stored != options.workers {
        bail!(
            "the workers stream holds {stored} events, not {}",
            options.workers
        );
    }
    Ok(Sample {
        run_secs,
        wall: measured.wall,
        peak_rss: measured.peak_rss,
        extractor_cpu: measured.cpu,
        sim_cpu: sim.cpu(),
        nats_cpu: nats.cpu(),
    })
}
