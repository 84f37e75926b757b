//! The Sage People side of `syncctl check`: a token, one page (with the `source_filter`), the
//! config's additional fields on it, and the org's API usage for the quota guard. Answered on
//! the `check` command, and run at extractor start and whenever the config is stored, so a
//! failing credential shows on `/readyz` before the first run. Its calls share a short retry
//! budget ([`CHECK_TIME`]) to answer even while Sage People is down; runs keep theirs.

use std::time::Duration;

use peoplesync_bus::control::{CHECK_WAIT, CheckLine, CheckState, SageChecked};
use peoplesync_core::IntegrationConfig;
use peoplesync_runtime::Readiness;
use peoplesync_sage_people::{ApiUsage, ErrorKind, SageClient};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::deadline::{Budget, CommandTime};
use crate::run::Extraction;
use crate::settings;

/// Check names, as `syncctl check` prints them.
pub const TOKEN_CHECK: &str = "sage_people.token";
/// The one-page read.
pub const PAGE_CHECK: &str = "sage_people.page";
/// The fields the config reads.
pub const FIELDS_CHECK: &str = "sage_people.fields";
/// The org's API usage, which the quota guard needs.
pub const QUOTA_CHECK: &str = "sage_people.quota";

/// Codes of a page refusal that are about field or object access.
const ACCESS_CODES: [&str; 4] = [
    "INACCESSIBLE_FIELD",
    "FIELD_ERROR",
    "OBJECT_NOT_ACCESSIBLE",
    "INVALID_RELATIONSHIP",
];

/// How long the check's Sage People calls (token, page, `limits` resource) may take, together:
/// derived from [`CHECK_WAIT`], how long the control plane waits for the answer (past it, it
/// shows one line saying the extractor did not answer). With the client's own budget
/// (`sage_retry_secs`, two minutes by default) a Sage People outage would outlast that wait;
/// within this one a failing call reports Sage People's own answer, and the lines after it show
/// as not checkable.
pub const CHECK_TIME: CommandTime = CommandTime::within(CHECK_WAIT, "the check");

fn line(name: &str, state: CheckState, detail: impl Into<String>) -> CheckLine {
    CheckLine {
        name: name.to_owned(),
        state,
        detail: detail.into(),
    }
}

/// What a failed Sage People call means for a check.
fn state_of(error: &peoplesync_sage_people::Error) -> CheckState {
    match error.kind() {
        ErrorKind::Configuration | ErrorKind::Authentication | ErrorKind::InvalidMarker => {
            CheckState::Misconfigured
        }
        ErrorKind::QuotaExhausted
        | ErrorKind::Transient
        | ErrorKind::Undecodable
        | ErrorKind::InvalidResponse => CheckState::Unreachable,
    }
}

/// Runs the Sage People checks of the extraction's integration.
///
/// The checks' calls share [`CHECK_TIME`]'s retry budget and end by its deadline, whatever
/// `sage_retry_secs` says, so that the answer comes within the control plane's wait.
pub async fn sage(extraction: &Extraction) -> SageChecked {
    let budget = Budget::start(CHECK_TIME);
    let integration = extraction.integration();
    let mut checks = Vec::new();
    let skipped = |why: &str| {
        [PAGE_CHECK, FIELDS_CHECK, QUOTA_CHECK]
            .map(|name| line(name, CheckState::NotCheckable, why))
    };
    let config = match settings::load_config(extraction.bus(), integration).await {
        Ok(config) => config,
        Err(err) => {
            let state = match err {
                settings::SettingsError::Unreadable { .. } => CheckState::Unreachable,
                settings::SettingsError::Invalid { .. } => CheckState::NotCheckable,
            };
            checks.push(line(TOKEN_CHECK, state, err.to_string()));
            checks.extend(skipped("the integration config cannot be read"));
            return SageChecked {
                checks,
                ..SageChecked::default()
            };
        }
    };
    let set = config.credentials.as_str();
    let client = match extraction.sources().client(set) {
        Ok(client) => client,
        Err(problem) => {
            checks.push(line(
                TOKEN_CHECK,
                CheckState::Misconfigured,
                format!("integration {integration} reads with credential set {set:?}, which cannot be used: {problem}"),
            ));
            checks.extend(skipped("the credential set cannot be used"));
            return SageChecked {
                checks,
                ..SageChecked::default()
            };
        }
    };
    let token = budget
        .call(
            &client,
            "the request for an access token",
            |client| async move { client.authenticate().await },
        )
        .await;
    match token {
        Ok(host) => checks.push(line(
            TOKEN_CHECK,
            CheckState::Passed,
            format!(
                "credential set {set:?} got an access token ({} grant); the API host is {host}",
                client.grant_name()
            ),
        )),
        Err(err) => {
            checks.push(line(TOKEN_CHECK, state_of(&err), err.to_string()));
            checks.extend(skipped("no access token"));
            return SageChecked {
                checks,
                ..SageChecked::default()
            };
        }
    }
    let filter = config
        .source_filter
        .as_deref()
        .filter(|f| !f.trim().is_empty());
    let page = budget
        .call(
            &client,
            "the request for the first page of employees",
            |client| async move { client.list_page(None, filter).await },
        )
        .await;
    match page {
        Ok(page) => {
            let described = match filter {
                Some(filter) => format!(" with source_filter `{filter}`"),
                None => String::new(),
            };
            checks.push(line(
                PAGE_CHECK,
                CheckState::Passed,
                format!(
                    "read the first page of employees{described}: {} employee(s)",
                    page.records.len()
                ),
            ));
            checks.push(fields(&config, &page.records));
            checks.push(quota(&budget, &client, page.api_usage).await);
        }
        Err(err) => {
            let state = state_of(&err);
            let about_access = err.code().is_some_and(|code| ACCESS_CODES.contains(&code));
            checks.push(line(PAGE_CHECK, state, err.to_string()));
            checks.push(if about_access {
                line(FIELDS_CHECK, state, err.to_string())
            } else {
                line(FIELDS_CHECK, CheckState::NotCheckable, "no page was read")
            });
            checks.push(line(
                QUOTA_CHECK,
                CheckState::NotCheckable,
                "no page was read",
            ));
        }
    }
    SageChecked {
        checks,
        ..SageChecked::default()
    }
}

/// Whether the quota guard can learn the org's API usage: from the `Sforce-Limit-Info` header
/// when the page carried one, else from the `limits` resource, which a run then reads before
/// its first page and every few hundred pages (its refusal names the permission to grant).
async fn quota(budget: &Budget, client: &SageClient, reported: Option<ApiUsage>) -> CheckLine {
    let used = |usage: ApiUsage| {
        format!(
            "{} of {} API requests used in the last 24 hours",
            usage.used, usage.allowed
        )
    };
    if let Some(usage) = reported {
        return line(
            QUOTA_CHECK,
            CheckState::Passed,
            format!(
                "the page carried Sforce-Limit-Info ({}): the quota guard reads the org's usage there",
                used(usage)
            ),
        );
    }
    let limits = budget
        .call(
            client,
            "the request for the limits resource",
            |client| async move { client.read_limits().await },
        )
        .await;
    match limits {
        Ok(usage) => line(
            QUOTA_CHECK,
            CheckState::Passed,
            format!(
                "the page carried no Sforce-Limit-Info; the quota guard reads the org's usage from \
                 the limits resource ({})",
                used(usage)
            ),
        ),
        Err(err) => line(QUOTA_CHECK, state_of(&err), err.to_string()),
    }
}

/// Whether the page shows every additional field the config declares. The Employees API
/// serves its standard fields on every employee (access problems refuse the whole page, as
/// the page check shows); additional fields appear only when the Team Member field set
/// "Employee API Additional Fields" holds them and the API user may read them.
fn fields(config: &IntegrationConfig, records: &[Value]) -> CheckLine {
    if records.is_empty() {
        return line(
            FIELDS_CHECK,
            CheckState::NotCheckable,
            "the first page holds no employee, so the fields cannot be seen; the standard fields \
             are readable (the page was not refused)",
        );
    }
    let present = |name: &str| {
        records.iter().any(|record| {
            record
                .get("additionalFields")
                .and_then(Value::as_array)
                .is_some_and(|fields| {
                    fields.iter().any(|field| {
                        field
                            .get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.trim().eq_ignore_ascii_case(name.trim()))
                    })
                })
        })
    };
    let missing: Vec<&str> = config
        .additional_fields
        .iter()
        .map(String::as_str)
        .filter(|name| !present(name))
        .collect();
    if missing.is_empty() {
        let extra = if config.additional_fields.is_empty() {
            String::new()
        } else {
            format!(
                " and the additional field(s) {}",
                config.additional_fields.join(", ")
            )
        };
        return line(
            FIELDS_CHECK,
            CheckState::Passed,
            format!("the API user reads the standard fields{extra}"),
        );
    }
    line(
        FIELDS_CHECK,
        CheckState::Misconfigured,
        format!(
            "no employee of the first page carries the additional field(s) {} that \
             additional_fields declares: in Salesforce Setup, add each one's field to the Team \
             Member field set \"Employee API Additional Fields\" and give the integration user's \
             permission set Read access to it (or remove it from additional_fields)",
            missing.join(", ")
        ),
    )
}

/// How often a failing credential is checked again while it fails.
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// The pause before the config is watched again after its watch ended.
const REWATCH_PAUSE: Duration = Duration::from_secs(5);

/// Readiness condition of an integration's Sage People credentials.
pub fn readiness_name(integration: &str) -> String {
    format!("sage_people_credentials.{integration}")
}

/// Checks the integration's Sage People side now, again whenever its config is stored, and
/// every [`RECHECK_EVERY`] while a check finds it misconfigured (each such finding is logged
/// with what to fix); `/readyz` names the integration's credentials while its credential set
/// gets no token. Other findings (access, filter, fields) are logged only: they are not
/// about credentials, and `syncctl check` shows them. The readiness condition is registered (not
/// ready) at once, before the returned future first runs; the future runs until `stop`.
pub fn keep_checking(
    extraction: Extraction,
    readiness: Readiness,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let name = readiness_name(extraction.integration());
    readiness.register(&name);
    check_until_stopped(extraction, readiness, name, stop)
}

async fn check_until_stopped(
    extraction: Extraction,
    readiness: Readiness,
    name: String,
    stop: CancellationToken,
) {
    let integration = extraction.integration().to_owned();
    let mut changes = None;
    loop {
        // The config watch, (re)made when there is none: without it a changed credential set
        // would go unchecked, so until it can be made the check is repeated every minute.
        if changes.is_none() {
            match extraction.bus().configs().changes(&integration).await {
                Ok(watch) => changes = Some(watch),
                Err(err) => {
                    tracing::warn!(%integration, error = %err, "cannot watch the integration config; credentials are checked again every minute until it can");
                }
            }
        }
        let report = sage(&extraction).await;
        let failing: Vec<&CheckLine> = report
            .checks
            .iter()
            .filter(|c| c.state == CheckState::Misconfigured)
            .collect();
        for check in &failing {
            tracing::error!(%integration, check = %check.name, "{}", check.detail);
        }
        let credentials_fail = failing.iter().any(|c| c.name == TOKEN_CHECK);
        readiness.set(&name, !credentials_fail);
        let watching = changes.is_some();
        let recheck = async {
            if failing.is_empty() && watching {
                std::future::pending::<()>().await;
            } else {
                tokio::time::sleep(RECHECK_EVERY).await;
            }
        };
        // A `ConfigWatch` is not a `Stream`, so `watch::next_change` does not apply.
        let changed = async {
            match changes.as_mut() {
                Some(watch) => watch.next().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = recheck => {}
            change = changed => {
                if change.is_none() {
                    tracing::warn!(%integration, "the integration config watch ended; watching again");
                    changes = None;
                    // A watch that keeps ending must not spin the check against Sage People.
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(REWATCH_PAUSE) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use peoplesync_sage_people::{Credentials, Error, SageConfig};
    use tokio::time::Instant;

    use super::*;

    fn client() -> SageClient {
        SageClient::new(SageConfig::new(
            "https://acme.my.salesforce.com",
            Credentials::ClientCredentials {
                client_id: "3MVG9".into(),
                client_secret: "secret".into(),
            },
        ))
        .expect("a valid configuration")
    }

    #[test]
    fn the_check_keeps_its_30_s_of_retries_and_40_s_deadline_within_the_45_s_wait() {
        assert_eq!(CHECK_WAIT, Duration::from_secs(45));
        assert_eq!(CHECK_TIME.deadline, Duration::from_secs(40));
        assert_eq!(CHECK_TIME.retry_budget, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_still_unanswered_at_the_deadline_is_unreachable_and_says_where_to_look() {
        let budget = Budget::start(CHECK_TIME);
        let outcome: Result<(), Error> = budget
            .call(&client(), "the request for an access token", |_| {
                std::future::pending()
            })
            .await;
        let error = outcome.expect_err("abandoned at the deadline");
        assert_eq!(Instant::now(), budget.deadline());
        assert_eq!(state_of(&error), CheckState::Unreachable);
        let message = error.to_string();
        assert!(
            message.starts_with(
                "Sage People at acme.my.salesforce.com did not answer the request for an access \
                 token within the 40 s the check may take"
            ),
            "{message}"
        );
        assert!(message.contains("network path"), "{message}");
    }
}
