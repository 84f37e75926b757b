//! Everything peoplesync does with NATS JetStream: the names of its streams, consumer and KV
//! buckets, creating them idempotently at start-up, publishing with dedup ids and pipelined
//! acks, consuming with explicit acks, dead letters, per-run outcome counts, run records and
//! pause flags.
//!
//! Services hold one [`Bus`]; every other module takes what it needs from it.

pub mod applied;
pub mod checkpoint;
pub mod codec;
pub mod configs;
pub mod connect;
pub mod consume;
pub mod control;
pub mod dlq;
mod document;
pub mod error;
pub mod lease;
pub mod leavers;
pub mod locks;
pub mod lookup;
pub mod names;
pub mod outcomes;
mod patience;
pub mod pause;
pub mod presence;
pub mod publish;
pub mod removals;
pub mod runs;
pub mod seen;
pub mod setup;
mod stores;
pub mod sync_keys;

pub use configs::{ConfigChange, ConfigWatch, Configs, StoredConfig, Written};
pub use connect::{ConnectConfigError, ConnectSettings, NatsAuth, NatsServers, NatsTls};
pub use consume::WorkStream;
pub use dlq::{DeadLetter, DeadLetterRecord};
pub use error::BusError;
pub use locks::{LockHolder, Locks};
pub use outcomes::{Outcome, OutcomeCounts, OutcomeRecorder, WrittenEvent, WrittenEvents};
pub use patience::patiently;
pub use pause::{PauseFlag, Pauses};
pub use publish::Publisher;
pub use runs::{
    CancelNote, FinalizeState, RunLogCounts, RunRecord, RunState, Runs, Verification, VerifyState,
};
pub use setup::{Bus, BusSettings};
