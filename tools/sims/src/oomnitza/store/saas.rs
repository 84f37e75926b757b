//! SaaS-user records: one per person and SaaS application, written from a record's `SAAS`
//! block.

use serde_json::{Map, Value, json};

use super::Store;

impl Store {
    /// Every SaaS-user record, in creation order.
    pub(crate) fn saas_users(&self) -> Vec<Value> {
        self.saas.iter().cloned().map(Value::Object).collect()
    }

    /// Whether [`Store::upsert_saas`] would create or change a SaaS-user record.
    pub(super) fn saas_would_change(&self, user_id: &str, saas: &Value) -> bool {
        let Some((app, wanted)) = saas_record(user_id, saas) else {
            return false;
        };
        match self.saas_by_key.get(&(app, user_id.to_owned())) {
            Some(&i) => wanted.iter().any(|(k, v)| self.saas[i].get(k) != Some(v)),
            None => true,
        }
    }

    /// Creates or updates the SaaS-user record of `user_id`; true if anything changed.
    pub(super) fn upsert_saas(&mut self, user_id: &str, saas: &Value) -> bool {
        let Some((app, wanted)) = saas_record(user_id, saas) else {
            return false;
        };
        let key = (app, user_id.to_owned());
        match self.saas_by_key.get(&key) {
            Some(&i) => {
                let current = &mut self.saas[i];
                let changed = wanted.iter().any(|(k, v)| current.get(k) != Some(v));
                if changed {
                    current.extend(wanted);
                }
                changed
            }
            None => {
                let mut record = Map::new();
                record.insert(
                    "id".into(),
                    Value::String(format!("saas-{}", self.saas.len() + 1)),
                );
                record.extend(wanted);
                self.saas_by_key.insert(key, self.saas.len());
                self.saas.push(record);
                true
            }
        }
    }
}

/// The SaaS application key, the sync key and the wanted SaaS-user record of `user_id` for a
/// record's `SAAS` block; `None` if the block names no sync key or application.
fn saas_record(user_id: &str, saas: &Value) -> Option<(String, Map<String, Value>)> {
    let text = |k: &str| saas.get(k).and_then(Value::as_str).map(str::to_string);
    let sync_key = text("sync_key")?;
    let app = text("selected_saas_id").or_else(|| text("name"))?;
    let Value::Object(wanted) = json!({
        "user_id": user_id,
        "sync_key": sync_key,
        "selected_saas_id": text("selected_saas_id"),
        "name": text("name"),
    }) else {
        return None;
    };
    Some((app, wanted))
}
