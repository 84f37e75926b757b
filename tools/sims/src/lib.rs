//! Faithful HTTP simulators of Sage People (HR, on Salesforce) and Oomnitza (IT asset
//! management), for peoplesync's tests, demos and benchmarks.
//!
//! Each simulator follows the API contract in `shared/reference/*-api.md`, including its error
//! bodies and failure modes, and can inject faults (latency, outages, transient errors, rate
//! limits...) in process or through its `/_admin` endpoints.

pub mod generate;
pub mod oomnitza;
pub mod process;
mod rng;
pub mod sage;
mod server;
mod sync;
