//! The tenant's data, pure and I/O-free: users, SaaS-user records, the portions and the queue of
//! accepted records (processed by [`super::portion`]). Its parts: [`index`] keeps an index per
//! field for matching, uniqueness and filtered reads; [`plan`] works out and applies what one
//! record does; [`saas`] keeps the SaaS-user records.

mod index;
mod plan;
mod saas;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub(crate) use plan::Outcome;

use super::PortionState;
use super::queue::Queue;
use crate::rng::mix;

/// The store's maps are looked up several times per record; foldhash is several times cheaper
/// than the default SipHash, and a simulator needs no protection from crafted keys.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

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
        self.set_fields(slot, fields);
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

    /// Sets `fields` on the user in `slot`, a null value removing the field, and re-indexes it.
    fn set_fields(&mut self, slot: usize, fields: Map<String, Value>) {
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

fn with_id(user: &User) -> Map<String, Value> {
    let mut fields = user.fields.clone();
    fields.insert("_id".into(), Value::String(user.id.clone()));
    fields
}
