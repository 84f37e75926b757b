//! PreviewWorker: a dry run for one worker. The extractor reads the worker from Sage People
//! (`fetch`, nothing published); the integration's stored config evaluates it exactly as a
//! loader would (`peoplesync_core::preview`); Oomnitza is asked for the user with the first
//! sync key's value (`GET /api/v3/users?filter=`; a username or e-mail with capitals also in
//! lower case, as Oomnitza publishes neither whether it keeps their case nor whether its
//! filters ignore it), and each mapped field is compared with it (those two ignoring case).

use peoplesync_bus::control::{self, WorkerFetched, WorkerRequest};
use peoplesync_core::{Evaluation, Tracking};
use peoplesync_oomnitza::OomnitzaClient;
use peoplesync_proto::v1 as pb;
use serde_json::Value;
use tonic::Status;

use crate::extractor::Extractor;
use crate::integrations::Configs;

/// What a preview needs.
pub(crate) struct Previewer<'a> {
    pub(crate) configs: &'a Configs,
    pub(crate) extractor: &'a Extractor,
    pub(crate) oomnitza: &'a OomnitzaClient,
}

impl Previewer<'_> {
    /// The preview of `worker_id` in `integration`.
    pub(crate) async fn preview(
        &self,
        integration: &str,
        worker_id: &str,
    ) -> Result<pb::PreviewWorkerResponse, Status> {
        let (compiled, revision) = self.configs.compiled(integration).await?;
        let fetched: WorkerFetched = self
            .extractor
            .request(
                integration,
                control::FETCH,
                &WorkerRequest {
                    id: worker_id.to_owned(),
                },
                control::WORKER_WAIT,
            )
            .await?;
        let raw = match (fetched.found, fetched.raw) {
            (true, Some(raw)) => raw,
            _ => {
                return Err(Status::not_found(format!(
                    "Sage People has no worker {worker_id} (integration {integration}, credential set {:?}); check the id",
                    fetched.credentials
                )));
            }
        };
        let tracking = Tracking {
            credentials: fetched.credentials,
            hostname: fetched.hostname,
        };
        let preview = compiled.preview_raw(&raw, &tracking);
        let (verdict, reason) = match &preview.evaluation {
            Evaluation::Load { .. } => (pb::Verdict::Load, String::new()),
            Evaluation::Filtered { reason } => (pb::Verdict::Filtered, reason.clone()),
            Evaluation::Unloadable { reason } => (pb::Verdict::Unloadable, reason.clone()),
        };
        let fields: Vec<pb::FieldPreview> = preview
            .fields
            .iter()
            .map(|f| pb::FieldPreview {
                field: f.field.clone(),
                label: f.label.clone().unwrap_or_default(),
                origin: f.origin.clone(),
                value_json: f.value.as_ref().map(Value::to_string).unwrap_or_default(),
                error: f.error.clone().unwrap_or_default(),
                required: f.required,
                sync_key: f.sync_key,
                unique: f.unique,
            })
            .collect();
        // The sync key Oomnitza would match on: the first one with a value.
        let sync = compiled.sync_field().iter().find_map(|key| {
            let value = preview
                .fields
                .iter()
                .find(|f| &f.field == key)
                .and_then(|f| f.value.as_ref())
                .and_then(key_text)?;
            Some((key.clone(), value))
        });
        let mut response = pb::PreviewWorkerResponse {
            verdict: verdict.into(),
            reason,
            record_json: preview
                .evaluation
                .record()
                .map(|r| Value::Object(r.clone()).to_string())
                .unwrap_or_default(),
            fields,
            raw_json: raw.to_string(),
            config_revision: revision,
            ..Default::default()
        };
        let mut current: Option<Value> = None;
        if let Some((key, value)) = &sync {
            response.sync_key = key.clone();
            response.sync_key_value = value.clone();
            // The value as sent and in lower case, each held by one user at most when the key
            // identifies a user; the one holding it as sent first.
            match self
                .oomnitza
                .find_users_holding(&attribute(key), value, 3)
                .await
            {
                Ok(users) => current = users.into_iter().next(),
                Err(err) => {
                    response.oomnitza_error = format!(
                        "reading the user from Oomnitza failed: {err}; the diff assumes no user"
                    );
                }
            }
        }
        response.user_exists = current.is_some();
        response.current_user_json = current.as_ref().map(Value::to_string).unwrap_or_default();
        response.diff = preview
            .fields
            .iter()
            .filter_map(|f| {
                let proposed = f.value.as_ref()?;
                let attribute = attribute(&f.field);
                let now = current
                    .as_ref()
                    .and_then(|u| u.get(&attribute))
                    .cloned()
                    .unwrap_or(Value::Null);
                Some(pb::FieldDiff {
                    field: f.field.clone(),
                    label: f.label.clone().unwrap_or_default(),
                    current_json: now.to_string(),
                    proposed_json: proposed.to_string(),
                    change: change(
                        &now,
                        proposed,
                        peoplesync_oomnitza::CASELESS_ATTRIBUTES.contains(&attribute.as_str()),
                    )
                    .into(),
                    attribute,
                })
            })
            .collect();
        Ok(response)
    }
}

/// The attribute name of an Oomnitza field id in `GET /api/v3/users`.
pub(crate) fn attribute(field: &str) -> String {
    peoplesync_oomnitza::read_attribute(field)
}

/// A sync key value as text, when it has one.
fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// How a field changes from `now` to `proposed`. Oomnitza may keep numbers and booleans as
/// text, so values that read the same as text are the same; `caseless` values that differ in
/// letter case only are the same too.
fn change(now: &Value, proposed: &Value, caseless: bool) -> pb::Change {
    let text = |v: &Value| {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if caseless { text.to_lowercase() } else { text }
    };
    match (is_blank(now), is_blank(proposed)) {
        (true, true) => pb::Change::Unchanged,
        (true, false) => pb::Change::Added,
        (false, true) => pb::Change::Cleared,
        (false, false) if now == proposed || text(now) == text(proposed) => pb::Change::Unchanged,
        (false, false) => pb::Change::Modified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_ids_become_the_users_api_attribute_names() {
        assert_eq!(attribute("USER"), "username");
        assert_eq!(attribute("PERMISSIONS_ID"), "role");
        assert_eq!(
            attribute("6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C"),
            "6c1f0a2b9d3e4f5a8b7c6d5e4f3a2b1c"
        );
    }

    #[test]
    fn changes_compare_values_as_oomnitza_keeps_them() {
        assert_eq!(
            change(&json!("25"), &json!(25), false),
            pb::Change::Unchanged
        );
        assert_eq!(
            change(&json!(null), &json!(""), false),
            pb::Change::Unchanged
        );
        assert_eq!(
            change(&json!(null), &json!("Engineer"), false),
            pb::Change::Added
        );
        assert_eq!(
            change(&json!("Engineer"), &json!(null), false),
            pb::Change::Cleared
        );
        assert_eq!(
            change(&json!("Engineer"), &json!("Director"), false),
            pb::Change::Modified
        );
        assert_eq!(
            change(&json!("true"), &json!(true), false),
            pb::Change::Unchanged
        );
        let (stored, sent) = (json!("ada@example.com"), json!("Ada@Example.com"));
        assert_eq!(change(&stored, &sent, true), pb::Change::Unchanged);
        assert_eq!(change(&stored, &sent, false), pb::Change::Modified);
    }
}
