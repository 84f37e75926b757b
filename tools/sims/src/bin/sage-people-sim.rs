//! `sage-people-sim`: the Sage People simulator as a process, for scripts, demos and benchmarks.
//!
//! Prints exactly one stdout line, `listening on http://127.0.0.1:PORT`, then logs to stderr
//! and serves until SIGTERM or Ctrl-C. Every flag has an environment fallback (`SAGE_SIM_*`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use peoplesync_sims::process;
use peoplesync_sims::sage::{EndStyle, PageSize, SageConfig, SageFaults, SageSim};

// The simulators allocate a JSON tree per record they receive or serve; mimalloc keeps that
// from costing more CPU than the services they stand in front of in benchmarks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulates the Sage People Employees API and its Salesforce OAuth token endpoint.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SAGE_SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Instance URL announced in token responses, when clients reach the simulator by another
    /// address than the one it binds (a container name: http://sage-people-sim:8080).
    #[arg(long, env = "SAGE_SIM_PUBLIC_URL")]
    public_url: Option<String>,
    /// Workers in the generated org.
    #[arg(long, env = "SAGE_SIM_WORKERS", default_value_t = 1000)]
    workers: u64,
    /// Seed of the generated org, page sizes and faults.
    #[arg(long, env = "SAGE_SIM_SEED", default_value_t = 42)]
    seed: u64,
    /// Fixed page size (overrides --page-size-min/--page-size-max).
    #[arg(long, env = "SAGE_SIM_PAGE_SIZE")]
    page_size: Option<usize>,
    /// Smallest page when page sizes vary.
    #[arg(long, env = "SAGE_SIM_PAGE_SIZE_MIN", default_value_t = 50)]
    page_size_min: usize,
    /// Largest page when page sizes vary.
    #[arg(long, env = "SAGE_SIM_PAGE_SIZE_MAX", default_value_t = 400)]
    page_size_max: usize,
    /// How the end of the list is signalled.
    #[arg(long, env = "SAGE_SIM_END_STYLE", value_enum, default_value_t = End::NoContent)]
    end_style: End,
    /// OAuth client id (also the JWT issuer).
    #[arg(long, env = "SAGE_SIM_CLIENT_ID", default_value = "sim-client")]
    client_id: String,
    /// OAuth client secret.
    #[arg(
        long,
        env = "SAGE_SIM_CLIENT_SECRET",
        default_value = "sim-secret",
        hide_env_values = true
    )]
    client_secret: String,
    /// Integration username (password grant, JWT subject).
    #[arg(
        long,
        env = "SAGE_SIM_USERNAME",
        default_value = "integration@example.com"
    )]
    username: String,
    /// Integration user's password (password grant).
    #[arg(
        long,
        env = "SAGE_SIM_PASSWORD",
        default_value = "sim-password",
        hide_env_values = true
    )]
    password: String,
    /// PEM public key file that verifies JWT bearer assertions (without it, that grant is refused).
    #[arg(long, env = "SAGE_SIM_JWT_PUBLIC_KEY_FILE")]
    jwt_public_key_file: Option<PathBuf>,
    /// The org's API request quota.
    #[arg(long, env = "SAGE_SIM_API_QUOTA", default_value_t = 1_000_000)]
    api_quota: u64,
    /// Leave `Sforce-Limit-Info` off Employees API responses (whether Apex REST sends it is
    /// not published); clients then read `/services/data/vXX.X/limits`.
    #[arg(long, env = "SAGE_SIM_NO_LIMIT_INFO_HEADER")]
    no_limit_info_header: bool,
    /// Extra accepted JWT audiences (comma separated) besides login/test.salesforce.com.
    #[arg(long, env = "SAGE_SIM_JWT_EXTRA_AUDIENCES", value_delimiter = ',')]
    jwt_extra_audiences: Vec<String>,
    /// API calls already used against the quota at start.
    #[arg(long, env = "SAGE_SIM_API_USAGE", default_value_t = 0)]
    api_usage: u64,
    /// Fault: delay added to every request, in milliseconds.
    #[arg(long, env = "SAGE_SIM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Fault: share of API calls (0..1) answered with a transient status (see
    /// --transient-status).
    #[arg(long, env = "SAGE_SIM_TRANSIENT_FAILURE_RATE", default_value_t = 0.0)]
    transient_failure_rate: f64,
    /// Fault: the status of those answers: 420, 429, 500, 502, 503 (SERVER_UNAVAILABLE) or 504.
    #[arg(long, env = "SAGE_SIM_TRANSIENT_STATUS", default_value_t = 503)]
    transient_status: u16,
    /// Fault: a token stops working after this many API calls.
    #[arg(long, env = "SAGE_SIM_TOKEN_EXPIRY_AFTER")]
    token_expiry_after: Option<u64>,
    /// Fault: every API call answers 503 for this long after start, in milliseconds.
    #[arg(long, env = "SAGE_SIM_OUTAGE_FOR_MS")]
    outage_for_ms: Option<u64>,
    /// Fault: MISSING_API_PERMISSION, INACCESSIBLE_FIELD, OBJECT_NOT_ACCESSIBLE or INVALID_FILTER.
    #[arg(long, env = "SAGE_SIM_CONFIG_ERROR")]
    config_error: Option<String>,
    /// Fault: every marker is refused with 400 INVALID_MARKER.
    #[arg(long, env = "SAGE_SIM_REJECT_MARKERS")]
    reject_markers: bool,
    /// Fault: share of 200 employee responses (0..1) whose body is cut in the middle.
    #[arg(long, env = "SAGE_SIM_TRUNCATE_RATE", default_value_t = 0.0)]
    truncate_rate: f64,
}

/// `--end-style` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum End {
    /// 204 No Content.
    NoContent,
    /// 200 with an empty data array.
    EmptyData,
}

impl Args {
    fn config(&self) -> anyhow::Result<SageConfig> {
        let jwt_public_key_pem = match &self.jwt_public_key_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the JWT public key {}", path.display()))?,
            ),
            None => None,
        };
        anyhow::ensure!(
            peoplesync_sims::sage::TRANSIENT_STATUSES.contains(&self.transient_status),
            "--transient-status must be one of {:?}, not {}",
            peoplesync_sims::sage::TRANSIENT_STATUSES,
            self.transient_status
        );
        process::ensure_rate("--transient-failure-rate", self.transient_failure_rate)?;
        process::ensure_rate("--truncate-rate", self.truncate_rate)?;
        Ok(SageConfig {
            workers: self.workers,
            seed: self.seed,
            page_size: match self.page_size {
                Some(n) => PageSize::Fixed(n),
                None => PageSize::Varying {
                    min: self.page_size_min,
                    max: self.page_size_max,
                },
            },
            end_style: match self.end_style {
                End::NoContent => EndStyle::NoContent,
                End::EmptyData => EndStyle::EmptyData,
            },
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            jwt_public_key_pem,
            api_quota: self.api_quota,
            limit_info_header: !self.no_limit_info_header,
            jwt_extra_audiences: self.jwt_extra_audiences.clone(),
            faults: SageFaults {
                latency_ms: self.latency_ms,
                transient_failure_rate: self.transient_failure_rate,
                transient_status: Some(self.transient_status),
                token_expiry_after: self.token_expiry_after,
                outage_for_ms: self.outage_for_ms,
                config_error: self.config_error.clone(),
                reject_markers: self.reject_markers,
                truncate_rate: self.truncate_rate,
                ..SageFaults::default()
            },
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = args.config()?;
    let (public_url, api_usage) = (args.public_url, args.api_usage);
    process::run(
        args.listen,
        "the Sage People simulator",
        |listener| async move {
            let sim = SageSim::spawn_advertising(config, listener, public_url).await?;
            sim.set_api_usage(api_usage);
            Ok(sim)
        },
    )
    .await
}
