//! `peoplesync-bench`: end-to-end benchmarks of the release binaries against the simulators.
//!
//! - `extract`: a Sage People org of N workers, one `sage-extractor --once`; reports
//!   extraction-and-publish throughput and the extractor's peak memory (VmHWM).
//! - `load`: N worker events already on the bus and a completed run; K `oomnitza-loader`
//!   replicas against an Oomnitza simulator with L ms latency; reports the time until the run is
//!   finalized. `--one-at-a-time` instead posts one record per request, sequentially (how
//!   Oomnitza's own connector loads users), as the baseline.
//!
//! Build first: `cargo build --release --bins`; see docs/benchmarks.md.

mod extract;
mod load;
mod natscost;
mod procs;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// End-to-end benchmarks of peoplesync against the simulators.
#[derive(Debug, Parser)]
#[command(name = "peoplesync-bench", version)]
struct Cli {
    /// Folder of the release binaries (default: this binary's folder).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Extractor throughput and peak memory.
    Extract(extract::Options),
    /// Loader throughput.
    Load(load::Options),
    /// CPU cost of each kind of NATS operation the loader makes.
    NatsCost(natscost::Options),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bins = procs::Binaries::locate(cli.bin_dir)?;
    match cli.command {
        Command::Extract(options) => extract::run(&bins, &options).await,
        Command::Load(options) => load::run(&bins, &options).await,
        Command::NatsCost(options) => natscost::run(&bins, &options).await,
    }
}
