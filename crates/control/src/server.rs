//! Serving the control plane: binds the listen address and loads TLS (so a taken port or a bad
//! certificate fails the loader's start-up, not some later moment), and serves SyncControl behind the bearer-token
//! interceptor beside the unauthenticated health and reflection services, until shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use peoplesync_bus::Bus;
use peoplesync_oomnitza::OomnitzaClient;
use peoplesync_proto::v1::sync_control_server::SyncControlServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
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

/// A bound, not yet serving, control plane.
#[derive(Debug)]
pub struct ControlServer {
    listener: TcpListener,
    config: ControlConfig,
    /// The server with its limits and, when configured, its certificate and key (read and
    /// checked at bind time).
    builder: Server,
    service: ControlService,
}

impl ControlServer {
    /// Binds `config.listen` for a control plane over `bus` and `oomnitza`, and reads its TLS
    /// certificate and key when it has them.
    pub async fn bind(
        config: ControlConfig,
        bus: Bus,
        oomnitza: OomnitzaClient,
        shutdown: CancellationToken,
    ) -> Result<ControlServer, ControlError> {
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
            service: ControlService::new(bus, oomnitza, shutdown),
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
    /// streams end with UNAVAILABLE so clients move to another replica).
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ControlError> {
        let addr = self.local_addr()?;
        let ControlServer {
            listener,
            config,
            mut builder,
            service,
        } = self;
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<SyncControlServer<ControlService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(peoplesync_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ControlError::Serve(format!("setting up reflection: {e}")))?;
        let control = SyncControlServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let authenticated = tonic::service::interceptor::InterceptedService::new(
            control,
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
        builder
            .add_service(health)
            .add_service(reflection)
            .add_service(authenticated)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                stopping.cancelled().await;
                health_reporter
                    .set_not_serving::<SyncControlServer<ControlService>>()
                    .await;
            })
            .await
            .map_err(|e| ControlError::Serve(e.to_string()))?;
        tracing::info!("control plane stopped");
        Ok(())
    }
}
