//! The state of one Oomnitza simulator: the store (users, portions, the queue of accepted
//! records) behind one lock, faults, behaviour and issued sessions behind another, the request
//! counters, and the signals between bulk posts and the processing worker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};
use tokio::time::{Duration, Instant};

use super::store::Store;
use super::validate::{self, Rule};
use super::{
    InvalidRule, OomnitzaBehavior, OomnitzaConfig, OomnitzaFaults, OomnitzaStats, PortionState,
};
use crate::admin::Controlled;
use crate::faults::outage_until;
use crate::rng::SplitMix;
use crate::sync::{Flight, lock};

/// Everything a request handler needs, shared behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: OomnitzaConfig,
    pub(crate) store: Mutex<Store>,
    pub(crate) control: Mutex<Control>,
    pub(crate) requests: Mutex<RequestCounters>,
    pub(crate) flight: Arc<Flight>,
    /// Wakes the processing worker when a batch is queued.
    pub(crate) wake: Notify,
    /// Records accepted and not processed yet, published after every change for waiters.
    pub(crate) pending: watch::Sender<u64>,
}

/// Faults, behaviour and sessions: what the API gate and the worker consult.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) faults: OomnitzaFaults,
    pub(crate) outage_until: Option<Instant>,
    /// When an outage of the bulk endpoint alone ends.
    pub(crate) bulk_outage_until: Option<Instant>,
    /// When an outage of the users endpoints alone ends.
    pub(crate) users_outage_until: Option<Instant>,
    pub(crate) rng: SplitMix,
    /// Admission times within the last second, for the rate limit.
    pub(crate) recent: VecDeque<Instant>,
    /// Password-session token → the `X-CSRF-Token` issued with it.
    pub(crate) sessions: HashMap<String, String>,
    /// The `X-CSRF-Token` the credential check gave the API token
    /// ([`super::OomnitzaBehavior::csrf_for_api_token`]).
    pub(crate) api_token_csrf: Option<String>,
    pub(crate) bulk_response: Option<Value>,
    pub(crate) behavior: OomnitzaBehavior,
    /// `behavior.validation_rules`, compiled.
    pub(crate) rules: Arc<Vec<Rule>>,
}

/// Counters of the request gate and of user reads.
#[derive(Debug, Default)]
pub(crate) struct RequestCounters {
    pub(crate) api_requests: u64,
    pub(crate) status_counts: BTreeMap<u16, u64>,
    pub(crate) requests_429: u64,
    pub(crate) csrf_echoed: u64,
    pub(crate) csrf_missing: u64,
    pub(crate) user_reads: u64,
    pub(crate) users_returned: u64,
}

impl Control {
    /// True while an outage set by the faults lasts for a request to `path`.
    pub(crate) fn in_outage(&self, path: &str) -> bool {
        let now = Instant::now();
        let lasts = |until: Option<Instant>| until.is_some_and(|until| now < until);
        lasts(self.outage_until)
            || (path.starts_with("/api/v3/bulk") && lasts(self.bulk_outage_until))
            || (path.starts_with("/api/v3/users") && lasts(self.users_outage_until))
    }

    /// Admits one request under the rate limit, or says it must wait.
    pub(crate) fn admit_rate(&mut self) -> bool {
        let Some(limit) = self.faults.rate_limit_per_sec else {
            return true;
        };
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= limit as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

impl Controlled for Shared {
    type Stats = OomnitzaStats;
    type Faults = OomnitzaFaults;
    const FAULTS: &'static str = "OomnitzaFaults";

    fn stats(&self) -> OomnitzaStats {
        let store = lock(&self.store);
        let c = &store.counters;
        let requests = lock(&self.requests);
        OomnitzaStats {
            api_requests: requests.api_requests,
            bulk_requests: c.bulk_requests,
            bulk_records: c.bulk_records,
            first_bulk_at_ms: c.first_bulk_at_ms,
            last_bulk_at_ms: c.last_bulk_at_ms,
            records_processing: store.queue.len(),
            records_canceled: c.canceled,
            test_run_records: c.test_run_records,
            user_reads: requests.user_reads,
            users_returned: requests.users_returned,
            csrf_echoed: requests.csrf_echoed,
            csrf_missing: requests.csrf_missing,
            records_created: c.created,
            records_updated: c.updated,
            records_unchanged: c.unchanged,
            records_skipped: c.skipped,
            records_failed: c.failed,
            status_counts: requests.status_counts.clone(),
            finalize_calls: c.finalize_calls.clone(),
            requests_429: requests.requests_429,
            max_in_flight: self.flight.max(),
            user_writes: store
                .user_writes()
                .map(|(id, n)| (id.to_owned(), n))
                .collect(),
            max_writes_per_user: store.user_writes().map(|(_, n)| n).max().unwrap_or(0),
        }
    }

    fn faults(&self) -> OomnitzaFaults {
        lock(&self.control).faults.clone()
    }

    fn set_faults(&self, faults: OomnitzaFaults) {
        let mut control = lock(&self.control);
        control.outage_until = outage_until(faults.outage_for_ms);
        control.bulk_outage_until = outage_until(faults.bulk_outage_for_ms);
        control.users_outage_until = outage_until(faults.users_outage_for_ms);
        control.recent.clear();
        control.faults = faults;
        drop(control);
        // A worker paused by the old faults looks again.
        self.wake.notify_one();
    }
}

impl Shared {
    pub(crate) fn new(config: OomnitzaConfig) -> Result<Self, InvalidRule> {
        let rules = validate::compile(&config.behavior.validation_rules).map_err(InvalidRule)?;
        let mut unique = vec!["USER".to_string()];
        unique.extend(
            config
                .custom_fields
                .iter()
                .filter(|f| f.unique)
                .map(|f| f.id.clone()),
        );
        let control = Control {
            outage_until: outage_until(config.faults.outage_for_ms),
            bulk_outage_until: outage_until(config.faults.bulk_outage_for_ms),
            users_outage_until: outage_until(config.faults.users_outage_for_ms),
            faults: config.faults.clone(),
            rng: SplitMix::new(0x0047_11A7),
            recent: VecDeque::new(),
            sessions: HashMap::new(),
            api_token_csrf: None,
            bulk_response: None,
            behavior: config.behavior.clone(),
            rules: Arc::new(rules),
        };
        Ok(Self {
            config,
            store: Mutex::new(Store::new(unique)),
            control: Mutex::new(control),
            requests: Mutex::new(RequestCounters::default()),
            flight: Arc::new(Flight::default()),
            wake: Notify::new(),
            pending: watch::Sender::new(0),
        })
    }

    /// Publishes how many records wait in `store`'s queue; call with the store locked, after
    /// changing the queue.
    pub(crate) fn publish_pending(&self, store: &Store) {
        self.pending.send_replace(store.queue.len());
    }

    /// Waits until nothing is processing, in portion `id` or (`None`) anywhere.
    pub(crate) async fn wait_idle(&self, id: Option<&str>) {
        let mut changes = self.pending.subscribe();
        loop {
            // Marked seen before looking, so a change made after the look wakes the wait.
            changes.borrow_and_update();
            let idle = {
                let store = lock(&self.store);
                match id {
                    None => store.queue.len() == 0,
                    Some(id) => store.portions.get(id).is_none_or(|p| p.processing == 0),
                }
            };
            if idle || changes.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn behavior(&self) -> OomnitzaBehavior {
        lock(&self.control).behavior.clone()
    }

    /// What processing a record takes from the current behaviour: the compiled validation
    /// rules, and whether usernames and e-mails are stored in lower case.
    pub(crate) fn processing(&self) -> (Arc<Vec<Rule>>, bool) {
        let control = lock(&self.control);
        (
            Arc::clone(&control.rules),
            control.behavior.lower_case_identities,
        )
    }

    pub(crate) fn set_behavior(&self, behavior: OomnitzaBehavior) -> Result<(), InvalidRule> {
        let rules = validate::compile(&behavior.validation_rules).map_err(InvalidRule)?;
        let mut control = lock(&self.control);
        control.rules = Arc::new(rules);
        control.behavior = behavior;
        Ok(())
    }

    pub(crate) fn users(&self) -> Vec<Map<String, Value>> {
        lock(&self.store).users()
    }

    pub(crate) fn saas_users(&self) -> Vec<Value> {
        lock(&self.store).saas_users()
    }

    pub(crate) fn portion(&self, id: &str) -> Option<PortionState> {
        lock(&self.store).portions.get(id).cloned()
    }

    pub(crate) fn cancel_portion(&self, id: &str) -> PortionState {
        let mut store = lock(&self.store);
        let portion = store.cancel(id);
        self.publish_pending(&store);
        portion
    }

    pub(crate) fn revoke_sessions(&self) {
        lock(&self.control).sessions.clear();
    }

    pub(crate) fn insert_user(&self, fields: Map<String, Value>) -> String {
        lock(&self.store).insert_user(fields)
    }

    pub(crate) fn set_bulk_response(&self, body: Option<Value>) {
        lock(&self.control).bulk_response = body;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_admits_that_many_per_second() {
        let faults = OomnitzaFaults {
            rate_limit_per_sec: Some(3),
            ..OomnitzaFaults::default()
        };
        let shared = Shared::new(OomnitzaConfig {
            faults,
            ..OomnitzaConfig::default()
        })
        .expect("no rules");
        let mut control = lock(&shared.control);
        let admitted = (0..10).filter(|_| control.admit_rate()).count();
        assert_eq!(admitted, 3);
    }
}
