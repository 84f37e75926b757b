//! An index per field for matching, uniqueness and filtered reads. Only the unique fields and
//! the fields some batch has matched on or some read has filtered on are indexed; a field is
//! indexed the first time it is needed.

use serde_json::{Map, Value};

use super::{HashMap, Store};

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
    /// Indexes `field` (from the users already stored) if it is not yet.
    pub(super) fn ensure_indexed(&mut self, field: &str) {
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

    /// The user identified by the first sync field the record has a value for.
    pub(super) fn find(&self, sync_field: &[String], fields: &Map<String, Value>) -> Option<usize> {
        sync_field.iter().find_map(|field| {
            let k = key(fields.get(field)?)?;
            self.index.get(field)?.get(&k)?.first().copied()
        })
    }

    /// Why giving these values to user `slot` (or a new user) would break a unique field.
    pub(super) fn unique_conflict(
        &self,
        fields: &Map<String, Value>,
        slot: Option<usize>,
    ) -> Option<String> {
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

    pub(super) fn index_user(&mut self, slot: usize) {
        let fields = &self.users[slot].fields;
        for (field, values) in &mut self.index {
            if let Some(k) = fields.get(field).and_then(key) {
                values.entry(k).or_default().push(slot);
            }
        }
    }

    pub(super) fn unindex(&mut self, slot: usize, fields: &Map<String, Value>) {
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
}
