//! Noticing an administrator's cancel of a portion in Oomnitza. Nothing tells a client but
//! `GET /api/v3/bulk/{portion}`, and posts to a canceled portion are still answered `200`, so
//! each replica reads the portion's state before a batch when what it knows is older than
//! [`CHECK_EVERY`] or more than [`CHECK_AFTER_RECORDS`] records were posted since the last read
//! was issued — never once per record. Reads run beside the posts and do not hold them up,
//! except that a replica never has more than [`MAX_UNCHECKED_RECORDS`] records posted past the
//! last read that found the portion open: so after a cancel it posts fewer than that many
//! records to the portion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// A portion's state is read again when what the replica knows is older than this.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// A portion's state is read again after this many records were posted since the last read.
pub const CHECK_AFTER_RECORDS: u64 = 300;
/// At most this many records are posted past the last read that found the portion open; more
/// wait for the read in flight. Bounds what one replica posts after a cancel.
pub const MAX_UNCHECKED_RECORDS: u64 = 800;
/// Portions not posted to for this long are forgotten.
const IDLE: Duration = Duration::from_secs(600);

/// What a replica knows of one portion.
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// When the last read was issued.
    checked: Instant,
    canceled: bool,
    /// Records this replica admitted for posting to the portion.
    posted: u64,
    /// `posted` when the last read was issued.
    issued_at: u64,
    /// `posted` when the last read that found the portion open was issued.
    confirmed: u64,
    /// A read is in flight.
    reading: bool,
    /// A read was issued at least once.
    ever_read: bool,
    /// The cancel was reported by [`Step::Canceled`] with `first: true` already.
    noticed: bool,
}

impl Watch {
    fn new(now: Instant) -> Watch {
        Watch {
            checked: now,
            canceled: false,
            posted: 0,
            issued_at: 0,
            confirmed: 0,
            reading: false,
            ever_read: false,
            noticed: false,
        }
    }
}

/// What a batch about to be posted must do.
#[derive(Debug)]
pub enum Step {
    /// Post it.
    Post,
    /// The portion was canceled: do not post. `first` is true for the first batch told so.
    Canceled {
        /// This replica learns of the cancel now.
        first: bool,
    },
    /// Start a read of the portion's state (it runs beside the posts), then ask again; pass
    /// `issued` to [`PortionWatches::read_done`] when it ends.
    Read {
        /// The count of records admitted when the read was issued.
        issued: u64,
    },
    /// Wait for the read in flight, then ask again.
    Wait(watch::Receiver<u64>),
}

/// The cancel state of every portion a replica posts to.
#[derive(Debug)]
pub struct PortionWatches {
    portions: Mutex<HashMap<String, Watch>>,
    reads: watch::Sender<u64>,
}

impl Default for PortionWatches {
    fn default() -> Self {
        PortionWatches {
            portions: Mutex::default(),
            reads: watch::channel(0).0,
        }
    }
}

impl PortionWatches {
    /// What a batch of `records` for `portion` must do at `now`.
    pub fn step(&self, portion: &str, records: u64, now: Instant) -> Step {
        self.next_step(portion, records, now, false)
    }

    /// [`PortionWatches::step`] for actions that cannot be taken back (a leaver's delete or
    /// update): they wait for a read in flight instead of going ahead beside it, so they never
    /// follow a cancel that a read already under way would have shown.
    pub fn step_irreversible(&self, portion: &str, records: u64, now: Instant) -> Step {
        self.next_step(portion, records, now, true)
    }

    fn next_step(&self, portion: &str, records: u64, now: Instant, irreversible: bool) -> Step {
        let Ok(mut portions) = self.portions.lock() else {
            return Step::Post;
        };
        if portions.len() > 64 {
            portions.retain(|_, w| now.duration_since(w.checked) < IDLE);
        }
        let watch = portions
            .entry(portion.to_owned())
            .or_insert_with(|| Watch::new(now));
        if watch.canceled {
            return Step::Canceled {
                first: !std::mem::replace(&mut watch.noticed, true),
            };
        }
        let due = !watch.reading
            && (!watch.ever_read
                || now.duration_since(watch.checked) >= CHECK_EVERY
                || watch.posted - watch.issued_at >= CHECK_AFTER_RECORDS);
        if due {
            watch.reading = true;
            watch.ever_read = true;
            watch.checked = now;
            watch.issued_at = watch.posted;
            return Step::Read {
                issued: watch.posted,
            };
        }
        let unchecked = watch.posted - watch.confirmed;
        if watch.reading
            && (irreversible || (unchecked > 0 && unchecked + records > MAX_UNCHECKED_RECORDS))
        {
            return Step::Wait(self.reads.subscribe());
        }
        watch.posted += records;
        Step::Post
    }

    /// Records the end of the read issued at `issued`: `Some(canceled)` as read, `None` when
    /// it failed (posting goes on with what was known).
    pub fn read_done(&self, portion: &str, issued: u64, canceled: Option<bool>) {
        if let Ok(mut portions) = self.portions.lock()
            && let Some(watch) = portions.get_mut(portion)
        {
            watch.reading = false;
            match canceled {
                Some(true) => watch.canceled = true,
                Some(false) => watch.confirmed = watch.confirmed.max(issued),
                // Unreadable: do not hold posting up on a read that cannot be made.
                None => watch.confirmed = watch.posted,
            }
        }
        self.reads.send_modify(|n| *n += 1);
    }

    /// A guard for the read of `portion` issued at `issued`: [`ReadReport::done`] records its
    /// answer; dropped without one (the reading task panicked or was aborted), it records the
    /// read as failed, so the batches waiting for it go on instead of waiting for ever.
    pub fn report_read(self: &Arc<Self>, portion: &str, issued: u64) -> ReadReport {
        ReadReport {
            portions: Arc::clone(self),
            portion: portion.to_owned(),
            issued,
            answer: None,
        }
    }

    /// Whether `portion` is known to be canceled.
    pub fn is_canceled(&self, portion: &str) -> bool {
        self.portions
            .lock()
            .is_ok_and(|p| p.get(portion).is_some_and(|w| w.canceled))
    }

    /// Marks `portion` canceled (learned another way); true the first time.
    pub fn mark_canceled(&self, portion: &str, now: Instant) -> bool {
        let first = self.portions.lock().is_ok_and(|mut portions| {
            let watch = portions
                .entry(portion.to_owned())
                .or_insert_with(|| Watch::new(now));
            watch.canceled = true;
            !std::mem::replace(&mut watch.noticed, true)
        });
        self.reads.send_modify(|n| *n += 1);
        first
    }
}

/// The pending report of one portion read (see [`PortionWatches::report_read`]).
#[derive(Debug)]
pub struct ReadReport {
    portions: Arc<PortionWatches>,
    portion: String,
    issued: u64,
    /// What the read found; `None` (failed) unless [`ReadReport::done`] says otherwise.
    answer: Option<bool>,
}

impl ReadReport {
    /// Records the read's answer: `Some(canceled)` as read, `None` when it failed.
    pub fn done(mut self, canceled: Option<bool>) {
        self.answer = canceled;
    }
}

impl Drop for ReadReport {
    /// The report is made here, once, whether `done` was called or the task died.
    fn drop(&mut self) {
        self.portions
            .read_done(&self.portion, self.issued, self.answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(step: Step) -> u64 {
        match step {
            Step::Read { issued } => issued,
            other => panic!("expected a read, got {other:?}"),
        }
    }

    /// A portion read once (the read answering `canceled`), then 300 records posted past it.
    fn read_then_300_posted(canceled: Option<bool>) -> (PortionWatches, Instant) {
        let watches = PortionWatches::default();
        let t0 = Instant::now();
        let issued = read(watches.step("p", 100, t0));
        watches.read_done("p", issued, canceled);
        for _ in 0..3 {
            assert!(matches!(watches.step("p", 100, t0), Step::Post));
        }
        (watches, t0)
    }

    #[test]
    fn a_portion_is_read_first_then_every_few_hundred_records_or_seconds() {
        let (watches, t0) = read_then_300_posted(Some(false));
        let issued = read(watches.step("p", 100, t0));
        assert_eq!(issued, 300, "after 300 records");
        watches.read_done("p", issued, Some(false));
        assert!(matches!(watches.step("p", 100, t0), Step::Post));
        let later = t0 + CHECK_EVERY;
        read(watches.step("p", 100, later));
    }

    #[test]
    fn posting_waits_for_the_read_rather_than_run_far_past_it() {
        let (watches, t0) = read_then_300_posted(Some(false));
        let slow = read(watches.step("p", 100, t0));
        // While that read is in flight, at most MAX_UNCHECKED_RECORDS are posted past the
        // last confirmed read (at 0 records).
        let mut posted = 300;
        loop {
            match watches.step("p", 100, t0) {
                Step::Post => posted += 100,
                Step::Wait(_) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(posted, MAX_UNCHECKED_RECORDS);
        watches.read_done("p", slow, Some(true));
        assert!(matches!(
            watches.step("p", 100, t0),
            Step::Canceled { first: true }
        ));
        assert!(watches.is_canceled("p"));
    }

    #[test]
    fn an_irreversible_action_waits_for_the_read_in_flight_and_learns_of_the_cancel() {
        let watches = PortionWatches::default();
        let t0 = Instant::now();
        let issued = read(watches.step_irreversible("p", 3, t0));
        assert!(
            matches!(watches.step("p", 100, t0), Step::Post),
            "posts go on beside the first read"
        );
        assert!(
            matches!(watches.step_irreversible("p", 3, t0), Step::Wait(_)),
            "an irreversible action does not"
        );
        watches.read_done("p", issued, Some(true));
        assert!(matches!(
            watches.step_irreversible("p", 3, t0),
            Step::Canceled { first: true }
        ));
    }

    #[test]
    fn a_failed_read_does_not_hold_posting_up() {
        let (watches, t0) = read_then_300_posted(None);
        let issued = read(watches.step("p", 100, t0));
        for _ in 0..20 {
            if let Step::Wait(_) = watches.step("p", 100, t0) {
                watches.read_done("p", issued, None);
                break;
            }
        }
        assert!(matches!(
            watches.step("p", 1_000, t0),
            Step::Post | Step::Read { .. }
        ));
        assert!(!watches.is_canceled("p"));
    }

    #[test]
    fn a_read_whose_task_dies_without_an_answer_does_not_hold_posting_up() {
        let watches = Arc::new(PortionWatches::default());
        let t0 = Instant::now();
        let first = watches.report_read("p", read(watches.step("p", 100, t0)));
        first.done(Some(false));
        for _ in 0..3 {
            assert!(matches!(watches.step("p", 100, t0), Step::Post));
        }
        let issued = read(watches.step("p", 100, t0));
        let report = watches.report_read("p", issued);
        let mut reads = loop {
            match watches.step("p", 100, t0) {
                Step::Wait(reads) => break reads,
                Step::Post => {}
                other => panic!("{other:?}"),
            }
        };
        // The reading task panics: its report is dropped unanswered.
        drop(report);
        assert!(
            reads.has_changed().unwrap_or(false),
            "the waiters are woken"
        );
        reads.mark_unchanged();
        assert!(matches!(
            watches.step("p", 100, t0),
            Step::Post | Step::Read { .. }
        ));
    }

    #[test]
    fn a_cancel_learned_from_a_refused_post_sticks() {
        let watches = PortionWatches::default();
        assert!(watches.mark_canceled("p", Instant::now()));
        assert!(!watches.mark_canceled("p", Instant::now()));
        assert!(matches!(
            watches.step("p", 1, Instant::now()),
            Step::Canceled { first: false }
        ));
    }
}
