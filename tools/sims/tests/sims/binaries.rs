//! The simulator binaries as processes.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::http::{Admin, header, json, send};

type Stdout = BufReader<tokio::process::ChildStdout>;

/// Starts a simulator binary and reads its one stdout line.
async fn start(mut command: Command) -> (Child, Stdout, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
        .await
        .expect("announces in time")
        .expect("reads stdout");
    let url = line
        .strip_suffix('\n')
        .and_then(|l| l.strip_prefix("listening on "))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    (child, stdout, url)
}

/// Sends SIGTERM, expects a clean exit, and checks nothing else went to stdout.
async fn terminate(mut child: Child, mut stdout: Stdout) {
    let pid = child.id().expect("running").to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    stdout
        .read_to_string(&mut rest)
        .await
        .expect("reads stdout");
    assert!(rest.is_empty(), "extra stdout: {rest:?}");
}

/// A client-credentials token from the simulator at `url`, and the first page read with it.
async fn first_page(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
) -> (String, reqwest::Response) {
    let token = json(
        send(client.post(format!("{url}/services/oauth2/token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("client_secret", secret),
        ]))
        .await,
    )
    .await;
    let t = token["access_token"].as_str().expect("token").to_owned();
    let page = send(
        client
            .get(format!("{url}/services/apexrest/spapi/v4/employees"))
            .bearer_auth(&t)
            .header("Accept", "application/json"),
    )
    .await;
    (t, page)
}

#[tokio::test]
async fn sage_people_sim_can_leave_the_limit_header_off_and_serve_the_limits() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sage-people-sim"));
    command
        .args(["--listen", "127.0.0.1:0", "--api-quota", "50"])
        .env("SAGE_SIM_NO_LIMIT_INFO_HEADER", "true")
        .env("SAGE_SIM_WORKERS", "3");
    let (child, stdout, url) = start(command).await;
    let client = reqwest::Client::new();
    let (token, page) = first_page(&client, &url, "sim-secret").await;
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert_eq!(header(&page, "sforce-limit-info"), None);
    let limits = json(
        send(
            client
                .get(format!("{url}/services/data/v60.0/limits"))
                .bearer_auth(&token),
        )
        .await,
    )
    .await;
    assert_eq!(
        limits["DailyApiRequests"],
        serde_json::json!({"Max": 50, "Remaining": 49})
    );
    terminate(child, stdout).await;
}

#[tokio::test]
async fn sage_people_sim_serves_with_flags_and_env_and_stops_on_sigterm() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sage-people-sim"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--page-size",
            "2",
            "--client-secret",
            "flag-secret",
        ])
        .args(["--api-quota", "50", "--api-usage", "10"])
        .env("SAGE_SIM_WORKERS", "3");
    let (child, stdout, url) = start(command).await;
    let client = reqwest::Client::new();
    let (_, page) = first_page(&client, &url, "flag-secret").await;
    assert_eq!(header(&page, "sforce-limit-info"), Some("api-usage=11/50"));
    let body = json(page).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    let stats = Admin::new(&client, &url).get("stats").await;
    assert_eq!(stats["workers"], 3);
    terminate(child, stdout).await;
}

#[tokio::test]
async fn oomnitza_sim_serves_with_flags_and_stops_on_sigterm() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oomnitza-sim"));
    command
        .args(["--api-token", "flag-token", "--forbidden"])
        .args([
            "--processing-delay-ms",
            "0",
            "--refuse",
            "EMAIL=@blocked\\.example$",
        ])
        .env("OOMNITZA_SIM_REQUIRE", "FIRST_NAME=^[A-Z]\nLAST_NAME=.")
        .env("OOMNITZA_SIM_CUSTOM_FIELD_NAMES", "id");
    let (child, stdout, url) = start(command).await;
    let client = reqwest::Client::new();
    let forbidden = send(
        client
            .get(format!("{url}/api/v3/users"))
            .header("Authorization2", "flag-token"),
    )
    .await;
    assert_eq!(forbidden.status(), reqwest::StatusCode::FORBIDDEN);
    let faults = Admin::new(&client, &url).get("faults").await;
    assert_eq!(faults["forbidden"], true);
    let behavior = Admin::new(&client, &url).get("behavior").await;
    assert_eq!(behavior["processing_delay_ms"], 0);
    assert_eq!(behavior["custom_field_names"], "id");
    let rules: Vec<(&str, &str, bool)> = behavior["validation_rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["field"].as_str().unwrap_or_default(),
                r["pattern"].as_str().unwrap_or_default(),
                r["must_match"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            ("EMAIL", "@blocked\\.example$", false),
            ("FIRST_NAME", "^[A-Z]", true),
            ("LAST_NAME", ".", true)
        ]
    );
    terminate(child, stdout).await;
}
