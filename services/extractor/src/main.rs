//! The `sage-extractor` binary: parses flags, loads configuration, connects to NATS and runs
//! extractions. With `--once` it runs one full sync of each integration and exits 0 when all
//! of them completed, non-zero with the reason otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use peoplesync_bus::{Bus, BusSettings};
use peoplesync_extractor::{Extraction, ExtractorConfig};
use peoplesync_sage_people::SageClient;

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
}

#[tokio::main]
async fn main() -> ExitCode {
    peoplesync_runtime::init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("sage-extractor: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = ExtractorConfig::load(cli.config.as_deref())?;
    let bus = Bus::connect(&config.nats_url, "sage-extractor", BusSettings::default())
        .await
        .context("connecting to NATS")?;
    if !cli.once {
        anyhow::bail!(
            "only --once is available in this version; run it from a scheduler (cron, a Kubernetes CronJob)"
        );
    }
    let mut failures = Vec::new();
    for integration in &config.integrations {
        let credentials = "default";
        let sage = SageClient::new(config.sage_config(credentials)?)
            .with_context(|| format!("setting up the Sage People client for {integration}"))?;
        let extraction = Extraction::new(
            bus.clone(),
            sage,
            integration,
            credentials,
            None,
            config.publish_window,
        );
        match extraction.run_full("once").await {
            Ok(summary) => {
                tracing::info!(integration, run_id = %summary.run_id, published = summary.published,
                    skipped = summary.skipped, elapsed_ms = summary.elapsed.as_millis() as u64,
                    "sync published");
                println!(
                    "{integration}: run {} published {} workers ({} skipped) in {:.1}s",
                    summary.run_id,
                    summary.published,
                    summary.skipped,
                    summary.elapsed.as_secs_f64()
                );
            }
            Err(err) => failures.push(err.to_string()),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(failures.join("; "))
    }
}
