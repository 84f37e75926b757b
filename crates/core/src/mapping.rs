//! The compiled integration the loader evaluates once per worker event: filter, then map
//! every entry, then check the required fields and sync keys, then add the SaaS block.
//! Compiling does all the expensive work once per config revision; `source` mappings read
//! the normalised worker directly and never touch the template engine.

use serde_json::{Map, Value};

use crate::config::{IntegrationConfig, MappingSource};
use crate::filter::CompiledFilter;
use crate::saas::SaasBlock;
use crate::source::SourceRef;
use crate::template::{self, Compiled, ContextPlan, Engine, Roots};
use crate::validate::{self, ValidationError, ValidationErrors, ValidationKind, entry_location};
use crate::worker::{Tracking, Worker};

/// A config compiled for evaluation: templates and the filter condition are compiled, and
/// sources resolved. Cheap to share between threads (`Send + Sync`).
#[derive(Debug)]
pub struct Integration {
    config: IntegrationConfig,
    engine: Engine,
    fields: Vec<CompiledField>,
    /// The entries of `[[leavers.set]]`: what a leaver's user is updated with.
    leaver_fields: Vec<CompiledField>,
    filter: Option<CompiledFilter>,
    /// What any template or the condition reads; empty means no context is built.
    plan: ContextPlan,
    sync_field: Vec<String>,
    /// Indices into `fields` of the required fields, in `REQUIRED_FIELDS` order.
    required: Vec<usize>,
    /// Indices into `fields` of the sync keys, in priority order.
    sync_indices: Vec<usize>,
    saas: Option<SaasBlock>,
}

/// One record to evaluate: the raw Sage People employee, its normalised form, and where it
/// was read from.
#[derive(Debug, Clone, Copy)]
pub struct RecordInput<'a> {
    /// The raw employee record (the `response` root of templates).
    pub raw: &'a Value,
    /// The normalised worker (the `worker` root, and every `source` mapping).
    pub worker: &'a Worker,
    /// Credential set and host (the `connect` root and the tracking sources).
    pub tracking: &'a Tracking,
}

/// What happens to one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// Send this record: exactly one element of the bulk `records` array (field id → value,
    /// plus the `SAAS` object for user plus SaaS user). Absent values are JSON null, so
    /// Oomnitza clears them.
    Load {
        /// The record.
        record: Map<String, Value>,
    },
    /// The filter condition is false: ack the event and count it as filtered.
    Filtered {
        /// Which condition filtered the worker out.
        reason: String,
    },
    /// The record cannot be built (a required field is empty, a template failed):
    /// dead-letter it with the reason.
    Unloadable {
        /// What is missing or what failed.
        reason: String,
    },
}

impl Evaluation {
    /// The record, when the worker is to be loaded.
    pub fn record(&self) -> Option<&Map<String, Value>> {
        match self {
            Evaluation::Load { record } => Some(record),
            _ => None,
        }
    }

    /// The reason, when the worker is filtered out or unloadable.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Evaluation::Load { .. } => None,
            Evaluation::Filtered { reason } | Evaluation::Unloadable { reason } => Some(reason),
        }
    }
}

/// One mapping entry, ready to evaluate.
#[derive(Debug)]
pub(crate) struct CompiledField {
    pub(crate) field: String,
    /// Index of the entry in the config's mapping.
    pub(crate) entry: usize,
    value: FieldValue,
    /// `source Email`, `template `…``, `setting default_role`, `value "25"`.
    pub(crate) origin: String,
}

#[derive(Debug)]
enum FieldValue {
    Source(SourceRef),
    Template(Compiled),
    Constant(Value),
}

/// A sync key's text value as sync keys are compared: trimmed and in lower case (Oomnitza
/// does not publish whether it compares them ignoring case, so two values that differ in
/// case only are taken as one); borrowed when it has no capital or non-ASCII letter. The
/// extractor's collision check and the loader's applied-record keys both take values through
/// here, so the two agree.
pub fn sync_key_text(value: &str) -> std::borrow::Cow<'_, str> {
    let value = value.trim();
    if value
        .bytes()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
    {
        std::borrow::Cow::Owned(value.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

impl Integration {
    /// Validates and compiles `config`; every problem is reported.
    pub fn compile(config: IntegrationConfig) -> Result<Integration, ValidationErrors> {
        let mut errors = validate::check(&config);
        let mut engine = Engine::new();
        let mut roots = Roots::default();
        let fields = compile_fields(
            &config,
            &mut engine,
            &mut roots,
            (&config.mapping, "mapping"),
            entry_location,
            &mut errors,
        );
        let leaver_fields = compile_fields(
            &config,
            &mut engine,
            &mut roots,
            (&config.leavers.set, "leavers"),
            crate::leavers::set_location,
            &mut errors,
        );

        let mut filter = None;
        if let Some(condition) = &config.filter.condition {
            match CompiledFilter::compile(&mut engine, condition) {
                Ok((compiled, used)) => {
                    if config.filter.mode == crate::config::FilterMode::IfConditions {
                        roots.union(&used);
                        filter = Some(compiled);
                    }
                }
                Err(problem) => errors.push(ValidationError::new(
                    ValidationKind::Template,
                    "filter.condition",
                    problem,
                )),
            }
        }

        if !errors.is_empty() {
            return Err(ValidationErrors::new(errors));
        }
        let index_of = |name: &str| fields.iter().position(|f: &CompiledField| f.field == name);
        let required = validate::REQUIRED_FIELDS
            .iter()
            .filter_map(|f| index_of(f))
            .collect();
        let sync_field: Vec<String> = config
            .sync_keys
            .iter()
            .map(|k| k.trim().to_owned())
            .collect();
        let sync_indices = sync_field.iter().filter_map(|k| index_of(k)).collect();
        let saas = SaasBlock::new(&config);
        Ok(Integration {
            config,
            engine,
            fields,
            leaver_fields,
            filter,
            plan: ContextPlan::new(&roots),
            sync_field,
            required,
            sync_indices,
            saas,
        })
    }

    /// The config this integration was compiled from.
    pub fn config(&self) -> &IntegrationConfig {
        &self.config
    }

    /// The bulk envelope's `sync_field`: the sync keys, in priority order.
    pub fn sync_field(&self) -> &[String] {
        &self.sync_field
    }

    /// Whether evaluating reads the raw Sage People record: a template or the condition uses
    /// `response`, or a mapping's source is an additional field. When it does not, callers may
    /// skip decoding the raw record and pass `Value::Null` — the loader does, per event.
    pub fn reads_raw(&self) -> bool {
        self.plan.reads_response()
            || self
                .fields
                .iter()
                .any(|f| matches!(&f.value, FieldValue::Source(SourceRef::Additional(_))))
    }

    /// The fields a leaver's user is updated with (`[[leavers.set]]`), evaluated like the
    /// mapping over what is known of the worker (only the id for one no longer listed); the
    /// error names the entry that failed.
    pub fn leaver_fields(&self, input: &RecordInput<'_>) -> Result<Map<String, Value>, String> {
        let mut ctx = None;
        let mut record = Map::new();
        for field in &self.leaver_fields {
            let value = self.value_of(field, input, &mut ctx).map_err(|problem| {
                format!(
                    "leavers.set field {}: {} failed: {problem}",
                    field.field, field.origin
                )
            })?;
            record.insert(field.field.clone(), without_hidden_controls(value));
        }
        Ok(record)
    }

    /// The Oomnitza field leavers are found by: the one mapped from the Sage People id.
    pub fn leaver_lookup_field(&self) -> Option<&str> {
        crate::leavers::id_entry(&self.config).map(|e| e.field.trim())
    }

    /// Decides what happens to one worker: load this record, filtered out, or unloadable.
    pub fn evaluate(&self, input: &RecordInput<'_>) -> Evaluation {
        let mut ctx = None;
        if let Some(filter) = &self.filter {
            let ctx = ctx.get_or_insert_with(|| self.context(input));
            if let Some(outcome) = filter.decide(&self.engine, ctx) {
                return outcome;
            }
        }
        // Collected, then built in one go: cheaper than inserting entry by entry.
        let mut entries = Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            match self.value_of(field, input, &mut ctx) {
                Ok(value) => entries.push((field.field.clone(), without_hidden_controls(value))),
                Err(problem) => {
                    return Evaluation::Unloadable {
                        reason: format!(
                            "field {}: {} failed: {problem}",
                            field.field, field.origin
                        ),
                    };
                }
            }
        }
        self.finish(entries.into_iter().collect())
    }

    /// The values that identify this worker's Oomnitza user — each sync key with a value,
    /// trimmed and lower-cased (Oomnitza does not publish whether it compares them ignoring
    /// case, so two values that differ in case only are taken as one) — or `None` when the
    /// worker is not loaded at all (filtered out, or a sync key's template fails). Evaluates
    /// only the filter and the sync key fields, so it is cheap enough to run on every worker
    /// of a listing (the extractor uses it to find workers that would land on one user).
    pub fn sync_keys(&self, input: &RecordInput<'_>) -> Option<Vec<(&str, String)>> {
        let mut ctx = None;
        if let Some(filter) = &self.filter {
            let ctx = ctx.get_or_insert_with(|| self.context(input));
            if filter.decide(&self.engine, ctx).is_some() {
                return None;
            }
        }
        let mut keys = Vec::with_capacity(self.sync_indices.len());
        for &i in &self.sync_indices {
            let field = &self.fields[i];
            let value = without_hidden_controls(self.value_of(field, input, &mut ctx).ok()?);
            let text = match &value {
                Value::String(text) => sync_key_text(text).into_owned(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                _ => continue,
            };
            if !text.is_empty() {
                keys.push((field.field.as_str(), text));
            }
        }
        Some(keys)
    }

    /// Required fields, sync keys and the SaaS object, on a mapped record.
    fn finish(&self, mut record: Map<String, Value>) -> Evaluation {
        for &i in &self.required {
            let field = &self.fields[i];
            if record.get(&field.field).is_none_or(is_empty) {
                return Evaluation::Unloadable {
                    reason: format!(
                        "required field {} is empty (mapped from {})",
                        field.field, field.origin
                    ),
                };
            }
        }
        let has_sync_value = self
            .sync_indices
            .iter()
            .any(|&i| record.get(&self.fields[i].field).is_some_and(is_key));
        if !has_sync_value {
            let keys: Vec<String> = self
                .sync_indices
                .iter()
                .map(|&i| {
                    format!(
                        "{} (mapped from {})",
                        self.fields[i].field, self.fields[i].origin
                    )
                })
                .collect();
            return Evaluation::Unloadable {
                reason: format!("every sync key is empty: {}", keys.join(", ")),
            };
        }
        if let Some(saas) = &self.saas {
            record.insert(validate::SAAS_KEY.to_owned(), saas.object().clone());
        }
        Evaluation::Load { record }
    }

    /// One field's value for one record.
    fn value_of(
        &self,
        field: &CompiledField,
        input: &RecordInput<'_>,
        ctx: &mut Option<minijinja::Value>,
    ) -> Result<Value, String> {
        match &field.value {
            FieldValue::Source(source) => Ok(source.value(input.raw, input.worker, input.tracking)),
            FieldValue::Constant(value) => Ok(value.clone()),
            FieldValue::Template(compiled) => {
                let ctx = ctx.get_or_insert_with(|| self.context(input));
                self.engine.render(compiled, ctx)
            }
        }
    }

    fn context(&self, input: &RecordInput<'_>) -> minijinja::Value {
        template::context(&self.plan, input.raw, input.worker, input.tracking)
    }

    /// Every compiled field, for previews.
    pub(crate) fn fields(&self) -> &[CompiledField] {
        &self.fields
    }

    /// One field's value, for previews.
    pub(crate) fn preview_value(
        &self,
        field: &CompiledField,
        input: &RecordInput<'_>,
        ctx: &mut Option<minijinja::Value>,
    ) -> Result<Value, String> {
        self.value_of(field, input, ctx)
    }

    /// Whether any template or the condition reads the context.
    #[cfg(test)]
    pub(crate) fn needs_context(&self) -> bool {
        !self.plan.is_empty()
    }
}

/// The value of `setting = name` (validation has checked the name).
fn setting_value(config: &IntegrationConfig, name: &str) -> Value {
    let text = match name {
        "default_role" => config.default_role.clone().unwrap_or_default(),
        "credentials" => config.credentials.clone(),
        "id" => config.id.clone(),
        _ => String::new(),
    };
    template::normalise_output(Value::String(text))
}

/// Null or a blank string.
pub(crate) fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// Whether a sync key's value can identify a user: a non-blank string, a number or a boolean.
fn is_key(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.trim().is_empty(),
        Value::Number(_) | Value::Bool(_) => true,
        _ => false,
    }
}

/// `value` without the characters that are invisible or reorder text and that no field of a
/// person needs: control characters other than tab and line breaks (NUL, BEL, ESC, …) and the
/// Unicode bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069), which can make
/// a name or e-mail shown in Oomnitza read differently from what it holds. Other values pass
/// unchanged (and without a copy when there is nothing to remove).
pub fn without_hidden_controls(value: Value) -> Value {
    fn hidden(c: char) -> bool {
        (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }
    match value {
        Value::String(text) if text.chars().any(hidden) => {
            Value::String(text.chars().filter(|c| !hidden(*c)).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;

/// Compiles each of `entries` (their templates named `<prefix><index>`), reporting a problem
/// at the place `location` names (from the entry's index and target field).
fn compile_fields(
    config: &IntegrationConfig,
    engine: &mut Engine,
    roots: &mut Roots,
    (entries, prefix): (&[crate::config::MappingEntry], &str),
    location: fn(usize, &str) -> String,
    errors: &mut Vec<ValidationError>,
) -> Vec<CompiledField> {
    let mut fields = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = location(i, entry.field.trim());
        let name = format!("{prefix}{i}");
        if let Some(value) = compile_value(config, engine, roots, &name, entry, &at, errors) {
            fields.push(CompiledField {
                field: entry.field.trim().to_owned(),
                entry: i,
                value,
                origin: entry.source.describe(),
            });
        }
    }
    fields
}

/// Compiles one entry's value (mapping or `leavers.set`), or records why it cannot be.
fn compile_value(
    config: &IntegrationConfig,
    engine: &mut Engine,
    roots: &mut Roots,
    name: &str,
    entry: &crate::config::MappingEntry,
    location: &str,
    errors: &mut Vec<ValidationError>,
) -> Option<FieldValue> {
    Some(match &entry.source {
        MappingSource::Source(name) => {
            // An unknown source is reported by validation.
            FieldValue::Source(SourceRef::resolve(name, &config.additional_fields).ok()?)
        }
        MappingSource::Template(text) => match engine.add_template(name, text) {
            Ok((compiled, used)) => {
                roots.union(&used);
                FieldValue::Template(compiled)
            }
            Err(problem) => {
                errors.push(ValidationError::new(
                    ValidationKind::Template,
                    location,
                    problem,
                ));
                return None;
            }
        },
        MappingSource::Setting(name) => FieldValue::Constant(setting_value(config, name.trim())),
        MappingSource::Value(v) => FieldValue::Constant(template::normalise_output(v.clone())),
    })
}
