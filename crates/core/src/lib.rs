//! The peoplesync domain, pure and I/O-free: the normalised [`Worker`], the integration config,
//! mapping, templates, filters, validation, the schedule [`plan`] and the Sage People
//! [`source_filter`] parser (shared by the extractor and validation), and smart-mapping
//! suggestions.
//!
//! The loader and the control plane call into this crate for every decision about a record;
//! nothing here touches the network, the bus or the clock, so it is tested exhaustively in
//! unit and property tests. `docs/mapping.md` documents the config for operators.

pub mod config;
pub mod defaults;
mod filter;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod hash;
pub mod leavers;
pub mod mapping;
mod names;
mod parse;
pub mod plan;
pub mod preview;
mod saas;
pub mod schedule;
pub mod smart;
pub mod source;
pub mod source_filter;
pub mod template;
pub mod validate;
pub mod worker;

pub use config::{
    FilterConfig, FilterMode, IntegrationConfig, IntegrationType, MappingEntry, MappingSource,
    Preference, SaasConfig, ScheduleConfig, ValidationError, ValidationErrors, ValidationKind,
};
pub use defaults::{DEFAULT_CUSTOM_FIELDS, SAGE_USER_ID_FIELD, default_custom_fields};
pub use hash::{record_hash, record_json};
pub use leavers::{LeaverAction, LeaverConfig};
pub use mapping::{Evaluation, Integration, RecordInput, sync_key_text};
pub use preview::{FieldPreview, Preview, preview};
pub use smart::{Suggestion, TargetField, suggest_mapping};
pub use validate::SAAS_KEY;
pub use worker::{IntegrationField, NormaliseError, Tracking, Worker};
