//! How one record changes the tenant. Matching follows the sync fields in priority order: the
//! first field for which the record has a value and some user holds that same value identifies
//! the user. A record is first planned (what it would do, nothing changed), then committed, so
//! that a test run can report exactly what processing would do.

use serde_json::{Map, Value};

use super::Store;
use crate::oomnitza::validate::Envelope;

/// What happened to one record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    Added,
    Updated,
    Unchanged,
    Skipped,
    Failed(String),
}

impl Outcome {
    /// The run log's name of this outcome.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Outcome::Added => "added",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// What applying one valid record would do, worked out without changing anything.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Create-only on an existing user, or update-only on an unknown one.
    Skip,
    /// The user already holds every value.
    Unchanged,
    /// A new user.
    Create {
        fields: Map<String, Value>,
        saas: Option<Value>,
    },
    /// New values (and/or a new SaaS-user record) for the user in `slot`.
    Update {
        slot: usize,
        changes: Map<String, Value>,
        saas: Option<Value>,
    },
}

impl Plan {
    /// The outcome the plan has once committed.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Plan::Skip => Outcome::Skipped,
            Plan::Unchanged => Outcome::Unchanged,
            Plan::Create { .. } => Outcome::Added,
            Plan::Update { .. } => Outcome::Updated,
        }
    }
}
impl Store {
    /// What the valid record `fields` would do in a batch with this envelope; the error is the
    /// reason it would fail (a unique value another user holds), with the record given back.
    pub(crate) fn plan(
        &mut self,
        env: &Envelope,
        mut fields: Map<String, Value>,
    ) -> Result<Plan, (String, Map<String, Value>)> {
        let saas = fields.remove("SAAS").filter(Value::is_object);
        let refuse = |reason: String, mut fields: Map<String, Value>, saas: Option<Value>| {
            if let Some(saas) = saas {
                fields.insert("SAAS".into(), saas);
            }
            Err((reason, fields))
        };
        for field in &env.sync_field {
            self.ensure_indexed(field);
        }
        let slot = match self.find(&env.sync_field, &fields) {
            Some(_) if env.insert_only => return Ok(Plan::Skip),
            Some(slot) => slot,
            None if env.update_only => return Ok(Plan::Skip),
            None => {
                if let Some(conflict) = self.unique_conflict(&fields, None) {
                    return refuse(conflict, fields, saas);
                }
                return Ok(Plan::Create { fields, saas });
            }
        };
        let user = &self.users[slot];
        let changes: Map<String, Value> = fields
            .iter()
            .filter(|(k, v)| user.fields.get(*k).unwrap_or(&Value::Null) != *v)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(conflict) = self.unique_conflict(&changes, Some(slot)) {
            return refuse(conflict, fields, saas);
        }
        let saas_changes = saas
            .as_ref()
            .is_some_and(|s| self.saas_would_change(&user.id, s));
        if changes.is_empty() && !saas_changes {
            return Ok(Plan::Unchanged);
        }
        Ok(Plan::Update {
            slot,
            changes,
            saas,
        })
    }

    /// Applies a plan made against the current data.
    pub(crate) fn commit(&mut self, plan: Plan) -> Outcome {
        let outcome = plan.outcome();
        match plan {
            Plan::Skip | Plan::Unchanged => {}
            Plan::Create { fields, saas } => {
                let id = self.insert_user(fields);
                self.count_write(&id);
                if let Some(saas) = &saas {
                    self.upsert_saas(&id, saas);
                }
            }
            Plan::Update {
                slot,
                changes,
                saas,
            } => {
                let id = self.users[slot].id.clone();
                if let Some(saas) = &saas {
                    self.upsert_saas(&id, saas);
                }
                if !changes.is_empty() {
                    self.set_fields(slot, changes);
                }
                self.count_write(&id);
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(sync: &[&str], records: Vec<Value>) -> Envelope {
        Envelope {
            portion: "p".into(),
            sync_field: sync.iter().map(|s| s.to_string()).collect(),
            records,
            ..Envelope::default()
        }
    }

    fn store() -> Store {
        Store::new(vec!["USER".into(), "SAGE".into()])
    }

    fn ada(extra: Value) -> Value {
        let mut r = json!({"USER": "ada@example.com", "EMAIL": "ada@example.com", "SAGE": "a1"});
        if let (Some(r), Value::Object(extra)) = (r.as_object_mut(), extra) {
            r.extend(extra);
        }
        r
    }

    #[test]
    fn create_then_update_then_unchanged() {
        let mut s = store();
        assert_eq!(
            s.apply(env(&["EMAIL"], vec![ada(json!({}))])),
            [Outcome::Added]
        );
        assert_eq!(
            s.apply(env(&["EMAIL"], vec![ada(json!({"POSITION": "CTO"}))])),
            [Outcome::Updated]
        );
        assert_eq!(
            s.apply(env(&["EMAIL"], vec![ada(json!({"POSITION": "CTO"}))])),
            [Outcome::Unchanged]
        );
        assert_eq!(s.users().len(), 1);
        assert_eq!(s.users()[0]["POSITION"], "CTO");
        let p = &s.portions["p"];
        assert_eq!((p.added, p.updated, p.unchanged), (1, 1, 1));
        let id = s.users()[0]["_id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_default();
        assert_eq!(s.user_writes().collect::<Vec<_>>(), [(id.as_str(), 2)]);
    }

    #[test]
    fn a_field_first_used_for_matching_finds_users_stored_before() {
        let mut s = store();
        s.insert_user(
            json!({"USER": "ada", "EMPLOYEE_ID": "E1"})
                .as_object()
                .cloned()
                .unwrap(),
        );
        s.apply(env(&["EMAIL"], vec![ada(json!({}))]));
        let out = s.apply(env(
            &["EMPLOYEE_ID"],
            vec![json!({"EMPLOYEE_ID": "E1", "USER": "ada", "POSITION": "CTO"})],
        ));
        assert_eq!(
            out,
            [Outcome::Updated],
            "matched through an index built on first use"
        );
        assert_eq!(s.users().len(), 2);
        let out = s.apply(env(
            &["EMPLOYEE_ID"],
            vec![json!({"EMPLOYEE_ID": "E2", "USER": "ada"})],
        ));
        assert!(
            matches!(&out[0], Outcome::Failed(reason) if reason.contains("unique field USER")),
            "unique fields stay indexed: {out:?}"
        );
    }

    #[test]
    fn the_same_record_twice_in_a_batch_is_harmless() {
        let mut s = store();
        let out = s.apply(env(&["EMAIL"], vec![ada(json!({})), ada(json!({}))]));
        assert_eq!(out, [Outcome::Added, Outcome::Unchanged]);
        assert_eq!(s.users().len(), 1);
    }

    #[test]
    fn matching_uses_the_first_sync_field_with_a_hit() {
        let mut s = store();
        s.apply(env(&["EMAIL"], vec![ada(json!({}))]));
        // The e-mail changed in the source; the Sage id still identifies her.
        let moved = json!({"USER": "ada@example.com", "EMAIL": "ada.l@example.com", "SAGE": "a1"});
        assert_eq!(
            s.apply(env(&["EMAIL", "SAGE"], vec![moved])),
            [Outcome::Updated]
        );
        assert_eq!(s.users().len(), 1);
        assert_eq!(s.users()[0]["EMAIL"], "ada.l@example.com");
        // A record without an e-mail falls through to the next key.
        let no_email =
            json!({"USER": "ada@example.com", "EMAIL": null, "SAGE": "a1", "POSITION": "x"});
        assert_eq!(
            s.apply(env(&["EMAIL", "SAGE"], vec![no_email])),
            [Outcome::Updated]
        );
        assert!(s.users()[0].get("EMAIL").is_none());
    }

    #[test]
    fn create_only_and_update_only_skip() {
        let mut s = store();
        let mut e = env(&["EMAIL"], vec![ada(json!({}))]);
        e.update_only = true;
        assert_eq!(s.apply(e.clone()), [Outcome::Skipped]);
        assert!(s.users().is_empty());
        e.update_only = false;
        s.apply(e.clone());
        e.insert_only = true;
        e.records = vec![ada(json!({"POSITION": "CTO"}))];
        assert_eq!(s.apply(e.clone()), [Outcome::Skipped]);
        assert!(s.users()[0].get("POSITION").is_none());
    }

    #[test]
    fn unique_fields_fail_the_record_not_the_batch() {
        let mut s = store();
        s.apply(env(&["EMAIL"], vec![ada(json!({}))]));
        let clash = json!({"USER": "bob@example.com", "EMAIL": "bob@example.com", "SAGE": "a1"});
        let ok = json!({"USER": "cy@example.com", "EMAIL": "cy@example.com", "SAGE": "c1"});
        let out = s.apply(env(&["EMAIL"], vec![clash, ok]));
        assert!(
            matches!(&out[0], Outcome::Failed(r) if r.contains("SAGE")),
            "{out:?}"
        );
        assert_eq!(out[1], Outcome::Added);
        assert_eq!(s.users().len(), 2);
        assert_eq!(s.portions["p"].failed_records.len(), 1);
        // Updating Cy to Ada's Sage id fails too.
        let steal = json!({"USER": "cy@example.com", "EMAIL": "cy@example.com", "SAGE": "a1"});
        assert!(matches!(
            &s.apply(env(&["EMAIL"], vec![steal]))[0],
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn client_reported_failures_change_no_user() {
        let mut s = store();
        let mut e = env(
            &["EMAIL"],
            vec![json!({"emailAddress": "x"}), json!({"emailAddress": "y"})],
        );
        e.error = Some("no e-mail mapping".into());
        let out = s.apply(e.clone());
        assert_eq!(out.len(), 2);
        assert!(s.users().is_empty());
        assert_eq!(s.portions["p"].failed, 2);
        assert_eq!(
            s.portions["p"].failed_records[0].reason,
            "no e-mail mapping"
        );
    }

    #[test]
    fn saas_records_are_created_and_updated_once() {
        let mut s = store();
        let saas = json!({"SAAS": {"sync_key": "EMAIL", "name": "Sage People"}});
        assert_eq!(
            s.apply(env(&["EMAIL"], vec![ada(saas.clone())])),
            [Outcome::Added]
        );
        assert_eq!(
            s.apply(env(&["EMAIL"], vec![ada(saas)])),
            [Outcome::Unchanged]
        );
        assert_eq!(s.saas_users().len(), 1);
        let renamed =
            json!({"SAAS": {"sync_key": "EMAIL", "name": "Sage People", "selected_saas_id": "s9"}});
        // A different app key (selected id) is a different SaaS record.
        assert_eq!(
            s.apply(env(&["EMAIL"], vec![ada(renamed)])),
            [Outcome::Updated]
        );
        assert_eq!(s.saas_users().len(), 2);
        assert_eq!(s.saas_users()[0]["user_id"], s.users()[0]["_id"]);
        // The same block on another person's record is that person's own SaaS user.
        let bob = json!({"USER": "bob@example.com", "EMAIL": "bob@example.com", "SAGE": "b1",
            "SAAS": {"sync_key": "EMAIL", "name": "Sage People"}});
        assert_eq!(s.apply(env(&["EMAIL"], vec![bob])), [Outcome::Added]);
        assert_eq!(s.saas_users().len(), 3);
    }

    #[test]
    fn inserted_users_are_matched_and_ids_are_uuid_shaped() {
        let mut s = store();
        let mut pre = Map::new();
        pre.insert("USER".into(), json!("ada@example.com"));
        pre.insert("EMAIL".into(), json!("ada@example.com"));
        let id = s.insert_user(pre);
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert_eq!(
            s.apply(env(&["EMAIL"], vec![ada(json!({}))])),
            [Outcome::Updated]
        );
        assert_eq!(s.user(&id).map(|u| u["SAGE"].clone()), Some(json!("a1")));
    }
}
