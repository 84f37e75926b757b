//! The `oomnitza-loader` binary: parses flags, loads configuration, builds the loader and runs
//! it until SIGTERM, then drains.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use peoplesync_loader::config::STOP_MARGIN;
use peoplesync_loader::{Application, LoaderConfig};

// Every event allocates and frees small maps and strings (decode, map, hash, serialise);
// mimalloc does that at a fraction of glibc malloc's cost, which profiling showed as a quarter
// of the loader's CPU time. `no_thp` keeps its memory from ballooning on transparent huge pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Print the full configuration file with every key, its default and a comment, and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn main() -> ExitCode {
    peoplesync_runtime::init_logging();
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", peoplesync_loader::config::DEFAULT_TOML);
        return ExitCode::SUCCESS;
    }
    let result = match &cli.print_default_integration {
        Some(id) => print_default_integration(id),
        None => LoaderConfig::load(cli.config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                // One thread is a current-thread runtime: every task runs on the main thread,
                // with no handing over to a worker thread and no work-stealing bookkeeping.
                let mut runtime = if config.worker_threads <= 1 {
                    tokio::runtime::Builder::new_current_thread()
                } else {
                    let mut builder = tokio::runtime::Builder::new_multi_thread();
                    builder.worker_threads(config.worker_threads);
                    builder
                };
                runtime
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?
                    .block_on(run(cli, config))
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("oomnitza-loader: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long removing this replica's announcement may take once it has stopped loading (part of
/// [`STOP_MARGIN`], with the finalizer's last check).
const ANNOUNCEMENT_STOP: Duration = Duration::from_secs(2);

fn print_default_integration(id: &str) -> anyhow::Result<()> {
    peoplesync_bus::names::validate_integration_id(id).map_err(anyhow::Error::msg)?;
    print!(
        "{}{}",
        peoplesync_core::IntegrationConfig::default_for(id).to_toml(),
        peoplesync_core::leavers::LEAVERS_EXAMPLE
    );
    Ok(())
}

async fn run(cli: Cli, config: LoaderConfig) -> anyhow::Result<()> {
    let seed = match &cli.integration {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --integration {}", path.display()))?,
        ),
        None => None,
    };
    let shutdown = peoplesync_runtime::shutdown_token();
    peoplesync_runtime::shutdown::exit_unless_stopped_within(
        &shutdown,
        config.shutdown_grace() + STOP_MARGIN,
        peoplesync_runtime::shutdown::Overdue {
            setting: format!("shutdown_grace_secs + {} s", STOP_MARGIN.as_secs()),
            waits_on: "NATS",
            then: "its unacknowledged events will be redelivered",
        },
    );
    let integrations = config.integrations.clone();
    let (readiness, http_stop, http) = start_http(&integrations).await?;
    let control = serve_control(&shutdown).await?;
    let replica = config.replica_name();
    readiness.note("nats", Some(peoplesync_bus::setup::SETTING_UP.to_owned()));
    let set_up = async {
        let loader = Application::build(config, seed, readiness.clone()).await?;
        mark_ready(&readiness, &loader, &integrations).await?;
        anyhow::Ok(loader)
    };
    let loader = tokio::select! {
        loader = set_up => loader,
        // SIGTERM (or a failed control plane) while NATS does not answer: nothing to drain yet.
        () = shutdown.cancelled() => {
            let control = stop_control(control).await;
            http_stop.cancel();
            let http = http.stopped().await.context("the /metrics endpoint failed");
            return control.and(http);
        }
    }?;
    readiness.note("nats", None);
    // Announced for the control plane's status (loader replicas seen, and what their /readyz
    // says).
    let bus = loader.bus().clone();
    let stop = shutdown.clone();
    let noted = readiness.clone();
    let announced = tokio::spawn(async move {
        bus.announce(replica, env!("CARGO_PKG_VERSION").to_owned(), noted, stop)
            .await;
    });
    if peoplesync_loader::startup::check_credentials(&loader).await {
        peoplesync_loader::startup::check_fields(&loader).await;
    }
    if let Some(control) = &control {
        // The loader's own client: one connection pool and one password-token session.
        control.gate.open(
            loader.bus().clone(),
            loader.client().clone(),
            shutdown.clone(),
        );
    }
    // The clean-up below runs even when the loader stopped itself, so its announcement is
    // removed and calls in progress finish before the error is returned.
    let loaded = loader.run_until_stopped(shutdown).await;
    // Removes this replica's announcement (the shutdown token is cancelled by now); while NATS
    // does not answer it is left to expire.
    if tokio::time::timeout(ANNOUNCEMENT_STOP, announced)
        .await
        .is_err()
    {
        tracing::warn!(
            "could not remove this replica's announcement (NATS not answering?); it expires by itself"
        );
    }
    tracing::info!("loader stopped");
    stop_control(control).await?;
    http_stop.cancel();
    http.stopped()
        .await
        .context("the /metrics endpoint failed")?;
    loaded
}

/// Starts `/metrics`, `/healthz` and `/readyz` before connecting, so probes get an answer (and
/// `/readyz` says what is missing) while NATS is still out of reach. The endpoint stops only
/// after the drain, so probes keep answering meanwhile.
async fn start_http(
    integrations: &[String],
) -> anyhow::Result<(
    peoplesync_runtime::Readiness,
    tokio_util::sync::CancellationToken,
    peoplesync_runtime::http::HttpServer,
)> {
    peoplesync_runtime::metrics::install()?;
    peoplesync_runtime::metrics::register(
        peoplesync_runtime::metrics::Service::Loader,
        integrations,
    );
    let readiness = peoplesync_runtime::Readiness::new();
    readiness.register("nats");
    readiness.register("consumer");
    let stop = tokio_util::sync::CancellationToken::new();
    let http = peoplesync_runtime::http::serve_from_env(readiness.clone(), stop.clone()).await?;
    Ok((readiness, stop, http))
}

/// Ready = the NATS connection is up (checked at every probe) and the integrations' consumers
/// are bound.
async fn mark_ready(
    readiness: &peoplesync_runtime::Readiness,
    loader: &Application,
    integrations: &[String],
) -> anyhow::Result<()> {
    let bus = loader.bus().clone();
    readiness.set_check("nats", move || bus.connected().is_ok());
    for integration in integrations {
        loader
            .bus()
            .prepare_loader_consumer(integration)
            .await
            .with_context(|| format!("binding the worker consumer of {integration}"))?;
    }
    readiness.set("consumer", true);
    Ok(())
}

/// The control plane served beside the loader; its calls wait behind `gate` until the loader
/// has connected.
struct Control {
    gate: peoplesync_control::ControlGate,
    served: tokio::task::JoinHandle<Result<(), peoplesync_control::ControlError>>,
}

/// Binds the control plane before the loader connects to NATS (a taken port or an unreadable
/// certificate fails the start-up at once) and serves it until the shutdown token: health
/// answers from now on, SyncControl calls once the gate is opened. A control plane that fails
/// while serving stops the loader. `None` when no token is set.
async fn serve_control(
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<Control>> {
    let Some(config) = peoplesync_control::ControlConfig::from_env()? else {
        tracing::warn!(
            "control plane off: PEOPLESYNC_CONTROL_TOKEN is not set; set PEOPLESYNC_CONTROL_TOKEN or PEOPLESYNC_CONTROL_TOKEN_FILE \
             (or CONTROL_INSECURE_NO_AUTH=true on a trusted network) to serve gRPC on CONTROL_LISTEN"
        );
        return Ok(None);
    };
    let server = peoplesync_control::ControlServer::bind(config).await?;
    let gate = peoplesync_control::ControlGate::new();
    let (opened, stop) = (gate.clone(), shutdown.clone());
    let served = tokio::spawn(async move {
        let served = server.serve(opened, stop.clone()).await;
        // A loader whose control plane has stopped cannot be run or inspected: say so and stop
        // the replica (its exit status says why), rather than load on without it in silence.
        if let Err(err) = &served {
            tracing::error!(error = %err, "the control plane stopped; stopping the loader");
            stop.cancel();
        }
        served
    });
    Ok(Some(Control { gate, served }))
}

/// Waits for the control plane to stop (the shutdown token is cancelled by now), with its error.
async fn stop_control(control: Option<Control>) -> anyhow::Result<()> {
    if let Some(control) = control {
        control
            .served
            .await
            .context("the control plane task failed")??;
    }
    Ok(())
}
