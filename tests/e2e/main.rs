//! End-to-end tests across processes: a real nats-server per test, both simulators in-process
//! on port 0, and the `sage-extractor`, `oomnitza-loader` and `syncctl` binaries as child
//! processes (built beforehand by `scripts/test`), all from the one stack harness,
//! `peoplesync_testkit::stack`. Every test that starts a service binary lives here, the
//! control plane's too (`control/`). Assertions are on what the simulators stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chaos;
mod control;
mod leavers;
mod loader;
mod mapping;
mod operations;
mod operator;
mod sync;
mod verify;
