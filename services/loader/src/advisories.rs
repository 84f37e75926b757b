//! Events the server gave up on. When an event reaches the consumer's `max_deliver` without
//! being acked (a loader crashed on its last try, or kept timing out), JetStream stops
//! delivering it and emits a max-deliveries advisory — a core message, at most once. The bus
//! captures those advisories in a stream; here every replica consumes that stream (shared
//! consumer), moves each abandoned event to the DLQ with the reason, records its outcome so the
//! run can still be finalized, and removes it from the work queue.

use std::time::Duration;

use futures::StreamExt;
use peoplesync_bus::{Bus, BusError, DeadLetter, Outcome, codec, consume, dlq, names};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
}

/// Captures abandoned events until `shutdown`.
pub async fn capture(bus: Bus, shutdown: CancellationToken) {
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = capture_batch(&bus) => result,
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "capturing abandoned events failed; retrying in 5s");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }
}

async fn capture_batch(bus: &Bus) -> Result<(), BusError> {
    let mut advisories = consume::fetch_advisories(bus, 20, Duration::from_secs(5)).await?;
    while let Some(advisory) = advisories.next().await {
        match serde_json::from_slice::<MaxDeliveries>(&advisory.payload) {
            Ok(info) => dead_letter(bus, info).await?,
            Err(err) => {
                tracing::warn!(error = %err, "ignoring an unreadable max-deliveries advisory")
            }
        }
        if let Err(err) = advisory.ack().await {
            tracing::debug!(error = %err, "advisory ack failed; it will be handled again (idempotently)");
        }
    }
    Ok(())
}

async fn dead_letter(bus: &Bus, info: MaxDeliveries) -> Result<(), BusError> {
    // Already acked or removed: nothing was abandoned after all. Any read error is retried:
    // acking the advisory now would strand the event.
    let Some(message) = consume::stored_event(bus, info.stream_seq).await? else {
        return Ok(());
    };
    let subject = message.subject;
    let integration = names::integration_of_subject(&subject)
        .unwrap_or("unknown")
        .to_owned();
    // An event the pipeline could not attribute is lettered under the same identity it gives
    // such events, so recording the letter cannot fail on a bad id again and again.
    let (run_id, worker_id, ended) = match codec::decode_worker_event(&message.payload) {
        Ok(event) if crate::pipeline::check_ids(&event).is_ok() => {
            let ended = event.kind() == peoplesync_proto::v1::WorkerEventKind::Ended;
            let worker_id = event.worker.map(|w| w.id).unwrap_or_default();
            (event.run_id, worker_id, ended)
        }
        _ => (
            names::INVALID_RUN.to_owned(),
            crate::pipeline::unattributed_worker(info.stream_seq),
            false,
        ),
    };
    let letter = DeadLetter {
        integration: integration.clone(),
        run_id: run_id.clone(),
        worker_id: worker_id.clone(),
        reason: format!(
            "JetStream gave up after {} deliveries without an ack (a loader crashed or timed out on it each time)",
            info.deliveries
        ),
        stage: "delivery".into(),
        attempts: info.deliveries,
        original_subject: subject,
        ..Default::default()
    };
    dlq::record(bus, &letter, message.payload.clone()).await?;
    let mut outcomes = bus.outcome_recorder(1);
    let msg_id = names::msg_id_of(&run_id, &worker_id, ended);
    outcomes
        .record(
            &integration,
            &run_id,
            &msg_id,
            &worker_id,
            Outcome::DeadLettered,
        )
        .await?;
    outcomes.flush().await?;
    consume::remove_event(bus, info.stream_seq).await?;
    tracing::warn!(%integration, %run_id, %worker_id, deliveries = info.deliveries,
        "an event the server gave up on was dead-lettered");
    metrics::counter!(peoplesync_runtime::metrics::names::LOADER_EVENTS, "integration" => integration, "outcome" => "dead_lettered")
        .increment(1);
    Ok(())
}
