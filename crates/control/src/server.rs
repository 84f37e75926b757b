//! Serving the control plane: binds the listen address and loads TLS (so a taken port or a bad
//! certificate fails the loader's start-up, before it connects to NATS), and serves SyncControl
//! behind the bearer-token interceptor beside the unauthenticated health and reflection services,
//! until shutdown. It serves from start-up on: until the loader has connected and hands its
//! service over ([`ControlGate::open`]), health answers SERVING for the server (`""`, what a
//! liveness probe asks) and NOT_SERVING for `peoplesync.v1.SyncControl`, and every SyncControl
//! call answers UNAVAILABLE saying the replica is still starting.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use peoplesync_bus::Bus;
use peoplesync_oomnitza::OomnitzaClient;
use peoplesync_proto::v1::sync_control_server::SyncControlServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::Authenticator;
use crate::config::{Auth, ControlConfig};
use crate::{ControlError, ControlService};

/// Calls in progress per connection at most.
const CONCURRENCY_PER_CONNECTION: usize = 64;
/// HTTP/2 streams per connection at most.
const MAX_STREAMS: u32 = 256;
/// Largest request or reply message.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// What a SyncControl call is told before the loader has connected.
const STARTING: &str = "this loader replica is still starting: it serves calls once it has \
     connected to NATS and checked Oomnitza; its /readyz says what it waits for; retry in a moment";

/// A bound, not yet serving, control plane.
#[derive(Debug)]
pub struct ControlServer {
    listener: TcpListener,
    config: ControlConfig,
    /// The server with its limits and, when configured, its certificate and key (read and
    /// checked at bind time).
    builder: Server,
}

/// Hands the control service to a serving control plane once the loader has connected to NATS:
/// until then its calls answer UNAVAILABLE. Clones share the one service.
#[derive(Debug, Clone)]
pub struct ControlGate(Arc<watch::Sender<Option<SyncControlServer<ControlService>>>>);

impl Default for ControlGate {
    fn default() -> ControlGate {
        ControlGate(Arc::new(watch::Sender::new(None)))
    }
}

impl ControlGate {
    /// A closed gate.
    pub fn new() -> ControlGate {
        ControlGate::default()
    }

    /// Serves SyncControl over `bus` (the loader's connection) and `oomnitza` from now on; its
    /// WatchRun streams end when `shutdown` is cancelled.
    pub fn open(&self, bus: Bus, oomnitza: OomnitzaClient, shutdown: CancellationToken) {
        let control = SyncControlServer::new(ControlService::new(bus, oomnitza, shutdown))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        self.0.send_replace(Some(control));
    }
}

/// SyncControl behind a [`ControlGate`]: the service once it is open, UNAVAILABLE before.
#[derive(Debug, Clone)]
struct Gated(watch::Receiver<Option<SyncControlServer<ControlService>>>);

impl NamedService for Gated {
    const NAME: &'static str = <SyncControlServer<ControlService> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for Gated
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let control = self.0.borrow().clone();
        match control {
            Some(mut control) => control.call(request),
            None => Box::pin(std::future::ready(Ok(
                tonic::Status::unavailable(STARTING).into_http()
            ))),
        }
    }
}

impl ControlServer {
    /// Binds `config.listen` and reads the TLS certificate and key when it has them.
    pub async fn bind(config: ControlConfig) -> Result<ControlServer, ControlError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ControlError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let mut builder = Server::builder()
            .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
            .max_concurrent_streams(MAX_STREAMS)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .tcp_keepalive(Some(Duration::from_secs(60)));
        if let Some(tls) = &config.tls {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|e| ControlError::Tls {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
            };
            let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(|e| ControlError::Tls {
                    path: format!("{} and {}", tls.cert.display(), tls.key.display()),
                    message: e.to_string(),
                })?;
        }
        Ok(ControlServer {
            listener,
            builder,
            config,
        })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn local_addr(&self) -> Result<SocketAddr, ControlError> {
        self.listener
            .local_addr()
            .map_err(|source| ControlError::Bind {
                addr: self.config.listen,
                source,
            })
    }

    /// Serves until `shutdown` is cancelled, then lets calls in progress finish (WatchRun
    /// streams end with UNAVAILABLE so clients move to another replica). SyncControl answers
    /// once `gate` is open.
    pub async fn serve(
        self,
        gate: ControlGate,
        shutdown: CancellationToken,
    ) -> Result<(), ControlError> {
        let addr = self.local_addr()?;
        let ControlServer {
            listener,
            config,
            mut builder,
        } = self;
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter.set_not_serving::<Gated>().await;
        let mut opened = gate.0.subscribe();
        let reporter = health_reporter.clone();
        let stopped = shutdown.clone();
        let serving = tokio::spawn(async move {
            let open = tokio::select! {
                open = opened.wait_for(Option::is_some) => open.is_ok(),
                () = stopped.cancelled() => false,
            };
            if open {
                reporter.set_serving::<Gated>().await;
            }
        });
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(peoplesync_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ControlError::Serve(format!("setting up reflection: {e}")))?;
        let authenticated = tonic::service::interceptor::InterceptedService::new(
            Gated(gate.0.subscribe()),
            Authenticator::new(&config.auth),
        );
        match config.auth {
            Auth::Token(_) => tracing::info!(
                %addr,
                tls = config.tls.is_some(),
                "control plane listening on {addr}"
            ),
            Auth::Insecure => tracing::warn!(
                %addr,
                tls = config.tls.is_some(),
                "control plane listening on {addr} WITHOUT AUTHENTICATION (CONTROL_INSECURE_NO_AUTH=true): \
                 anyone who can reach this address can trigger runs, change configs and purge dead letters"
            ),
        }
        let stopping = shutdown.clone();
        let served = builder
            .add_service(health)
            .add_service(reflection)
            .add_service(authenticated)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                stopping.cancelled().await;
                health_reporter.set_not_serving::<Gated>().await;
            })
            .await;
        serving.abort();
        served.map_err(|e| ControlError::Serve(e.to_string()))?;
        tracing::info!("control plane stopped");
        Ok(())
    }
}
