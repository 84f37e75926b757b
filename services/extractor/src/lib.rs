//! `sage-extractor`: reads workers from Sage People and publishes them to NATS JetStream as
//! normalised `WorkerEvent`s, one full run at a time per integration, with checkpoints so a
//! crash, a shutdown or an exhausted API quota resumes the run instead of restarting it.
//!
//! `main.rs` only wires these parts together:
//! - [`config`]: settings and secrets; [`settings`]: each integration's credentials, filter and
//!   schedule from KV, and the Sage People clients.
//! - [`run`]: one full run (paging, publishing, checkpoints) built from [`event`] (records to
//!   events), [`filter`] (`$filter` checks, shared with config validation), [`quota`] (the
//!   API quota guard), [`collisions`] (workers sharing a sync key are held back), [`ended`]
//!   (workers who have left) and [`removals`]; the run's checkpoint, seen list, removal state
//!   and shared sync keys are stores of the bus (`Bus::checkpoints`, `seen`, `removals`,
//!   `sync_keys`). [`journal`] writes every run's record and events (full runs, one-worker
//!   syncs, approvals); [`error`] says why a run stopped early.
//! - [`check`]: the Sage People side of `syncctl check`, also run at start and on config
//!   changes for `/readyz`; [`deadline`]: the time a command's Sage People calls may take while
//!   the control plane waits for its answer.
//! - [`service`]: the long-running service: the bus's scheduler lease (one scheduling
//!   replica), [`schedule`], [`runner`] (one run at a time), [`retry`] (resuming a stopped run
//!   on a timer), [`commands`] (request/reply) and [`single`] (one-worker commands, progress,
//!   approvals).

pub mod check;
pub mod collisions;
pub mod commands;
pub mod config;
pub mod deadline;
pub mod ended;
pub mod error;
pub mod event;
pub mod held;
pub mod journal;
pub mod quota;
pub use peoplesync_core::source_filter as filter;
pub mod removals;
pub mod retry;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod service;
pub mod settings;
pub mod single;

pub use config::{ExtractorConfig, SecretSource};
pub use error::RunError;
pub use run::{Extraction, RunOptions, RunSummary};
pub use service::{Service, ServiceError};
