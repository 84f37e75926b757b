//! Connecting to a real nats-server: user/password and token authorization (right ones work,
//! wrong ones end with a clear error instead of retrying for ever), credentials embedded in
//! `NATS_URL`, an NKey user, a `.creds` file on a server in operator mode, and several seed
//! URLs of which the first is dead; a server not up yet, and one whose JetStream does not
//! answer yet, are waited for.

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

/// A JWT as `nsc` writes them: a header, the claims (`nats` holds the kind's own) and an
/// Ed25519 signature by `issuer`, each base64url without padding.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": subject,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!("{header}.{}", b64.encode(claims.to_string()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64.encode(signature))
}

/// An account of `operator` whose users may use JetStream (`jetstream`) or not.
fn account_jwt(operator: &nkeys::KeyPair, account: &nkeys::KeyPair, jetstream: bool) -> String {
    let storage = if jetstream { -1 } else { 0 };
    let limits = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": storage, "disk_storage": storage, "streams": storage, "consumer": storage,
    });
    let nats = serde_json::json!({"limits": limits, "type": "account", "version": 2});
    jwt(operator, &account.public_key(), nats)
}

/// A `.creds` file of `user`, a user of `account`, as `nsc generate creds` writes it.
fn creds(account: &nkeys::KeyPair, user: &nkeys::KeyPair) -> String {
    let nats = serde_json::json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2,
    });
    let token = jwt(account, &user.public_key(), nats);
    format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    )
}

#[tokio::test]
async fn a_creds_file_of_an_operator_signed_account_connects_and_another_is_refused() {
    // A server in operator mode (as Synadia Cloud and `nsc`-managed servers run): accounts
    // are JWTs the operator signed, users authenticate with a `.creds` file.
    let operator = nkeys::KeyPair::new_operator();
    let (account, system) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_account());
    let config = format!(
        "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
        jwt(
            &operator,
            &operator.public_key(),
            serde_json::json!({"type": "operator", "version": 2})
        ),
        system.public_key(),
        account.public_key(),
        account_jwt(&operator, &account, true),
        system.public_key(),
        account_jwt(&operator, &system, false),
    );
    let nats = NatsServer::start_with_config(&config);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        with_auth(NatsAuth::CredsFile(path))
    };
    let user = nkeys::KeyPair::new_user();
    assert_connects(nats.url(), &file("loader.creds", creds(&account, &user))).await;

    // A user of an account the operator never signed.
    let stranger = nkeys::KeyPair::new_account();
    let result = connect(
        nats.url(),
        &file(
            "stranger.creds",
            creds(&stranger, &nkeys::KeyPair::new_user()),
        ),
    )
    .await;
    let err = result.expect_err("an unknown account's user must not connect");
    assert!(matches!(err, BusError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("NATS_CREDS_FILE"), "{err}");
}
