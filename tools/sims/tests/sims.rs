//! Integration tests of both simulators through real HTTP: every documented behaviour, error
//! body and fault of the two published API contracts, the `/_admin` endpoints, and the binaries as
//! processes. Each test spawns its own simulator on a free port.

#[path = "sims/http.rs"]
mod http;

#[path = "sims/sage/mod.rs"]
mod sage;

#[path = "sims/oomnitza/mod.rs"]
mod oomnitza;

#[path = "sims/oomnitza_async.rs"]
mod oomnitza_async;

#[path = "sims/binaries.rs"]
mod binaries;
