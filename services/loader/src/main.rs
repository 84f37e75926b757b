//! The `oomnitza-loader` binary: parses flags, loads configuration, builds the loader and runs
//! it until SIGTERM, then drains.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use peoplesync_loader::{Loader, LoaderConfig};

/// Consumes worker events and writes them to Oomnitza in bulk portions.
#[derive(Debug, Parser)]
#[command(name = "oomnitza-loader", version)]
struct Cli {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "PEOPLESYNC_LOADER_CONFIG")]
    config: Option<PathBuf>,
    /// Integration config (TOML) to store in KV when its integration has none yet.
    #[arg(long, env = "PEOPLESYNC_INTEGRATION_FILE")]
    integration: Option<PathBuf>,
    /// Print the shipped default integration config for this integration id, and exit: a
    /// starting point for your own `--integration` file.
    #[arg(long, value_name = "ID")]
    print_default_integration: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    peoplesync_runtime::init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("oomnitza-loader: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(id) = &cli.print_default_integration {
        peoplesync_bus::names::validate_integration_id(id).map_err(anyhow::Error::msg)?;
        print!(
            "{}",
            peoplesync_core::IntegrationConfig::default_for(id).to_toml()
        );
        return Ok(());
    }
    let config = LoaderConfig::load(cli.config.as_deref())?;
    let seed = match &cli.integration {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --integration {}", path.display()))?,
        ),
        None => None,
    };
    let shutdown = peoplesync_runtime::shutdown_token();
    let loader = Loader::build(config, seed).await?;
    loader.run_until_stopped(shutdown).await?;
    tracing::info!("loader stopped");
    Ok(())
}
