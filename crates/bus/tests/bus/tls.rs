//! TLS to a real nats-server: a server certificate signed by a private CA is trusted once
//! `NATS_TLS_CA_FILE` names that CA, and a server that verifies clients admits the client
//! certificate given in `NATS_TLS_CERT_FILE` / `NATS_TLS_KEY_FILE` and refuses a client without
//! one.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use peoplesync_bus::{Bus, BusError, BusSettings, ConnectSettings, NatsTls};
use peoplesync_testkit::NatsServer;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

/// A private CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server_params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let server_key = KeyPair::generate().unwrap();
        let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["peoplesync-loader".to_owned()])
            .unwrap()
            .signed_by(&client_key, &ca, &ca_key)
            .unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        write("ca.pem", ca.pem());
        write("server.pem", server.pem());
        write("server-key.pem", server_key.serialize_pem());
        write("client.pem", client.pem());
        write("client-key.pem", client_key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The nats-server `tls` block; `verify` asks clients for a certificate.
    fn server_config(&self, verify: bool) -> String {
        let p = |name: &str| self.path(name).display().to_string();
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify}\n  timeout: 5\n}}\n",
            p("server.pem"),
            p("server-key.pem"),
            p("ca.pem"),
        )
    }
}

fn tls(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> ConnectSettings {
    ConnectSettings {
        tls: NatsTls {
            ca_file: ca.map(Path::to_path_buf),
            client_cert: client.map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
            required: true,
        },
        ..ConnectSettings::default()
    }
}

/// Connects, or the error; `None` when it neither connected nor failed within 10 s.
async fn try_connect(url: &str, settings: &ConnectSettings) -> Option<Result<Bus, BusError>> {
    tokio::time::timeout(
        Duration::from_secs(10),
        Bus::connect_with(url, "tls-test", BusSettings::default(), settings),
    )
    .await
    .ok()
}

#[tokio::test]
async fn a_private_ca_is_trusted_once_named_and_a_verifying_server_takes_the_client_certificate() {
    let pki = Pki::new();
    let nats = NatsServer::start_with_config(&pki.server_config(true));
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client-key.pem"),
    );

    let bus = try_connect(nats.url(), &tls(Some(&ca), Some((&cert, &key))))
        .await
        .expect("connects in time")
        .expect("the CA and the client certificate are accepted");
    assert!(bus.prepare_loader_consumer("acme").await.is_ok());

    // Without the CA the server's certificate is not trusted; without a client certificate the
    // server refuses the client: neither connects (the client reports each failed attempt and
    // keeps trying, as it does for a server it cannot reach).
    for (what, settings) in [
        ("no CA", tls(None, Some((&cert, &key)))),
        ("no client certificate", tls(Some(&ca), None)),
    ] {
        if let Some(Ok(_)) = try_connect(nats.url(), &settings).await {
            panic!("{what}: must not connect");
        }
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_pem_certificate_stops_start_up_naming_the_variable() {
    let pki = Pki::new();
    let nats = NatsServer::start_with_config(&pki.server_config(false));
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let err = match try_connect(nats.url(), &tls(Some(&garbage), None)).await {
        Some(Err(err)) => err,
        Some(Ok(_)) => panic!("a CA file without a certificate must not connect"),
        None => panic!("still retrying after 10 s"),
    };
    let text = err.to_string();
    assert!(text.contains("NATS_TLS_CA_FILE"), "{text}");
}
