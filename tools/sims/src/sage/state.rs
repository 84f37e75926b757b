//! The state of one Sage People simulator: the org's changes, issued tokens, faults, counters.
//!
//! The org itself is generated; only what differs from the generated org is stored (removed
//! indices, patched records, the number of added workers), so memory stays flat however many
//! workers the org has.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use jsonwebtoken::DecodingKey;
use serde_json::Value;
use tokio::time::Instant;

use super::{SageConfig, SageFaults, SageStats};
use crate::admin::Controlled;
use crate::faults::outage_until;
use crate::generate;
use crate::rng::SplitMix;
use crate::sync::{Flight, lock, read, write};

/// Everything a request handler needs, shared behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SageConfig,
    /// The simulator's own base URL: login URL, instance URL and a valid JWT audience.
    pub(crate) url: String,
    pub(crate) jwt_key: Option<JwtKey>,
    pub(crate) org: RwLock<Org>,
    pub(crate) control: Mutex<Control>,
    pub(crate) stats: Mutex<SageStats>,
    pub(crate) flight: Arc<Flight>,
}

/// The key that verifies JWT bearer assertions (opaque in `Debug` output).
pub(crate) struct JwtKey(pub(crate) DecodingKey);

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(..)")
    }
}

/// What differs from the generated org.
#[derive(Debug)]
pub(crate) struct Org {
    pub(crate) seed: u64,
    /// Number of indices that exist (generated at start plus added since).
    pub(crate) total: u64,
    pub(crate) removed: BTreeSet<u64>,
    pub(crate) patched: BTreeMap<u64, Value>,
    /// Ids served by records replaced with arbitrary ones, and their index: markers too.
    pub(crate) replaced_ids: HashMap<String, u64>,
}

impl Org {
    /// True for an index that was ever part of the org (removed or not): a valid marker.
    pub(crate) fn ever_existed(&self, index: u64) -> bool {
        index < self.total
    }

    /// The index a paging marker continues after: a generated id, or the id a replaced
    /// record serves.
    pub(crate) fn index_of_marker(&self, marker: &str) -> Option<u64> {
        generate::index_of(marker).or_else(|| self.replaced_ids.get(marker).copied())
    }

    /// The current record at `index`, or `None` if it was removed or never existed.
    pub(crate) fn record(&self, index: u64) -> Option<Value> {
        if !self.ever_existed(index) || self.removed.contains(&index) {
            return None;
        }
        Some(match self.patched.get(&index) {
            Some(record) => record.clone(),
            None => generate::worker(self.seed, index),
        })
    }
}

/// Faults, tokens and quota usage: what the API gate consults on every call.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) faults: SageFaults,
    pub(crate) outage_until: Option<Instant>,
    pub(crate) rng: SplitMix,
    pub(crate) tokens: HashMap<String, TokenUse>,
    pub(crate) tokens_issued: u64,
    pub(crate) api_usage: u64,
}

/// How much an issued token has been used.
#[derive(Debug, Default)]
pub(crate) struct TokenUse {
    pub(crate) calls: u64,
}

impl Control {
    /// True while an outage set by the faults lasts.
    pub(crate) fn in_outage(&self) -> bool {
        self.outage_until
            .is_some_and(|until| Instant::now() < until)
    }
}

impl Controlled for Shared {
    type Stats = SageStats;
    type Faults = SageFaults;
    const FAULTS: &'static str = "SageFaults";

    fn stats(&self) -> SageStats {
        let mut stats = lock(&self.stats).clone();
        stats.api_usage = lock(&self.control).api_usage;
        stats.api_quota = self.config.api_quota;
        let org = read(&self.org);
        stats.workers = org.total.saturating_sub(org.removed.len() as u64);
        stats.max_in_flight = self.flight.max();
        stats
    }

    fn faults(&self) -> SageFaults {
        lock(&self.control).faults.clone()
    }

    fn set_faults(&self, faults: SageFaults) {
        let mut control = lock(&self.control);
        control.outage_until = outage_until(faults.outage_for_ms);
        control.faults = faults;
    }
}

impl Shared {
    pub(crate) fn new(config: SageConfig, url: String) -> std::io::Result<Self> {
        let jwt_key = match &config.jwt_public_key_pem {
            Some(pem) => Some(JwtKey(DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(
                |e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("the JWT public key is not a PEM RSA public key: {e}"),
                    )
                },
            )?)),
            None => None,
        };
        let org = Org {
            seed: config.seed,
            total: config.workers,
            removed: BTreeSet::new(),
            patched: BTreeMap::new(),
            replaced_ids: HashMap::new(),
        };
        let control = Control {
            outage_until: outage_until(config.faults.outage_for_ms),
            faults: config.faults.clone(),
            rng: SplitMix::new(config.seed ^ 0xFA17),
            tokens: HashMap::new(),
            tokens_issued: 0,
            api_usage: 0,
        };
        Ok(Self {
            config,
            url,
            jwt_key,
            org: RwLock::new(org),
            control: Mutex::new(control),
            stats: Mutex::new(SageStats::default()),
            flight: Arc::new(Flight::default()),
        })
    }

    /// Removes a worker; false if there was no such worker. Its record is kept for
    /// [`Shared::restore_worker`].
    pub(crate) fn remove_worker(&self, id: &str) -> bool {
        let mut org = write(&self.org);
        match generate::index_of(id) {
            Some(i) if org.record(i).is_some() => {
                org.removed.insert(i);
                true
            }
            _ => false,
        }
    }

    /// Lists a removed worker again with the record it had when removed (a rehire under the
    /// same id); false if the worker was not removed.
    pub(crate) fn restore_worker(&self, id: &str) -> bool {
        let mut org = write(&self.org);
        generate::index_of(id).is_some_and(|i| org.removed.remove(&i))
    }

    /// Merge-patches a worker; the patched record, or `None` if there is no such worker or the
    /// patch is not an object.
    pub(crate) fn patch_worker(&self, id: &str, patch: &Value) -> Option<Value> {
        if !patch.is_object() {
            return None;
        }
        let index = generate::index_of(id)?;
        let mut org = write(&self.org);
        let mut record = org.record(index)?;
        merge_patch(&mut record, patch);
        // The id is the paging key: a patch must not move the record.
        if let Some(obj) = record.as_object_mut() {
            obj.insert("id".into(), Value::String(generate::worker_id(index)));
        }
        org.patched.insert(index, record.clone());
        Some(record)
    }

    /// Serves `raw` verbatim in place of worker `id`'s record, whatever its shape: another id,
    /// no id, wrong types, not an object. It keeps its place in the listing, and a string `id`
    /// it carries works as a paging marker. False if there is no such worker.
    pub(crate) fn replace_worker(&self, id: &str, raw: Value) -> bool {
        let Some(index) = generate::index_of(id) else {
            return false;
        };
        let mut org = write(&self.org);
        if org.record(index).is_none() {
            return false;
        }
        if let Some(served) = raw.get("id").and_then(Value::as_str) {
            org.replaced_ids.insert(served.to_owned(), index);
        }
        org.patched.insert(index, raw);
        true
    }

    pub(crate) fn worker(&self, id: &str) -> Option<Value> {
        read(&self.org).record(generate::index_of(id)?)
    }

    /// Adds `n` workers; returns the number of indices that exist now.
    pub(crate) fn add_workers(&self, n: u64) -> u64 {
        let mut org = write(&self.org);
        org.total = org.total.saturating_add(n);
        org.total
    }

    pub(crate) fn set_api_usage(&self, used: u64) {
        lock(&self.control).api_usage = used;
    }

    pub(crate) fn revoke_tokens(&self) {
        lock(&self.control).tokens.clear();
    }
}

/// JSON merge-patch (RFC 7386) of `target` by `patch`, except that `null` sets a field to
/// `null` instead of deleting it: the Employees API always serves every field, null or not.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(obj) = target {
        for (key, value) in patch {
            if value.is_null() {
                obj.insert(key.clone(), Value::Null);
            } else {
                merge_patch(obj.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_merges_objects_replaces_the_rest_and_nulls_fields() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "arr": [1, 2]});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null}, "arr": [3], "new": {"x": 1}}),
        );
        assert_eq!(
            doc,
            json!({"a": "z", "c": {"d": "e", "f": null}, "arr": [3], "new": {"x": 1}})
        );
        let mut scalar = json!("s");
        merge_patch(&mut scalar, &json!({"k": 1}));
        assert_eq!(scalar, json!({"k": 1}));
    }

    fn shared(workers: u64) -> Shared {
        let config = SageConfig {
            workers,
            ..SageConfig::default()
        };
        Shared::new(config, "http://127.0.0.1:1".into()).expect("no key to parse")
    }

    #[test]
    fn removed_workers_are_gone_but_stay_valid_markers() {
        let s = shared(10);
        let id = generate::worker_id(3);
        assert!(s.remove_worker(&id));
        assert!(!s.remove_worker(&id));
        let org = read(&s.org);
        assert!(org.record(3).is_none());
        assert!(org.ever_existed(3));
        assert!(!org.ever_existed(10));
    }

    #[test]
    fn a_restored_worker_is_back_with_the_record_it_had() {
        let s = shared(10);
        let id = generate::worker_id(3);
        assert!(!s.restore_worker(&id), "not removed");
        let patched = s.patch_worker(&id, &json!({"emailAddress": "Back@Example.com"}));
        assert!(s.remove_worker(&id));
        assert_eq!(s.worker(&id), None);
        assert!(s.restore_worker(&id));
        assert_eq!(s.worker(&id), patched);
        assert!(!s.restore_worker(&id));
    }

    #[test]
    fn patches_merge_over_the_generated_record_and_keep_the_id() {
        let s = shared(10);
        let id = generate::worker_id(4);
        let patched = s
            .patch_worker(
                &id,
                &json!({"id": "other", "hrDepartment": "Moon Base", "workAddress": null}),
            )
            .expect("worker exists");
        assert_eq!(patched["id"], id.as_str());
        assert_eq!(patched["hrDepartment"], "Moon Base");
        assert!(patched["workAddress"].is_null());
        assert_eq!(s.worker(&id), Some(patched));
        assert!(
            s.patch_worker(&generate::worker_id(99), &json!({}))
                .is_none()
        );
        assert!(s.patch_worker(&id, &json!([1])).is_none());
    }

    #[test]
    fn a_replaced_record_is_served_verbatim_and_its_id_is_a_marker() {
        let s = shared(10);
        let id = generate::worker_id(2);
        assert!(s.replace_worker(&id, json!({"id": "not a salesforce id", "x": [1]})));
        assert_eq!(
            s.worker(&id),
            Some(json!({"id": "not a salesforce id", "x": [1]}))
        );
        let org = read(&s.org);
        assert_eq!(org.index_of_marker("not a salesforce id"), Some(2));
        assert_eq!(org.index_of_marker(&id), Some(2));
        drop(org);
        assert!(s.replace_worker(&generate::worker_id(3), json!("just a string")));
        assert!(!s.replace_worker(&generate::worker_id(99), json!({})));
    }

    #[test]
    fn bad_jwt_key_is_refused_at_start() {
        let config = SageConfig {
            jwt_public_key_pem: Some("not a key".into()),
            ..SageConfig::default()
        };
        assert!(Shared::new(config, String::new()).is_err());
    }
}
