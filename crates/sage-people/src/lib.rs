//! Client of the Sage People Employees API (v4), for peoplesync's extractor.
//!
//! [`SageClient`] authenticates with a Salesforce OAuth grant ([`Credentials`]), pages through
//! employees with the stateless `marker` ([`SageClient::list_page`]), reads one employee
//! ([`SageClient::get_employee`]) and reports the org's API usage ([`ApiUsage`]). Every failure
//! is an [`Error`] whose [`ErrorKind`] says what the caller should do.
//!
//! ```no_run
//! # async fn run() -> Result<(), peoplesync_sage_people::Error> {
//! use peoplesync_sage_people::{Credentials, SageClient, SageConfig};
//!
//! let client = SageClient::new(SageConfig::new(
//!     "https://acme.my.salesforce.com",
//!     Credentials::ClientCredentials {
//!         client_id: "3MVG9...".into(),
//!         client_secret: "from-a-file".into(),
//!     },
//! ))?;
//! let mut marker: Option<String> = None;
//! loop {
//!     let page = client.list_page(marker.as_deref(), None).await?;
//!     let Some(last) = page.next_marker() else { break };
//!     marker = Some(last.to_owned());
//! }
//! # Ok(()) }
//! ```

mod client;
mod config;
mod employees;
mod error;
mod fault;
mod limits;
mod paging;
mod retry;
mod token;

pub use client::SageClient;
pub use config::{Credentials, DEFAULT_REQUEST_TIMEOUT, RetryPolicy, SageConfig};
pub use error::{Error, ErrorKind};
pub use fault::PUBLISHED_INNER_CODES;
pub use limits::{ApiUsage, LIMIT_INFO_HEADER, LIMITS_API_VERSION};
pub use paging::Page;
pub use token::{
    PRODUCTION_AUDIENCE, SANDBOX_AUDIENCE, client_credentials_host_problem, default_audience,
};
