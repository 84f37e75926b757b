//! Client of the Oomnitza API, for peoplesync's loader: API-token or password authentication,
//! bulk portions (post, status, finalize, run log) and reading users.
//!
//! Oomnitza applies bulk records asynchronously: a successful [`OomnitzaClient::post_bulk`]
//! means the batch was *accepted*. What landed is known from the run log once nothing is
//! processing ([`RunLog::processing`]) and, record by record, from reading the users back
//! ([`OomnitzaClient::find_users_in`], [`OomnitzaClient::find_all_users`]).
//!
//! [`OomnitzaClient::post_bulk`] makes exactly one attempt and classifies its outcome, so that
//! the loader can own retries, rate limiting and batch splitting; the read and control calls
//! retry transient failures a few times themselves. Every failure is an [`Error`] whose
//! [`ErrorKind`] says what the caller should do.
//!
//! ```no_run
//! # async fn run(records: Vec<serde_json::Map<String, serde_json::Value>>) -> Result<(), peoplesync_oomnitza::Error> {
//! use peoplesync_oomnitza::{BulkRequest, OomnitzaAuth, OomnitzaClient, OomnitzaConfig};
//!
//! let client = OomnitzaClient::new(OomnitzaConfig::new(
//!     "https://acme.oomnitza.com",
//!     OomnitzaAuth::ApiToken("from-a-file".into()),
//! ))?;
//! let sync_field = vec!["EMAIL".to_owned()];
//! client
//!     .post_bulk(&BulkRequest {
//!         portion: "29f56f78-03ca-4e64-9ee3-c01758addc42",
//!         sync_field: &sync_field,
//!         insert_only: false,
//!         update_only: false,
//!         records: &records,
//!         error: None,
//!     })
//!     .await?;
//! client.finalize("29f56f78-03ca-4e64-9ee3-c01758addc42").await?;
//! # Ok(()) }
//! ```

mod auth;
mod bulk;
mod client;
mod config;
mod error;
mod inspect;
mod offboard;
mod retry;
mod run_log;
mod users;

pub use bulk::{BulkRequest, Finalize, PortionStatus};
pub use client::OomnitzaClient;
pub use config::{
    DEFAULT_CONNECTOR_NAME, DEFAULT_REQUEST_TIMEOUT, OomnitzaAuth, OomnitzaConfig, RetryPolicy,
};
pub use error::{BODY_EXCERPT_CHARS, Error, ErrorKind};
pub use inspect::FieldProbe;
pub use offboard::{Asset, NO_ASSET_ID, user_ident};
pub use run_log::{FATAL_ERROR, RunCounts, RunLog, message_names};
pub use users::{
    CASELESS_ATTRIBUTES, MAX_URL_CHARS, SYSTEM_ATTRIBUTES, filter_literal, is_system_field,
    lower_spelling, read_attribute,
};
