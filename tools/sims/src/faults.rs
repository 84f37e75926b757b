//! The faults both simulators inject the same way: latency (a request waits before the
//! simulator looks at it, so a client's timeouts can be tested) and an outage that lasts a set
//! time from when the faults were set; and the frame of both simulators' API gates around them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;

use crate::sync::Flight;

/// Passes one API request through a simulator's gate: it counts as in flight until its response
/// is made, waits `latency_ms`, then is answered by `refusal` (given its headers) or, when that
/// lets it through, by the handler.
pub(crate) async fn pass(
    flight: &Arc<Flight>,
    latency_ms: u64,
    request: Request,
    next: Next,
    refusal: impl FnOnce(&HeaderMap) -> Option<Response>,
) -> Response {
    let _flight = flight.enter();
    wait_latency(latency_ms).await;
    match refusal(request.headers()) {
        None => next.run(request).await,
        Some(refusal) => refusal,
    }
}

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
