//! The extractor against a real nats-server and the Sage People simulator: runs driven
//! in-process through the library (the kill -9 and lease takeover tests run the binary), one
//! test binary for the whole service.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "extractor/harness.rs"]
mod harness;

#[path = "extractor/check.rs"]
mod check;
#[path = "extractor/collisions.rs"]
mod collisions;
#[path = "extractor/commands.rs"]
mod commands;
#[path = "extractor/config_env.rs"]
mod config_env;
#[path = "extractor/failures.rs"]
mod failures;
#[path = "extractor/lease.rs"]
mod lease;
#[path = "extractor/leavers.rs"]
mod leavers;
#[path = "extractor/listing.rs"]
mod listing;
#[path = "extractor/removals.rs"]
mod removals;
#[path = "extractor/resume.rs"]
mod resume;
#[path = "extractor/retry.rs"]
mod retry;
#[path = "extractor/scheduler.rs"]
mod scheduler;
