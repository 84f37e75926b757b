//! Faithful HTTP simulators of Sage People (HR, on Salesforce) and Oomnitza (IT asset
//! management), for peoplesync's tests, demos and benchmarks.
//!
//! Each simulator follows its service's published API contract, including its error bodies and
//! failure modes (Oomnitza's asynchronous bulk processing among them; see `docs/oomnitza-sim.md`),
//! and can inject faults (latency, outages, transient errors, rate limits...) in process or
//! through its `/_admin` endpoints.

mod admin;
mod expr;
mod faults;
pub mod generate;
pub mod oomnitza;
pub mod process;
mod rng;
pub mod sage;
mod server;
mod sync;
