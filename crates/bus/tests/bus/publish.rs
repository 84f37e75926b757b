//! Publishing through a NATS restart: the window in flight is sent again as a whole, so a
//! restart costs one ack timeout, not one per message, and nothing is lost or stored twice.

use std::time::Duration;

use bytes::Bytes;
use peoplesync_bus::{Bus, BusSettings, names};
use peoplesync_testkit::NatsServer;

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
    let mut nats = NatsServer::start();
    let bus = Bus::connect(nats.url(), "publish-test", BusSettings::default())
        .await
        .expect("bus");
    let mut publisher = bus.publisher(512);
    let subject = names::workers_subject("acme");
    let total = 1500u32;
    for i in 0..total {
        if i == 1000 {
            // NATS goes away with up to a window of acks outstanding, for about a second.
            nats.kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            nats.restart();
        }
        publisher
            .publish(
                subject.clone(),
                names::event_msg_id("run-1", &format!("w{i}")),
                Bytes::from(format!("worker {i}")),
                None,
            )
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
