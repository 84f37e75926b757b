//! The faults both simulators inject the same way: latency (a request waits before the
//! simulator looks at it, so a client's timeouts can be tested) and an outage that lasts a set
//! time from when the faults were set.

use std::time::Duration;

use tokio::time::Instant;

/// Waits `latency_ms` milliseconds (not at all for 0).
pub(crate) async fn wait_latency(latency_ms: u64) {
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
}

/// When an outage of `outage_for_ms` set now ends; `None` for no outage.
pub(crate) fn outage_until(outage_for_ms: Option<u64>) -> Option<Instant> {
    outage_for_ms.map(|ms| Instant::now() + Duration::from_millis(ms))
}
