//! User plus SaaS user: the `SAAS` object added to every record, so Oomnitza also creates or
//! updates the person's SaaS-user record for Sage People. Like Oomnitza's own connector, it is
//! built once from the integration's `[saas]` settings (`sync_key`, `selected_saas_id`,
//! `name`) and is the same on every record; nothing in it depends on the person.

use serde_json::{Map, Value};

use crate::config::{IntegrationConfig, IntegrationType};

/// The `SAAS` object of an integration, built once per compiled config.
#[derive(Debug, Clone)]
pub(crate) struct SaasBlock {
    object: Value,
}

impl SaasBlock {
    /// The object for `config`, when its type is user plus SaaS user and `[saas]` names a
    /// sync key (validation refuses the config otherwise). Blank settings are left out, as
    /// the connector leaves out settings that are not set.
    pub(crate) fn new(config: &IntegrationConfig) -> Option<SaasBlock> {
        if config.integration_type != IntegrationType::UserAndSaasUser {
            return None;
        }
        let saas = config.saas.as_ref()?;
        let clean = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
        };
        let mut object = Map::new();
        object.insert("sync_key".to_owned(), clean(&saas.sync_key)?);
        if let Some(id) = clean(&saas.selected_saas_id) {
            object.insert("selected_saas_id".to_owned(), id);
        }
        if let Some(name) = clean(&saas.name) {
            object.insert("name".to_owned(), name);
        }
        Some(SaasBlock {
            object: Value::Object(object),
        })
    }

    /// `{"sync_key": …, "selected_saas_id": …, "name": …}`, leaving out what is not set.
    pub(crate) fn object(&self) -> &Value {
        &self.object
    }
}
