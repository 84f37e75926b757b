//! The `sage-extractor` binary: parses flags, loads configuration, connects to NATS, serves
//! `/metrics`, `/healthz` and `/readyz`, and runs the service until SIGTERM — or, with
//! `--once`, one full sync of each integration, exiting 0 when all of them completed and
//! non-zero with the reason otherwise (SIGTERM stops it between two pages, keeping the
//! checkpoint).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use peoplesync_bus::Bus;
use peoplesync_extractor::{ExtractorConfig, SecretSource, Service};
use tokio_util::sync::CancellationToken;

// Runs allocate and free millions of small JSON values; mimalloc does that at a fraction of
// the system allocator's cost (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Pages through Sage People and publishes normalised worker events to NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "sage-extractor", version)]
struct Cli {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "PEOPLESYNC_EXTRACTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Run one full sync of every configured integration, then exit.
    #[arg(long)]
    once: bool,
    /// With `--once`: how long to wait for NATS to answer (connection and set-up) before giving
    /// up with exit 1, so that the scheduler that started the sync sees it fail. The service
    /// itself waits for as long as it takes.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "PEOPLESYNC_ONCE_NATS_WAIT_SECS",
        default_value_t = 300
    )]
    nats_wait: u64,
    /// Print the full configuration file with every key, its default and a comment, and exit.
    #[arg(long)]
    print_default_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    peoplesync_runtime::init_logging();
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", peoplesync_extractor::config::DEFAULT_TOML);
        return ExitCode::SUCCESS;
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("sage-extractor: {err:#}");
            // Exit here, the reason being the last line: unwinding the runtime would drop the
            // tasks still waiting on NATS, and the client logs a warning for each publish it
            // never saw acknowledged (hundreds, after a run that lost NATS). Nothing is left
            // to write: a run keeps the checkpoint it last recorded.
            std::process::exit(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = ExtractorConfig::load(cli.config.as_deref())?;
    let shutdown = peoplesync_runtime::shutdown_token();
    peoplesync_runtime::shutdown::exit_unless_stopped_within(
        &shutdown,
        std::time::Duration::from_secs(config.shutdown_grace_secs),
        peoplesync_runtime::shutdown::Overdue {
            setting: "shutdown_grace_secs".into(),
            waits_on: "NATS, or on Sage People for the sync-key check of the page in progress",
            then: "a run in progress resumes from its last recorded checkpoint",
        },
    );
    if cli.once {
        // The service waits for NATS as long as it takes; a one-off sync gives up, so that
        // the scheduler that started it sees it fail.
        let wait = std::time::Duration::from_secs(cli.nats_wait);
        let set = tokio::select! {
            set = tokio::time::timeout(wait, set_up(&config)) => set,
            () = shutdown.cancelled() => {
                anyhow::bail!("stopped (SIGTERM) before NATS answered; nothing was synced")
            }
        };
        let (_bus, service) = set.map_err(|_| {
            anyhow::anyhow!(
                "NATS did not answer within {} s (--nats-wait, PEOPLESYNC_ONCE_NATS_WAIT_SECS); \
                 the warnings above say what was tried: check NATS_URL and that the servers \
                 run with JetStream",
                cli.nats_wait
            )
        })??;
        return once(&service, &shutdown).await;
    }

    // Probes get an answer, and `/readyz` says what is missing, while NATS is out of reach.
    peoplesync_runtime::metrics::register(
        peoplesync_runtime::metrics::Service::Extractor,
        &config.integrations,
    );
    let readiness = peoplesync_runtime::Readiness::new();
    readiness.register("nats");
    readiness.note("nats", Some(peoplesync_bus::setup::SETTING_UP.to_owned()));
    let http_stop = tokio_util::sync::CancellationToken::new();
    let listen = config
        .http_listen
        .parse()
        .context("PEOPLESYNC_HTTP_LISTEN")?;
    let http = peoplesync_runtime::http::serve(listen, readiness.clone(), http_stop.clone())
        .await
        .context("starting the /metrics, /healthz and /readyz endpoint")?;
    let set = tokio::select! {
        set = set_up(&config) => Some(set),
        () = shutdown.cancelled() => None,
    };
    let (bus, service) = match set {
        Some(Ok(set)) => set,
        stopped => {
            http_stop.cancel();
            let _ = http.stopped().await;
            return stopped.transpose().map(drop);
        }
    };
    readiness.note("nats", None);
    let service = service.with_readiness(readiness.clone());
    let connection = bus.clone();
    readiness.set_check("nats", move || connection.connected().is_ok());
    for integration in &config.integrations {
        if let Some(runner) = service.runner(integration) {
            tokio::spawn(peoplesync_extractor::check::keep_checking(
                runner.extraction().clone(),
                readiness.clone(),
                shutdown.clone(),
            ));
        }
    }
    tokio::spawn(peoplesync_extractor::held::keep_gauge(
        bus.clone(),
        config.integrations.clone(),
        shutdown.clone(),
    ));
    let served = service.run(shutdown).await;
    http_stop.cancel();
    if let Err(err) = http.stopped().await {
        tracing::warn!(error = %err, "the http endpoint stopped with an error");
    }
    served.context("serving")?;
    Ok(())
}

/// Connects to NATS (waiting while it does not answer) and builds the service.
async fn set_up(config: &ExtractorConfig) -> anyhow::Result<(Bus, Service)> {
    let bus = Bus::connect_from_env(&config.nats_url, "sage-extractor", config.bus_settings())
        .await
        .context("connecting to NATS")?;
    let service = Service::build(config.clone(), bus.clone(), SecretSource::Environment)
        .await
        .context("setting up the extractor")?;
    Ok((bus, service))
}

/// `--once`: one full sync of each integration; SIGTERM (`shutdown`) stops it between two
/// pages, keeping the checkpoint and giving the lease back, and it exits 1 saying so.
async fn once(service: &Service, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for (integration, outcome) in service.run_once(shutdown).await {
        match outcome {
            Ok(summary) => {
                tracing::info!(integration, run_id = %summary.run_id, published = summary.published,
                    removed = summary.removed, skipped = summary.skipped,
                    elapsed_ms = u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
                    "sync published");
                let held = match &summary.removals_skipped {
                    Some(reason) => format!(", removals NOT computed: {reason}"),
                    None if summary.removals_held > 0 => {
                        format!(", {} removals held for approval", summary.removals_held)
                    }
                    None => String::new(),
                };
                println!(
                    "{integration}: run {} published {} workers ({} skipped, {} removed{held}) in {:.2}s",
                    summary.run_id,
                    summary.published,
                    summary.skipped,
                    summary.removed,
                    summary.elapsed.as_secs_f64()
                );
            }
            Err(err) => failures.push(format!("{integration}: {err}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(failures.join("; "))
    }
}
