//! User plus SaaS user: the `SAAS` block added to every record, so Oomnitza also creates or
//! updates the person's SaaS-user record for Sage People. Its `sync_key` is the user's first
//! sync key that has a value; `name` and `selected_saas_id` come from `[saas]`.

use serde_json::{Map, Value};

use crate::config::{IntegrationConfig, IntegrationType};

/// The constant part of the `SAAS` block.
#[derive(Debug, Clone)]
pub(crate) struct SaasBlock {
    name: Option<String>,
    selected_saas_id: Option<String>,
}

impl SaasBlock {
    /// The block for `config`, when its type is user plus SaaS user.
    pub(crate) fn new(config: &IntegrationConfig) -> Option<SaasBlock> {
        if config.integration_type != IntegrationType::UserAndSaasUser {
            return None;
        }
        let saas = config.saas.as_ref()?;
        let clean = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Some(SaasBlock {
            name: clean(&saas.name),
            selected_saas_id: clean(&saas.selected_saas_id),
        })
    }

    /// `{"sync_key": …, "name": …, "selected_saas_id": …}`, leaving out what is not set.
    pub(crate) fn block(&self, sync_key: String) -> Value {
        let mut block = Map::new();
        block.insert("sync_key".to_owned(), Value::String(sync_key));
        if let Some(name) = &self.name {
            block.insert("name".to_owned(), Value::String(name.clone()));
        }
        if let Some(id) = &self.selected_saas_id {
            block.insert("selected_saas_id".to_owned(), Value::String(id.clone()));
        }
        Value::Object(block)
    }
}
