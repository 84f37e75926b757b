//! The `SyncControl` service: each RPC checks its input, then hands off to the module that
//! owns the concern (runs, integrations, checks, preview, pause, dead letters) or to the
//! extractor.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use peoplesync_bus::Bus;
use peoplesync_bus::control::{
    self, ApproveRemovals, RemovalsReleased, RunRequest, RunStarted, WorkerRequest, WorkerSynced,
};
use peoplesync_oomnitza::OomnitzaClient;
use peoplesync_proto::v1 as pb;
use peoplesync_proto::v1::sync_control_server::SyncControl;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::check::Checker;
use crate::extractor::{self, Extractor};
use crate::integrations::{self, Configs};
use crate::preview::Previewer;
use crate::runs::{self, RunViews};
use crate::{dead_letters, overview, pause, status};

/// WatchRun streams served at once by one replica.
const MAX_WATCHES: usize = 256;
/// Updates buffered per WatchRun stream before the server waits for the client.
const WATCH_BUFFER: usize = 16;

/// The control plane of one loader replica.
#[derive(Clone)]
pub struct ControlService {
    bus: Bus,
    oomnitza: OomnitzaClient,
    extractor: Extractor,
    configs: Configs,
    runs: RunViews,
    watches: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for ControlService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlService").finish_non_exhaustive()
    }
}

impl ControlService {
    /// A control plane over `bus` (the loader's connection) and `oomnitza` (for previews);
    /// its WatchRun streams end when `shutdown` is cancelled.
    pub fn new(bus: Bus, oomnitza: OomnitzaClient, shutdown: CancellationToken) -> ControlService {
        ControlService {
            extractor: Extractor::new(bus.client().clone()),
            configs: Configs::new(bus.clone()),
            runs: RunViews::new(bus.clone()),
            bus,
            oomnitza,
            watches: Arc::new(Semaphore::new(MAX_WATCHES)),
            shutdown,
        }
    }
}

/// Who is calling, for pause flags: the `by` the caller gave, else its address.
fn caller<T>(request: &Request<T>, by: &str) -> String {
    if !by.trim().is_empty() {
        return by.trim().to_owned();
    }
    request
        .remote_addr()
        .map_or_else(|| "grpc".to_owned(), |addr| format!("grpc {addr}"))
}

type RunStream = Pin<Box<dyn Stream<Item = Result<pb::Run, Status>> + Send + 'static>>;

impl ControlService {
    /// Refuses at once a call that needs NATS while this replica is not connected to it. The
    /// NATS client holds requests while it reconnects, and with its queue full a call would
    /// wait for the caller's deadline and end without saying why (`syncctl dlq list` ended
    /// with `Cancelled: Timeout expired` after 90 s).
    fn connected(&self) -> Result<(), Status> {
        self.bus.connected().map_err(|state| {
            Status::unavailable(format!(
                "this loader replica is not connected to NATS (its connection is {state:?}); \
                 check that nats-server is up and reachable from the loader (NATS_URL), then retry"
            ))
        })
    }
}

#[tonic::async_trait]
impl SyncControl for ControlService {
    async fn trigger_sync(
        &self,
        request: Request<pb::TriggerSyncRequest>,
    ) -> Result<Response<pb::TriggerSyncResponse>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        let started: RunStarted = self
            .extractor
            .request(
                integration,
                control::RUN,
                &RunRequest {
                    trigger: "grpc".to_owned(),
                    resend_all: request.resend_all,
                },
                extractor::RUN_TIMEOUT,
            )
            .await?;
        tracing::info!(integration, run_id = %started.run_id, already_running = started.already_running, "run triggered through the control plane");
        Ok(Response::new(pb::TriggerSyncResponse {
            run_id: started.run_id,
            already_running: started.already_running,
        }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        let run_id = status::required("run_id", &request.run_id)?;
        Ok(Response::new(self.runs.get(integration, run_id).await?))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = if request.integration_id.trim().is_empty() {
            None
        } else {
            Some(status::integration_id(&request.integration_id)?)
        };
        let limit = status::limit(request.limit, runs::DEFAULT_LIST, runs::MAX_LIST);
        Ok(Response::new(pb::ListRunsResponse {
            runs: self.runs.list(integration, limit).await?,
        }))
    }

    type WatchRunStream = RunStream;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?.to_owned();
        let run_id = status::required("run_id", &request.run_id)?.to_owned();
        let permit = self.watches.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this loader replica already serves {MAX_WATCHES} run watches; retry later or poll GetRun"
            ))
        })?;
        let (tx, mut rx) = mpsc::channel(WATCH_BUFFER);
        let views = self.runs.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            views.watch(integration, run_id, tx, shutdown).await;
            drop(permit);
        });
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_integration(
        &self,
        request: Request<pb::GetIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        Ok(Response::new(self.configs.get(integration).await?))
    }

    async fn put_integration(
        &self,
        request: Request<pb::PutIntegrationRequest>,
    ) -> Result<Response<pb::PutIntegrationResponse>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        crate::check::refuse_unknown_fields(&self.oomnitza, integration, &request.toml).await?;
        let revision = self
            .configs
            .put(integration, &request.toml, request.revision)
            .await?;
        Ok(Response::new(pb::PutIntegrationResponse { revision }))
    }

    async fn validate_integration(
        &self,
        request: Request<pb::ValidateIntegrationRequest>,
    ) -> Result<Response<pb::ValidateIntegrationResponse>, Status> {
        Ok(Response::new(integrations::validate(
            &request.into_inner().toml,
        )))
    }

    async fn suggest_mapping(
        &self,
        request: Request<pb::SuggestMappingRequest>,
    ) -> Result<Response<pb::SuggestMappingResponse>, Status> {
        self.connected()?;
        Ok(Response::new(
            self.configs.suggest(request.into_inner()).await?,
        ))
    }

    async fn check_integration(
        &self,
        request: Request<pb::CheckIntegrationRequest>,
    ) -> Result<Response<pb::CheckIntegrationResponse>, Status> {
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        let checker = Checker {
            bus: &self.bus,
            configs: &self.configs,
            extractor: &self.extractor,
            oomnitza: &self.oomnitza,
        };
        let report = checker.check(integration).await;
        tracing::info!(integration, verdict = ?report.verdict(), "integration checked");
        Ok(Response::new(report))
    }

    async fn preview_worker(
        &self,
        request: Request<pb::PreviewWorkerRequest>,
    ) -> Result<Response<pb::PreviewWorkerResponse>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        let worker_id = status::required("worker_id", &request.worker_id)?;
        let previewer = Previewer {
            configs: &self.configs,
            extractor: &self.extractor,
            oomnitza: &self.oomnitza,
        };
        Ok(Response::new(
            previewer.preview(integration, worker_id).await?,
        ))
    }

    async fn sync_worker(
        &self,
        request: Request<pb::SyncWorkerRequest>,
    ) -> Result<Response<pb::SyncWorkerResponse>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        let worker_id = status::required("worker_id", &request.worker_id)?;
        let synced: WorkerSynced = self
            .extractor
            .request(
                integration,
                control::WORKER,
                &WorkerRequest {
                    id: worker_id.to_owned(),
                },
                control::WORKER_WAIT,
            )
            .await?;
        match (synced.found, synced.run_id) {
            (true, Some(run_id)) => Ok(Response::new(pb::SyncWorkerResponse { run_id })),
            (true, None) => Err(Status::internal(format!(
                "the extractor of {integration} found worker {worker_id} but named no run; check the extractor's log"
            ))),
            (false, _) => Err(Status::not_found(format!(
                "Sage People has no worker {worker_id} (integration {integration}); check the id"
            ))),
        }
    }

    async fn pause(
        &self,
        request: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseState>, Status> {
        self.connected()?;
        let by = caller(&request, &request.get_ref().by);
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        let reason = Some(request.reason);
        Ok(Response::new(
            pause::set(&self.bus, integration, true, by, reason).await?,
        ))
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::PauseState>, Status> {
        self.connected()?;
        let by = caller(&request, &request.get_ref().by);
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        Ok(Response::new(
            pause::set(&self.bus, integration, false, by, None).await?,
        ))
    }

    async fn list_leavers(
        &self,
        request: Request<pb::ListLeaversRequest>,
    ) -> Result<Response<pb::ListLeaversResponse>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        let list = if request.held {
            crate::leavers::held(&self.extractor, integration).await?
        } else {
            crate::leavers::list(&self.bus, &self.runs, integration, &request.run_id).await?
        };
        Ok(Response::new(list))
    }

    async fn approve_removals(
        &self,
        request: Request<pb::ApproveRemovalsRequest>,
    ) -> Result<Response<pb::ApproveRemovalsResponse>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        let run_id = status::required("run_id", &request.run_id)?;
        let rebaseline = request.without_leaver_actions;
        let released: RemovalsReleased = self
            .extractor
            .request(
                integration,
                // An extractor too old for a rebaseline does not answer its subject (UNAVAILABLE),
                // rather than publish every held removal as an approval.
                if rebaseline {
                    control::REBASELINE_REMOVALS
                } else {
                    control::APPROVE_REMOVALS
                },
                &ApproveRemovals {
                    run_id: run_id.to_owned(),
                },
                extractor::APPROVE_TIMEOUT,
            )
            .await?;
        if rebaseline {
            tracing::warn!(
                integration,
                run_id,
                "held removals dropped without leaver actions through the control plane; the run's list is the new baseline"
            );
        } else {
            tracing::info!(
                integration,
                run_id,
                released = released.released,
                "removals approved through the control plane"
            );
        }
        Ok(Response::new(pb::ApproveRemovalsResponse {
            released: released.released,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        self.connected()?;
        Ok(Response::new(
            dead_letters::list(&self.bus, request.into_inner()).await?,
        ))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        self.connected()?;
        // A replay creates a run, republishes events and then completes the run; a client that
        // hangs up (or hits its deadline) must not stop it half-way and leave the run
        // `running`, so it runs in its own task and the handler only waits for it.
        let bus = self.bus.clone();
        let request = request.into_inner();
        let replay = tokio::spawn(async move { dead_letters::replay(&bus, request).await });
        let response = replay
            .await
            .map_err(|e| Status::internal(format!("the replay task failed: {e}")))??;
        Ok(Response::new(response))
    }

    async fn purge_dead_letters(
        &self,
        request: Request<pb::PurgeDeadLettersRequest>,
    ) -> Result<Response<pb::PurgeDeadLettersResponse>, Status> {
        self.connected()?;
        Ok(Response::new(
            dead_letters::purge(&self.bus, request.into_inner()).await?,
        ))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::IntegrationStatus>, Status> {
        self.connected()?;
        let request = request.into_inner();
        let integration = status::integration_id(&request.integration_id)?;
        Ok(Response::new(
            overview::get(&self.bus, &self.configs, &self.runs, integration).await?,
        ))
    }

    async fn summarize_dead_letters(
        &self,
        request: Request<pb::SummarizeDeadLettersRequest>,
    ) -> Result<Response<pb::DeadLetterSummary>, Status> {
        self.connected()?;
        Ok(Response::new(
            dead_letters::summarize(&self.bus, request.into_inner().selector).await?,
        ))
    }
}
