//! The control plane end to end: a real nats-server, both simulators in-process,
//! `oomnitza-loader` serving the control plane and (usually) `sage-extractor` answering its
//! commands, as child processes from the one stack harness (`peoplesync_testkit::stack`), and
//! a tonic client — or `syncctl` as a process. One file per area.

mod auth;
mod check;
mod dead_letters;
mod integrations;
mod runs;
mod syncctl;
mod workers;

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use peoplesync_proto::v1 as pb;
use peoplesync_proto::v1::sync_control_client::SyncControlClient;
use peoplesync_sims::generate;
use peoplesync_sims::sage::{PageSize, SageConfig, SageFaults};
use peoplesync_testkit::stack::{Deployment, Ran, Syncctl, oomnitza_config, tls_dir};
use peoplesync_testkit::{ChildService, wait_for};
use serde_json::Value;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request, Status};

pub use peoplesync_testkit::stack::CONTROL_TOKEN as TOKEN;

/// The integration every control-plane test drives.
pub const INTEGRATION: &str = "sage-people";

/// The control service's name in the gRPC health service.
pub const CONTROL_SERVICE: &str = "peoplesync.v1.SyncControl";

/// A control-plane client adding a bearer token to each call.
pub type Client = SyncControlClient<InterceptedService<Channel, Bearer>>;

/// Adds a bearer token (or none) to every call.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.parse().unwrap());
        }
        Ok(request)
    }
}

/// What a test's deployment looks like.
pub struct Options {
    /// Workers of the generated org (pages of 10).
    pub workers: u64,
    /// Whether an extractor runs (else commands find no responder).
    pub extractor: bool,
    /// Whether the control plane serves TLS.
    pub tls: bool,
    /// Faults of the Sage People simulator.
    pub sage_faults: SageFaults,
    /// The client secret the extractor is given (default: the simulator's).
    pub sage_secret: Option<String>,
    /// The API token the loader is given (default: the simulator's).
    pub oomnitza_token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 40,
            extractor: true,
            tls: false,
            sage_faults: SageFaults::default(),
            sage_secret: None,
            oomnitza_token: None,
        }
    }
}

/// A deployment with a loader serving the control plane, and (usually) an extractor; derefs to
/// the [`Deployment`] (simulators, NATS).
pub struct Stack {
    d: Deployment,
    _loader: ChildService,
    _extractor: Option<ChildService>,
    pub addr: SocketAddr,
    tls: bool,
}

impl std::ops::Deref for Stack {
    type Target = Deployment;

    fn deref(&self) -> &Deployment {
        &self.d
    }
}

impl Stack {
    /// Starts the deployment of `options` and waits until the control plane serves.
    pub async fn start(options: Options) -> Stack {
        let sage_config = SageConfig {
            workers: options.workers,
            page_size: PageSize::Fixed(10),
            faults: options.sage_faults,
            ..SageConfig::default()
        };
        let d = Deployment::start(sage_config, oomnitza_config()).await;
        let addr: SocketAddr = format!("127.0.0.1:{}", peoplesync_testkit::free_port())
            .parse()
            .unwrap();
        let mut loader = d.loader("loader-1").control(addr.port());
        if options.tls {
            loader = loader.tls();
        }
        if let Some(token) = &options.oomnitza_token {
            loader = loader.env("OOMNITZA_API_TOKEN", token);
        }
        let loader = loader.spawn();
        let extractor = options.extractor.then(|| {
            let extractor = d.extractor();
            match &options.sage_secret {
                Some(secret) => extractor.env("SAGE_PEOPLE_CLIENT_SECRET", secret),
                None => extractor,
            }
            .spawn()
        });
        let stack = Stack {
            d,
            _loader: loader,
            _extractor: extractor,
            addr,
            tls: options.tls,
        };
        stack.wait_until_serving().await;
        if options.extractor {
            // Until an extractor holds the lease, nothing answers its commands; start-up can
            // take long on a loaded machine, and the tests' own waits are shorter.
            let bus = stack.d.bus().await;
            wait_for(
                "an extractor to hold the lease",
                Duration::from_secs(90),
                || peoplesync_testkit::stack::lease_holder(&bus, INTEGRATION),
            )
            .await;
        }
        stack
    }

    /// The default deployment with an org of `workers`.
    pub async fn with_workers(workers: u64) -> Stack {
        Stack::start(Options {
            workers,
            ..Options::default()
        })
        .await
    }

    /// The default deployment without an extractor.
    pub async fn without_extractor() -> Stack {
        Stack::start(Options {
            extractor: false,
            ..Options::default()
        })
        .await
    }

    /// The control plane's URL (`https://localhost:…` under TLS).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// A channel to the control plane, trusting the test CA under TLS.
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let mut endpoint = Channel::from_shared(self.url()).unwrap();
        if self.tls {
            let ca = std::fs::read(tls_dir().join("ca.pem")).unwrap();
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .unwrap();
        }
        endpoint.connect().await
    }

    /// Waits until the loader's health service says SyncControl is SERVING (no token needed).
    /// The loader serves it after its start-up checks; on a busy 2-core runner, beside the chaos
    /// tests, that has taken over 30 s, so the bound is generous (a loader that never serves
    /// still fails).
    async fn wait_until_serving(&self) {
        wait_for(
            "the control plane to serve",
            Duration::from_secs(90),
            || async {
                let channel = self.channel().await.ok()?;
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let reply = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: CONTROL_SERVICE.to_owned(),
                    })
                    .await
                    .ok()?;
                (reply.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
                    .then_some(())
            },
        )
        .await;
    }

    /// A client sending `token` as the `authorization` header (or none).
    pub async fn client_with(&self, token: Option<&str>) -> Client {
        SyncControlClient::with_interceptor(
            self.channel().await.unwrap(),
            Bearer(token.map(|t| t.to_owned())),
        )
    }

    /// A client with the control plane's bearer token.
    pub async fn client(&self) -> Client {
        self.client_with(Some(&format!("Bearer {TOKEN}"))).await
    }

    /// The raw Sage People record of worker `index`.
    pub fn worker(&self, index: u64) -> Value {
        generate::worker(self.sage_config.seed, index)
    }

    /// Indices of the org's workers with and without an e-mail.
    pub fn workers_by_email(&self) -> (Vec<u64>, Vec<u64>) {
        (0..self.sage_config.workers).partition(|i| {
            self.worker(*i)
                .get("emailAddress")
                .and_then(Value::as_str)
                .is_some_and(|e| !e.trim().is_empty())
        })
    }

    /// The e-mail worker `index` is loaded under (trimmed and lower-cased).
    pub fn email_of(&self, index: u64) -> String {
        self.worker(index)["emailAddress"]
            .as_str()
            .unwrap()
            .trim()
            .to_lowercase()
    }

    /// E-mails of the users the Oomnitza simulator holds.
    pub fn stored_emails(&self) -> Vec<String> {
        self.oomnitza
            .users()
            .into_iter()
            .filter_map(|u| u.get("EMAIL")?.as_str().map(str::to_owned))
            .collect()
    }
}

/// The stored config of the integration.
pub async fn get_config(client: &mut Client) -> pb::Integration {
    client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Stores `toml` as the integration's config over `revision`.
pub async fn put_config(
    client: &mut Client,
    toml: String,
    revision: u64,
) -> Result<pb::PutIntegrationResponse, Status> {
    client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: INTEGRATION.into(),
            toml,
            revision,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Run `run_id` of the integration.
pub async fn get_run(client: &mut Client, run_id: String) -> Result<pb::Run, Status> {
    client
        .get_run(pb::GetRunRequest {
            integration_id: INTEGRATION.into(),
            run_id,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// What a run would do with worker `worker_id` now.
pub async fn preview_worker(
    client: &mut Client,
    worker_id: String,
) -> Result<pb::PreviewWorkerResponse, Status> {
    client
        .preview_worker(pb::PreviewWorkerRequest {
            integration_id: INTEGRATION.into(),
            worker_id,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Syncs worker `worker_id` now, in a run of its own.
pub async fn sync_worker(
    client: &mut Client,
    worker_id: String,
) -> Result<pb::SyncWorkerResponse, Status> {
    client
        .sync_worker(pb::SyncWorkerRequest {
            integration_id: INTEGRATION.into(),
            worker_id,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The leavers reported for the integration's latest run, or, when `held`, those held for
/// approval.
async fn latest_leavers(
    client: &mut Client,
    held: bool,
) -> Result<pb::ListLeaversResponse, Status> {
    client
        .list_leavers(pb::ListLeaversRequest {
            integration_id: INTEGRATION.into(),
            run_id: String::new(),
            held,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The integration's status.
pub async fn status_of(client: &mut Client) -> pb::IntegrationStatus {
    client
        .get_status(pb::GetStatusRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The selector of every dead letter of the integration.
pub fn every_letter() -> Option<pb::DeadLetterSelector> {
    Some(pb::DeadLetterSelector {
        integration_id: INTEGRATION.into(),
        all: true,
        ..Default::default()
    })
}

/// The dead letters of `selector` (the server's first page).
pub async fn list_letters(
    client: &mut Client,
    selector: Option<pb::DeadLetterSelector>,
) -> Result<pb::ListDeadLettersResponse, Status> {
    list_letters_page(client, selector, 0, 0).await
}

/// How many dead letters of the integration the control plane lists (its first page).
pub async fn letters_listed(client: &mut Client) -> usize {
    let selector = Some(pb::DeadLetterSelector {
        integration_id: INTEGRATION.into(),
        ..Default::default()
    });
    list_letters(client, selector).await.unwrap().letters.len()
}

/// The dead letters of `selector` after sequence `after_sequence`, at most `limit` (0: the
/// server's page).
pub async fn list_letters_page(
    client: &mut Client,
    selector: Option<pb::DeadLetterSelector>,
    limit: u32,
    after_sequence: u64,
) -> Result<pb::ListDeadLettersResponse, Status> {
    client
        .list_dead_letters(pb::ListDeadLettersRequest {
            selector,
            limit,
            after_sequence,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Replays the dead letters of `selector`, at most `limit` (0: no limit).
pub async fn replay_letters(
    client: &mut Client,
    selector: Option<pb::DeadLetterSelector>,
    limit: u32,
) -> Result<pb::ReplayDeadLettersResponse, Status> {
    client
        .replay_dead_letters(pb::ReplayDeadLettersRequest { selector, limit })
        .await
        .map(tonic::Response::into_inner)
}

/// Purges the dead letters of `selector` up to sequence `through_sequence` (0: no bound), or
/// only counts them when `dry_run`.
pub async fn purge_letters(
    client: &mut Client,
    selector: Option<pb::DeadLetterSelector>,
    dry_run: bool,
    through_sequence: u64,
) -> Result<pb::PurgeDeadLettersResponse, Status> {
    client
        .purge_dead_letters(pb::PurgeDeadLettersRequest {
            selector,
            dry_run,
            through_sequence,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts that a call was refused with `code`, saying `said`.
pub fn assert_refused(status: &Status, code: Code, said: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(said), "{}", status.message());
}

/// Triggers a run, retrying while the extractor is still starting (no responder yet).
pub async fn trigger(client: &mut Client) -> pb::TriggerSyncResponse {
    trigger_resending(client, false).await
}

/// Triggers a run (sending every record when `resend_all`), retrying while the extractor is
/// still starting.
pub async fn trigger_resending(client: &mut Client, resend_all: bool) -> pb::TriggerSyncResponse {
    once_the_extractor_answers(client, |mut client| async move {
        client
            .trigger_sync(pb::TriggerSyncRequest {
                integration_id: INTEGRATION.into(),
                resend_all,
            })
            .await
            .map(tonic::Response::into_inner)
    })
    .await
    .unwrap_or_else(|status| panic!("TriggerSync failed: {status:?}"))
}

/// Makes `call` with a fresh clone of `client` until it is not refused as UNAVAILABLE (no
/// extractor answering the loader yet, as while one starts), for up to 30 s: its answer.
pub async fn once_the_extractor_answers<T, F, Fut>(client: &Client, call: F) -> Result<T, Status>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    wait_for("the extractor to answer", Duration::from_secs(30), || {
        let answer = call(client.clone());
        async move {
            match answer.await {
                Err(status) if status.code() == Code::Unavailable => None,
                other => Some(other),
            }
        }
    })
    .await
}

/// Opens a WatchRun stream of run `run_id`.
pub async fn watch(client: &mut Client, run_id: &str) -> tonic::Streaming<pb::Run> {
    client
        .watch_run(pb::WatchRunRequest {
            integration_id: INTEGRATION.into(),
            run_id: run_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Follows a run to its end; returns every update.
pub async fn watch_to_end(client: &mut Client, run_id: &str) -> Vec<pb::Run> {
    let mut stream = watch(client, run_id).await;
    let mut updates = Vec::new();
    let collect = async {
        while let Some(update) = stream.next().await {
            updates.push(update.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(90), collect)
        .await
        .expect("the run ended within 90 s");
    updates
}

/// A worker count whose generated org (default seed) has `missing` workers without an e-mail,
/// so that a full run leaves that many dead letters.
pub fn workers_with_missing_emails(missing: usize) -> u64 {
    let seed = SageConfig::default().seed;
    let mut found = 0;
    for index in 0.. {
        let email = generate::worker(seed, index)["emailAddress"]
            .as_str()
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        if email.is_empty() {
            found += 1;
            if found == missing {
                return index + 5;
            }
        }
    }
    unreachable!()
}

pub fn counts(run: &pb::Run) -> pb::RunCounts {
    run.counts.unwrap()
}

pub fn default_toml() -> String {
    peoplesync_core::IntegrationConfig::default_for(INTEGRATION).to_toml()
}

/// The default config, with USER and EMAIL falling back to an address made from the worker id,
/// so that workers without an e-mail can be loaded: the fix before a replay.
pub fn fixed_toml() -> String {
    let fallback =
        "template = \"{{ worker.email or (worker.id | lower) ~ '@replayed.example.com' }}\"";
    let fixed = default_toml()
        .replace(
            "field = \"USER\"\nsource = \"Email\"",
            &format!("field = \"USER\"\n{fallback}"),
        )
        .replace(
            "field = \"EMAIL\"\nsource = \"Email\"",
            &format!("field = \"EMAIL\"\n{fallback}"),
        );
    assert_ne!(
        fixed,
        default_toml(),
        "the default config maps USER and EMAIL from Email"
    );
    fixed
}

/// syncctl against `stack`'s control plane with `token` (or none).
pub fn syncctl_with(stack: &Stack, token: Option<&str>, args: &[&str]) -> Ran {
    Syncctl::new(&stack.url()).token(token).run(args)
}

/// syncctl against `stack`'s control plane with its token.
pub fn syncctl(stack: &Stack, args: &[&str]) -> Ran {
    syncctl_with(stack, Some(TOKEN), args)
}

/// syncctl with `args`, `text` on its stdin.
pub fn syncctl_stdin(stack: &Stack, args: &[&str], text: &str) -> Ran {
    Syncctl::new(&stack.url())
        .token(Some(TOKEN))
        .run_with_stdin(args, text)
}
