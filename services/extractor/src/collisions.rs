//! Workers that would land on one Oomnitza user. Oomnitza finds the user a bulk record updates
//! by the integration's sync keys (e-mail by default; whether it compares them without regard
//! to case is not published, so they are compared so here), so two
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
//! removal. Only digests of key values are kept (the bus's `sync_keys` store), never the
//! values.
//!
//! Memory: one 8-byte slot per listed worker (40 bits of the key's digest and the worker's
//! position in the listing), sized from the previous run's count: about 10 MB for a million
//! workers. Two keys can share 40 bits by chance (about once in two runs of a million
//! workers), so a match with a worker of an earlier page is confirmed before anything is held:
//! that worker's id is read back from the run's seen list and its record from Sage People, and
//! its keys computed again. A run resumed after a crash starts its table afresh, so a pair split
//! across the resume is found by the next full run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use peoplesync_bus::sync_keys::{SharedKey, SharedKeys};
use peoplesync_bus::{Bus, BusError, DeadLetter, names};
use peoplesync_core::{Integration, RecordInput, Tracking, Worker};
use peoplesync_sage_people::SageClient;
use sha2::{Digest, Sha256};

/// The stage of the dead letters of held workers (and of other workers the extractor could not
/// publish).
pub const STAGE: &str = peoplesync_bus::dlq::STAGE_EXTRACTOR;

/// The digest of one key value of one field.
fn digest(field: &str, value: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(field.as_bytes());
    hasher.update([0]);
    hasher.update(value.as_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(first)
}

/// Positions a slot can hold (24 bits); past that many workers the check stops for the run.
const MAX_POSITIONS: u32 = 1 << 24;

/// An open-addressing table of 8-byte slots, each 40 bits of a key's digest (never all zero)
/// and the position of the first worker listed with it, kept at most 85% full.
#[derive(Debug, Default)]
struct KeyTable {
    slots: Vec<u64>,
    len: usize,
}

impl KeyTable {
    /// A table for about `expected` keys without growing.
    fn with_capacity(expected: usize) -> KeyTable {
        KeyTable {
            slots: vec![0; (expected * 100).div_ceil(85).max(1024)],
            len: 0,
        }
    }

    fn tag(key: u64) -> u64 {
        (key >> 24).max(1)
    }

    /// The slot a tag's probe starts at (from the tag alone, so growing can re-place slots).
    fn start(&self, tag: u64) -> usize {
        ((u128::from(tag << 24) * self.slots.len() as u128) >> 64) as usize
    }

    /// The position stored under `key`'s tag (possibly another key with the same 40 bits), or
    /// stores `position` and returns `None`.
    fn get_or_insert(&mut self, key: u64, position: u32) -> Option<u32> {
        if (self.len + 1) * 100 > self.slots.len() * 85 {
            self.grow();
        }
        let tag = KeyTable::tag(key);
        let mut slot = self.start(tag);
        loop {
            match self.slots[slot] {
                0 => {
                    self.slots[slot] = (tag << 24) | u64::from(position);
                    self.len += 1;
                    return None;
                }
                value if value >> 24 == tag => return Some((value & 0xFF_FFFF) as u32),
                _ => slot = (slot + 1) % self.slots.len(),
            }
        }
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        self.slots = vec![0; (old.len() * 3 / 2).max(1024)];
        self.len = 0;
        for value in old.into_iter().filter(|v| *v != 0) {
            let mut slot = self.start(value >> 24);
            while self.slots[slot] != 0 {
                slot = (slot + 1) % self.slots.len();
            }
            self.slots[slot] = value;
            self.len += 1;
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

/// A worker of this page whose key matched (by 40 bits) a worker of an earlier page: to be
/// confirmed before it is held.
#[derive(Debug, Clone)]
struct Suspect {
    index: usize,
    field: String,
    value: String,
    digest: u64,
    position: u32,
}

/// What the guard makes of one page.
#[derive(Debug, Default)]
pub struct PageVerdict {
    /// Each record's normalised worker (`None` when it cannot be normalised).
    pub workers: Vec<Option<Worker>>,
    /// Records held back, by index in the page.
    pub held: BTreeMap<usize, Hold>,
    suspects: Vec<Suspect>,
}

#[derive(Debug)]
struct Found {
    field: String,
    workers: BTreeSet<String>,
}

/// The entry of shared key `digest` (of `field`) in `found`.
fn found_entry<'a>(found: &'a mut BTreeMap<u64, Found>, digest: u64, field: &str) -> &'a mut Found {
    found.entry(digest).or_insert_with(|| Found {
        field: field.to_owned(),
        workers: BTreeSet::new(),
    })
}

/// One run's sync-key guard.
#[derive(Debug)]
pub struct SyncKeyGuard {
    mapping: Integration,
    tracking: Tracking,
    /// Keys shared in the previous full run.
    known: HashMap<u64, SharedKey>,
    /// Known keys met in this listing.
    met: HashSet<u64>,
    table: KeyTable,
    /// Workers listed so far in this listing (the position of the next one).
    listed: u32,
    /// The first position of every page listed (for finding a worker's id by position).
    page_starts: Vec<(u64, u32)>,
    /// Keys found shared in this run.
    found: BTreeMap<u64, Found>,
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
        let shared = bus.sync_keys().load(integration).await?;
        // Room for the previous run's workers and a fifth more, so the table seldom grows.
        let expected = usize::try_from(shared.listed).unwrap_or(0) / 4 * 5;
        let known = shared
            .shared
            .into_iter()
            .filter_map(|s| Some((u64::from_str_radix(&s.key, 16).ok()?, s)))
            .collect();
        Ok(SyncKeyGuard {
            mapping,
            tracking,
            known,
            met: HashSet::new(),
            table: KeyTable::with_capacity(expected),
            listed: 0,
            page_starts: Vec::new(),
            found: BTreeMap::new(),
        })
    }

    /// Normalises one page (`skip[i]` marks records to leave alone) and decides which
    /// records are held back; matches with earlier pages are only suspected until
    /// [`SyncKeyGuard::confirm`]. `page` is the page's number in the run. Workers who have left
    /// (`has_left`) take no part: they are not in the run's list, and a rehire's new record
    /// shares the e-mail of the old one by design.
    pub fn check_page(
        &mut self,
        page: u64,
        records: &[serde_json::Value],
        skip: &[bool],
        has_left: impl Fn(&Worker) -> bool,
    ) -> PageVerdict {
        self.page_starts.push((page, self.listed));
        let page_start = self.listed;
        let mut verdict = PageVerdict::default();
        // Keys of this page: digest (of field and value, 64 bits) → index in the page.
        let mut on_page: HashMap<u64, usize> = HashMap::new();
        for (index, raw) in records.iter().enumerate() {
            let worker = match skip.get(index) {
                Some(true) => None,
                // A record the run skips (no usable id) is not in its list either.
                _ => Worker::from_raw(raw)
                    .ok()
                    .filter(|w| names::validate_event_id("worker id", &w.id).is_ok()),
            };
            let Some(worker) = worker else {
                verdict.workers.push(None);
                continue;
            };
            if has_left(&worker) {
                verdict.workers.push(Some(worker));
                continue;
            }
            let position = self.listed;
            self.listed = self.listed.saturating_add(1);
            let input = RecordInput {
                raw,
                worker: &worker,
                tracking: &self.tracking,
            };
            let keys = self.mapping.sync_keys(&input).unwrap_or_default();
            for (field, value) in keys {
                let digest = digest(field, &value);
                if let Some(known) = self.known.get(&digest) {
                    self.met.insert(digest);
                    let others = known
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
                    });
                }
                if let Some(&first) = on_page.get(&digest) {
                    // Both on this page: hold both, send neither.
                    let first_id = verdict.workers[first]
                        .as_ref()
                        .map(|w| w.id.clone())
                        .unwrap_or_default();
                    let found = found_entry(&mut self.found, digest, field);
                    found.workers.insert(first_id.clone());
                    found.workers.insert(worker.id.clone());
                    for (at, other) in [(first, worker.id.clone()), (index, first_id)] {
                        verdict.held.entry(at).or_insert(Hold {
                            field: field.to_owned(),
                            others: vec![other],
                            other_sent: false,
                            known: false,
                        });
                    }
                    continue;
                }
                let earlier = if position < MAX_POSITIONS {
                    self.table.get_or_insert(digest, position)
                } else {
                    None
                };
                match earlier {
                    Some(first) if first < page_start => verdict.suspects.push(Suspect {
                        index,
                        field: field.to_owned(),
                        value,
                        digest,
                        position: first,
                    }),
                    // 40 bits alike but not the same key on this page: no conflict.
                    _ => {}
                }
                on_page.insert(digest, index);
            }
            verdict.workers.push(Some(worker));
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

    /// Whether the page has workers matching one of an earlier page, to confirm (the earlier
    /// worker's id is read back from the run's seen list: publish everything before that).
    pub fn has_suspects(verdict: &PageVerdict) -> bool {
        !verdict.suspects.is_empty()
    }

    /// Confirms each suspected match: reads the earlier worker's id from the seen list and its
    /// record from Sage People, and holds the worker only if the earlier one really has the same
    /// key. When either cannot be read, the worker is held (better than a merged user) and the
    /// letter says the other worker is unknown.
    pub async fn confirm(
        &mut self,
        bus: &Bus,
        client: &SageClient,
        integration: &str,
        run_id: &str,
        verdict: &mut PageVerdict,
    ) {
        for suspect in std::mem::take(&mut verdict.suspects) {
            let earlier = match self.locate(suspect.position) {
                Some((page, offset)) => {
                    match bus.seen().read_chunk(integration, run_id, page).await {
                        Ok(ids) => ids.get(offset).cloned(),
                        Err(err) => {
                            tracing::warn!(integration, run_id, page, error = %err,
                                "cannot read back the seen list to confirm a shared sync key");
                            None
                        }
                    }
                }
                None => None,
            };
            let confirmed = match &earlier {
                Some(id) => match client.get_employee(id).await {
                    Ok(Some(raw)) => Worker::from_raw(&raw).ok().is_some_and(|worker| {
                        let input = RecordInput {
                            raw: &raw,
                            worker: &worker,
                            tracking: &self.tracking,
                        };
                        self.mapping
                            .sync_keys(&input)
                            .unwrap_or_default()
                            .iter()
                            .any(|(f, v)| *f == suspect.field && *v == suspect.value)
                    }),
                    // Gone from Sage People since it was listed: nothing to share with.
                    Ok(None) => false,
                    Err(err) => {
                        tracing::warn!(integration, run_id, worker = %id, error = %err,
                            "cannot read a worker back to confirm a shared sync key; holding the later one");
                        true
                    }
                },
                None => true,
            };
            if !confirmed {
                continue;
            }
            let this = verdict.workers[suspect.index]
                .as_ref()
                .map(|w| w.id.clone())
                .unwrap_or_default();
            let found = found_entry(&mut self.found, suspect.digest, &suspect.field);
            found.workers.insert(this);
            found.workers.extend(earlier.clone());
            verdict.held.entry(suspect.index).or_insert(Hold {
                field: suspect.field,
                others: earlier.into_iter().collect(),
                other_sent: true,
                known: false,
            });
        }
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
            .map(|(key, found)| SharedKey {
                key: format!("{key:016x}"),
                field: found.field.clone(),
                workers: found.workers.iter().cloned().collect(),
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
            listed: u64::from(self.listed),
            shared,
        };
        bus.sync_keys().save(integration, &shared).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_finds_the_first_position_of_each_key_through_growth() {
        let mut table = KeyTable::default();
        let keys: Vec<u64> = (1..=100_000u64)
            .map(|i| digest("EMAIL", &format!("w{i}@x.io")))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(table.get_or_insert(*key, i as u32), None);
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(table.get_or_insert(*key, 0), Some(i as u32));
        }
        assert_eq!(table.len, 100_000);
        assert!(table.slots.len() * 85 >= table.len * 100);
    }

    #[test]
    fn a_table_sized_up_front_does_not_grow() {
        let mut table = KeyTable::with_capacity(10_000);
        let size = table.slots.len();
        for i in 0..10_000u64 {
            table.get_or_insert(digest("EMAIL", &i.to_string()), i as u32);
        }
        assert_eq!(table.slots.len(), size);
    }

    #[test]
    fn digests_differ_by_field_and_value() {
        assert_ne!(digest("EMAIL", "a@x.io"), digest("USER", "a@x.io"));
        assert_ne!(digest("EMAIL", "a@x.io"), digest("EMAIL", "b@x.io"));
    }
}
