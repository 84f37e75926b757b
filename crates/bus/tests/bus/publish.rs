//! Publishing through a NATS restart: the window in flight is sent again as a whole, so a
//! restart costs one ack timeout, not one per message, and nothing is lost or stored twice.

use std::time::Duration;

use peoplesync_bus::{Bus, names};

async fn stored_ids(bus: &Bus) -> std::collections::BTreeSet<String> {
    let stream = bus
        .jetstream()
        .get_stream(names::WORKERS_STREAM)
        .await
        .unwrap();
    let info = stream.get_info().await.unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        assert!(ids.insert(id.clone()), "{id} stored twice");
    }
    ids
}

#[tokio::test]
async fn a_restart_mid_window_resends_the_window_once_and_loses_nothing() {
    let (mut nats, bus) = super::started().await;
    let mut publisher = bus.publisher(512);
    let total = 1500u32;
    for i in 0..total {
        if i == 1000 {
            // NATS goes away with up to a window of acks outstanding, for about a second.
            nats.kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            nats.restart();
        }
        super::publish_worker(&mut publisher, i, format!("worker {i}"))
            .await
            .expect("publishing goes on through a restart");
    }
    publisher.flush().await.expect("every publish acknowledged");
    assert_eq!(publisher.acknowledged(), u64::from(total));
    assert!(
        publisher.resends() <= 4,
        "the window is sent again as a whole, a few times at most, not once per lost ack ({} rounds)",
        publisher.resends()
    );
    let ids = stored_ids(&bus).await;
    assert_eq!(
        ids.len(),
        total as usize,
        "every message stored exactly once"
    );
}

#[tokio::test]
async fn a_long_outage_ends_in_an_error_at_the_deadline_not_a_silent_wait() {
    let (mut nats, bus) = super::started().await;
    let mut publisher = bus.publisher(512).with_deadline(Duration::from_secs(2));
    nats.kill();
    // More messages than the client's queue holds while it is disconnected: without a bound on
    // each send, publishing would wait for as long as NATS stays away.
    let publishing = async {
        for i in 0..10_000u32 {
            super::publish_worker(&mut publisher, i, format!("worker {i}")).await?;
        }
        publisher.flush().await
    };
    // A guard for the test only: the publisher gives up on its own, long before this.
    let outcome = tokio::time::timeout(Duration::from_secs(120), publishing)
        .await
        .expect("the publisher gave up instead of waiting for NATS");
    let err = outcome.expect_err("nothing can be stored while NATS is away");
    assert!(
        err.to_string()
            .contains("NATS has not acknowledged publishes"),
        "the error says NATS is not answering: {err}"
    );
}

#[tokio::test]
async fn a_window_larger_than_the_clients_default_ack_permits_publishes_everything() {
    // async-nats allows 5,000 outstanding acks per context by default and makes a send wait
    // for a free one; a larger window (the extractor allows up to 65,536) must not wait on
    // permits that only its own unawaited acks hold.
    let (_nats, bus) = super::started().await;
    let total = 6_000u32;
    let mut publisher = bus.publisher(total as usize);
    let publishing = async {
        for i in 0..total {
            super::publish_worker(&mut publisher, i, format!("worker {i}")).await?;
        }
        publisher.flush().await
    };
    tokio::time::timeout(Duration::from_secs(120), publishing)
        .await
        .expect("the publisher did not wait on ack permits")
        .expect("every publish acknowledged");
    assert_eq!(publisher.acknowledged(), u64::from(total));
}
