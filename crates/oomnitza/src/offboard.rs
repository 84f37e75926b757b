//! Offboarding one user: find them by an attribute, read the assets they hold
//! (`GET /api/v3/users/{ident}/assets`), set fields (`PATCH /api/v3/users/{ident}`) or delete
//! them (`DELETE /api/v3/users/{ident}`). The published OpenAPI describes these three calls;
//! `{ident}` is sent as the user's `id` as a user read shows it.
//!
//! Each call is idempotent, so transient failures are retried like any read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::OomnitzaClient;
use crate::error::Error;
use crate::users::filter_literal;

/// One asset a user holds, reduced to what IT needs to recover it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    /// The asset's id (`equipment_id`, `id` or `uid`; [`NO_ASSET_ID`] when it shows none).
    pub id: String,
    /// Its name or model, when shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its serial number, when shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// The id of an asset whose entry shows none of the fields an id is read from: it is still an
/// asset the user holds (a delete must spare them), to be found in Oomnitza by name or serial.
pub const NO_ASSET_ID: &str = "(no id shown)";

impl Asset {
    /// The asset an entry of the assets list describes (its id from `equipment_id`, `id` or
    /// `uid`, else [`NO_ASSET_ID`]); `None` only for an entry that is not an object.
    pub fn from_json(value: &Value) -> Option<Asset> {
        value.as_object()?;
        let text = |keys: &[&str]| {
            keys.iter().find_map(|k| match value.get(*k)? {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        Some(Asset {
            id: text(&["equipment_id", "id", "uid"]).unwrap_or_else(|| NO_ASSET_ID.to_owned()),
            name: text(&["name", "model"]),
            serial: text(&["serial_number", "serial"]),
        })
    }
}

/// The attributes a user read may identify the user by, in the order they are tried for the
/// `{ident}` of the user calls: the published user schema's `user_id` (text) and `uid`
/// (integer), an `id` some answers carry, and last the username. The schema does not say which
/// one `{ident}` takes; the text id is the system object's id.
const IDENT_ATTRIBUTES: [&str; 4] = ["user_id", "id", "uid", "username"];

/// The id of a user as a user read shows it (see [`IDENT_ATTRIBUTES`]).
pub fn user_ident(user: &Value) -> Option<String> {
    IDENT_ATTRIBUTES
        .iter()
        .find_map(|name| match user.get(*name)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

impl OomnitzaClient {
    /// The users whose `attribute` equals `value` (at most two read: more than one means the
    /// value does not identify a user).
    pub async fn find_user_by(&self, attribute: &str, value: &str) -> Result<Vec<Value>, Error> {
        let filter = format!("{attribute} eq {}", filter_literal(value));
        self.find_users(&filter, 2, 0).await
    }

    /// The assets user `ident` holds: every object of the list, one that shows no id included
    /// (with [`NO_ASSET_ID`]), so a user holding only such assets is not taken for one holding
    /// none.
    pub async fn user_assets(&self, ident: &str) -> Result<Vec<Asset>, Error> {
        let what = format!("reading the assets of user {ident}");
        let url = self.url(&["api", "v3", "users", ident, "assets"], &[]);
        let reply = self
            .send_retrying(&what, &[], |http| http.get(url.clone()))
            .await?;
        let list: Vec<Value> = self.decode(&what, &reply.body)?;
        Ok(list.iter().filter_map(Asset::from_json).collect())
    }

    /// Deletes user `ident`; `false` when Oomnitza no longer has it (`404`), so a repeated
    /// delete is not an error.
    pub async fn delete_user(&self, ident: &str) -> Result<bool, Error> {
        let what = format!("deleting user {ident}");
        let url = self.url(&["api", "v3", "users", ident], &[]);
        let reply = self
            .send_retrying(&what, &[404], |http| http.delete(url.clone()))
            .await?;
        Ok(reply.status != 404)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn assets_are_read_from_the_fields_oomnitza_shows() {
        let asset = Asset::from_json(&json!({
            "equipment_id": "EQ-1", "model": "MacBook Pro", "serial_number": "C02X"
        }));
        assert_eq!(
            asset,
            Some(Asset {
                id: "EQ-1".into(),
                name: Some("MacBook Pro".into()),
                serial: Some("C02X".into())
            })
        );
        assert_eq!(
            Asset::from_json(&json!({"id": 7})).map(|a| a.id),
            Some("7".into())
        );
        assert_eq!(
            Asset::from_json(&json!({"uid": 12})).map(|a| a.id),
            Some("12".into())
        );
        // Still an asset the user holds: a delete must spare them.
        assert_eq!(
            Asset::from_json(&json!({"model": "no id"})),
            Some(Asset {
                id: NO_ASSET_ID.into(),
                name: Some("no id".into()),
                serial: None
            })
        );
        assert_eq!(Asset::from_json(&json!(null)), None);
    }

    #[test]
    fn a_user_is_identified_by_the_published_id_first() {
        let ident = |user| user_ident(&user);
        assert_eq!(
            ident(json!({"user_id": "U-1", "uid": 7, "username": "ada"})),
            Some("U-1".into())
        );
        assert_eq!(
            ident(json!({"id": "x", "username": "ada"})),
            Some("x".into())
        );
        assert_eq!(
            ident(json!({"user_id": " ", "uid": 7, "username": "ada"})),
            Some("7".into())
        );
        assert_eq!(ident(json!({"username": "ada"})), Some("ada".into()));
        assert_eq!(ident(json!({"email": "ada@example.com"})), None);
    }
}
