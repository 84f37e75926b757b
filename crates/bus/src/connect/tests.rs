use super::*;

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|&(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    move |wanted| {
        owned
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, value)| value.clone())
    }
}

#[test]
fn a_service_list_gets_every_connection_variable_after_its_own() {
    const OWN: &[&str] = &["NATS_URL", "RUST_LOG"];
    const ALL: [&str; 14] = with_env_vars::<14>(OWN);
    assert_eq!(&ALL[..2], OWN);
    assert_eq!(&ALL[2..], ENV_VARS);
}

#[test]
fn comma_separated_urls_with_spaces_parse_into_each_server() {
    let servers = NatsServers::parse(" nats://n1:4222 , nats://n2:4223,n3").unwrap();
    let hosts: Vec<(String, u16)> = servers
        .addrs
        .iter()
        .map(|a| (a.host().to_owned(), a.port()))
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("n1".to_owned(), 4222),
            ("n2".to_owned(), 4223),
            ("n3".to_owned(), 4222)
        ]
    );
    assert!(servers.credentials.is_none());
}

#[test]
fn a_bad_part_is_named_with_its_credentials_hidden() {
    let err = NatsServers::parse("nats://n1:4222,nats://bob:hunter2@n2:99999")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("NATS_URL"), "{err}");
    assert!(err.contains("nats://***@n2:99999"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = NatsServers::parse("http://n1:4222")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`http://n1:4222`"), "{err}");
    assert!(matches!(
        NatsServers::parse(" , "),
        Err(ConnectConfigError::NoUrl)
    ));
}

#[test]
fn url_credentials_are_taken_out_of_the_urls() {
    let servers =
        NatsServers::parse("nats://bob:p%40ss@n1:4222,nats://bob:p%40ss@n2:4222").unwrap();
    assert_eq!(servers.shown(), "nats://n1:4222,nats://n2:4222");
    match &servers.credentials {
        Some(NatsAuth::UserPassword { user, password }) => {
            assert_eq!(user, "bob");
            assert_eq!(password.expose_secret(), "p@ss");
        }
        other => panic!("expected user and password, got {other:?}"),
    }
    let token = NatsServers::parse("nats://s3cret@n1").unwrap();
    assert!(matches!(token.credentials, Some(NatsAuth::Token(t)) if t.expose_secret() == "s3cret"));
    assert!(matches!(
        NatsServers::parse("nats://a:b@n1,nats://n2"),
        Err(ConnectConfigError::MixedUrlCredentials)
    ));
}

/// The error reading `pairs` as the connection variables ends with, as shown.
fn refusal(pairs: &[(&str, &str)]) -> String {
    ConnectSettings::from_vars(vars(pairs))
        .unwrap_err()
        .to_string()
}

#[test]
fn more_than_one_method_is_refused_naming_the_variables() {
    let err = refusal(&[
        ("NATS_USER", "bob"),
        ("NATS_PASSWORD", "pw"),
        ("NATS_TOKEN", "t"),
    ]);
    assert!(err.contains("NATS_USER/NATS_PASSWORD, NATS_TOKEN"), "{err}");

    let settings = ConnectSettings::from_vars(vars(&[("NATS_TOKEN", "t")])).unwrap();
    let servers = NatsServers::parse("nats://bob:pw@n1").unwrap();
    let err = settings.effective_auth(&servers).unwrap_err().to_string();
    assert!(err.contains("credentials in NATS_URL, NATS_TOKEN"), "{err}");
}

#[test]
fn half_a_pair_and_a_bad_flag_are_refused() {
    for (pair, expected) in [
        (("NATS_USER", "bob"), "NATS_USER is set but NATS_PASSWORD"),
        (("NATS_TLS_CERT_FILE", "/c.pem"), "NATS_TLS_KEY_FILE"),
        (("NATS_TLS_REQUIRED", "maybe"), "NATS_TLS_REQUIRED=maybe"),
        (
            ("NATS_CREDS_FILE", "/nonexistent/x.creds"),
            "NATS_CREDS_FILE=/nonexistent/x.creds",
        ),
    ] {
        let err = refusal(&[pair]);
        assert!(err.contains(expected), "{pair:?}: {err}");
    }
}

#[test]
fn each_method_is_read_and_its_secret_redacted_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("seed");
    std::fs::write(&seed_file, "SUSEEDSECRET\n").unwrap();
    let seed_path = seed_file.to_string_lossy().into_owned();
    let cases = [
        vars(&[("NATS_USER", "bob"), ("NATS_PASSWORD", "hunter2")]),
        vars(&[("NATS_TOKEN", "hunter2")]),
        vars(&[("NATS_NKEY_SEED_FILE", &seed_path)]),
    ];
    let mut methods = Vec::new();
    for case in cases {
        let settings = ConnectSettings::from_vars(case).unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("SUSEEDSECRET"), "{shown}");
        methods.push(settings.auth.method());
    }
    assert_eq!(methods, ["user and password", "token", "NKey seed"]);
    let servers = NatsServers::parse("nats://bob:hunter2@n1").unwrap();
    assert!(!format!("{servers:?}").contains("hunter2"));
    assert!(matches!(
        ConnectSettings::from_vars(vars(&[])).unwrap().auth,
        NatsAuth::None
    ));
}
