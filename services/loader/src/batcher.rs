//! Groups prepared events into batches per (integration, run, config revision): a batch goes
//! out when it holds `size` events or its first event has waited `linger`, whichever comes
//! first. On shutdown (the input closes) every partial batch is flushed, so nothing waits for
//! a redelivery that a drain could have avoided.

use std::sync::Arc;
use std::time::Duration;

use peoplesync_core::Integration;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::pipeline::{BatchKey, Item};

/// Events of one portion, ready for delivery.
#[derive(Debug)]
pub struct Batch {
    /// Integration, run and config revision.
    pub key: BatchKey,
    /// The config the records were mapped with.
    pub integration: Option<Arc<Integration>>,
    /// The events.
    pub items: Vec<Item>,
}

struct Open {
    batch: Batch,
    deadline: Instant,
}

/// Reads items from `input` and emits batches to `output` until `input` closes.
pub async fn run(
    mut input: mpsc::Receiver<Item>,
    output: mpsc::Sender<Batch>,
    size: usize,
    linger: Duration,
) {
    // Looked up once per event; foldhash is cheaper than SipHash for these short keys.
    let mut open: foldhash::HashMap<BatchKey, Open> = foldhash::HashMap::default();
    // Items are taken in chunks of whatever is queued, so a burst from one fetch costs one
    // pass of this loop (and one timer) rather than one per item.
    let mut received: Vec<Item> = Vec::with_capacity(size);
    loop {
        let next_deadline = open.values().map(|o| o.deadline).min();
        tokio::select! {
            n = input.recv_many(&mut received, size.max(1)) => {
                if n == 0 {
                    break;
                }
                for item in received.drain(..) {
                    let entry = match open.get_mut(&item.key) {
                        Some(entry) => entry,
                        None => open.entry(item.key.clone()).or_insert_with(|| Open {
                            batch: Batch {
                                key: item.key.clone(),
                                integration: item.integration.clone(),
                                items: Vec::with_capacity(size),
                            },
                            deadline: Instant::now() + linger,
                        }),
                    };
                    entry.batch.items.push(item);
                    if entry.batch.items.len() >= size {
                        let key = entry.batch.key.clone();
                        if let Some(full) = open.remove(&key)
                            && output.send(full.batch).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
            () = sleep_until(next_deadline) => {
                let now = Instant::now();
                let due: Vec<BatchKey> = open.iter().filter(|(_, o)| o.deadline <= now).map(|(k, _)| k.clone()).collect();
                for key in due {
                    if let Some(o) = open.remove(&key) && output.send(o.batch).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    for (_, o) in open.drain() {
        if output.send(o.batch).await.is_err() {
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
