//! The worker ids a full extractor run listed, kept so the next full run can tell who
//! disappeared ([`Bus::seen`]).
//!
//! Ids arrive in ascending order, a page at a time, so each page's ids are published as one
//! chunk (newline-separated) to the stream `PEOPLESYNC_SEEN`, subject
//! `peoplesync.<integration>.seen.<run>.<page>`, in the same pipelined window as the page's
//! worker events. Reading a run's list back is an ordered consumer over its subjects: ids come
//! out sorted, a chunk at a time, so comparing two lists of a million ids is a streaming merge
//! whose memory does not grow with the org (one KV key per id would be far too slow, one value
//! holding them all far too big).
//!
//! The same stream keeps the upsert of each listed worker who has left, under
//! `peoplesync.<integration>.seen.<run>.ended.<worker>`, for the `ended` event of the run that
//! settles their removal.
//!
//! The extractor creates this stream ([`Seen::ensure`]; it is the only user); lists are purged
//! when a newer run supersedes them, and a 90-day age limit bounds what an abandoned
//! integration leaves.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;

use crate::consume::Snapshot;
use crate::names::{self, SEEN_STREAM};
use crate::setup::StreamSpec;
use crate::{Bus, BusError, Publisher};

/// How long a list is kept at most when nothing supersedes it.
pub const MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);

/// One page's ids as a chunk.
pub fn encode_chunk<'a>(ids: impl IntoIterator<Item = &'a str>) -> Bytes {
    let mut out = Vec::with_capacity(4096);
    for id in ids {
        if !out.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(id.as_bytes());
    }
    Bytes::from(out)
}

/// Keeps the upsert `payload` of `worker_id`, listed by `run_id` as having left, with that
/// run's list; published with the run's other messages through `publisher`.
pub async fn keep(
    publisher: &mut Publisher,
    integration: &str,
    run_id: &str,
    worker_id: &str,
    payload: Bytes,
) -> Result<(), BusError> {
    publisher
        .publish(
            names::seen_kept_subject(integration, run_id, worker_id),
            names::seen_kept_msg_id(run_id, worker_id),
            payload,
            None,
        )
        .await
}

/// The seen lists of every integration (see the module docs).
#[derive(Debug, Clone)]
pub struct Seen {
    bus: Bus,
}

impl Bus {
    /// The seen lists of full runs and the upserts they kept of workers who have left.
    pub fn seen(&self) -> Seen {
        Seen { bus: self.clone() }
    }
}

impl Seen {
    /// Creates the stream, or brings its limits in line; idempotent.
    pub async fn ensure(&self) -> Result<(), BusError> {
        self.bus
            .ensure_stream(StreamSpec::limits(
                (
                    SEEN_STREAM,
                    "worker ids listed by each full extractor run, for removals",
                ),
                &[names::SEEN_SUBJECTS],
                MAX_AGE,
                // The workers stream's window: a chunk sent again late in the publisher's
                // retries (up to its deadline after the first lost ack) must still be dropped
                // as a duplicate, or it would be stored after later chunks, out of order.
                self.bus.settings().duplicate_window,
            ))
            .await
    }

    /// Deletes the chunks whose subjects match `filter` (a run's whole list, or pages written
    /// after its last checkpoint).
    async fn purge(&self, filter: String) -> Result<(), BusError> {
        self.bus
            .stream(SEEN_STREAM)
            .await?
            .purge()
            .filter(filter.clone())
            .await
            .map_err(|e| BusError::request(format!("purging {filter} from {SEEN_STREAM}"), e))?;
        Ok(())
    }

    /// Deletes `run`'s whole list and the upserts it kept.
    pub async fn purge_run(&self, integration: &str, run_id: &str) -> Result<(), BusError> {
        self.purge(names::seen_run_filter(integration, run_id))
            .await?;
        self.purge(names::seen_kept_filter(integration, run_id))
            .await
    }

    /// Deletes pages `from..from + count` of `run`'s list: those a crashed extractor may have
    /// published after its last checkpoint, which the resumed run publishes again.
    pub async fn purge_pages(
        &self,
        integration: &str,
        run_id: &str,
        from: u64,
        count: u64,
    ) -> Result<(), BusError> {
        for page in from..from.saturating_add(count) {
            self.purge(names::seen_chunk_subject(integration, run_id, page))
                .await?;
        }
        Ok(())
    }

    /// The last message on `subject`, if any.
    async fn last_on(&self, subject: &str) -> Result<Option<Bytes>, BusError> {
        self.bus.last_on(SEEN_STREAM, subject).await
    }

    /// The ids of page `page` of `run`'s list, in order (empty when the page has none).
    pub async fn read_chunk(
        &self,
        integration: &str,
        run_id: &str,
        page: u64,
    ) -> Result<Vec<String>, BusError> {
        let subject = names::seen_chunk_subject(integration, run_id, page);
        let Some(payload) = self.last_on(&subject).await? else {
            return Ok(Vec::new());
        };
        Ok(String::from_utf8_lossy(&payload)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The upsert kept for `worker_id` by `run_id`, if that run listed them as having left.
    pub async fn kept(
        &self,
        integration: &str,
        run_id: &str,
        worker_id: &str,
    ) -> Result<Option<Bytes>, BusError> {
        self.last_on(&names::seen_kept_subject(integration, run_id, worker_id))
            .await
    }

    /// A reader of `run`'s list in order; an empty reader when the run has none.
    pub async fn reader(&self, integration: &str, run_id: &str) -> Result<IdReader, BusError> {
        IdReader::open(&self.bus.js, integration, run_id).await
    }
}

/// Why a list could not be read as a sorted list.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The ids are not in ascending order, so no merge can be trusted.
    #[error(
        "the seen list of run {run_id} is not in ascending byte order ({previous} came before {next})"
    )]
    Unordered {
        /// The run whose list it is.
        run_id: String,
        /// The earlier id.
        previous: String,
        /// The later, smaller id.
        next: String,
    },
}

impl From<ReadError> for BusError {
    /// A list that cannot be read in order is reported as an undecodable seen list.
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::Bus(err) => err,
            err => BusError::decode("seen list", err),
        }
    }
}

/// How long a reader waits for the next chunk of a list before it calls the list cut short.
const CHUNK_IDLE: Duration = Duration::from_secs(30);

/// Reads one run's list in order, a chunk at a time. The list is the chunks stored when the
/// reader opened: a chunk that vanishes while it is read (the list purged by a newer run, aged
/// out) or a consumer that ends early is an error, never the end of the list, because a list
/// cut short would make every later worker look removed.
pub struct IdReader {
    run_id: String,
    chunks: Snapshot,
    idle: Duration,
    chunk: Bytes,
    offset: usize,
    last: Option<String>,
    read: u64,
}

impl std::fmt::Debug for IdReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdReader")
            .field("what", &self.chunks.what())
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl IdReader {
    async fn open(
        js: &jetstream::Context,
        integration: &str,
        run_id: &str,
    ) -> Result<IdReader, BusError> {
        let what = format!("reading the seen list of run {run_id} of {integration}");
        let filter = names::seen_run_filter(integration, run_id);
        Ok(IdReader {
            run_id: run_id.to_owned(),
            chunks: Snapshot::open(js, SEEN_STREAM, filter, what).await?,
            idle: CHUNK_IDLE,
            chunk: Bytes::new(),
            offset: 0,
            last: None,
            read: 0,
        })
    }

    /// Waits at most `idle` (30 s unless set) for a chunk before the list counts as cut short.
    pub fn with_idle(mut self, idle: Duration) -> IdReader {
        self.idle = idle;
        self
    }

    /// Ids read so far.
    pub fn read(&self) -> u64 {
        self.read
    }

    /// The next id, in ascending order; `None` at the end of the list. Repeated ids (a chunk
    /// stored twice) are skipped; a smaller id than the previous one is an error, and so is a
    /// list that ends before all its chunks are read.
    pub async fn next(&mut self) -> Result<Option<String>, ReadError> {
        loop {
            while self.offset < self.chunk.len() {
                let rest = &self.chunk[self.offset..];
                let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
                let id = String::from_utf8_lossy(&rest[..end]).into_owned();
                self.offset += end + 1;
                if id.is_empty() {
                    continue;
                }
                match self.last.as_deref() {
                    Some(last) if id.as_str() == last => continue,
                    Some(last) if id.as_str() < last => {
                        return Err(ReadError::Unordered {
                            run_id: self.run_id.clone(),
                            previous: last.to_owned(),
                            next: id,
                        });
                    }
                    _ => {}
                }
                self.last = Some(id.clone());
                self.read += 1;
                return Ok(Some(id));
            }
            let missing = format!(
                "a chunk of the list did not arrive within {} s: the list was purged or cut short while it was read",
                self.idle.as_secs_f64()
            );
            let Some(message) = self.chunks.next(self.idle, &missing).await? else {
                return Ok(None);
            };
            self.chunk = message.payload.clone();
            self.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_newline_separated() {
        assert_eq!(&encode_chunk(["a", "b", "c"])[..], b"a\nb\nc");
        assert!(encode_chunk([]).is_empty());
    }
}
