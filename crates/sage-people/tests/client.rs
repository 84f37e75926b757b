//! Integration tests of the Sage People client against the in-process Sage People simulator:
//! paging, token reuse and renewal, the three grants, every error kind, retries and redaction.
//!
//! Each test spawns its own simulator on a free port; retry delays are a few milliseconds.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use peoplesync_sage_people::{
    ApiUsage, Credentials, Error, ErrorKind, RetryPolicy, SageClient, SageConfig,
};
use peoplesync_sims::sage::{EndStyle, PageSize, SageConfig as SimConfig, SageFaults, SageSim};
use secrecy::SecretString;
use serde_json::Value;

const TEST_KEY: &str = include_str!("../../../tools/sims/testdata/jwt-test-key.pem");
const TEST_PUBLIC_KEY: &str = include_str!("../../../tools/sims/testdata/jwt-test-key.pub.pem");
const OTHER_KEY: &str = include_str!("../../../tools/sims/testdata/jwt-other-key.pem");

async fn spawn(config: SimConfig) -> SageSim {
    SageSim::spawn(config).await.expect("the simulator starts")
}

/// The default org with `workers` workers.
fn org(workers: u64) -> SimConfig {
    SimConfig {
        workers,
        ..SimConfig::default()
    }
}

/// The default org with `faults` on from the start.
fn faulty(faults: SageFaults) -> SimConfig {
    SimConfig {
        faults,
        ..SimConfig::default()
    }
}

fn client_credentials(sim_config: &SimConfig) -> Credentials {
    Credentials::ClientCredentials {
        client_id: sim_config.client_id.clone(),
        client_secret: SecretString::from(sim_config.client_secret.clone()),
    }
}

/// A configuration for `url` with the quick test retry policy.
fn quick(url: impl Into<String>, credentials: Credentials) -> SageConfig {
    let mut config = SageConfig::new(url, credentials);
    config.retry = RetryPolicy::QUICK;
    config
}

fn client_with(sim: &SageSim, credentials: Credentials) -> SageClient {
    let mut config = quick(sim.url(), credentials);
    config.request_timeout = Duration::from_secs(5);
    SageClient::new(config).expect("a valid configuration")
}

fn client(sim: &SageSim) -> SageClient {
    client_with(sim, client_credentials(&SimConfig::default()))
}

/// Pages through the whole list, checking the marker contract on the way.
async fn list_all(client: &SageClient, filter: Option<&str>) -> Result<Vec<Value>, Error> {
    let mut marker: Option<String> = None;
    let mut records = Vec::new();
    loop {
        let page = client.list_page(marker.as_deref(), filter).await?;
        let Some(next) = page.next_marker() else {
            assert!(page.is_end());
            return Ok(records);
        };
        marker = Some(next.to_owned());
        records.extend(page.records);
    }
}

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn assert_complete(records: &[Value], expected: usize) {
    let ids = ids(records);
    assert_eq!(ids.len(), expected, "every worker exactly once");
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), expected, "no worker twice");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending ids");
}

/// Lists every worker through a fresh client and checks each arrives exactly once, in order.
async fn assert_lists_all(sim: &SageSim, expected: usize) {
    let records = list_all(&client(sim), None).await.expect("the whole list");
    assert_complete(&records, expected);
}

/// The error the first page of a fresh client ends with.
async fn first_page_error(sim: &SageSim) -> Error {
    first_error(&client(sim)).await
}

/// The error the first page of `client` ends with.
async fn first_error(client: &SageClient) -> Error {
    client
        .list_page(None, None)
        .await
        .expect_err("the first page fails")
}

/// A configuration for `url` with the default client credentials and the quick retry policy
/// cut to `max_attempts`.
fn attempts(url: impl Into<String>, max_attempts: usize) -> SageConfig {
    let mut config = quick(url, client_credentials(&SimConfig::default()));
    config.retry.max_attempts = max_attempts;
    config
}

fn tokens_requested(sim: &SageSim) -> u64 {
    sim.stats().token_requests.values().sum()
}

mod paging {
    use super::*;

    #[tokio::test]
    async fn varying_pages_ending_with_204_list_every_worker_once() {
        let sim = spawn(SimConfig {
            page_size: PageSize::Varying { min: 1, max: 97 },
            end_style: EndStyle::NoContent,
            ..org(1_000)
        })
        .await;
        assert_lists_all(&sim, 1_000).await;
        assert_eq!(sim.stats().end_of_list, 1);
    }

    #[tokio::test]
    async fn fixed_pages_ending_with_empty_data_list_every_worker_once() {
        let sim = spawn(SimConfig {
            page_size: PageSize::Fixed(100),
            end_style: EndStyle::EmptyData,
            ..org(1_000)
        })
        .await;
        assert_lists_all(&sim, 1_000).await;
        let stats = sim.stats();
        assert_eq!(stats.pages_served, 10);
        assert_eq!(stats.end_of_list, 1);
    }

    #[tokio::test]
    async fn one_record_pages_and_an_empty_org_work() {
        let sim = spawn(SimConfig {
            page_size: PageSize::Fixed(1),
            ..org(7)
        })
        .await;
        assert_lists_all(&sim, 7).await;

        let empty = spawn(org(0)).await;
        let page = client(&empty).list_page(None, None).await.unwrap();
        assert!(page.is_end());
    }

    #[tokio::test]
    async fn the_filter_is_passed_through_encoded() {
        let sim = spawn(org(1_000)).await;
        let filter = "workAddress.country eq 'France'";
        let records = list_all(&client(&sim), Some(filter)).await.unwrap();
        assert!(!records.is_empty(), "some workers are in France");
        assert!(records.len() < 1_000, "not every worker is in France");
        for record in &records {
            assert_eq!(record["workAddress"]["country"], "France", "{record}");
        }
    }

    #[tokio::test]
    async fn every_page_reports_the_api_usage() {
        let sim = spawn(SimConfig {
            page_size: PageSize::Fixed(100),
            api_quota: 5_000,
            ..org(300)
        })
        .await;
        let client = client(&sim);
        assert_eq!(client.last_api_usage(), None);
        let first = client.list_page(None, None).await.unwrap();
        let usage = first.api_usage.expect("usage on a page");
        assert_eq!(usage.allowed, 5_000);
        let second = client.list_page(first.next_marker(), None).await.unwrap();
        let later = second.api_usage.expect("usage on a page");
        assert!(later.used > usage.used, "{later:?} after {usage:?}");
        assert_eq!(client.last_api_usage(), Some(later));
        assert_eq!(later.used, sim.stats().api_usage);
    }

    #[tokio::test]
    async fn without_the_header_the_usage_is_read_from_the_limits_resource() {
        let sim = spawn(SimConfig {
            api_quota: 5_000,
            limit_info_header: false,
            ..org(10)
        })
        .await;
        sim.set_api_usage(1_200);
        let client = client(&sim);
        let page = client.list_page(None, None).await.unwrap();
        assert_eq!(page.api_usage, None, "no header, no usage on the page");
        assert_eq!(client.last_api_usage(), None);
        let usage = client.read_limits().await.unwrap();
        assert_eq!(
            usage,
            ApiUsage {
                used: 1_201,
                allowed: 5_000
            }
        );
        assert_eq!(client.last_api_usage(), Some(usage));
        assert_eq!(sim.stats().limits_requests, 1);
    }

    #[tokio::test]
    async fn get_employee_finds_a_worker_and_returns_none_when_unknown() {
        let sim = spawn(org(50)).await;
        let client = client(&sim);
        let page = client.list_page(None, None).await.unwrap();
        let first = page.records[0].clone();
        let id = first["id"].as_str().unwrap();
        assert_eq!(client.get_employee(id).await.unwrap(), Some(first.clone()));
        sim.remove_worker(id);
        assert_eq!(client.get_employee(id).await.unwrap(), None);
        assert_eq!(client.get_employee("a2G0000000NOPE").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_patched_worker_is_read_as_patched() {
        let sim = spawn(org(5)).await;
        let client = client(&sim);
        let id = ids(&client.list_page(None, None).await.unwrap().records)[2].clone();
        sim.patch_worker(&id, serde_json::json!({"hrDepartment": "Finance"}));
        let record = client.get_employee(&id).await.unwrap().unwrap();
        assert_eq!(record["hrDepartment"], "Finance");
    }
}

mod tokens {
    use super::*;

    #[tokio::test]
    async fn one_token_serves_every_page_and_every_clone() {
        let sim = spawn(org(2_000)).await;
        let client = client(&sim);
        assert_eq!(tokens_requested(&sim), 0, "tokens are fetched lazily");
        let clone = client.clone();
        let (a, b) = tokio::join!(list_all(&client, None), list_all(&clone, None));
        assert_complete(&a.unwrap(), 2_000);
        assert_complete(&b.unwrap(), 2_000);
        assert_eq!(tokens_requested(&sim), 1);
        assert_eq!(sim.stats().tokens_issued, 1);
    }

    #[tokio::test]
    async fn an_expired_token_is_renewed_once_and_the_page_is_reread() {
        let sim = spawn(SimConfig {
            workers: 1_000,
            page_size: PageSize::Fixed(100),
            ..faulty(SageFaults {
                token_expiry_after: Some(3),
                ..SageFaults::default()
            })
        })
        .await;
        assert_lists_all(&sim, 1_000).await;
        let stats = sim.stats();
        // 11 calls (10 pages and the end), 3 per token: 4 tokens, each renewal after one 401.
        assert_eq!(stats.tokens_issued, 4);
        assert_eq!(stats.unauthorized, 3);
    }

    #[tokio::test]
    async fn revoked_tokens_are_replaced_for_every_clone() {
        let sim = spawn(org(100)).await;
        let client = client(&sim);
        client.list_page(None, None).await.unwrap();
        sim.revoke_tokens();
        let clone = client.clone();
        let (a, b) = tokio::join!(client.list_page(None, None), clone.list_page(None, None));
        assert_eq!(ids(&a.unwrap().records), ids(&b.unwrap().records));
        assert_eq!(
            sim.stats().tokens_issued,
            2,
            "one renewal shared by both clones"
        );
    }

    #[tokio::test]
    async fn a_fresh_token_refused_again_fails_naming_the_grant_and_host() {
        let sim = spawn(faulty(SageFaults {
            token_expiry_after: Some(0),
            ..SageFaults::default()
        }))
        .await;
        let error = first_page_error(&sim).await;
        assert_eq!(error.kind(), ErrorKind::Authentication, "{error}");
        assert_eq!(error.status(), Some(401));
        assert_eq!(error.code(), Some("INVALID_SESSION_ID"));
        let message = error.to_string();
        assert!(message.contains("client credentials"), "{message}");
        assert!(message.contains("127.0.0.1"), "{message}");
        assert_eq!(sim.stats().tokens_issued, 2, "exactly one renewal");
    }

    #[tokio::test]
    async fn the_jwt_bearer_grant_signs_an_accepted_assertion() {
        let sim = spawn(SimConfig {
            jwt_public_key_pem: Some(TEST_PUBLIC_KEY.to_owned()),
            ..org(120)
        })
        .await;
        let defaults = SimConfig::default();
        let jwt = |key: &str| Credentials::JwtBearer {
            client_id: defaults.client_id.clone(),
            username: defaults.username.clone(),
            audience: None,
            private_key_pem: SecretString::from(key.to_owned()),
        };
        assert_complete(
            &list_all(&client_with(&sim, jwt(TEST_KEY)), None)
                .await
                .unwrap(),
            120,
        );
        assert_eq!(sim.stats().token_requests.get("jwt_bearer"), Some(&1));
        // The token request goes to the org's own host (the simulator), yet the audience is
        // the production login host.
        assert_eq!(
            sim.stats().jwt_audiences.keys().collect::<Vec<_>>(),
            ["https://login.salesforce.com"]
        );

        let error = first_error(&client_with(&sim, jwt(OTHER_KEY))).await;
        assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
        assert_eq!(error.code(), Some("invalid_grant"));
        assert!(error.to_string().contains("certificate"), "{error}");
        assert!(error.to_string().contains("JWT bearer"), "{error}");
    }

    #[tokio::test]
    async fn a_configured_jwt_audience_is_sent_instead_of_the_default() {
        let site = "https://acme.my.site.com";
        let sim = spawn(SimConfig {
            jwt_public_key_pem: Some(TEST_PUBLIC_KEY.to_owned()),
            jwt_extra_audiences: vec![site.to_owned()],
            ..org(3)
        })
        .await;
        let defaults = SimConfig::default();
        let client = client_with(
            &sim,
            Credentials::JwtBearer {
                client_id: defaults.client_id.clone(),
                username: defaults.username.clone(),
                audience: Some(format!("{site}/")),
                private_key_pem: SecretString::from(TEST_KEY.to_owned()),
            },
        );
        assert_complete(&list_all(&client, None).await.unwrap(), 3);
        assert_eq!(sim.stats().jwt_audiences.keys().collect::<Vec<_>>(), [site]);
    }

    #[tokio::test]
    async fn client_credentials_on_the_generic_login_hosts_are_refused_naming_my_domain() {
        for login_url in [
            "https://login.salesforce.com",
            "https://test.salesforce.com/",
        ] {
            let config = SageConfig::new(login_url, client_credentials(&SimConfig::default()));
            let error = SageClient::new(config).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Configuration, "{login_url}");
            let message = error.to_string();
            assert!(message.contains("My Domain"), "{message}");
            assert!(message.contains(".my.salesforce.com"), "{message}");
            assert!(message.contains("client credentials"), "{message}");
        }
    }

    #[tokio::test]
    async fn a_malformed_private_key_fails_at_construction() {
        let config = SageConfig::new(
            "https://login.salesforce.com",
            Credentials::JwtBearer {
                client_id: "id".into(),
                username: "u".into(),
                audience: None,
                private_key_pem: SecretString::from("not a key"),
            },
        );
        let error = SageClient::new(config).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration);
        assert!(error.to_string().contains("PEM"), "{error}");
    }

    #[tokio::test]
    async fn the_password_grant_gets_a_token() {
        let sim = spawn(org(80)).await;
        let defaults = SimConfig::default();
        let password = |password: &str| Credentials::Password {
            client_id: defaults.client_id.clone(),
            client_secret: SecretString::from(defaults.client_secret.clone()),
            username: defaults.username.clone(),
            password: SecretString::from(password.to_owned()),
        };
        let client = client_with(&sim, password(&defaults.password));
        assert_complete(&list_all(&client, None).await.unwrap(), 80);
        assert_eq!(sim.stats().token_requests.get("password"), Some(&1));

        let error = first_error(&client_with(&sim, password("wrong"))).await;
        assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
        assert_eq!(error.code(), Some("invalid_grant"));
        assert!(error.to_string().contains("security token"), "{error}");
    }

    #[tokio::test]
    async fn a_wrong_client_secret_is_a_configuration_error_naming_grant_and_host() {
        let sim = spawn(SimConfig::default()).await;
        let client = client_with(
            &sim,
            Credentials::ClientCredentials {
                client_id: "sim-client".into(),
                client_secret: SecretString::from("wrong"),
            },
        );
        let error = first_error(&client).await;
        assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
        assert_eq!(error.code(), Some("invalid_client"));
        let message = error.to_string();
        assert!(message.contains("client credentials"), "{message}");
        assert!(message.contains("127.0.0.1"), "{message}");
        assert!(message.contains("consumer secret"), "{message}");
        assert_eq!(tokens_requested(&sim), 1, "bad credentials are not retried");
    }

    #[tokio::test]
    async fn a_limits_read_with_a_wrong_secret_blames_the_credentials_not_a_permission() {
        let sim = spawn(SimConfig {
            limit_info_header: false,
            ..SimConfig::default()
        })
        .await;
        let client = client_with(
            &sim,
            Credentials::ClientCredentials {
                client_id: "sim-client".into(),
                client_secret: SecretString::from("wrong"),
            },
        );
        let error = client
            .read_limits()
            .await
            .expect_err("the token is refused");
        assert_eq!(error.code(), Some("invalid_client"));
        let message = error.to_string();
        assert!(message.contains("consumer secret"), "{message}");
        assert!(!message.contains("View Setup"), "{message}");
    }

    #[tokio::test]
    async fn the_hostname_is_the_login_host_then_the_instance_host() {
        let sim = spawn(SimConfig::default()).await;
        let client = client(&sim);
        assert_eq!(client.hostname(), "127.0.0.1");
        client.list_page(None, None).await.unwrap();
        assert_eq!(client.hostname(), "127.0.0.1");
    }
}

mod errors {
    use super::*;

    async fn with_config_error(code: &str) -> (SageSim, Error) {
        let sim = spawn(faulty(SageFaults {
            config_error: Some(code.to_owned()),
            ..SageFaults::default()
        }))
        .await;
        let error = first_page_error(&sim).await;
        (sim, error)
    }

    #[tokio::test]
    async fn configuration_errors_fail_at_once_saying_what_to_fix() {
        let cases = [
            ("MISSING_API_PERMISSION", "\"Employees API\" permission set"),
            ("INACCESSIBLE_FIELD", "field-level security"),
            ("OBJECT_NOT_ACCESSIBLE", "Read and View All"),
            ("INVALID_FILTER", "filter"),
        ];
        for (code, hint) in cases {
            let (sim, error) = with_config_error(code).await;
            assert_eq!(error.kind(), ErrorKind::Configuration, "{code}: {error}");
            assert_eq!(error.code(), Some(code));
            let message = error.to_string();
            assert!(message.contains(hint), "{code}: {message}");
            assert!(message.contains("127.0.0.1"), "{code}: {message}");
            assert_eq!(sim.stats().api_requests, 1, "{code} is not retried");
        }
    }

    #[tokio::test]
    async fn a_nested_inner_error_under_a_server_status_is_fatal_and_not_retried() {
        let sim = spawn(faulty(SageFaults {
            config_error: Some("INVALID_FILTER/UNEXPECTED_TOKEN".to_owned()),
            config_error_status: Some(500),
            ..SageFaults::default()
        }))
        .await;
        let error = client(&sim)
            .list_page(None, Some("workAddress.country eq 'France'"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
        assert_eq!(error.code(), Some("UNEXPECTED_TOKEN"));
        assert_eq!(error.status(), Some(500));
        assert!(error.to_string().contains("source_filter"), "{error}");
        assert_eq!(sim.stats().api_requests, 1, "not retried");
    }

    /// A small org that answers the first three calls with the concurrent long-request limit.
    fn too_many_long_requests() -> SimConfig {
        SimConfig {
            workers: 5,
            ..faulty(SageFaults {
                concurrent_limit_calls: 3,
                ..SageFaults::default()
            })
        }
    }

    #[tokio::test]
    async fn the_concurrent_request_limit_backs_off_and_the_page_arrives() {
        let sim = spawn(too_many_long_requests()).await;
        let page = client(&sim).list_page(None, None).await.unwrap();
        assert!(!page.records.is_empty());
        let stats = sim.stats();
        assert_eq!(stats.status_counts.get(&403), Some(&3));
        assert_eq!(stats.api_requests, 4);
    }

    #[tokio::test]
    async fn every_concurrent_limit_salesforce_names_backs_off_too() {
        use peoplesync_sims::sage::ConcurrentLimit;
        for limit in [ConcurrentLimit::Requests, ConcurrentLimit::Apex] {
            let sim = spawn(SimConfig {
                workers: 5,
                ..faulty(SageFaults {
                    concurrent_limit_calls: 2,
                    concurrent_limit: limit,
                    ..SageFaults::default()
                })
            })
            .await;
            let page = client(&sim).list_page(None, None).await;
            assert!(page.is_ok_and(|p| !p.records.is_empty()), "{limit:?}");
            assert_eq!(sim.stats().status_counts.get(&403), Some(&2), "{limit:?}");
        }
    }

    #[tokio::test]
    async fn every_api_request_is_counted_retries_included_and_token_requests_not() {
        let sim = spawn(too_many_long_requests()).await;
        let client = client(&sim);
        assert_eq!(client.api_requests(), 0);
        // Three refusals, then the page.
        client.list_page(None, None).await.unwrap();
        assert_eq!(client.api_requests(), 4);
        // A refused token, a new one, the page again: two API requests.
        sim.revoke_tokens();
        client.list_page(None, None).await.unwrap();
        assert_eq!(client.api_requests(), 6);
        client.read_limits().await.unwrap();
        let stats = sim.stats();
        assert_eq!(
            client.clone().api_requests(),
            stats.api_requests + stats.limits_requests,
            "clones share the count"
        );
        assert_eq!(tokens_requested(&sim), 2, "not counted");
    }

    #[tokio::test]
    async fn a_refused_filter_is_named_in_the_message() {
        let sim = spawn(SimConfig::default()).await;
        let filter = "workAddress.country is 'France'";
        let error = client(&sim)
            .list_page(None, Some(filter))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
        assert!(error.to_string().contains(filter), "{error}");
    }

    #[tokio::test]
    async fn an_exhausted_quota_stops_without_retrying() {
        let sim = spawn(SimConfig {
            api_quota: 100,
            ..SimConfig::default()
        })
        .await;
        sim.set_api_usage(100);
        let client = client(&sim);
        let error = first_error(&client).await;
        assert_eq!(error.kind(), ErrorKind::QuotaExhausted, "{error}");
        assert_eq!(error.code(), Some("REQUEST_LIMIT_EXCEEDED"));
        assert!(error.to_string().contains("checkpoint"), "{error}");
        assert_eq!(sim.stats().api_requests, 1);
        let usage = client
            .last_api_usage()
            .expect("usage recorded from the error");
        assert_eq!(usage.allowed, 100);
        assert!(usage.share() >= 1.0, "{usage:?}");
    }

    #[tokio::test]
    async fn a_refused_marker_asks_to_restart_the_listing() {
        let sim = spawn(faulty(SageFaults {
            reject_markers: true,
            ..SageFaults::default()
        }))
        .await;
        let client = client(&sim);
        let first = client.list_page(None, None).await.unwrap();
        let error = client
            .list_page(first.next_marker(), None)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidMarker, "{error}");
        assert!(error.to_string().contains("restart"), "{error}");
    }

    /// An org of 2,000 workers with `faults` on is still listed whole.
    async fn lists_all_despite(faults: SageFaults) -> SageSim {
        let sim = spawn(SimConfig {
            workers: 2_000,
            ..faulty(faults)
        })
        .await;
        assert_lists_all(&sim, 2_000).await;
        sim
    }

    #[tokio::test]
    async fn bursts_of_each_transient_status_are_retried() {
        for status in peoplesync_sims::sage::TRANSIENT_STATUSES {
            let sim = lists_all_despite(SageFaults {
                transient_failure_rate: 0.3,
                transient_status: Some(status),
                ..SageFaults::default()
            })
            .await;
            let seen = sim.stats().status_counts.get(&status).copied();
            assert!(seen.unwrap_or(0) > 0, "{status}");
        }
    }

    #[tokio::test]
    async fn truncated_bodies_are_retried() {
        lists_all_despite(SageFaults {
            truncate_rate: 0.3,
            ..SageFaults::default()
        })
        .await;
    }

    #[tokio::test]
    async fn an_outage_longer_than_the_budget_is_transient_and_says_how_hard_it_tried() {
        let sim = spawn(faulty(SageFaults {
            outage_for_ms: Some(60_000),
            ..SageFaults::default()
        }))
        .await;
        let error =
            first_error(&SageClient::new(attempts(sim.url(), 3)).expect("a valid configuration"))
                .await;
        assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
        assert_eq!(error.status(), Some(503));
        assert!(error.to_string().contains("3 attempts"), "{error}");
        assert_eq!(sim.stats().api_requests, 3);
    }

    #[tokio::test]
    async fn a_clone_with_a_shorter_retry_budget_gives_up_sooner_and_leaves_the_original_as_it_was()
    {
        let sim = spawn(faulty(SageFaults {
            outage_for_ms: Some(60_000),
            ..SageFaults::default()
        }))
        .await;
        let original = SageClient::new(attempts(sim.url(), 4)).expect("a valid configuration");
        let attempts_of = |client: SageClient| {
            let sim = &sim;
            async move {
                let before = sim.stats().api_requests;
                let error = first_error(&client).await;
                assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
                assert_eq!(error.status(), Some(503), "{error}");
                (sim.stats().api_requests - before, error.to_string())
            }
        };

        // No time to retry: the one attempt's 503 comes back, saying so.
        let (made, message) = attempts_of(original.with_retry_budget(Duration::ZERO)).await;
        assert_eq!(made, 1, "{message}");
        assert!(message.contains("after 1 attempt "), "{message}");
        // The original keeps its own policy, and a longer budget does not lift it.
        assert_eq!(attempts_of(original.clone()).await.0, 4);
        let longer = original.with_retry_budget(Duration::from_secs(3_600));
        assert_eq!(attempts_of(longer).await.0, 4);
        // The clones share the original's access token.
        assert_eq!(tokens_requested(&sim), 1);
    }

    #[tokio::test]
    async fn a_slow_server_hits_the_request_timeout() {
        let sim = spawn(faulty(SageFaults {
            latency_ms: 2_000,
            ..SageFaults::default()
        }))
        .await;
        let mut config = attempts(sim.url(), 2);
        config.request_timeout = Duration::from_millis(100);
        let started = Instant::now();
        let error = first_error(&SageClient::new(config).expect("a valid configuration")).await;
        assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
        assert!(error.to_string().contains("timeout"), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the token request timed out too"
        );
    }

    #[tokio::test]
    async fn an_unreachable_login_host_is_transient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let error =
            first_error(&SageClient::new(attempts(url, 2)).expect("a valid configuration")).await;
        assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
        assert!(error.to_string().contains("connect"), "{error}");
    }

    #[tokio::test]
    async fn a_malformed_login_url_fails_at_construction() {
        let config = SageConfig::new(
            "login.salesforce.com",
            client_credentials(&SimConfig::default()),
        );
        let error = SageClient::new(config).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration);
        assert!(error.to_string().contains("login URL"), "{error}");
    }
}

/// Asking Sage People whether one employee passes a filter.
mod filters {
    use super::*;
    use peoplesync_sims::generate::worker_id;
    use serde_json::json;

    #[tokio::test]
    async fn sage_people_itself_says_whether_an_employee_passes_the_filter() {
        let sim = spawn(org(20)).await;
        let (inside, outside) = (worker_id(3), worker_id(4));
        sim.patch_worker(&inside, json!({"workAddress": {"country": "France"}}));
        sim.patch_worker(&outside, json!({"workAddress": {"country": "Spain"}}));
        let client = client(&sim);
        let filter = "workAddress.country eq 'France' or workAddress.country eq 'Italy'";
        assert!(client.passes_filter(&inside, filter).await.unwrap());
        assert!(!client.passes_filter(&outside, filter).await.unwrap());
    }

    #[tokio::test]
    async fn an_org_that_refuses_id_in_filters_is_told_apart_from_a_worker_outside_it() {
        let sim = spawn(faulty(SageFaults {
            filter_refuses_id: true,
            ..SageFaults::default()
        }))
        .await;
        let error = client(&sim)
            .passes_filter(&worker_id(3), "workAddress.country eq 'France'")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
        assert_eq!(error.code(), Some("UNKNOWN_IDENTIFIER"));
        let message = error.to_string();
        for said in [
            "do not accept `id`",
            "cannot be told",
            "syncctl check",
            "400 UNKNOWN_IDENTIFIER",
        ] {
            assert!(message.contains(said), "{said:?}: {message}");
        }
    }
}

mod secrets {
    use super::*;

    const SECRETS: [&str; 3] = [
        "hunter2-client-secret",
        "hunter2-password",
        "BEGIN PRIVATE KEY",
    ];

    fn assert_clean(text: &str) {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
        assert!(!text.contains("MII"), "key material leaked in {text}");
    }

    #[tokio::test]
    async fn secrets_never_show_in_debug_or_errors() {
        let sim = spawn(SimConfig {
            jwt_public_key_pem: Some(TEST_PUBLIC_KEY.to_owned()),
            ..SimConfig::default()
        })
        .await;
        let all = [
            Credentials::ClientCredentials {
                client_id: "sim-client".into(),
                client_secret: SecretString::from(SECRETS[0]),
            },
            Credentials::Password {
                client_id: "sim-client".into(),
                client_secret: SecretString::from(SECRETS[0]),
                username: "integration@example.com".into(),
                password: SecretString::from(SECRETS[1]),
            },
            Credentials::JwtBearer {
                client_id: "sim-client".into(),
                username: "integration@example.com".into(),
                audience: None,
                private_key_pem: SecretString::from(OTHER_KEY),
            },
        ];
        for credentials in all {
            let config = quick(sim.url(), credentials);
            assert_clean(&format!("{config:?}"));
            let client = SageClient::new(config).unwrap();
            assert_clean(&format!("{client:?}"));
            let error = first_error(&client).await;
            assert_clean(&format!("{error:?}"));
            assert_clean(&error.to_string());
            assert_clean(&format!("{client:?}"));
        }
        // A working client's token stays hidden too.
        let client = client(&sim);
        client.list_page(None, None).await.unwrap();
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("00D7E000000SIMq"),
            "token leaked in {debug}"
        );
        assert_clean(&debug);
    }
}

mod large_pages {
    use super::*;

    /// Pages of 2,000 records (Salesforce's largest batch) are read whole and in order: nothing
    /// is lost or repeated across page boundaries. (Speed is measured by the extractor
    /// benchmark, not here.)
    #[tokio::test]
    async fn twenty_thousand_workers_in_pages_of_2000_arrive_complete() {
        let sim = spawn(SimConfig {
            page_size: PageSize::Fixed(2_000),
            ..org(20_000)
        })
        .await;
        let client = client(&sim);
        let records = list_all(&client, None).await.unwrap();
        assert_complete(&records, 20_000);
        let _: Option<ApiUsage> = client.last_api_usage();
    }
}
