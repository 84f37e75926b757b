//! Readiness: a named set of conditions a service must meet before it should be given work —
//! "connected to NATS", "the loader's consumer is bound". `/readyz` answers 200 only when every
//! registered condition holds, and otherwise names the ones that do not, so a Kubernetes event or
//! a `curl` tells the operator what is missing.
//!
//! A condition is either a flag the service flips (`set`) or a check evaluated at each probe
//! (`set_check`), for state that can change under the service's feet, such as a NATS connection.
//!
//! Notes (`note`) say why a ready service is not making progress on something — an integration
//! paused because Oomnitza refused its configuration, credentials refused — without taking the
//! service out of rotation (its control plane must stay reachable to fix it).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

type Check = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
enum Condition {
    Flag(bool),
    Check(Check),
}

impl Condition {
    fn holds(&self) -> bool {
        match self {
            Condition::Flag(ready) => *ready,
            Condition::Check(check) => check(),
        }
    }
}

/// The readiness conditions of one process. Cheap to clone; every clone sees the same set.
#[derive(Clone, Default)]
pub struct Readiness {
    conditions: Arc<RwLock<BTreeMap<String, Condition>>>,
    notes: Arc<RwLock<BTreeMap<String, String>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("status", &self.status())
            .finish()
    }
}

/// What a probe saw: each condition by name and whether it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessStatus {
    /// Every registered condition and whether it holds, by name.
    pub conditions: BTreeMap<String, bool>,
    /// Notes on work the service cannot make progress with, by subject.
    pub notes: BTreeMap<String, String>,
}

impl ReadinessStatus {
    /// True when every condition holds (and vacuously when none is registered).
    pub fn is_ready(&self) -> bool {
        self.conditions.values().all(|ready| *ready)
    }

    /// The names of the conditions that do not hold, in name order.
    pub fn not_ready(&self) -> Vec<&str> {
        self.conditions
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

impl Readiness {
    /// An empty set: ready until a condition is registered.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Registers condition `name` as not yet met (a no-op if it is already registered), so
    /// `/readyz` reports it as missing from the start instead of saying "ready" too early.
    pub fn register(&self, name: &str) {
        self.write(|conditions| {
            conditions
                .entry(name.to_owned())
                .or_insert(Condition::Flag(false));
        });
    }

    /// Sets condition `name` to `ready` (registering it if needed), replacing any check.
    pub fn set(&self, name: &str, ready: bool) {
        self.write(|conditions| {
            conditions.insert(name.to_owned(), Condition::Flag(ready));
        });
    }

    /// Makes condition `name` a check evaluated at every probe, such as "the NATS connection is
    /// up". The check must be quick and must not block: it runs on the probe's request.
    pub fn set_check(&self, name: &str, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.write(|conditions| {
            conditions.insert(name.to_owned(), Condition::Check(Arc::new(check)));
        });
    }

    /// Evaluates every condition now.
    pub fn status(&self) -> ReadinessStatus {
        // Clone the conditions first so that checks run without the lock held.
        let conditions: Vec<(String, Condition)> = self
            .conditions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, condition)| (name.clone(), condition.clone()))
            .collect();
        ReadinessStatus {
            conditions: conditions
                .into_iter()
                .map(|(name, condition)| (name, condition.holds()))
                .collect(),
            notes: self
                .notes
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Sets the note on `subject` (`Some`: why it cannot make progress) or clears it (`None`).
    /// Notes are shown by `/readyz` and do not change readiness.
    pub fn note(&self, subject: &str, note: Option<String>) {
        let mut notes = self.notes.write().unwrap_or_else(PoisonError::into_inner);
        match note {
            Some(note) => notes.insert(subject.to_owned(), note),
            None => notes.remove(subject),
        };
    }

    /// True when every registered condition holds now.
    pub fn is_ready(&self) -> bool {
        self.status().is_ready()
    }

    fn write(&self, change: impl FnOnce(&mut BTreeMap<String, Condition>)) {
        let mut conditions = self
            .conditions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        change(&mut conditions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn registered_conditions_start_not_ready_and_are_named() {
        let readiness = Readiness::new();
        assert!(readiness.is_ready(), "nothing registered yet");
        readiness.register("nats");
        readiness.register("consumer");
        let status = readiness.status();
        assert!(!status.is_ready());
        assert_eq!(status.not_ready(), vec!["consumer", "nats"]);
    }

    #[test]
    fn ready_once_every_flag_is_set_and_clones_share_the_set() {
        let readiness = Readiness::new();
        readiness.register("nats");
        readiness.register("consumer");
        let service_side = readiness.clone();
        service_side.set("nats", true);
        assert_eq!(readiness.status().not_ready(), vec!["consumer"]);
        service_side.set("consumer", true);
        assert!(readiness.is_ready());
    }

    #[test]
    fn registering_again_does_not_reset_a_met_condition() {
        let readiness = Readiness::new();
        readiness.set("nats", true);
        readiness.register("nats");
        assert!(readiness.is_ready());
    }

    #[test]
    fn checks_are_evaluated_at_every_probe() {
        let connected = Arc::new(AtomicBool::new(true));
        let readiness = Readiness::new();
        let seen = connected.clone();
        readiness.set_check("nats", move || seen.load(Ordering::SeqCst));
        assert!(readiness.is_ready());
        connected.store(false, Ordering::SeqCst);
        assert_eq!(readiness.status().not_ready(), vec!["nats"]);
        connected.store(true, Ordering::SeqCst);
        assert!(readiness.is_ready());
    }
}
