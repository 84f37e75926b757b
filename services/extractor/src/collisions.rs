//! Workers that would land on one Oomnitza user. Oomnitza finds the user a bulk record updates
//! by the integration's sync keys (e-mail by default, compared without regard to case), so two
//! Sage People workers with the same key would be merged into one user, the last one sent
//! winning on every run. A full run therefore computes each listed worker's sync keys (the
//! mapping's filter and sync key fields only) and holds back workers that share one:
//!
//! - two workers sharing a key on the same page: neither is published;
//! - a worker sharing a key with one listed on an earlier page: it is not published (the earlier
//!   one already was), and the key is remembered;
//! - a worker whose key was shared in the previous full run: not published, whatever the order,
//!   until a run finds the key used by one worker only (that worker is sent by the run after).
//!
//! Each held worker is counted as skipped and gets a dead letter (stage `extractor`) naming the
//! key field and the other worker(s); it stays in the run's seen list, so it is not taken for a
//! removal. Only digests of key values are kept (KV `peoplesync_state`, key
//! `synckeys.<integration>`), never the values. Memory: about 17 bytes per listed worker (a
//! million workers: ~17 MB); a run resumed after a crash starts its table afresh, so a pair
//! split across the resume is found by the next full run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use peoplesync_bus::{Bus, BusError, DeadLetter, names};
use peoplesync_core::{Integration, RecordInput, Tracking, Worker};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The stage of the dead letters of held workers (and of other workers the extractor could not
/// publish).
pub const STAGE: &str = peoplesync_bus::dlq::STAGE_EXTRACTOR;

fn kv_key(integration: &str) -> String {
    format!("synckeys.{integration}")
}

/// The digest of one key value of one field.
fn digest(field: &str, value: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(field.as_bytes());
    hasher.update([0]);
    hasher.update(value.as_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    // 0 marks an empty slot of the table.
    u64::from_le_bytes(first).max(1)
}

/// What the state bucket keeps between runs: the keys shared in the last full run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SharedKeys {
    /// The run that found them.
    pub run_id: String,
    /// Each shared key.
    pub shared: Vec<SharedKey>,
}

/// One key value several workers had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedKey {
    /// Hex digest of the field and value.
    pub key: String,
    /// The Oomnitza field.
    pub field: String,
    /// The workers that had it, in listing order.
    pub workers: Vec<String>,
}

/// An open-addressing table from key digest to the position of the first worker listed with
/// it: 12 bytes a slot, kept between 57% and 85% full (a standard hash map of the same content
/// takes about twice that).
#[derive(Debug, Default)]
struct KeyTable {
    keys: Vec<u64>,
    positions: Vec<u32>,
    len: usize,
}

impl KeyTable {
    fn slot(&self, key: u64) -> usize {
        let capacity = self.keys.len() as u128;
        ((u128::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u64 as u128 * capacity) >> 64)
            as usize
    }

    fn find(&self, key: u64) -> Result<u32, usize> {
        let mut slot = self.slot(key);
        loop {
            match self.keys[slot] {
                0 => return Err(slot),
                k if k == key => return Ok(self.positions[slot]),
                _ => slot = (slot + 1) % self.keys.len(),
            }
        }
    }

    /// The position stored for `key`, or stores `position` and returns `None`.
    fn get_or_insert(&mut self, key: u64, position: u32) -> Option<u32> {
        if (self.len + 1) * 100 > self.keys.len() * 85 {
            self.grow();
        }
        match self.find(key) {
            Ok(found) => Some(found),
            Err(slot) => {
                self.keys[slot] = key;
                self.positions[slot] = position;
                self.len += 1;
                None
            }
        }
    }

    fn grow(&mut self) {
        let capacity = (self.keys.len() * 3 / 2).max(1024);
        let old = std::mem::replace(
            self,
            KeyTable {
                keys: vec![0; capacity],
                positions: vec![0; capacity],
                len: 0,
            },
        );
        for (key, position) in old.keys.into_iter().zip(old.positions) {
            if key != 0
                && let Err(slot) = self.find(key)
            {
                self.keys[slot] = key;
                self.positions[slot] = position;
                self.len += 1;
            }
        }
    }
}

/// Why a worker is held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The sync key field.
    pub field: String,
    /// The other workers with the same value, when known.
    pub others: Vec<String>,
    /// Whether one of them was published in this run before the conflict was seen.
    pub other_sent: bool,
    /// Whether the key was shared in the previous full run.
    pub known: bool,
    /// The key's digest, and the position of the worker listed first with it when that one is
    /// on an earlier page and still to be named.
    first: Option<(u64, u32)>,
}

impl Hold {
    /// The dead letter of worker `worker`.
    pub fn letter(&self, integration: &str, run_id: &str, worker: &str) -> DeadLetter {
        let others = if self.others.is_empty() {
            "another worker".to_owned()
        } else {
            format!("worker {}", self.others.join(", worker "))
        };
        let how = if self.known {
            "in the last full run as well; neither is sent until one of them changes"
        } else if self.other_sent {
            "listed earlier in this run and already sent; this one was not sent, and from the next run neither is"
        } else {
            "in this run; neither was sent"
        };
        DeadLetter {
            integration: integration.to_owned(),
            run_id: run_id.to_owned(),
            worker_id: worker.to_owned(),
            reason: format!(
                "sync key {field} shared with {others} ({how}): Oomnitza would merge them into one \
                 user. Give each worker its own {field} value in Sage People (or change sync_keys); \
                 the next run after that sends them. Nothing to replay",
                field = self.field
            ),
            stage: STAGE.into(),
            attempts: 1,
            original_subject: names::workers_subject(integration),
            ..DeadLetter::default()
        }
    }
}

/// One run's sync-key guard.
#[derive(Debug)]
pub struct SyncKeyGuard {
    mapping: Integration,
    tracking: Tracking,
    known: HashMap<u64, SharedKey>,
    /// Known keys met in this listing.
    met: std::collections::HashSet<u64>,
    table: KeyTable,
    /// Workers listed so far in this listing (the position of the next one).
    listed: u32,
    /// The first position of every page listed (for finding a worker's id by position).
    page_starts: Vec<(u64, u32)>,
    /// Keys shared in this run: digest → field and workers (positions resolved at the end).
    found: BTreeMap<u64, Found>,
}

#[derive(Debug)]
struct Found {
    field: String,
    first_id: Option<String>,
    later: Vec<String>,
}

/// What the guard makes of one page.
#[derive(Debug, Default)]
pub struct PageVerdict {
    /// Each record's normalised worker (`None` when it cannot be normalised).
    pub workers: Vec<Option<Worker>>,
    /// Records held back, by index in the page.
    pub held: BTreeMap<usize, Hold>,
}

impl SyncKeyGuard {
    /// The guard of a run of `integration` mapped by `mapping`, with the keys shared in the
    /// previous full run.
    pub async fn load(
        bus: &Bus,
        integration: &str,
        mapping: Integration,
        tracking: Tracking,
    ) -> Result<SyncKeyGuard, BusError> {
        let key = kv_key(integration);
        let stored = bus
            .state_kv()
            .get(&key)
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "read", &key, e))?;
        let shared: SharedKeys = stored
            .and_then(|value| serde_json::from_slice(&value).ok())
            .unwrap_or_default();
        let known = shared
            .shared
            .into_iter()
            .filter_map(|s| Some((u64::from_str_radix(&s.key, 16).ok()?, s)))
            .collect();
        Ok(SyncKeyGuard {
            mapping,
            tracking,
            known,
            met: Default::default(),
            table: KeyTable::default(),
            listed: 0,
            page_starts: Vec::new(),
            found: BTreeMap::new(),
        })
    }

    /// Normalises one page (`skip[i]` marks records to leave alone) and decides which
    /// records are held back. `page` is the page's number in the run.
    pub fn check_page(
        &mut self,
        page: u64,
        records: &[serde_json::Value],
        skip: &[bool],
    ) -> PageVerdict {
        self.page_starts.push((page, self.listed));
        let mut verdict = PageVerdict::default();
        // Keys first seen on this page: digest → index in the page.
        let mut on_page: HashMap<u64, usize> = HashMap::new();
        for (index, raw) in records.iter().enumerate() {
            let worker = match skip.get(index) {
                Some(true) => None,
                _ => Worker::from_raw(raw).ok(),
            };
            if let Some(worker) = &worker {
                let position = self.listed;
                self.listed += 1;
                let input = RecordInput {
                    raw,
                    worker,
                    tracking: &self.tracking,
                };
                for (field, value) in self.mapping.sync_keys(&input).unwrap_or_default() {
                    let key = digest(field, &value);
                    if let Some(known) = self.known.get(&key) {
                        self.met.insert(key);
                        let others: Vec<String> = known
                            .workers
                            .iter()
                            .filter(|w| **w != worker.id)
                            .cloned()
                            .collect();
                        verdict.held.entry(index).or_insert(Hold {
                            field: field.to_owned(),
                            others,
                            other_sent: false,
                            known: true,
                            first: None,
                        });
                    }
                    match self.table.get_or_insert(key, position) {
                        None => {
                            on_page.insert(key, index);
                        }
                        Some(first) => {
                            let found = self.found.entry(key).or_insert_with(|| Found {
                                field: field.to_owned(),
                                first_id: None,
                                later: Vec::new(),
                            });
                            found.later.push(worker.id.clone());
                            match on_page.get(&key) {
                                Some(&first_index) => {
                                    // Both on this page: hold the first one too.
                                    let first_id = verdict.workers[first_index]
                                        .as_ref()
                                        .map(|w| w.id.clone())
                                        .unwrap_or_default();
                                    found.first_id = Some(first_id.clone());
                                    verdict.held.entry(first_index).or_insert(Hold {
                                        field: field.to_owned(),
                                        others: vec![worker.id.clone()],
                                        other_sent: false,
                                        known: false,
                                        first: None,
                                    });
                                    verdict.held.entry(index).or_insert(Hold {
                                        field: field.to_owned(),
                                        others: vec![first_id],
                                        other_sent: false,
                                        known: false,
                                        first: None,
                                    });
                                }
                                None => {
                                    let hold = verdict.held.entry(index).or_insert(Hold {
                                        field: field.to_owned(),
                                        others: Vec::new(),
                                        other_sent: true,
                                        known: false,
                                        first: None,
                                    });
                                    if hold.others.is_empty() {
                                        match &found.first_id {
                                            Some(id) => hold.others.push(id.clone()),
                                            None => hold.first = Some((key, first)),
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            verdict.workers.push(worker);
        }
        verdict
    }

    /// The page and offset in it of the worker listed at `position`.
    fn locate(&self, position: u32) -> Option<(u64, usize)> {
        let index = self
            .page_starts
            .partition_point(|(_, start)| *start <= position)
            .checked_sub(1)?;
        let (page, start) = self.page_starts[index];
        Some((page, (position - start) as usize))
    }

    /// Whether some held worker shares its key with a worker of an earlier page not yet named
    /// (its id is read back from the run's seen list: publish everything before that).
    pub fn needs_names(verdict: &PageVerdict) -> bool {
        verdict.held.values().any(|hold| hold.first.is_some())
    }

    /// Names the workers of earlier pages that held workers share a key with, from the run's
    /// seen list; one that cannot be read stays "another worker".
    pub async fn name_earlier(
        &mut self,
        bus: &Bus,
        integration: &str,
        run_id: &str,
        verdict: &mut PageVerdict,
    ) {
        for hold in verdict.held.values_mut() {
            let Some((key, position)) = hold.first.take() else {
                continue;
            };
            let Some((page, offset)) = self.locate(position) else {
                continue;
            };
            match crate::seen::read_chunk(bus.jetstream(), integration, run_id, page).await {
                Ok(ids) => {
                    if let Some(id) = ids.get(offset) {
                        hold.others.push(id.clone());
                        if let Some(found) = self.found.get_mut(&key) {
                            found.first_id = Some(id.clone());
                        }
                    }
                }
                Err(err) => tracing::warn!(integration, run_id, page, error = %err,
                    "cannot read back the seen list to name a worker sharing a sync key"),
            }
        }
    }

    /// Keys found shared in this run so far.
    pub fn shared_count(&self) -> usize {
        self.found.len()
    }

    /// Stores the keys shared in this run for the next one (an empty list clears it). A
    /// `resumed` run listed only part of the org since it was taken up: keys of the previous
    /// run it did not meet are kept, as they may belong to the part listed before.
    pub async fn save(
        &self,
        bus: &Bus,
        integration: &str,
        run_id: &str,
        resumed: bool,
    ) -> Result<(), BusError> {
        let mut shared: Vec<SharedKey> = self
            .found
            .iter()
            .map(|(key, found)| {
                let mut workers: BTreeSet<String> = found.later.iter().cloned().collect();
                workers.extend(found.first_id.clone());
                SharedKey {
                    key: format!("{key:016x}"),
                    field: found.field.clone(),
                    workers: workers.into_iter().collect(),
                }
            })
            .collect();
        if resumed {
            shared.extend(
                self.known
                    .iter()
                    .filter(|(key, _)| !self.met.contains(key) && !self.found.contains_key(key))
                    .map(|(_, known)| known.clone()),
            );
        }
        if !shared.is_empty() {
            tracing::warn!(
                integration,
                run_id,
                keys = shared.len(),
                "workers share sync keys; they are held back until each has its own (dead letters, stage extractor)"
            );
        }
        let shared = SharedKeys {
            run_id: run_id.to_owned(),
            shared,
        };
        let key = kv_key(integration);
        let value = serde_json::to_vec(&shared)
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "encode", &key, e))?;
        bus.state_kv()
            .put(&key, Bytes::from(value))
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "write", &key, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_the_first_position_of_each_key_through_growth() {
        let mut table = KeyTable::default();
        for i in 1..=100_000u64 {
            assert_eq!(table.get_or_insert(i * 7919, i as u32), None);
        }
        for i in 1..=100_000u64 {
            assert_eq!(table.get_or_insert(i * 7919, 0), Some(i as u32));
        }
        assert_eq!(table.len, 100_000);
        assert!(table.keys.len() * 85 >= table.len * 100);
    }

    #[test]
    fn digests_differ_by_field_and_value_and_never_mark_an_empty_slot() {
        assert_ne!(digest("EMAIL", "a@x.io"), digest("USER", "a@x.io"));
        assert_ne!(digest("EMAIL", "a@x.io"), digest("EMAIL", "b@x.io"));
        assert_ne!(digest("EMAIL", ""), 0);
    }
}
