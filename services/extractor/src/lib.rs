//! `sage-extractor`: reads workers from Sage People and publishes them to NATS JetStream as
//! normalised `WorkerEvent`s, one run at a time per integration, with checkpoints so a crash
//! or an exhausted API quota resumes the run instead of restarting it.
//!
//! `main.rs` only wires these parts together: [`config`] (settings and secrets), [`run`]
//! (one extraction run) and [`checkpoint`] (where an unfinished run stands).

pub mod checkpoint;
pub mod config;
pub mod run;

pub use config::ExtractorConfig;
pub use run::{Extraction, RunError, RunSummary};
