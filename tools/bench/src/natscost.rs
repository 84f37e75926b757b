//! `peoplesync-bench nats-cost`: what each kind of NATS operation the loader makes per event
//! costs, in nats-server CPU and client CPU, on this machine. It guides where the loader saves
//! round trips: each operation is run N times, pipelined, against a fresh nats-server, and the
//! server's CPU time (from `/proc`) is divided by N.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream as fstream};

use crate::procs::{Binaries, Nats};

/// Options of `nats-cost`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Operations of each kind.
    #[arg(long, default_value_t = 50_000)]
    ops: usize,
}

const CONCURRENCY: usize = 256;

/// Runs the measurement and prints a table.
pub async fn run(bins: &Binaries, options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temporary folder")?;
    let nats = Nats::start(bins, dir.path())?;
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client.clone());
    let n = options.ops;
    js.create_stream(stream::Config {
        name: "COST_DEDUP".into(),
        subjects: vec!["cost.dedup.>".into()],
        duplicate_window: Duration::from_secs(1200),
        ..Default::default()
    })
    .await?;
    js.create_stream(stream::Config {
        name: "COST_WORK".into(),
        subjects: vec!["cost.work.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await?;
    let store = js
        .create_key_value(kv::Config {
            bucket: "cost".into(),
            history: 1,
            ..Default::default()
        })
        .await?;
    let payload = Bytes::from(vec![b'x'; 200]);
    println!("| operation | server CPU µs/op | client CPU µs/op | wall µs/op |");
    println!("|---|---:|---:|---:|");

    measure_each(
        &nats,
        n,
        "JetStream publish with dedup id, ack awaited",
        |i| {
            let (js, payload) = (js.clone(), payload.clone());
            async move {
                js.send_publish(
                    format!("cost.dedup.{}", i % 6),
                    jetstream::message::PublishMessage::build()
                        .payload(payload)
                        .message_id(format!("id-{i}")),
                )
                .await?
                .await?;
                anyhow::Ok(())
            }
        },
    )
    .await?;

    measure_each(&nats, n, "JetStream publish to a work queue", |i| {
        let (js, payload) = (js.clone(), payload.clone());
        async move {
            js.publish(format!("cost.work.{i}"), payload).await?.await?;
            anyhow::Ok(())
        }
    })
    .await?;

    measure_each(&nats, n, "KV put", |i| {
        let (store, payload) = (store.clone(), payload.clone());
        async move {
            store.put(format!("k{i}"), payload).await?;
            anyhow::Ok(())
        }
    })
    .await?;

    measure(
        &nats,
        n,
        "KV put without ack, 100 per group closed by one acked put",
        async {
            for start in (0..n).step_by(100) {
                let end = (start + 100).min(n);
                for i in start..end.saturating_sub(1) {
                    client
                        .publish(format!("$KV.cost.g{i}"), payload.clone())
                        .await?;
                }
                store.put(format!("g{}", end - 1), payload.clone()).await?;
            }
            anyhow::Ok(())
        },
    )
    .await?;

    measure(&nats, n / 10, "subscribe and unsubscribe an inbox", async {
        for _ in 0..n / 10 {
            let mut sub = client.subscribe(client.new_inbox()).await?;
            sub.unsubscribe().await?;
        }
        client.flush().await?;
        anyhow::Ok(())
    })
    .await?;

    measure_each(&nats, n, "KV get (direct get)", |i| {
        let store = store.clone();
        async move {
            store.get(format!("k{i}")).await?;
            anyhow::Ok(())
        }
    })
    .await?;

    let per = 100;
    measure(
        &nats,
        n,
        "KV get, 100 keys per batched direct get",
        pipelined((0..n).step_by(per), CONCURRENCY / per + 1, |start| {
            let (client, store) = (client.clone(), store.clone());
            async move {
                let keys: Vec<String> = (start..(start + per).min(n))
                    .map(|i| format!("k{i}"))
                    .collect();
                // The loader's own batched read (one request on nats-server >= 2.11).
                let values = peoplesync_bus::lookup::values(&client, &store, &keys).await?;
                let got = values.iter().flatten().count();
                anyhow::ensure!(got == keys.len(), "batched get returned {got}");
                anyhow::Ok(())
            }
        }),
    )
    .await?;

    let consumer = js
        .get_stream("COST_WORK")
        .await?
        .create_consumer(consumer::pull::Config {
            durable_name: Some("cost".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 2000,
            ..Default::default()
        })
        .await?;
    measure(&nats, n, "fetch (100 per pull) and ack", async {
        let mut done = 0;
        while done < n {
            let mut batch = consumer
                .fetch()
                .max_messages(100)
                .expires(Duration::from_secs(1))
                .messages()
                .await?;
            let mut acks = Vec::new();
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| anyhow::anyhow!(e))?;
                acks.push(async move { message.ack_with(AckKind::Ack).await });
                done += 1;
            }
            for result in futures::future::join_all(acks).await {
                result.map_err(|e| anyhow::anyhow!(e))?;
            }
        }
        anyhow::Ok(())
    })
    .await?;
    Ok(())
}

async fn measure(
    nats: &Nats,
    n: usize,
    what: &str,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let server = nats.cpu();
    let own = own_cpu();
    let started = Instant::now();
    work.await.with_context(|| what.to_owned())?;
    let wall = started.elapsed();
    let server = nats.cpu().saturating_sub(server);
    let own = own_cpu().saturating_sub(own);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "| {what} | {:.1} | {:.1} | {:.1} |",
        per(server),
        per(own),
        per(wall)
    );
    Ok(())
}

/// Measures `op(i)` for each i in `0..n`, [`CONCURRENCY`] at a time.
async fn measure_each<F, Fut>(nats: &Nats, n: usize, what: &str, op: F) -> anyhow::Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    measure(nats, n, what, pipelined(0..n, CONCURRENCY, op)).await
}

/// Runs `op` for each of `items`, at most `concurrency` at a time, as the loader pipelines its
/// requests; stops at the first error.
async fn pipelined<I, F, Fut>(items: I, concurrency: usize, op: F) -> anyhow::Result<()>
where
    I: IntoIterator<Item = usize>,
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    fstream::iter(items)
        .map(op)
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

fn own_cpu() -> Duration {
    crate::procs::cpu_time(std::process::id()).unwrap_or_default()
}
