//! Dry runs for the control plane (`PreviewWorker`): the exact record that would be sent, or
//! why not, plus per-field detail (which mapping produced each value). It runs the same
//! `evaluate` as the loader, so what it shows is what would be sent.

use serde_json::Value;

use crate::config::IntegrationConfig;
use crate::mapping::{Evaluation, Integration, RecordInput};
use crate::validate::{REQUIRED_FIELDS, ValidationErrors};
use crate::worker::{Tracking, Worker};

/// The outcome of a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// What the loader would do with the worker.
    pub evaluation: Evaluation,
    /// Every mapping entry with the value it produced (computed even when the worker is
    /// filtered out, so the operator sees what would have been mapped).
    pub fields: Vec<FieldPreview>,
}

/// One mapping entry in a preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPreview {
    /// Oomnitza field id.
    pub field: String,
    /// The field's label, when the config gives one.
    pub label: Option<String>,
    /// Which mapping produced the value: `source Email`, `template `…``,
    /// `setting default_role`, `value "25"`.
    pub origin: String,
    /// The value (null when absent); `None` when it could not be computed.
    pub value: Option<Value>,
    /// Why the value could not be computed.
    pub error: Option<String>,
    /// One of USER, EMAIL, PERMISSIONS_ID.
    pub required: bool,
    /// One of the sync keys.
    pub sync_key: bool,
    /// Marked `unique = true`.
    pub unique: bool,
}

impl Integration {
    /// Dry-runs one record.
    pub fn preview(&self, input: &RecordInput<'_>) -> Preview {
        let mut ctx = None;
        let fields = self
            .fields()
            .iter()
            .map(|field| {
                let entry = &self.config().mapping[field.entry];
                let (value, error) = match self.preview_value(field, input, &mut ctx) {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e)),
                };
                FieldPreview {
                    field: field.field.clone(),
                    label: entry.label.clone(),
                    origin: field.origin.clone(),
                    value,
                    error,
                    required: REQUIRED_FIELDS.contains(&field.field.as_str()),
                    sync_key: self.sync_field().contains(&field.field),
                    unique: entry.unique,
                }
            })
            .collect();
        Preview {
            evaluation: self.evaluate(input),
            fields,
        }
    }

    /// Dry-runs a raw Sage People employee record, normalising it first.
    pub fn preview_raw(&self, raw: &Value, tracking: &Tracking) -> Preview {
        match Worker::from_raw(raw) {
            Ok(worker) => self.preview(&RecordInput {
                raw,
                worker: &worker,
                tracking,
            }),
            Err(err) => Preview {
                evaluation: Evaluation::Unloadable {
                    reason: format!("record cannot be normalised: {err}"),
                },
                fields: Vec::new(),
            },
        }
    }
}

/// Compiles `config` and dry-runs `raw` with it.
pub fn preview(
    config: &IntegrationConfig,
    raw: &Value,
    tracking: &Tracking,
) -> Result<Preview, ValidationErrors> {
    Ok(Integration::compile(config.clone())?.preview_raw(raw, tracking))
}
