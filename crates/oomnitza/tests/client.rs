//! Integration tests of the Oomnitza client against the in-process Oomnitza simulator: bulk
//! posts and how each refusal is classified, portions, finalize, run logs, reading users (one
//! page, every page, many keys), both ways to authenticate (with the session's CSRF token),
//! retries of read calls, timeouts and redaction.
//!
//! Each test spawns its own simulator on a free port; retry delays are a few milliseconds. The
//! simulator processes accepted records afterwards, as Oomnitza does: tests wait for it
//! (`wait_idle`) before they look at what landed.

use std::time::Duration;

use peoplesync_oomnitza::{
    BulkRequest, ErrorKind, FieldProbe, Finalize, OomnitzaAuth, OomnitzaClient, OomnitzaConfig,
    PortionStatus, RetryPolicy, RunCounts,
};
use peoplesync_sims::oomnitza::{
    OomnitzaBehavior, OomnitzaConfig as SimConfig, OomnitzaFaults, OomnitzaSim, SAGE_USER_ID_FIELD,
};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

const PORTION: &str = "29f56f78-03ca-4e64-9ee3-c01758addc42";

async fn spawn() -> OomnitzaSim {
    OomnitzaSim::spawn(SimConfig::default())
        .await
        .expect("the simulator starts")
}

async fn spawn_with(behavior: OomnitzaBehavior) -> OomnitzaSim {
    OomnitzaSim::spawn(SimConfig {
        behavior,
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts")
}

/// A simulator with `faults` on from its first request.
async fn spawn_faulty(faults: OomnitzaFaults) -> OomnitzaSim {
    let sim = spawn().await;
    sim.set_faults(faults);
    sim
}

/// A client that logs in with the simulator's login and password.
fn password_client(sim: &OomnitzaSim) -> OomnitzaClient {
    let defaults = SimConfig::default();
    client_with(
        sim,
        OomnitzaAuth::Password {
            login: defaults.login,
            password: SecretString::from(defaults.password),
        },
    )
}

fn client_with(sim: &OomnitzaSim, auth: OomnitzaAuth) -> OomnitzaClient {
    let mut config = OomnitzaConfig::new(sim.url(), auth);
    config.retry = RetryPolicy::QUICK;
    config.request_timeout = Duration::from_secs(5);
    OomnitzaClient::new(config).expect("a valid configuration")
}

/// The simulator's API token.
fn api_token() -> OomnitzaAuth {
    OomnitzaAuth::ApiToken(SecretString::from(SimConfig::default().api_token))
}

fn client(sim: &OomnitzaSim) -> OomnitzaClient {
    client_with(sim, api_token())
}

/// A simulator and a client of it with the API token.
async fn sim_and_client() -> (OomnitzaSim, OomnitzaClient) {
    let sim = spawn().await;
    let client = client(&sim);
    (sim, client)
}

/// A simulator with `faults` on from its first request, and a client of it with the API token.
async fn faulty_sim_and_client(faults: OomnitzaFaults) -> (OomnitzaSim, OomnitzaClient) {
    let sim = spawn_faulty(faults).await;
    let client = client(&sim);
    (sim, client)
}

fn user(n: usize) -> Map<String, Value> {
    let email = format!("worker.{n}@example.com");
    let record = json!({
        "USER": email,
        "EMAIL": email,
        "FIRST_NAME": format!("First{n}"),
        "LAST_NAME": format!("Last{n}"),
        "PERMISSIONS_ID": "25",
        SAGE_USER_ID_FIELD: format!("a2G{n:015}"),
    });
    match record {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn users(range: std::ops::Range<usize>) -> Vec<Map<String, Value>> {
    range.map(user).collect()
}

fn sync_field() -> Vec<String> {
    vec![SAGE_USER_ID_FIELD.to_owned(), "EMAIL".to_owned()]
}

/// Asserts that `error` is of `kind`, from an answer of HTTP `status` (`None`: no answer).
fn assert_error(error: &peoplesync_oomnitza::Error, kind: ErrorKind, status: Option<u16>) {
    assert_eq!(error.kind(), kind, "{error}");
    assert_eq!(error.status(), status, "{error}");
}

/// Posts `records` to [`PORTION`] with the default sync fields.
async fn post(
    client: &OomnitzaClient,
    records: &[Map<String, Value>],
) -> Result<(), peoplesync_oomnitza::Error> {
    client
        .post_bulk(&request(PORTION, &sync_field(), records))
        .await
}

fn request<'a>(
    portion: &'a str,
    sync_field: &'a [String],
    records: &'a [Map<String, Value>],
) -> BulkRequest<'a> {
    BulkRequest {
        portion,
        sync_field,
        insert_only: false,
        update_only: false,
        records,
        error: None,
    }
}

mod bulk {
    use super::*;

    #[tokio::test]
    async fn an_accepted_batch_creates_the_users() {
        let (sim, client) = sim_and_client().await;
        let records = users(0..3);
        post(&client, &records).await.unwrap();
        sim.wait_idle().await;
        let stored = sim.users();
        assert_eq!(stored.len(), 3);
        assert_eq!(stored[0]["EMAIL"], "worker.0@example.com");
        assert_eq!(stored[2][SAGE_USER_ID_FIELD], "a2G000000000000002");
        let stats = sim.stats();
        assert_eq!(stats.bulk_requests, 1);
        assert_eq!(stats.bulk_records, 3);
        assert_eq!(stats.records_created, 3);
    }

    #[tokio::test]
    async fn the_same_batch_twice_is_unchanged_the_second_time() {
        let (sim, client) = sim_and_client().await;
        let records = users(0..5);
        post(&client, &records).await.unwrap();
        post(&client, &records).await.unwrap();
        sim.wait_idle().await;
        assert_eq!(sim.users().len(), 5);
        assert_eq!(sim.stats().records_unchanged, 5);
    }

    #[tokio::test]
    async fn a_bad_envelope_is_rejected_with_a_body_excerpt() {
        let sim = spawn().await;
        let records = users(0..2);
        let sync_field = sync_field();
        let both = BulkRequest {
            insert_only: true,
            update_only: true,
            ..request(PORTION, &sync_field, &records)
        };
        let error = client(&sim).post_bulk(&both).await.unwrap_err();
        assert_error(&error, ErrorKind::Rejected, Some(400));
        let excerpt = error.body_excerpt().expect("the body is kept");
        assert!(excerpt.contains("insert_only"), "{excerpt}");
        assert!(error.to_string().contains("insert_only"), "{error}");
        assert!(sim.users().is_empty());
    }

    #[tokio::test]
    async fn a_bad_record_is_accepted_and_fails_alone_in_the_run_log() {
        let (sim, client) = sim_and_client().await;
        let mut records = users(0..3);
        records[1].insert("PERMISSIONS_ID".into(), json!("999"));
        post(&client, &records).await.unwrap();
        sim.wait_portion_idle(PORTION).await;
        let log = client.run_log(PORTION).await.unwrap();
        assert_eq!((log.counts.added, log.counts.failed), (2, 1), "{log:?}");
        let failed = log.failed_messages();
        assert_eq!(failed.len(), 1, "{log:?}");
        assert!(
            failed[0].contains("worker.1@example.com") && failed[0].contains("PERMISSIONS_ID"),
            "{failed:?}"
        );
        assert_eq!(sim.users().len(), 2);
    }

    #[tokio::test]
    async fn a_poisoned_email_is_rejected() {
        let sim = spawn_faulty(OomnitzaFaults {
            poison_emails: vec!["WORKER.1@example.com".into()],
            ..OomnitzaFaults::default()
        })
        .await;
        let records = users(0..3);
        let error = post(&client(&sim), &records).await.unwrap_err();
        assert_error(&error, ErrorKind::Rejected, Some(422));
    }

    #[tokio::test]
    async fn posting_after_finalize_is_closed() {
        let (_sim, client) = sim_and_client().await;
        let records = users(0..2);
        post(&client, &records).await.unwrap();
        assert_eq!(client.finalize(PORTION).await.unwrap(), Finalize::Finalized);
        let error = post(&client, &records).await.unwrap_err();
        assert_error(&error, ErrorKind::Closed, Some(409));
        assert!(error.to_string().contains("stop sending"), "{error}");
    }

    #[tokio::test]
    async fn posting_to_a_canceled_portion_is_accepted_and_discarded() {
        let (sim, client) = sim_and_client().await;
        sim.cancel_portion(PORTION);
        let records = users(0..2);
        post(&client, &records).await.unwrap();
        assert_eq!(
            client.portion(PORTION).await.unwrap(),
            Some(PortionStatus {
                canceled: true,
                finalized: false
            })
        );
        let log = client.run_log(PORTION).await.unwrap();
        assert_eq!((log.counts.canceled, log.processing()), (2, 0), "{log:?}");
        assert_eq!(log.status, "canceled");
        sim.wait_idle().await;
        assert!(sim.users().is_empty());
    }

    #[tokio::test]
    async fn a_rate_limit_is_transient_with_retry_after() {
        let (_sim, client) = faulty_sim_and_client(OomnitzaFaults {
            rate_limit_per_sec: Some(2),
            retry_after_secs: Some(7),
            ..OomnitzaFaults::default()
        })
        .await;
        let records = users(0..1);
        let sync_field = sync_field();
        let batch = request(PORTION, &sync_field, &records);
        let mut limited = None;
        for _ in 0..10 {
            if let Err(error) = client.post_bulk(&batch).await {
                limited = Some(error);
                break;
            }
        }
        let error = limited.expect("the rate limit bites");
        assert_error(&error, ErrorKind::Transient, Some(429));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn a_bulk_post_is_tried_once_only() {
        let sim = spawn_faulty(OomnitzaFaults {
            outage_for_ms: Some(60_000),
            ..OomnitzaFaults::default()
        })
        .await;
        let records = users(0..1);
        let error = post(&client(&sim), &records).await.unwrap_err();
        assert_error(&error, ErrorKind::Transient, Some(503));
        assert_eq!(sim.stats().api_requests, 1);
    }

    #[tokio::test]
    async fn records_the_client_could_not_build_are_reported_as_failed() {
        let (sim, client) = sim_and_client().await;
        let records = vec![
            json!({"id": "a2G000000000000009", "emailAddress": null})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ];
        let sync_field = sync_field();
        let report = BulkRequest {
            error: Some("no e-mail address in Sage People"),
            ..request(PORTION, &sync_field, &records)
        };
        client.post_bulk(&report).await.unwrap();
        sim.wait_portion_idle(PORTION).await;
        let log = client.run_log(PORTION).await.unwrap();
        assert_eq!(log.counts.failed, 1);
        assert!(
            log.failed_messages()[0].ends_with("no e-mail address in Sage People"),
            "{log:?}"
        );
        assert!(sim.users().is_empty());
    }
}

mod portions {
    use super::*;

    #[tokio::test]
    async fn an_unknown_portion_is_none_and_a_used_one_is_open() {
        let (_sim, client) = sim_and_client().await;
        assert_eq!(client.portion(PORTION).await.unwrap(), None);
        let records = users(0..1);
        post(&client, &records).await.unwrap();
        assert_eq!(
            client.portion(PORTION).await.unwrap(),
            Some(PortionStatus::default())
        );
    }

    #[tokio::test]
    async fn the_field_check_finalizes_its_test_run_and_applies_nothing() {
        let (sim, client) = sim_and_client().await;
        let keys = ["EMAIL".to_owned()];
        let fields = ["USER", "EMAIL", "FIRST_NAME"].map(str::to_owned);
        let known = client.probe_field_ids(&keys, &fields).await.unwrap();
        assert!(matches!(known, FieldProbe::Known { .. }), "{known:?}");
        let finalized: Vec<String> = sim.stats().finalize_calls.into_keys().collect();
        assert_eq!(finalized.len(), 1, "{finalized:?}");
        let test_run = sim.portion(&finalized[0]).expect("the check's portion");
        assert!(test_run.test_run && test_run.finalized, "{test_run:?}");
        assert!(sim.users().is_empty());
        // An envelope Oomnitza refuses opens no run: there is nothing to finalize.
        let unknown = ["NO_SUCH_FIELD".to_owned()];
        let refused = client.probe_field_ids(&keys, &unknown).await.unwrap();
        assert!(matches!(refused, FieldProbe::Refused { .. }), "{refused:?}");
        assert_eq!(sim.stats().finalize_calls.len(), 1);
    }

    #[tokio::test]
    async fn the_field_check_names_every_unknown_id_however_many_a_refusal_names() {
        for every in [false, true] {
            let sim = spawn_with(OomnitzaBehavior {
                name_every_unknown_field: every,
                ..OomnitzaBehavior::default()
            })
            .await;
            let client = client(&sim);
            let keys = ["EMAIL".to_owned()];
            let fields =
                ["USER", "NOPE_C", "EMAIL", "NOPE_A", "FIRST_NAME", "NOPE_B"].map(str::to_owned);
            let probe = client.probe_field_ids(&keys, &fields).await.unwrap();
            let FieldProbe::Refused { unknown, message } = probe else {
                panic!("unknown ids are refused: {probe:?}");
            };
            assert_eq!(
                unknown,
                ["NOPE_A", "NOPE_B", "NOPE_C"],
                "every={every}: {message}"
            );
            // The last test run, without the unknown ids, was taken: and closed.
            assert_eq!(sim.stats().finalize_calls.len(), 1, "every={every}");
            assert!(sim.users().is_empty());
        }
    }

    #[tokio::test]
    async fn finalizing_twice_is_harmless() {
        let (sim, client) = sim_and_client().await;
        let records = users(0..1);
        post(&client, &records).await.unwrap();
        assert_eq!(client.finalize(PORTION).await.unwrap(), Finalize::Finalized);
        assert_eq!(
            client.finalize(PORTION).await.unwrap(),
            Finalize::AlreadyFinalized
        );
        assert_eq!(sim.stats().finalize_calls.get(PORTION), Some(&2));
        assert_eq!(
            client.portion(PORTION).await.unwrap(),
            Some(PortionStatus {
                canceled: false,
                finalized: true
            })
        );
        assert_eq!(sim.portion(PORTION).map(|p| p.finalized), Some(true));
    }

    #[tokio::test]
    async fn the_run_log_counts_each_outcome() {
        let (sim, client) = sim_and_client().await;
        post(&client, &users(0..4)).await.unwrap();
        let mut second = users(2..6);
        second[0].insert("FIRST_NAME".into(), json!("Renamed"));
        post(&client, &second).await.unwrap();
        let create_only = users(0..1);
        let sync_field = sync_field();
        client
            .post_bulk(&BulkRequest {
                insert_only: true,
                ..request(PORTION, &sync_field, &create_only)
            })
            .await
            .unwrap();
        sim.wait_portion_idle(PORTION).await;
        let log = client.run_log(PORTION).await.unwrap();
        let expected = RunCounts {
            added: 6,
            updated: 1,
            unchanged: 1,
            skipped: 1,
            ..RunCounts::default()
        };
        assert_eq!(log.counts, expected, "{log:?}");
        assert!(log.failed_messages().is_empty() && log.fatal_errors().is_empty());
        assert_eq!(
            log.other.get("connector"),
            Some(&json!(peoplesync_oomnitza::DEFAULT_CONNECTOR_NAME)),
            "unknown fields are kept"
        );
    }

    #[tokio::test]
    async fn the_run_log_counts_records_still_processing() {
        let (sim, client) = faulty_sim_and_client(OomnitzaFaults {
            processing_paused: true,
            ..OomnitzaFaults::default()
        })
        .await;
        post(&client, &users(0..3)).await.unwrap();
        let log = client.run_log(PORTION).await.unwrap();
        assert_eq!((log.processing(), log.counts.added), (3, 0), "{log:?}");
        sim.set_faults(OomnitzaFaults::default());
        sim.wait_idle().await;
        let log = client.run_log(PORTION).await.unwrap();
        assert_eq!((log.processing(), log.counts.added), (0, 3), "{log:?}");
    }

    #[tokio::test]
    async fn the_run_log_of_an_unknown_portion_is_rejected() {
        let sim = spawn().await;
        let error = client(&sim).run_log("nope").await.unwrap_err();
        assert_error(&error, ErrorKind::Rejected, Some(404));
    }
}

mod reading {
    use super::*;

    /// A simulator holding `records`, all processed, and a client of it.
    async fn seeded(records: &[Map<String, Value>]) -> (OomnitzaSim, OomnitzaClient) {
        let (sim, client) = sim_and_client().await;
        post(&client, records).await.expect("the batch is accepted");
        sim.wait_idle().await;
        (sim, client)
    }

    #[tokio::test]
    async fn find_users_applies_the_filter_limit_and_skip() {
        // The simulator must outlive the reads.
        let (_sim, client) = seeded(&users(0..10)).await;
        let found = client
            .find_users("email eq 'worker.3@example.com'", 10, 0)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["email"], "worker.3@example.com");
        assert_eq!(found[0]["first_name"], "First3");

        let page = client.find_users("", 4, 8).await.unwrap();
        assert_eq!(page.len(), 2);
        let all = client.find_users("role eq '25'", 100, 0).await.unwrap();
        assert_eq!(all.len(), 10);
        let none = client
            .find_users("email eq 'o''brien & co@example.com'", 10, 0)
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn values_with_quotes_and_backslashes_are_found_as_they_are() {
        // Filters are SQL-like as published: a quote is doubled, a backslash is itself.
        let (sim, client) = seeded(&users(0..1)).await;
        for name in [r"ACME\ada", r"ends with\", "o'brien"] {
            let mut user = user(0);
            user.insert("USER".into(), json!(name));
            user.insert(SAGE_USER_ID_FIELD.into(), json!(name));
            sim.insert_user(user);
            let found = client.find_user_by("username", name).await.unwrap();
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            assert_eq!(found[0]["username"], name);
        }
    }

    #[tokio::test]
    async fn every_page_of_users_is_read() {
        let (sim, client) = seeded(&users(0..50)).await;
        let all = client.find_all_users("", 7).await.unwrap();
        let emails: Vec<&str> = all.iter().filter_map(|u| u["email"].as_str()).collect();
        let expected: Vec<String> = (0..50).map(|n| format!("worker.{n}@example.com")).collect();
        assert_eq!(emails, expected);
        assert_eq!(
            sim.stats().user_reads,
            9,
            "7 full pages, a short one and the empty one that ends the list"
        );
        let some = client
            .find_all_users("email LIKE 'worker.1%'", 4)
            .await
            .unwrap();
        assert_eq!(some.len(), 11);
        let exact = client.find_all_users("", 50).await.unwrap();
        assert_eq!(
            exact.len(),
            50,
            "a full last page is followed by an empty one"
        );
    }

    #[tokio::test]
    async fn users_are_read_by_many_keys_in_short_requests() {
        let mut records = users(0..700);
        let quoted = "o'brien.7@example.com";
        records[7].insert("EMAIL".into(), json!(quoted));
        records[7].insert("USER".into(), json!(quoted));
        let (sim, client) = seeded(&records).await;
        let mut wanted: Vec<String> = records
            .iter()
            .filter_map(|r| r["EMAIL"].as_str().map(str::to_owned))
            .collect();
        wanted.push("nobody@example.com".into());
        wanted.push(quoted.into());
        let found = client.find_users_in("email", &wanted, 1_000).await.unwrap();
        assert_eq!(found.len(), 700, "every user once");
        assert!(found.iter().any(|u| u["email"] == quoted));
        let reads = sim.stats().user_reads;
        let chars: usize = wanted.iter().map(|w| w.len() + 4).sum();
        assert!(
            reads > (chars / peoplesync_oomnitza::MAX_URL_CHARS) as u64,
            "{reads} requests for {chars} characters of keys"
        );
        let ids: Vec<String> = (0..3).map(|n| format!("a2G{n:015}")).collect();
        let by_custom = client
            .find_users_in(&SAGE_USER_ID_FIELD.to_lowercase(), &ids, 2)
            .await
            .unwrap();
        assert_eq!(by_custom.len(), 3, "paged two at a time");
        let none: [&str; 0] = [];
        let before = sim.stats().user_reads;
        assert!(
            client
                .find_users_in("email", &none, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(sim.stats().user_reads, before, "nothing to ask, no request");
        let huge = "x".repeat(peoplesync_oomnitza::MAX_URL_CHARS);
        let error = client
            .find_users_in("email", &[huge], 10)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Rejected, "{error}");
    }

    /// Twenty users, on a server that pages three at most whatever `limit` asks.
    async fn twenty_users_three_a_page() -> (OomnitzaSim, OomnitzaClient) {
        let (sim, client) = seeded(&users(0..20)).await;
        sim.set_behavior(OomnitzaBehavior {
            max_page_size: Some(3),
            ..OomnitzaBehavior::default()
        })
        .expect("the behaviour is valid");
        (sim, client)
    }

    #[tokio::test]
    async fn a_server_that_ignores_skip_ends_the_read_with_an_error() {
        let (sim, client) = twenty_users_three_a_page().await;
        sim.set_faults(OomnitzaFaults {
            users_skip_ignored: true,
            ..OomnitzaFaults::default()
        });
        let error = client.find_all_users("", 10).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{error}");
        assert!(error.to_string().contains("ignoring `skip`"), "{error}");
        assert_eq!(sim.stats().user_reads, 2, "the same page twice is enough");
    }

    #[tokio::test]
    async fn a_server_that_pages_fewer_users_than_asked_is_read_to_the_end() {
        let (sim, client) = twenty_users_three_a_page().await;
        let all = client.find_all_users("", 10).await.unwrap();
        assert_eq!(all.len(), 20, "short pages do not end the list");

        let mut wanted: Vec<String> = (0..8).map(|n| format!("worker.{n}@example.com")).collect();
        let before = sim.stats().user_reads;
        let found = client.find_users_in("email", &wanted, 10).await.unwrap();
        assert_eq!(found.len(), 8, "every user, three a page");
        assert_eq!(
            sim.stats().user_reads - before,
            3,
            "the third page holds the last of the eight: nothing more to ask"
        );
        wanted.push("nobody@example.com".into());
        let before = sim.stats().user_reads;
        let found = client.find_users_in("email", &wanted, 10).await.unwrap();
        assert_eq!(found.len(), 8);
        assert_eq!(
            sim.stats().user_reads - before,
            4,
            "one user is missing: an empty page tells a short list from a page limit"
        );
        // An e-mail with capitals is asked for in lower case too: the user holding it so is
        // found. Not held as given, it does not end the read early: an empty page does.
        let before = sim.stats().user_reads;
        let found = client
            .find_users_in("email", &["Worker.0@Example.com"], 10)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["email"], "worker.0@example.com");
        assert_eq!(sim.stats().user_reads - before, 2);

        // A user holding it in lower case first, on a page of its own, and one holding it as
        // given later: the read goes on until the one as given is read.
        let mut exact = user(0);
        exact.insert("EMAIL".into(), json!("Worker.0@Example.com"));
        exact.insert("USER".into(), json!("Worker.0@Example.com"));
        exact.insert(SAGE_USER_ID_FIELD.into(), json!("exact0"));
        sim.insert_user(exact);
        sim.set_behavior(OomnitzaBehavior {
            max_page_size: Some(1),
            ..OomnitzaBehavior::default()
        })
        .expect("the behaviour is valid");
        let found = client
            .find_users_in("email", &["Worker.0@Example.com"], 10)
            .await
            .unwrap();
        let emails: Vec<&str> = found.iter().filter_map(|u| u["email"].as_str()).collect();
        assert_eq!(emails, ["worker.0@example.com", "Worker.0@Example.com"]);
    }

    #[tokio::test]
    async fn keys_matching_several_users_do_not_end_a_capped_read_early() {
        // Two more users share worker.0's e-mail, created right after it: the first page of
        // three holds three users but only one of the three keys.
        let (sim, client) = seeded(&users(0..1)).await;
        for dup in 1..=2 {
            let mut twin = user(0);
            twin.insert("USER".into(), json!(format!("twin.{dup}@example.com")));
            twin.insert(SAGE_USER_ID_FIELD.into(), json!(format!("twin{dup}")));
            sim.insert_user(twin);
        }
        post(&client, &users(1..3)).await.expect("accepted");
        sim.wait_idle().await;
        sim.set_behavior(OomnitzaBehavior {
            max_page_size: Some(3),
            ..OomnitzaBehavior::default()
        })
        .expect("the behaviour is valid");
        let wanted: Vec<String> = (0..3).map(|n| format!("worker.{n}@example.com")).collect();
        let found = client.find_users_in("email", &wanted, 10).await.unwrap();
        assert_eq!(found.len(), 5, "every user of every key: {found:?}");
    }

    #[tokio::test]
    async fn a_bad_filter_is_rejected() {
        let sim = spawn().await;
        let error = client(&sim)
            .find_users("no_such_attribute eq 1", 10, 0)
            .await
            .unwrap_err();
        assert_error(&error, ErrorKind::Rejected, Some(400));
        assert!(error.body_excerpt().is_some());
    }

    #[tokio::test]
    async fn reads_retry_transient_failures() {
        let (sim, client) = sim_and_client().await;
        sim.set_faults(OomnitzaFaults {
            transient_failure_rate: 0.5,
            ..OomnitzaFaults::default()
        });
        for _ in 0..20 {
            client.find_users("", 10, 0).await.unwrap();
        }
        assert!(sim.stats().status_counts.get(&503).copied().unwrap_or(0) > 0);
    }

    #[tokio::test]
    async fn reads_give_up_after_the_policy_and_say_so() {
        let sim = spawn_faulty(OomnitzaFaults {
            outage_for_ms: Some(60_000),
            ..OomnitzaFaults::default()
        })
        .await;
        let mut config = OomnitzaConfig::new(sim.url(), api_token());
        config.retry = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::QUICK
        };
        let error = OomnitzaClient::new(config)
            .unwrap()
            .portion(PORTION)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
        assert!(error.to_string().contains("3 attempts"), "{error}");
        assert_eq!(sim.stats().api_requests, 3);
    }

    #[tokio::test]
    async fn a_slow_server_hits_the_request_timeout() {
        let sim = spawn_faulty(OomnitzaFaults {
            latency_ms: 2_000,
            ..OomnitzaFaults::default()
        })
        .await;
        let mut config = OomnitzaConfig::new(sim.url(), api_token());
        config.request_timeout = Duration::from_millis(100);
        let records = users(0..1);
        let client = OomnitzaClient::new(config).expect("a valid configuration");
        let error = post(&client, &records).await.unwrap_err();
        assert_error(&error, ErrorKind::Transient, None);
        assert!(error.to_string().contains("timeout"), "{error}");
    }
}

mod auth {
    use super::*;

    #[tokio::test]
    async fn a_wrong_api_token_is_unauthorized() {
        let sim = spawn().await;
        let client = client_with(&sim, OomnitzaAuth::ApiToken(SecretString::from("wrong")));
        let error = client.check_auth().await.unwrap_err();
        assert_error(&error, ErrorKind::Unauthorized, Some(401));
        assert!(error.to_string().contains("API token"), "{error}");
        let records = users(0..1);
        let error = post(&client, &records).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
    }

    #[tokio::test]
    async fn a_token_without_rights_is_unauthorized() {
        let (_sim, client) = faulty_sim_and_client(OomnitzaFaults {
            forbidden: true,
            ..OomnitzaFaults::default()
        })
        .await;
        let error = client.check_auth().await.unwrap_err();
        assert_error(&error, ErrorKind::Unauthorized, Some(403));
        assert!(error.to_string().contains("rights"), "{error}");
        let records = users(0..1);
        let error = post(&client, &records).await.unwrap_err();
        assert_error(&error, ErrorKind::Unauthorized, Some(403));
    }

    #[tokio::test]
    async fn a_good_api_token_passes_the_check_without_reading_users() {
        let sim = spawn().await;
        client(&sim).check_auth().await.unwrap();
        let stats = sim.stats();
        assert_eq!((stats.api_requests, stats.user_reads), (1, 0));
    }

    #[tokio::test]
    async fn a_password_is_exchanged_for_a_token_once() {
        let sim = spawn().await;
        let client = password_client(&sim);
        client.check_auth().await.unwrap();
        let records = users(0..3);
        let sync_field = sync_field();
        let clone = client.clone();
        let batch = request(PORTION, &sync_field, &records);
        let (a, b) = tokio::join!(client.post_bulk(&batch), clone.post_bulk(&batch));
        a.unwrap();
        b.unwrap();
        sim.wait_idle().await;
        assert_eq!(sim.users().len(), 3);
        // Token requests are not /api/v3 calls: the check and the two posts are.
        assert_eq!(sim.stats().api_requests, 3);
        assert_eq!(
            sim.stats().status_counts.get(&401),
            None,
            "the token was reused"
        );
    }

    #[tokio::test]
    async fn a_password_session_echoes_its_csrf_token_on_every_request() {
        let sim = spawn_with(OomnitzaBehavior {
            require_csrf_echo: true,
            ..OomnitzaBehavior::default()
        })
        .await;
        let client = password_client(&sim);
        client.check_auth().await.unwrap();
        let records = users(0..2);
        post(&client, &records).await.unwrap();
        client.find_users("", 10, 0).await.unwrap();
        let stats = sim.stats();
        assert_eq!((stats.csrf_echoed, stats.csrf_missing), (3, 0));

        // An expired session is renewed once, and the new session's token is echoed.
        sim.revoke_sessions();
        client.find_users("", 10, 0).await.unwrap();
        let stats = sim.stats();
        assert_eq!(stats.status_counts.get(&401), Some(&1));
        assert_eq!((stats.csrf_echoed, stats.csrf_missing), (4, 0));
    }

    #[tokio::test]
    async fn an_api_token_echoes_the_csrf_token_its_credential_check_brought() {
        let sim = spawn_with(OomnitzaBehavior {
            require_csrf_echo: true,
            csrf_for_api_token: true,
            ..OomnitzaBehavior::default()
        })
        .await;
        // A tenant that expects the token refuses a request made before any credential check.
        let error = client(&sim).find_users("", 10, 0).await.unwrap_err();
        assert_eq!(error.status(), Some(403), "{error}");

        let client = client(&sim);
        client.check_auth().await.unwrap();
        post(&client, &users(0..2)).await.unwrap();
        client.clone().find_users("", 10, 0).await.unwrap();
        let stats = sim.stats();
        assert_eq!((stats.csrf_echoed, stats.csrf_missing), (2, 1));
    }

    #[tokio::test]
    async fn a_wrong_password_is_unauthorized_naming_the_login() {
        let sim = spawn().await;
        let client = client_with(
            &sim,
            OomnitzaAuth::Password {
                login: "admin".into(),
                password: SecretString::from("wrong"),
            },
        );
        let error = client.check_auth().await.unwrap_err();
        assert_error(&error, ErrorKind::Unauthorized, Some(401));
        assert!(error.to_string().contains("admin"), "{error}");
        assert_eq!(sim.stats().api_requests, 0);
    }

    #[tokio::test]
    async fn a_malformed_base_url_fails_at_construction() {
        let config = OomnitzaConfig::new(
            "acme.oomnitza.com",
            OomnitzaAuth::ApiToken(SecretString::from("t")),
        );
        let error = OomnitzaClient::new(config).unwrap_err();
        assert!(error.to_string().contains("base URL"), "{error}");
    }

    #[tokio::test]
    async fn secrets_never_show_in_debug_or_errors() {
        let sim = spawn().await;
        let secret_token = "hunter2-api-token";
        let secret_password = "hunter2-password";
        for auth in [
            OomnitzaAuth::ApiToken(SecretString::from(secret_token)),
            OomnitzaAuth::Password {
                login: "admin".into(),
                password: SecretString::from(secret_password),
            },
        ] {
            let config = OomnitzaConfig::new(sim.url(), auth);
            let client = OomnitzaClient::new(config.clone()).unwrap();
            let error = client.check_auth().await.unwrap_err();
            for text in [
                format!("{config:?}"),
                format!("{client:?}"),
                format!("{error:?}"),
                error.to_string(),
            ] {
                assert!(!text.contains(secret_token), "token leaked in {text}");
                assert!(!text.contains(secret_password), "password leaked in {text}");
            }
        }
        // The token obtained with a password stays hidden too.
        let defaults = SimConfig::default();
        let client = client_with(
            &sim,
            OomnitzaAuth::Password {
                login: defaults.login,
                password: SecretString::from(defaults.password.clone()),
            },
        );
        client.check_auth().await.unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains(&defaults.password), "{debug}");
    }
}

mod body {
    use super::*;

    /// The loader sends records it serialised when it mapped them; the body must be the one the
    /// maps themselves give.
    #[test]
    fn pre_serialised_records_give_the_same_body() {
        let records = users(0..100);
        let sync_field = sync_field();
        let raw: Vec<Box<serde_json::value::RawValue>> = records
            .iter()
            .map(|r| serde_json::value::to_raw_value(r).unwrap())
            .collect();
        let from_maps = request(PORTION, &sync_field, &records).to_body("peoplesync", "0.1.0");
        let from_text = BulkRequest {
            portion: PORTION,
            sync_field: &sync_field,
            insert_only: false,
            update_only: false,
            records: &raw,
            error: None,
        }
        .to_body("peoplesync", "0.1.0");
        assert_eq!(
            String::from_utf8(from_text).unwrap(),
            String::from_utf8(from_maps).unwrap()
        );
    }
}

/// The simulator behind a TLS endpoint whose certificate a private CA signed (as a
/// TLS-inspecting proxy presents one): trusted only when the CA is configured.
mod private_ca {
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;

    /// Starts a TLS endpoint for `localhost` forwarding to `sim`; returns its URL and the CA's
    /// PEM.
    async fn tls_front(sim: &OomnitzaSim) -> (String, String) {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf");
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let backend = sim
            .url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let backend = backend.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(&backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        (format!("https://localhost:{port}"), ca.pem())
    }

    fn tls_client(url: &str, roots: Vec<reqwest::Certificate>) -> OomnitzaClient {
        let mut config = OomnitzaConfig::new(url, api_token());
        config.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::QUICK
        };
        config.request_timeout = Duration::from_secs(5);
        config.extra_roots = roots;
        OomnitzaClient::new(config).expect("a valid configuration")
    }

    #[tokio::test]
    async fn a_private_ca_is_trusted_only_when_configured() {
        let sim = spawn().await;
        let (url, ca_pem) = tls_front(&sim).await;

        let untrusted = tls_client(&url, Vec::new()).check_auth().await;
        assert!(
            untrusted.is_err(),
            "a certificate of an unknown CA must be refused"
        );

        let roots = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).expect("pem");
        tls_client(&url, roots)
            .check_auth()
            .await
            .expect("the private CA makes the endpoint trusted");
    }
}
