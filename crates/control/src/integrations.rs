//! Integration configs over gRPC: read with their KV revision, validate (every problem,
//! nothing stored), and write with optimistic concurrency — a write names the revision it
//! read, and loses with FAILED_PRECONDITION if someone else wrote in between. The loaders
//! watch the bucket and apply a new revision to their next batch. Smart mapping lives here
//! too, since it produces config.

use bytes::Bytes;
use peoplesync_bus::{Bus, Written, names};
use peoplesync_core::{
    Integration, IntegrationConfig, MappingEntry, MappingSource, TargetField, ValidationErrors,
    ValidationKind, default_custom_fields, suggest_mapping,
};
use peoplesync_proto::v1 as pb;
use serde::Serialize;
use tonic::Status;

use crate::{pause, status};

/// The largest config accepted (a config with hundreds of mappings is a few tens of KiB).
const MAX_CONFIG_BYTES: usize = 256 * 1024;
/// The most custom fields or additional fields a SuggestMapping request may carry.
const MAX_SUGGEST_INPUTS: usize = 1000;

/// Reads and writes configs in KV `peoplesync_config`.
#[derive(Clone)]
pub(crate) struct Configs {
    bus: Bus,
}

impl Configs {
    pub(crate) fn new(bus: Bus) -> Configs {
        Configs { bus }
    }

    /// The stored TOML of `id` and its revision, if any.
    pub(crate) async fn stored(&self, id: &str) -> Result<Option<(String, u64)>, Status> {
        let stored = self
            .bus
            .configs()
            .get(id)
            .await
            .map_err(|e| status::bus(&format!("reading the config of {id}"), e))?;
        match stored {
            Some(stored) => {
                let text = String::from_utf8(stored.text.to_vec()).map_err(|_| {
                    Status::data_loss(format!(
                        "the stored config of {id} (revision {}) is not UTF-8 text; store a valid one with PutIntegration",
                        stored.revision
                    ))
                })?;
                Ok(Some((text, stored.revision)))
            }
            None => Ok(None),
        }
    }

    /// The stored config of `id`, or NOT_FOUND.
    pub(crate) async fn get(&self, id: &str) -> Result<pb::Integration, Status> {
        let (toml, revision) = self.stored(id).await?.ok_or_else(|| not_found(id))?;
        let pause = pause::read(&self.bus, id).await?;
        Ok(pb::Integration {
            integration_id: id.to_owned(),
            toml,
            revision,
            pause: Some(pause::view(id, pause.as_ref())),
        })
    }

    /// The stored config of `id`, compiled, with its revision.
    pub(crate) async fn compiled(&self, id: &str) -> Result<(Integration, u64), Status> {
        let (text, revision) = self.stored(id).await?.ok_or_else(|| not_found(id))?;
        let integration = IntegrationConfig::from_toml(&text)
            .and_then(Integration::compile)
            .map_err(|e| {
                status::misconfigured(format!(
                    "the stored config of {id} (revision {revision}) is invalid — {e}\nstore a valid one with PutIntegration"
                ))
            })?;
        Ok((integration, revision))
    }

    /// Validates and stores `text` as the config of `id`, if `revision` is the stored one.
    pub(crate) async fn put(&self, id: &str, text: &str, revision: u64) -> Result<u64, Status> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(Status::invalid_argument(format!(
                "the config is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
                text.len()
            )));
        }
        let config = IntegrationConfig::from_toml(text).map_err(|e| invalid(&e))?;
        if config.id != id {
            return Err(Status::invalid_argument(format!(
                "the config's id is {:?} but it is being stored as integration {id:?}; make them the same",
                config.id
            )));
        }
        let integration = Integration::compile(config).map_err(|e| invalid(&e))?;
        for deprecation in integration.config().deprecations() {
            tracing::warn!(integration = id, %deprecation, "the config being stored uses a deprecated key");
        }
        for warning in peoplesync_core::leavers::warnings(integration.config()) {
            tracing::warn!(integration = id, %warning, "the config being stored has a leavers setting that may not do all that is meant");
        }
        let written = self
            .bus
            .configs()
            .put(id, Bytes::from(text.to_owned()), revision)
            .await
            .map_err(|e| status::bus(&format!("storing the config of {id}"), e))?;
        let stored = match written {
            Written::Stored(stored) => stored,
            Written::Stale if revision == 0 => {
                let current = self.current_revision(id).await?;
                return Err(Status::failed_precondition(format!(
                    "integration {id} already has a config (revision {current}); read it with \
                     GetIntegration and pass revision {current} to replace it"
                )));
            }
            Written::Stale => {
                let message = match self.stored(id).await? {
                    Some((_, current)) => format!(
                        "revision {revision} of integration {id} is stale: the config is at revision \
                         {current} now (someone changed it since you read it); read it again, \
                         re-apply your change and pass revision {current}"
                    ),
                    None => format!(
                        "integration {id} has no config, so revision {revision} cannot be replaced; \
                         pass revision 0 to create it"
                    ),
                };
                return Err(Status::failed_precondition(message));
            }
        };
        tracing::info!(
            integration = id,
            revision = stored,
            "integration config stored through the control plane"
        );
        Ok(stored)
    }

    async fn current_revision(&self, id: &str) -> Result<u64, Status> {
        Ok(self.stored(id).await?.map_or(0, |(_, r)| r))
    }

    /// Suggests a mapping for the request.
    pub(crate) async fn suggest(
        &self,
        request: pb::SuggestMappingRequest,
    ) -> Result<pb::SuggestMappingResponse, Status> {
        if request.custom_fields.len() > MAX_SUGGEST_INPUTS
            || request.additional_fields.len() > MAX_SUGGEST_INPUTS
        {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_SUGGEST_INPUTS} custom fields and {MAX_SUGGEST_INPUTS} additional fields per request"
            )));
        }
        let mut additional = Vec::new();
        if !request.integration_id.trim().is_empty() {
            let id = status::integration_id(&request.integration_id)?;
            let (integration, _) = self.compiled(id).await?;
            additional.extend(integration.config().additional_fields.iter().cloned());
        }
        for name in request.additional_fields {
            if !additional.contains(&name) {
                additional.push(name);
            }
        }
        let mut targets = TargetField::system_user_fields();
        if request.include_default_custom_fields {
            targets.extend(default_custom_fields());
        }
        for field in request.custom_fields {
            if field.id.trim().is_empty() {
                return Err(Status::invalid_argument(format!(
                    "custom field {:?} has no id; give each custom field its Oomnitza id",
                    field.label
                )));
            }
            if targets.iter().any(|t| t.id == field.id) {
                continue;
            }
            let label = if field.label.trim().is_empty() {
                field.id.clone()
            } else {
                field.label
            };
            let mut target = TargetField::custom(field.id, label);
            target.unique = field.unique;
            targets.push(target);
        }
        let suggestions = suggest_mapping(&additional, &targets);
        let toml = mapping_toml(suggestions.iter().map(|s| s.entry.clone()).collect());
        Ok(pb::SuggestMappingResponse {
            suggestions: suggestions
                .into_iter()
                .map(|s| {
                    let (source_kind, source) = source_parts(&s.entry.source);
                    pb::MappingSuggestion {
                        field: s.entry.field,
                        label: s.entry.label.unwrap_or_default(),
                        unique: s.entry.unique,
                        source_kind: source_kind.to_owned(),
                        source,
                        confidence: s.confidence,
                        reason: s.reason,
                        creates_field: s.creates_field,
                    }
                })
                .collect(),
            toml,
        })
    }
}

/// Validates a config: every problem, nothing stored.
pub(crate) fn validate(text: &str) -> pb::ValidateIntegrationResponse {
    if text.len() > MAX_CONFIG_BYTES {
        return pb::ValidateIntegrationResponse {
            valid: false,
            problems: vec![pb::ConfigProblem {
                kind: "invalid".into(),
                location: String::new(),
                message: format!(
                    "the config is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
                    text.len()
                ),
            }],
        };
    }
    match IntegrationConfig::from_toml(text).and_then(Integration::compile) {
        Ok(_) => pb::ValidateIntegrationResponse {
            valid: true,
            problems: Vec::new(),
        },
        Err(errors) => pb::ValidateIntegrationResponse {
            valid: false,
            problems: errors
                .iter()
                .map(|e| pb::ConfigProblem {
                    kind: kind_name(e.kind).to_owned(),
                    location: e.location.clone(),
                    message: e.message.clone(),
                })
                .collect(),
        },
    }
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!(
        "integration {id} has no config in KV {}; create one with PutIntegration (revision 0), \
         or start a loader with PEOPLESYNC_INTEGRATION={id} to seed the default",
        names::CONFIG_BUCKET
    ))
}

/// INVALID_ARGUMENT listing every problem, one per line.
fn invalid(errors: &ValidationErrors) -> Status {
    Status::invalid_argument(format!(
        "{errors}\nnothing was stored; fix the config (ValidateIntegration checks it) and retry"
    ))
}

fn kind_name(kind: ValidationKind) -> &'static str {
    match kind {
        ValidationKind::Syntax => "syntax",
        ValidationKind::UnknownKey => "unknown_key",
        ValidationKind::WrongType => "wrong_type",
        ValidationKind::Missing => "missing",
        ValidationKind::Invalid => "invalid",
        ValidationKind::Conflict => "conflict",
        ValidationKind::Duplicate => "duplicate",
        ValidationKind::UnknownSource => "unknown_source",
        ValidationKind::Template => "template",
        ValidationKind::Required => "required",
        ValidationKind::Deprecated => "deprecated",
        ValidationKind::Warning => "warning",
    }
}

fn source_parts(source: &MappingSource) -> (&'static str, String) {
    match source {
        MappingSource::Source(name) => ("source", name.clone()),
        MappingSource::Template(text) => ("template", text.clone()),
        MappingSource::Setting(name) => ("setting", name.clone()),
        MappingSource::Value(value) => ("value", value.to_string()),
    }
}

/// Mapping entries as `[[mapping]]` TOML, the shape of an integration config.
fn mapping_toml(mapping: Vec<MappingEntry>) -> String {
    #[derive(Serialize)]
    struct Snippet {
        mapping: Vec<MappingEntry>,
    }
    toml::to_string(&Snippet { mapping }).unwrap_or_else(|e| format!("# cannot write TOML: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_validates_and_a_broken_one_lists_every_problem() {
        let good = IntegrationConfig::default_for("acme").to_toml();
        assert!(validate(&good).valid);
        let bad = good.replace("sync_keys = [\"EMAIL\"]", "sync_keys = []") + "\nbogus = 1\n";
        let reply = validate(&bad);
        assert!(!reply.valid);
        assert!(reply.problems.len() >= 2, "{:?}", reply.problems);
        assert!(reply.problems.iter().any(|p| p.kind == "unknown_key"));
    }

    #[test]
    fn suggested_entries_read_back_as_config_toml() {
        let toml = mapping_toml(vec![
            MappingEntry::new("EMAIL", MappingSource::Source("Email".into())),
            MappingEntry::new("X", MappingSource::Setting("default_role".into())),
        ]);
        assert!(toml.contains("[[mapping]]"), "{toml}");
        assert!(toml.contains("source = \"Email\""), "{toml}");
    }
}
