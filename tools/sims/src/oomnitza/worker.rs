//! The background worker that processes accepted records, as Oomnitza does after answering a
//! bulk post: one task per simulator, woken when a batch is queued, sleeping until the oldest
//! batch is due, then taking [`CHUNK`] records at a time under the store lock, so reads and
//! posts interleave with a large backlog and no task is spawned per record. While the
//! `processing_paused` fault is on it waits for the faults to change.

use std::sync::Arc;

use tokio::time::Instant;

use super::state::Shared;
use super::validate::Checks;
use crate::sync::lock;

/// Records processed per hold of the store lock.
pub(crate) const CHUNK: usize = 1_000;

/// The running worker; dropping it stops the worker.
#[derive(Debug)]
pub(crate) struct WorkerHandle(tokio::task::AbortHandle);

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the worker of `shared`.
pub(crate) fn start(shared: Arc<Shared>) -> WorkerHandle {
    WorkerHandle(tokio::spawn(run(shared)).abort_handle())
}

async fn run(shared: Arc<Shared>) {
    loop {
        let next = lock(&shared.store).queue.next_due();
        match next {
            None => shared.wake.notified().await,
            Some(due) if due > Instant::now() => {
                // A cancel may empty the queue meanwhile; waking early only means looking again.
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = shared.wake.notified() => {}
                }
            }
            Some(_) if lock(&shared.control).faults.processing_paused => {
                shared.wake.notified().await;
            }
            Some(_) => {
                let (rules, lower_case_identities) = shared.processing();
                let checks = Checks {
                    roles: &shared.config.roles,
                    rules: &rules,
                    lower_case_identities,
                };
                {
                    let mut store = lock(&shared.store);
                    store.process_due(Instant::now(), CHUNK, checks);
                    shared.publish_pending(&store);
                }
                tokio::task::yield_now().await;
            }
        }
    }
}
