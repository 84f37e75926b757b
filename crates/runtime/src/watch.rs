//! Waiting on a watch that may be gone. The services keep KV watches (run records, configs) as
//! an `Option`: when NATS loses the watch it is dropped and re-created later, and until then a
//! `select!` loop must go on with its other branches rather than see the lost watch end again.

use futures::{Stream, StreamExt};

/// The next item of `watch`; while there is no watch, never (so a `select!` branch on it stays
/// quiet). `None` means the watch ended; the caller drops it.
pub async fn next_change<S>(watch: &mut Option<S>) -> Option<S::Item>
where
    S: Stream + Unpin,
{
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_watch_gives_its_items_then_ends() {
        let mut watch = Some(futures::stream::iter([1, 2]));
        assert_eq!(next_change(&mut watch).await, Some(1));
        assert_eq!(next_change(&mut watch).await, Some(2));
        assert_eq!(next_change(&mut watch).await, None);
    }

    #[tokio::test]
    async fn no_watch_never_answers() {
        let mut watch: Option<futures::stream::Iter<std::vec::IntoIter<u8>>> = None;
        let waited = tokio::time::timeout(Duration::from_millis(20), next_change(&mut watch)).await;
        assert!(waited.is_err(), "no watch must not wake the select loop");
    }
}
