//! End-to-end tests across processes: a real nats-server per test, both simulators in-process
//! on port 0, and the `sage-extractor` and `oomnitza-loader` binaries as child processes
//! (built beforehand by `scripts/test`). Assertions are on what the Oomnitza simulator stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chaos;
mod harness;
mod leavers;
mod loader;
mod mapping;
mod operations;
// operator.rs reaches the running-service helpers of operations.rs by their former module name.
use operations as deploy;
mod operator;
mod sync;
mod verify;
