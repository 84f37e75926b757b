//! Who may call the control plane: the bearer token on every call (health and reflection
//! answer without one), and TLS for clients that trust the certificate.

use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_right_token_are_unauthenticated_while_health_and_reflection_answer() {
    let stack = Stack::without_extractor().await;

    let attempts = [
        (None, "missing `authorization: Bearer <token>`"),
        (
            Some("Bearer wrong-token-wrong-token"),
            "not the control plane's token",
        ),
        (Some(TOKEN), "must be `Bearer <token>`"),
    ];
    for (token, message) in attempts {
        let mut client = stack.client_with(token).await;
        let status = client
            .get_integration(pb::GetIntegrationRequest {
                integration_id: INTEGRATION.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        assert!(status.message().contains(message), "{}", status.message());
        // A streaming call is refused the same way, before anything is streamed.
        let status = client
            .watch_run(pb::WatchRunRequest {
                integration_id: INTEGRATION.into(),
                run_id: "r".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }

    // Reflection answers without a token and lists the control service.
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            stack.channel().await.unwrap(),
        );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = tokio::time::timeout(Duration::from_secs(60), replies.next())
        .await
        .expect("a reflection reply within 60 s")
        .unwrap()
        .unwrap();
    let Some(
        tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
            list,
        ),
    ) = reply.message_response
    else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"peoplesync.v1.SyncControl".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    // With the token, the same call works; no extractor means UNAVAILABLE with the reason.
    let mut client = stack.client().await;
    client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap();
    let status = client
        .trigger_sync(pb::TriggerSyncRequest {
            integration_id: INTEGRATION.into(),
            resend_all: false,
        })
        .await
        .unwrap_err();
    assert_refused(
        &status,
        Code::Unavailable,
        "no extractor is answering for integration sage-people",
    );
    let status = client
        .trigger_sync(pb::TriggerSyncRequest {
            integration_id: "bad.id".into(),
            resend_all: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_the_certificate() {
    let stack = Stack::start(Options {
        extractor: false,
        tls: true,
        ..Options::default()
    })
    .await;
    let mut client = stack.client().await;
    let config = get_config(&mut client).await;
    assert!(config.revision > 0);

    // Plain HTTP/2 against the TLS port does not get an answer.
    let plain = Channel::from_shared(format!("http://{}", stack.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut client =
            SyncControlClient::with_interceptor(channel, Bearer(Some(format!("Bearer {TOKEN}"))));
        assert!(
            client
                .get_integration(pb::GetIntegrationRequest {
                    integration_id: INTEGRATION.into(),
                })
                .await
                .is_err()
        );
    }

    // syncctl with --ca-file.
    let ca = tls_dir().join("ca.pem");
    let out = syncctl(
        &stack,
        &[
            "--ca-file",
            ca.to_str().unwrap(),
            "integration",
            "get",
            "-o",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["revision"], json!(config.revision));
    let out = syncctl(&stack, &["integration", "get"]);
    assert_eq!(
        out.code, 5,
        "an untrusted certificate cannot be reached: {}",
        out.stderr
    );
}
