//! The peoplesync wire contract: protobuf events on the bus (`WorkerEvent`, `RunEvent`) and the
//! gRPC control plane, generated at build time from `proto/peoplesync/v1` with protox.
//!
//! Everything that crosses a process boundary is defined here, so the extractor, the loaders and
//! `syncctl` agree on one schema.

/// Generated types of package `peoplesync.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("peoplesync.v1");
}

/// The encoded file descriptor set of every peoplesync proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("peoplesync_descriptor");

pub use prost::Message;
pub use prost_types::Timestamp;

/// gRPC response metadata the control plane adds to some errors, so clients can tell them apart
/// beyond the status code.
pub mod error_kind {
    /// The metadata key.
    pub const KEY: &str = "peoplesync-error";
    /// A FAILED_PRECONDITION caused by a setting or credential to fix (`syncctl` exits 7).
    pub const MISCONFIGURED: &str = "misconfigured";
}
