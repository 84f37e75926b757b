//! Reading error answers from Sage People and Salesforce, and deciding what each one means for
//! the caller.
//!
//! Three body shapes exist ([`body`]): the Sage People envelope
//! `{"error":{"code","message","target","innererror":{"code"}}}`, the Salesforce array
//! `[{"message","errorCode","fields"}]` and the OAuth token endpoint's
//! `{"error","error_description"}`. Classification is pure: status and body in, [`Error`] out —
//! [`api`] for the Employees API, [`token_endpoint`] for the OAuth token endpoint, both drawing
//! on [`configuration`] for what to fix when a code says the org's set-up is wrong.
//!
//! [`Error`]: crate::error::Error

mod api;
mod body;
mod configuration;
mod token_endpoint;

pub(crate) use api::{Request, classify_api};
pub(crate) use body::Fault;
pub use configuration::PUBLISHED_INNER_CODES;
pub(crate) use configuration::{is_configuration_code, refuses_filter};
pub(crate) use token_endpoint::classify_token;
