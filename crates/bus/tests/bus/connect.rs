//! Connecting to a real nats-server: user/password and token authorization (right ones work,
//! wrong ones end with a clear error instead of retrying for ever), credentials embedded in
//! `NATS_URL`, an NKey user, and several seed URLs of which the first is dead; a server
//! not up yet, and one whose JetStream does not answer yet, are waited for.

use std::time::Duration;

use peoplesync_bus::{Bus, BusError, BusSettings, ConnectSettings, NatsAuth};
use peoplesync_testkit::NatsServer;
use secrecy::SecretString;

const USER_CONFIG: &str = "authorization { user: bob, password: \"s3cret-pw\" }\n";
const TOKEN_CONFIG: &str = "authorization { token: \"t0ken-value\" }\n";

fn with_auth(auth: NatsAuth) -> ConnectSettings {
    ConnectSettings {
        auth,
        ..ConnectSettings::default()
    }
}

fn user(user: &str, password: &str) -> ConnectSettings {
    with_auth(NatsAuth::UserPassword {
        user: user.to_owned(),
        password: SecretString::from(password.to_owned()),
    })
}

fn token(token: &str) -> ConnectSettings {
    with_auth(NatsAuth::Token(SecretString::from(token.to_owned())))
}

async fn connect(url: &str, settings: &ConnectSettings) -> Result<Bus, BusError> {
    tokio::time::timeout(
        Duration::from_secs(30),
        Bus::connect_with(url, "connect-test", BusSettings::default(), settings),
    )
    .await
    .expect("connecting neither succeeded nor failed within 30 s")
}

/// Asserts `settings` connect to `url` and may set the topology up.
async fn assert_connects(url: &str, settings: &ConnectSettings) {
    let bus = connect(url, settings).await.unwrap();
    assert!(bus.prepare_loader_consumer("acme").await.is_ok());
}

/// Asserts `result` is the refusal error naming `variables`, without leaking `secret`.
fn assert_refused(result: Result<Bus, BusError>, variables: &str, secret: &str) {
    let err = result.expect_err("wrong credentials must not connect");
    assert!(matches!(err, BusError::Auth { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("refused"), "{text}");
    assert!(text.contains(variables), "{text}");
    assert!(!text.contains(secret), "{text}");
}

#[tokio::test]
async fn an_nkey_user_connects_with_its_seed_and_another_seed_is_refused() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let config = format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
        user.public_key()
    );
    let nats = NatsServer::start_with_config(&config);
    let nkey = |seed: String| with_auth(NatsAuth::NKey(SecretString::from(seed)));
    assert_connects(nats.url(), &nkey(seed)).await;

    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    assert_refused(
        connect(nats.url(), &nkey(stranger.clone())).await,
        "NATS_NKEY_SEED",
        &stranger,
    );
}

#[tokio::test]
async fn user_and_password_right_connects_wrong_is_refused() {
    let nats = NatsServer::start_with_config(USER_CONFIG);
    assert_connects(nats.url(), &user("bob", "s3cret-pw")).await;

    assert_refused(
        connect(nats.url(), &user("bob", "wrong-pw")).await,
        "NATS_USER/NATS_PASSWORD",
        "wrong-pw",
    );
    assert_refused(
        connect(nats.url(), &ConnectSettings::default()).await,
        "no NATS_* credential variable",
        "s3cret-pw",
    );
}

#[tokio::test]
async fn a_user_of_an_account_with_jetstream_sets_the_topology_up() {
    // The account configuration docs/operations.md shows.
    let nats = NatsServer::start_with_config(
        "accounts { PEOPLESYNC { jetstream: enabled\n users = [ { user: peoplesync, password: \"acct-pw\" } ] } }\n",
    );
    assert_connects(nats.url(), &user("peoplesync", "acct-pw")).await;
    assert_refused(
        connect(nats.url(), &user("peoplesync", "nope")).await,
        "NATS_USER/NATS_PASSWORD",
        "nope",
    );
}

#[tokio::test]
async fn token_right_connects_wrong_is_refused() {
    let nats = NatsServer::start_with_config(TOKEN_CONFIG);
    assert_connects(nats.url(), &token("t0ken-value")).await;
    assert_refused(
        connect(nats.url(), &token("not-the-token")).await,
        "NATS_TOKEN",
        "not-the-token",
    );
}

#[tokio::test]
async fn credentials_in_the_url_are_honoured() {
    let nats = NatsServer::start_with_config(USER_CONFIG);
    let with_credentials = nats.url().replace("nats://", "nats://bob:s3cret-pw@");
    assert_connects(&with_credentials, &ConnectSettings::default()).await;

    let wrong = nats.url().replace("nats://", "nats://bob:bad-pw@");
    assert_refused(
        connect(&wrong, &ConnectSettings::default()).await,
        "NATS_URL",
        "bad-pw",
    );
}

#[tokio::test]
async fn a_dead_first_seed_url_falls_through_to_the_next() {
    let nats = NatsServer::start_with_config(TOKEN_CONFIG);
    // A port nothing listens on: bound, then released.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let seeds = format!("nats://127.0.0.1:{dead_port} , {}", nats.url());
    assert_connects(&seeds, &token("t0ken-value")).await;
}

#[tokio::test]
async fn a_bad_url_or_two_methods_are_refused_before_connecting() {
    let err = connect("nats://127.0.0.1:4222,nats://host:notaport", &token("t"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("NATS_URL"), "{err}");
    assert!(err.contains("nats://host:notaport"), "{err}");

    let err = connect("nats://bob:pw@127.0.0.1:4222", &token("t"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("credentials in NATS_URL, NATS_TOKEN"), "{err}");
}

/// Connects to `url` in the background; after `wait` the attempt must still be going on, and
/// once `answer` has made the server answer, the topology must be set up within 30 s.
async fn waits_for_the_server(url: &str, wait: Duration, answer: impl FnOnce()) {
    let connecting = tokio::spawn({
        let url = url.to_owned();
        async move {
            Bus::connect_with(
                &url,
                "connect-test",
                BusSettings::default(),
                &ConnectSettings::default(),
            )
            .await
        }
    });
    tokio::time::sleep(wait).await;
    assert!(
        !connecting.is_finished(),
        "connecting ended before the server answered: {:?}",
        connecting.await.unwrap().err()
    );
    answer();
    let bus = tokio::time::timeout(Duration::from_secs(30), connecting)
        .await
        .expect("the set-up completed once the server answered")
        .unwrap()
        .expect("the topology is set up");
    assert!(bus.prepare_loader_consumer("acme").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_not_up_yet_is_waited_for_past_the_request_timeouts() {
    let mut server = NatsServer::start();
    let url = server.url().to_owned();
    server.kill();
    // Longer than two JetStream request timeouts (5 s each), after which setting the topology
    // up against a server that does not answer used to fail.
    waits_for_the_server(&url, Duration::from_secs(12), || server.restart()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_not_answering_yet_is_waited_for_and_the_set_up_completes() {
    // A server whose JetStream does not answer (as a cluster electing its leaders, or a node
    // still starting, answers): the connection is made, and the set-up must wait, not fail.
    let mut server = NatsServer::start_without_jetstream();
    let url = server.url().to_owned();
    waits_for_the_server(&url, Duration::from_secs(2), || {
        server.restart_with_jetstream();
    })
    .await;
}
