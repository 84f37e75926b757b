//! The tenant's data and how one record changes it, pure and I/O-free: users with an index per
//! field for matching, uniqueness and filtered reads, SaaS-user records, the portions and the
//! queue of accepted records (processed by [`super::portion`]). Only the unique fields and the
//! fields some batch has matched on or some read has filtered on are indexed; a field is
//! indexed the first time it is needed.
//!
//! Matching follows the sync fields in priority order: the first field for which the record has
//! a value and some user holds that same value identifies the user. A record is first planned
//! (what it would do, nothing changed), then committed, so that a test run can report exactly
//! what processing would do.

use std::collections::BTreeMap;

/// The store's maps are looked up several times per record; foldhash is several times cheaper
/// than the default SipHash, and a simulator needs no protection from crafted keys.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use serde_json::{Map, Value, json};

use super::PortionState;
use super::queue::Queue;
use super::validate::Envelope;
use crate::rng::mix;

/// What happened to one record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    Added,
    Updated,
    Unchanged,
    Skipped,
    Failed(String),
    /// Discarded because an administrator canceled the run.
    Canceled,
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
            Outcome::Canceled => "canceled",
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

#[derive(Clone, Debug)]
struct User {
    id: String,
    fields: Map<String, Value>,
    /// Bulk writes that created or changed this user.
    writes: u64,
}

/// Users, SaaS users and portions.
#[derive(Debug, Default)]
pub(crate) struct Store {
    users: Vec<User>,
    by_id: HashMap<String, usize>,
    /// Indexed field id → value key → users holding that value.
    index: HashMap<String, HashMap<String, Vec<usize>>>,
    saas: Vec<Map<String, Value>>,
    /// (SaaS application, user id) → SaaS-user record. The `SAAS` block's `sync_key` is the
    /// integration's setting, the same on every record (Oomnitza's connector sends it so), so
    /// a person's SaaS user is found by the application and the user it belongs to.
    saas_by_key: HashMap<(String, String), usize>,
    pub(crate) portions: HashMap<String, PortionState>,
    /// Records accepted and not processed yet.
    pub(crate) queue: Queue,
    /// Fields whose values no two users may share: `USER` and unique custom fields.
    unique: Vec<String>,
    next_user: u64,
    pub(crate) counters: Counters,
    /// Assets and the user each is assigned to (see `super::offboard`).
    pub(crate) assets: Vec<super::offboard::SimAsset>,
}

/// Record counters kept with the data, so they change in the same step as it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) bulk_requests: u64,
    pub(crate) first_bulk_at_ms: Option<i64>,
    pub(crate) last_bulk_at_ms: Option<i64>,
    pub(crate) bulk_records: u64,
    pub(crate) created: u64,
    pub(crate) updated: u64,
    pub(crate) unchanged: u64,
    pub(crate) skipped: u64,
    pub(crate) failed: u64,
    pub(crate) canceled: u64,
    pub(crate) test_run_records: u64,
    pub(crate) finalize_calls: BTreeMap<String, u64>,
}

/// The index key of a value; `None` for values that identify nothing (null, blank).
fn key(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(format!("s:{s}")),
        other => Some(format!("j:{other}")),
    }
}

impl Store {
    pub(crate) fn new(unique: Vec<String>) -> Self {
        let index = unique
            .iter()
            .map(|field| (field.clone(), HashMap::default()))
            .collect();
        Self {
            unique,
            index,
            ..Self::default()
        }
    }

    /// Indexes `field` (from the users already stored) if it is not yet.
    fn ensure_indexed(&mut self, field: &str) {
        if self.index.contains_key(field) {
            return;
        }
        let mut values: HashMap<String, Vec<usize>> = HashMap::default();
        for (slot, user) in self.users.iter().enumerate() {
            if let Some(k) = user.fields.get(field).and_then(key) {
                values.entry(k).or_default().push(slot);
            }
        }
        self.index.insert(field.to_owned(), values);
    }

    /// Every user as field id → value, plus `_id`.
    pub(crate) fn users(&self) -> Vec<Map<String, Value>> {
        self.users.iter().map(with_id).collect()
    }

    /// One user by id, as [`Store::users`] shows it.
    pub(crate) fn user(&self, id: &str) -> Option<Map<String, Value>> {
        self.by_id.get(id).map(|&i| with_id(&self.users[i]))
    }

    /// How many users there are; slots run from 0 to this, in creation order.
    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The id and fields of the user in `slot` (`None` past the end).
    pub(crate) fn user_at(&self, slot: usize) -> Option<(&str, &Map<String, Value>)> {
        self.users.get(slot).map(|u| (u.id.as_str(), &u.fields))
    }

    /// The slots of the users whose `field` has one of these texts (as a string, or as a
    /// number or boolean shown as that text), in creation order; the field is indexed on first
    /// use. Blank texts match nothing here, as blank values are not indexed.
    pub(crate) fn slots_holding(&mut self, field: &str, texts: &[String]) -> Vec<usize> {
        self.ensure_indexed(field);
        let Some(values) = self.index.get(field) else {
            return Vec::new();
        };
        let mut slots: Vec<usize> = texts
            .iter()
            .flat_map(|t| [format!("s:{t}"), format!("j:{t}")])
            .filter_map(|k| values.get(&k))
            .flatten()
            .copied()
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    pub(crate) fn saas_users(&self) -> Vec<Value> {
        self.saas.iter().cloned().map(Value::Object).collect()
    }

    /// The portion `id`, created (open) if new.
    pub(crate) fn portion_mut(&mut self, id: &str) -> &mut PortionState {
        self.portions
            .entry(id.to_string())
            .or_insert_with(|| PortionState {
                portion: id.to_string(),
                ..PortionState::default()
            })
    }

    /// The id of the user `ident` names: its id, or its username (`USER`).
    pub(crate) fn resolve(&self, ident: &str) -> Option<String> {
        if self.by_id.contains_key(ident) {
            return Some(ident.to_owned());
        }
        self.users
            .iter()
            .find(|u| u.fields.get("USER").and_then(Value::as_str) == Some(ident))
            .map(|u| u.id.clone())
    }

    /// Sets `fields` on user `id`; false when there is no such user.
    pub(crate) fn patch_user(&mut self, id: &str, fields: Map<String, Value>) -> bool {
        let Some(&slot) = self.by_id.get(id) else {
            return false;
        };
        let old = self.users[slot].fields.clone();
        self.unindex(slot, &old);
        for (k, v) in fields {
            if v.is_null() {
                self.users[slot].fields.remove(&k);
            } else {
                self.users[slot].fields.insert(k, v);
            }
        }
        self.index_user(slot);
        true
    }

    /// Deletes user `id` (slots after it move down, so the indexes are rebuilt: deletes are
    /// rare); false when there is no such user.
    pub(crate) fn delete_user(&mut self, id: &str) -> bool {
        let Some(slot) = self.by_id.remove(id) else {
            return false;
        };
        self.users.remove(slot);
        self.by_id = self
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id.clone(), i))
            .collect();
        let fields: Vec<String> = self.index.keys().cloned().collect();
        self.index.clear();
        for field in fields {
            self.ensure_indexed(&field);
        }
        true
    }

    /// Adds a user as given (`_id` optional), bypassing validation; returns its id.
    pub(crate) fn insert_user(&mut self, mut fields: Map<String, Value>) -> String {
        let id = match fields.remove("_id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => self.new_id(),
        };
        fields.retain(|_, v| !v.is_null());
        if let Some(&existing) = self.by_id.get(&id) {
            let old = std::mem::take(&mut self.users[existing].fields);
            self.unindex(existing, &old);
            self.users[existing].fields = fields;
            self.index_user(existing);
        } else {
            let slot = self.users.len();
            self.users.push(User {
                id: id.clone(),
                fields,
                writes: 0,
            });
            self.by_id.insert(id.clone(), slot);
            self.index_user(slot);
        }
        id
    }

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
                    let old = self.users[slot].fields.clone();
                    self.unindex(slot, &old);
                    for (k, v) in changes {
                        if v.is_null() {
                            self.users[slot].fields.remove(&k);
                        } else {
                            self.users[slot].fields.insert(k, v);
                        }
                    }
                    self.index_user(slot);
                }
                self.count_write(&id);
            }
        }
        outcome
    }

    /// The user identified by the first sync field the record has a value for.
    fn find(&self, sync_field: &[String], fields: &Map<String, Value>) -> Option<usize> {
        sync_field.iter().find_map(|field| {
            let k = key(fields.get(field)?)?;
            self.index.get(field)?.get(&k)?.first().copied()
        })
    }

    /// Why giving these values to user `slot` (or a new user) would break a unique field.
    fn unique_conflict(&self, fields: &Map<String, Value>, slot: Option<usize>) -> Option<String> {
        self.unique.iter().find_map(|field| {
            let value = fields.get(field)?;
            let holders = self.index.get(field)?.get(&key(value)?)?;
            let other = holders.iter().find(|&&h| Some(h) != slot)?;
            Some(format!(
                "unique field {field}: value {value} already belongs to user {}",
                self.users[*other].id
            ))
        })
    }

    fn index_user(&mut self, slot: usize) {
        let fields = &self.users[slot].fields;
        for (field, values) in &mut self.index {
            if let Some(k) = fields.get(field).and_then(key) {
                values.entry(k).or_default().push(slot);
            }
        }
    }

    fn unindex(&mut self, slot: usize, fields: &Map<String, Value>) {
        for (field, values) in &mut self.index {
            let Some(k) = fields.get(field).and_then(key) else {
                continue;
            };
            if let Some(holders) = values.get_mut(&k) {
                holders.retain(|&h| h != slot);
                if holders.is_empty() {
                    values.remove(&k);
                }
            }
        }
    }

    /// Whether [`Store::upsert_saas`] would create or change a SaaS-user record.
    fn saas_would_change(&self, user_id: &str, saas: &Value) -> bool {
        let Some((app, wanted)) = saas_record(user_id, saas) else {
            return false;
        };
        match self.saas_by_key.get(&(app, user_id.to_owned())) {
            Some(&i) => wanted.iter().any(|(k, v)| self.saas[i].get(k) != Some(v)),
            None => true,
        }
    }

    /// Creates or updates the SaaS-user record of `user_id`; true if anything changed.
    fn upsert_saas(&mut self, user_id: &str, saas: &Value) -> bool {
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

    fn count_write(&mut self, id: &str) {
        if let Some(&slot) = self.by_id.get(id) {
            self.users[slot].writes += 1;
        }
    }

    /// Users written by bulk posts, with how many times each was.
    pub(crate) fn user_writes(&self) -> impl Iterator<Item = (&str, u64)> {
        self.users
            .iter()
            .filter(|u| u.writes > 0)
            .map(|u| (u.id.as_str(), u.writes))
    }

    /// A new user id: UUID-shaped, deterministic in creation order.
    fn new_id(&mut self) -> String {
        self.next_user += 1;
        let n = self.next_user;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&mix(n).to_be_bytes());
        bytes[8..].copy_from_slice(&mix(n ^ 0x0077_0077).to_be_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
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

fn with_id(user: &User) -> Map<String, Value> {
    let mut fields = user.fields.clone();
    fields.insert("_id".into(), Value::String(user.id.clone()));
    fields
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
