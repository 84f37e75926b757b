//! `oomnitza-loader`: consumes worker events from the shared JetStream consumer, filters and
//! maps them with the integration's config, batches them per portion, writes them to
//! Oomnitza with retries, dead-letters what cannot be loaded, and finalizes each portion once.
//!
//! The parts, in the order an event meets them: [`consume`] → [`pipeline`] (filter, map) →
//! [`batcher`] → [`deliver`] (change detection, posting, settling) → [`ack`]; beside them
//! [`integrations`] (configs from KV) and [`finalize`] (with [`retention`] of run records) and
//! [`verify`] (what Oomnitza applied), [`leavers`] and [`webhook`] (offboarding and its
//! report), [`cancel`] (an administrator's cancel), [`gates`] (pause and credential state),
//! [`limiter`] (adaptive rate limit), [`progress`] (progress acks for events held long) and
//! [`advisories`] (events the server gave up on); [`startup`] checks the Oomnitza credentials before the first event. [`application`]
//! builds and runs the parts; `main.rs` only parses flags and configuration and hands them to
//! [`Application`].

pub mod ack;
pub mod advisories;
pub mod application;
pub mod batcher;
pub mod cancel;
pub mod config;
pub mod consume;
pub mod deliver;
pub mod finalize;
pub mod gates;
pub mod integrations;
pub mod leavers;
pub mod limiter;
pub mod pipeline;
pub mod progress;
pub mod retention;
pub mod startup;
pub mod verify;
pub mod webhook;

pub use application::Application;
pub use config::LoaderConfig;
