//! Acknowledged events a work-queue stream failed to delete (as after a NATS server crash) are
//! removed; nothing unacknowledged and nothing of another integration is.

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use peoplesync_bus::{consume, names};
use peoplesync_testkit::NatsServer;

#[tokio::test]
async fn acknowledged_events_left_in_the_work_stream_are_removed_and_nothing_else() {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // Limits retention keeps acknowledged events, as a work-queue stream sometimes does after
    // its server was killed.
    let stream = js
        .create_stream(stream::Config {
            name: names::WORKERS_STREAM.into(),
            subjects: vec!["peoplesync.*.workers".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(names::loader_consumer("acme")),
            filter_subject: names::workers_subject("acme"),
            ..Default::default()
        })
        .await
        .unwrap();
    for (integration, n) in [("acme", 10), ("other", 2)] {
        for i in 0..n {
            js.publish(names::workers_subject(integration), format!("{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    let mut batch = consumer.fetch().max_messages(6).messages().await.unwrap();
    while let Some(message) = batch.next().await {
        message.unwrap().double_ack().await.unwrap();
    }

    let removed = consume::trim_acknowledged(&js, "acme").await.unwrap();
    assert_eq!(removed, 6, "the acknowledged events");
    let info = js
        .get_stream(names::WORKERS_STREAM)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(
        info.state.messages,
        4 + 2,
        "unacknowledged and other events stay"
    );
    assert_eq!(consume::trim_acknowledged(&js, "acme").await.unwrap(), 0);
}
