//! The extractor's side of the command protocol (`peoplesync_bus::control`): request/reply on
//! `peoplesync.control.extractor.<integration>.<command>`, JSON in, `Reply<T>` out.
//!
//! `fetch`, `worker`, `progress` and `check` are answered by any replica (one queue group, so each
//! request gets one answer); `run` and `approve-removals` only by the replica holding the
//! integration's scheduler lease, which subscribes to them while it holds it. Requests are
//! handled concurrently, at most [`IN_FLIGHT`] at a time per replica and integration.

use std::sync::Arc;

use async_nats::{Message, Subject};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use peoplesync_bus::BusError;
use peoplesync_bus::control::{
    self, ApproveRemovals, CommandError, Reply, RunRequest, SageChecked, WorkerRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::runner::Runner;
use crate::single;

/// Queue group of the commands any replica answers.
pub const ANY_REPLICA_GROUP: &str = "sage-extractor";
/// Queue group of the commands the lease holder answers.
pub const LEADER_GROUP: &str = "sage-extractor-leader";
/// Requests handled at once per replica and integration.
pub const IN_FLIGHT: usize = 16;

/// The requests of `commands` for `integration`, each with its command, as one member of
/// queue group `group`.
async fn subscribe(
    client: &async_nats::Client,
    integration: &str,
    commands: &[&'static str],
    group: &str,
) -> Result<impl Stream<Item = (&'static str, Message)> + Unpin + use<>, BusError> {
    let mut subscriptions = Vec::new();
    for &command in commands {
        let subject = control::subject(integration, command);
        let subscription = client
            .queue_subscribe(subject.clone(), group.to_owned())
            .await
            .map_err(|e| BusError::request(format!("subscribing to {subject}"), e))?;
        subscriptions.push(subscription.map(move |message| (command, message)));
    }
    Ok(futures::stream::select_all(subscriptions))
}

/// The next request, or `None` once `stop` is cancelled or the subscriptions end.
async fn next_request(
    requests: &mut (impl Stream<Item = (&'static str, Message)> + Unpin),
    stop: &CancellationToken,
) -> Option<(&'static str, Message)> {
    tokio::select! {
        () = stop.cancelled() => None,
        next = requests.next() => next,
    }
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CommandError> {
    serde_json::from_slice(payload).map_err(|err| CommandError {
        code: "invalid".into(),
        message: format!("the request body is not the expected JSON: {err}"),
    })
}

async fn respond<T: Serialize, E: Into<CommandError>>(
    client: &async_nats::Client,
    reply: Option<Subject>,
    result: Result<T, E>,
) {
    let Some(reply) = reply else { return };
    let body = match result {
        Ok(value) => serde_json::to_vec(&Reply::Ok(value)),
        Err(error) => serde_json::to_vec(&Reply::<T>::Err {
            error: error.into(),
        }),
    };
    let body = body.unwrap_or_else(|err| {
        format!(r#"{{"error":{{"code":"failed","message":"cannot encode the reply: {err}"}}}}"#)
            .into_bytes()
    });
    if let Err(err) = client.publish(reply, Bytes::from(body)).await {
        tracing::warn!(error = %err, "cannot send a command reply");
    }
}

/// Answers `fetch`, `worker`, `progress`, `check` and `held-leavers` for the runner's integration until `stop`.
pub async fn serve_any(
    client: async_nats::Client,
    runner: Arc<Runner>,
    replica: Arc<str>,
    stop: CancellationToken,
) -> Result<(), BusError> {
    let integration = runner.extraction().integration().to_owned();
    let commands = [
        control::FETCH,
        control::WORKER,
        control::PROGRESS,
        control::CHECK,
        control::HELD_LEAVERS,
    ];
    let mut requests = subscribe(&client, &integration, &commands, ANY_REPLICA_GROUP).await?;
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Some((command, message)) = next_request(&mut requests, &stop).await else {
            return Ok(());
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return Ok(());
        };
        let client = client.clone();
        let runner = runner.clone();
        let replica = replica.clone();
        tokio::spawn(async move {
            let extraction = runner.extraction();
            match command {
                control::FETCH => {
                    let result = match parse::<WorkerRequest>(&message.payload) {
                        Ok(request) => single::fetch(extraction, request.id.trim()).await,
                        Err(err) => Err(err.into()),
                    };
                    respond(&client, message.reply, result).await;
                }
                control::WORKER => {
                    let result = match parse::<WorkerRequest>(&message.payload) {
                        Ok(request) => single::sync(extraction, request.id.trim()).await,
                        Err(err) => Err(err.into()),
                    };
                    respond(&client, message.reply, result).await;
                }
                control::CHECK => {
                    let report = SageChecked {
                        replica: replica.to_string(),
                        ..crate::check::sage(extraction).await
                    };
                    let report: Result<_, CommandError> = Ok(report);
                    respond(&client, message.reply, report).await;
                }
                control::HELD_LEAVERS => {
                    let held = crate::removals::held_leavers(
                        extraction.bus(),
                        extraction.integration(),
                        control::MAX_HELD_LISTED,
                    )
                    .await
                    .map_err(|err| CommandError {
                        code: "failed".into(),
                        message: err.to_string(),
                    });
                    respond(&client, message.reply, held).await;
                }
                _ => {
                    respond(&client, message.reply, single::progress(extraction).await).await;
                }
            }
            drop(permit);
        });
    }
}

/// Answers `run` and `approve-removals` while `leader` says this replica holds the lease, until
/// `stop`.
pub async fn serve_leader(
    client: async_nats::Client,
    runner: Arc<Runner>,
    leader: watch::Receiver<bool>,
    stop: CancellationToken,
) -> Result<(), BusError> {
    let integration = runner.extraction().integration().to_owned();
    let commands = [
        control::RUN,
        control::APPROVE_REMOVALS,
        control::REBASELINE_REMOVALS,
    ];
    let mut requests = subscribe(&client, &integration, &commands, LEADER_GROUP).await?;
    loop {
        let Some((command, message)) = next_request(&mut requests, &stop).await else {
            return Ok(());
        };
        if !*leader.borrow() {
            let error = CommandError {
                code: "unavailable".into(),
                message: format!(
                    "this extractor replica just stopped scheduling {integration}; send the command again"
                ),
            };
            respond::<(), CommandError>(&client, message.reply, Err(error)).await;
            continue;
        }
        match command {
            control::RUN => {
                let result = match parse::<RunRequest>(&message.payload) {
                    Ok(request) => {
                        let trigger = match request.trigger.trim() {
                            "" => "manual".to_owned(),
                            trigger => trigger.to_owned(),
                        };
                        runner
                            .start_resending(&trigger, request.resend_all)
                            .await
                            .map_err(|err| CommandError {
                                code: run_error_code(&err).into(),
                                message: err.to_string(),
                            })
                    }
                    Err(err) => Err(err),
                };
                respond(&client, message.reply, result).await;
            }
            _ => {
                // Approvals are rare and move the removal baseline: one at a time, in order.
                let result = match parse::<ApproveRemovals>(&message.payload) {
                    Ok(request) => {
                        single::approve_removals(
                            runner.extraction(),
                            request.run_id.trim(),
                            command == control::REBASELINE_REMOVALS,
                        )
                        .await
                    }
                    Err(err) => Err(err.into()),
                };
                respond(&client, message.reply, result).await;
            }
        }
    }
}

/// The command error code of a run that could not start: `misconfigured` when a setting or
/// credential must be fixed first (the control plane answers FAILED_PRECONDITION marked so, and
/// `syncctl run` exits 7), `failed` otherwise.
fn run_error_code(err: &crate::error::RunError) -> &'static str {
    match err.stop().awaits_operator() {
        true => "misconfigured",
        false => "failed",
    }
}
