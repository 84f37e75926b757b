//! `CheckIntegration`: one integration checked in seconds before its first run, one line per
//! check and a verdict. NATS and its streams, the stored config through the same parsers the
//! services use, the Sage People side through the extractor's `check` command (token, one page,
//! field access), and the Oomnitza side with the loader's client (token, field ids). Nothing is
//! written: the Oomnitza field probe is a `test_run`.

use peoplesync_bus::control::{self, CheckLine, CheckState, SageChecked};
use peoplesync_bus::{Bus, PauseFlag};
use peoplesync_core::{Integration, IntegrationConfig};
use peoplesync_oomnitza::{FieldProbe, OomnitzaClient};
use peoplesync_proto::v1 as pb;
use tonic::Status;

use crate::extractor::Extractor;
use crate::integrations::Configs;

/// The line of a check that reads NATS, not made while the loader is not connected to it.
fn needs_nats(name: &str) -> CheckLine {
    line(
        name,
        CheckState::NotCheckable,
        "not checked: it is read through NATS, which the loader cannot reach (see the nats line)",
    )
}

/// One line of a check's report.
fn line(name: &str, state: CheckState, detail: impl Into<String>) -> CheckLine {
    CheckLine {
        name: name.to_owned(),
        state,
        detail: detail.into(),
    }
}

/// Runs every check of one integration.
pub(crate) struct Checker<'a> {
    pub(crate) bus: &'a Bus,
    pub(crate) configs: &'a Configs,
    pub(crate) extractor: &'a Extractor,
    pub(crate) oomnitza: &'a OomnitzaClient,
}

impl Checker<'_> {
    /// The report of `integration`.
    pub(crate) async fn check(&self, integration: &str) -> pb::CheckIntegrationResponse {
        let nats = self.nats().await;
        // Without NATS the config, the Sage People side (asked of the extractor over NATS) and
        // the pause flag cannot be read; asking anyway would cost each its timeout, or wait
        // without end once the client's queue is full, and the call would never answer. The
        // Oomnitza token is still checked.
        let connected = self.bus.connected().is_ok();
        let mut checks = vec![nats];
        let config = if connected {
            let (config_line, config) = self.config(integration).await;
            checks.push(config_line);
            checks.extend(self.sage(integration).await);
            config
        } else {
            checks.push(needs_nats("config"));
            checks.push(needs_nats("sage_people"));
            None
        };
        let token = self.oomnitza_token().await;
        let token_state = token.state;
        checks.push(token);
        if connected {
            checks.push(role(config.as_ref()));
            checks.push(self.oomnitza_fields(config.as_ref(), token_state).await);
            checks.extend(self.pause(integration).await);
        } else {
            // Both are the stored config's.
            checks.push(needs_nats("oomnitza.role"));
            checks.push(needs_nats(FIELDS));
        }
        report(integration, checks)
    }

    /// A line when loading is paused: runs would wait for `syncctl resume` whatever the other
    /// lines say. Not a failure: a pause is a decision (or, set by the loaders, the effect of a
    /// refusal that the `oomnitza.fields` line explains). An unreadable flag is left to the
    /// `nats` line.
    async fn pause(&self, integration: &str) -> Option<CheckLine> {
        match self.bus.pauses().get(integration).await {
            Ok(flag) => flag.filter(|f| f.paused).map(|f| paused_line(&f)),
            Err(err) => {
                tracing::warn!(integration, error = %err, "cannot read the pause flag for the check");
                None
            }
        }
    }

    async fn nats(&self) -> CheckLine {
        if let Err(state) = self.bus.connected() {
            return line(
                "nats",
                CheckState::Unreachable,
                format!(
                    "the loader's NATS connection is {state:?}; check NATS_URL and that nats-server is up"
                ),
            );
        }
        let missing = self.bus.missing_streams().await;
        if missing.is_empty() {
            line(
                "nats",
                CheckState::Passed,
                format!(
                    "connected; streams {} present",
                    self.bus.topology_streams().join(", ")
                ),
            )
        } else {
            line(
                "nats",
                CheckState::Unreachable,
                format!(
                    "connected, but cannot read stream(s) {}; restart a loader (it creates them) \
                     and check the NATS account's JetStream limits",
                    missing.join(", ")
                ),
            )
        }
    }

    /// The stored config parsed and compiled as the services do; `None` when it cannot be used.
    async fn config(&self, integration: &str) -> (CheckLine, Option<IntegrationConfig>) {
        let stored = match self.configs.stored(integration).await {
            Ok(stored) => stored,
            Err(status) => {
                return (
                    line("config", CheckState::Unreachable, status.message()),
                    None,
                );
            }
        };
        let (text, origin) = match stored {
            Some((text, revision)) => (text, format!("revision {revision}")),
            None => (
                IntegrationConfig::default_for(integration).to_toml(),
                "none stored: the shipped default".to_owned(),
            ),
        };
        let parsed = IntegrationConfig::from_toml(&text);
        match parsed.clone().and_then(Integration::compile) {
            Ok(_) => (
                line(
                    "config",
                    CheckState::Passed,
                    format!(
                        "integration config ({origin}) is valid: schedule, source_filter, mapping and templates"
                    ),
                ),
                parsed.ok(),
            ),
            Err(errors) => {
                let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
                (
                    line(
                        "config",
                        CheckState::Misconfigured,
                        format!(
                            "integration config ({origin}) would be refused by the services: {}; \
                             fix it and store it with `syncctl integration put`",
                            problems.join("; ")
                        ),
                    ),
                    None,
                )
            }
        }
    }

    async fn sage(&self, integration: &str) -> Vec<CheckLine> {
        let reply: Result<SageChecked, tonic::Status> = self
            .extractor
            .request(integration, control::CHECK, &(), control::CHECK_WAIT)
            .await;
        match reply {
            Ok(report) => {
                // Any replica may answer, each with its own secrets: say which one did, and
                // whether it is the one whose secrets runs use.
                let holder = match self.bus.lease_holder(integration).await {
                    Ok(lease) => lease.map(|l| l.holder),
                    Err(err) => {
                        tracing::warn!(integration, error = %err, "cannot read the scheduler lease for the check");
                        None
                    }
                };
                let note = replica_note(&report.replica, holder.as_deref());
                report
                    .checks
                    .into_iter()
                    .map(|mut check| {
                        check.detail = format!("{} {note}", check.detail);
                        check
                    })
                    .collect()
            }
            Err(status) => vec![line(
                "sage_people",
                CheckState::Unreachable,
                status.message(),
            )],
        }
    }

    async fn oomnitza_token(&self) -> CheckLine {
        let host = self.oomnitza.host().to_owned();
        match self.oomnitza.check_auth().await {
            Ok(()) => line(
                "oomnitza.token",
                CheckState::Passed,
                format!("Oomnitza at {host} accepted the loader's credentials"),
            ),
            Err(err) if err.kind() == peoplesync_oomnitza::ErrorKind::Unauthorized => line(
                "oomnitza.token",
                CheckState::Misconfigured,
                credentials_refused(self.oomnitza, &err),
            ),
            Err(err) => line("oomnitza.token", CheckState::Unreachable, err.to_string()),
        }
    }

    async fn oomnitza_fields(
        &self,
        config: Option<&IntegrationConfig>,
        token: CheckState,
    ) -> CheckLine {
        let Some(config) = config else {
            return line(
                FIELDS,
                CheckState::NotCheckable,
                "the integration config cannot be used",
            );
        };
        if let Some(unchecked) = fields_unchecked(token) {
            return unchecked;
        }
        match probe_mapped_fields(self.oomnitza, config).await {
            Ok(FieldProbe::Known { status }) => line(
                FIELDS,
                CheckState::Passed,
                format!(
                    "Oomnitza knows the {} mapped field id(s) (a one-record test run, nothing \
                     applied, answered {status})",
                    config.mapping.len()
                ),
            ),
            Ok(FieldProbe::Refused { unknown, message }) if !unknown.is_empty() => line(
                FIELDS,
                CheckState::Misconfigured,
                format!(
                    "Oomnitza does not know field id(s) {} ({message}); create the custom \
                     field(s) in Oomnitza (Configuration > Users > Fields) or correct `field` in \
                     the mapping, then store the config again",
                    unknown.join(", ")
                ),
            ),
            Ok(FieldProbe::Refused { message, .. }) => line(
                FIELDS,
                CheckState::Misconfigured,
                format!(
                    "Oomnitza refused a test run of the mapping's fields ({message}); check \
                     sync_keys and the mapped field ids"
                ),
            ),
            Err(err) => line(FIELDS, CheckState::Unreachable, err.to_string()),
        }
    }
}

/// Which extractor replica answered the Sage People checks (`answered`, empty from one that
/// does not say) and how it stands to the scheduler lease (`holder`), whose replica runs the
/// integration with its own secrets.
fn replica_note(answered: &str, holder: Option<&str>) -> String {
    let standby = |holder: &str| {
        format!(
            "a standby: runs use the secrets of {holder}, which holds the scheduler lease; each \
             replica checks its own (its /readyz)"
        )
    };
    match (answered, holder) {
        ("", Some(holder)) => {
            format!("[an extractor replica answered; {holder} holds the scheduler lease and runs]")
        }
        ("", None) => "[an extractor replica answered; none holds the scheduler lease]".to_owned(),
        (answered, Some(holder)) if answered == holder => {
            format!("[extractor replica {answered}, which holds the scheduler lease and runs]")
        }
        (answered, Some(holder)) => format!("[extractor replica {answered}, {}]", standby(holder)),
        (answered, None) => {
            format!("[extractor replica {answered}; no replica holds the scheduler lease now]")
        }
    }
}

/// The name of the Oomnitza field-id check.
const FIELDS: &str = "oomnitza.fields";

/// The field-id line when the credential check (`token`) did not pass, saying why the ids were
/// not tried: Oomnitza refused the credentials, or did not answer at all; `None` when it passed.
fn fields_unchecked(token: CheckState) -> Option<CheckLine> {
    let why = match token {
        // The credential check never waits: nothing for it to hold.
        CheckState::Passed | CheckState::Waiting => return None,
        CheckState::Misconfigured => {
            "not checked: Oomnitza refused the credentials (see oomnitza.token); check again once \
             it accepts them"
        }
        CheckState::Unreachable | CheckState::NotCheckable => {
            "not checked: Oomnitza did not answer the credential check (see oomnitza.token); \
             check again once it answers"
        }
    };
    Some(line(FIELDS, CheckState::NotCheckable, why))
}

/// The line of a set pause `flag`: who paused loading, when and why, and what ends it. A pause
/// the loaders set because Oomnitza refused the config is named as the cause to fix.
fn paused_line(flag: &PauseFlag) -> CheckLine {
    let reason = flag
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let detail = match flag.refused_config_revision {
        Some(revision) => format!(
            "loading is paused since {} by {}, because Oomnitza refused config revision \
             {revision} as a whole{reason}. This is the cause to fix: correct the config and \
             store it with `syncctl integration put` (a loader resumes on the new revision), or, \
             if the fix was made in Oomnitza, `syncctl resume`; until then runs' events wait on \
             the stream and nothing reaches Oomnitza",
            flag.at, flag.by
        ),
        None => format!(
            "loading is paused since {} by {}{reason}: runs still read Sage People, but their \
             events wait on the stream and nothing reaches Oomnitza until `syncctl resume`",
            flag.at, flag.by
        ),
    };
    // A pause for a refused config is the cause to fix; an operator's only holds loading.
    let state = match flag.refused_config_revision {
        Some(_) => CheckState::Misconfigured,
        None => CheckState::Waiting,
    };
    line(PAUSED, state, detail)
}

/// The name of the line shown while loading is paused.
const PAUSED: &str = "paused";

/// Asks Oomnitza whether it knows every field id the mapping of `config` writes, and its sync
/// keys, and the fields `[[leavers.set]]` writes to leavers, with a one-record test run: nothing
/// is applied. `CheckIntegration`, `PutIntegration` and the loader's start-up check all ask this
/// one question.
pub async fn probe_mapped_fields(
    oomnitza: &OomnitzaClient,
    config: &IntegrationConfig,
) -> Result<FieldProbe, peoplesync_oomnitza::Error> {
    let mut fields: Vec<String> = Vec::new();
    for entry in config.mapping.iter().chain(&config.leavers.set) {
        let field = entry.field.trim();
        if !fields.iter().any(|f| f == field) {
            fields.push(field.to_owned());
        }
    }
    oomnitza.probe_field_ids(&config.sync_keys, &fields).await
}

/// Refuses to store `toml` when Oomnitza says one of its mapped field ids does not exist (a
/// one-record test run, nothing applied): every batch would be refused the same way. A config
/// that does not parse is left to the validation that follows; when Oomnitza cannot be asked,
/// or refuses the test run without naming a mapped field, the config is stored and the reason
/// logged (`syncctl check` tells it later).
pub(crate) async fn refuse_unknown_fields(
    oomnitza: &OomnitzaClient,
    integration: &str,
    toml: &str,
) -> Result<(), Status> {
    let Ok(config) = IntegrationConfig::from_toml(toml) else {
        return Ok(());
    };
    match probe_mapped_fields(oomnitza, &config).await {
        Ok(FieldProbe::Refused { unknown, message }) if !unknown.is_empty() => {
            Err(Status::failed_precondition(format!(
                "Oomnitza does not know field id(s) {} ({message}); create the custom field(s) in \
                 Oomnitza (Configuration > Users > Fields) or correct `field` in the mapping \
                 or `[[leavers.set]]`; the config was not stored",
                unknown.join(", ")
            )))
        }
        Ok(FieldProbe::Refused { message, .. }) => {
            // Not about a field id this config names: stored, and said (`syncctl check` shows
            // the refusal as `oomnitza.fields`).
            tracing::warn!(integration, %message,
                "storing the config although Oomnitza refused its test run without naming a mapped field; check sync_keys and the mapped field ids (syncctl check)");
            Ok(())
        }
        Ok(FieldProbe::Known { .. }) => Ok(()),
        Err(err) => {
            tracing::warn!(integration, error = %err, "storing the config without checking its field ids with Oomnitza");
            Ok(())
        }
    }
}

/// The role id cannot be read back: the published API has no user-roles read.
fn role(config: Option<&IntegrationConfig>) -> CheckLine {
    let role = config.and_then(|c| c.default_role.as_deref());
    let detail = match role {
        Some(role) => format!(
            "default_role {role} cannot be checked: Oomnitza's External API publishes no read of \
             user roles; Oomnitza accepts a batch whatever its roles, and a record whose role \
             does not exist fails afterwards, while Oomnitza processes it: the run's \
             verification dead-letters those workers (stage verification) with Oomnitza's \
             message (check the role in Oomnitza under Configuration > Roles)"
        ),
        None => "no default_role is set".to_owned(),
    };
    line("oomnitza.role", CheckState::NotCheckable, detail)
}

/// The lines as the RPC answers them, with the verdict: misconfigured wins over unreachable.
pub(crate) fn report(integration: &str, checks: Vec<CheckLine>) -> pb::CheckIntegrationResponse {
    let any = |state| checks.iter().any(|c| c.state == state);
    let verdict = if any(CheckState::Misconfigured) {
        pb::CheckVerdict::Misconfigured
    } else if any(CheckState::Unreachable) {
        pb::CheckVerdict::Unreachable
    } else {
        pb::CheckVerdict::Ready
    };
    pb::CheckIntegrationResponse {
        integration_id: integration.to_owned(),
        checks: checks
            .into_iter()
            .map(|c| pb::IntegrationCheck {
                name: c.name,
                outcome: outcome(c.state).into(),
                detail: c.detail,
            })
            .collect(),
        verdict: verdict.into(),
    }
}

fn outcome(state: CheckState) -> pb::CheckOutcome {
    match state {
        CheckState::Passed => pb::CheckOutcome::Passed,
        CheckState::Misconfigured => pb::CheckOutcome::Misconfigured,
        CheckState::Unreachable => pb::CheckOutcome::Unreachable,
        CheckState::NotCheckable => pb::CheckOutcome::NotCheckable,
        CheckState::Waiting => pb::CheckOutcome::Waiting,
    }
}

/// What to say when Oomnitza refuses the loader's credentials (`err`, a 401 or 403): Oomnitza's
/// refusal, which says what to do, and for a refused credential (not missing rights) the
/// settings that hold it, then that the loaders must be restarted to read them again.
pub fn credentials_refused(client: &OomnitzaClient, err: &peoplesync_oomnitza::Error) -> String {
    let settings = if err.status() == Some(403) {
        None
    } else if client.uses_api_token() {
        Some("OOMNITZA_API_TOKEN (or OOMNITZA_API_TOKEN_FILE)")
    } else {
        Some("OOMNITZA_LOGIN and OOMNITZA_PASSWORD (or OOMNITZA_PASSWORD_FILE)")
    };
    match settings {
        Some(settings) => {
            format!("{err}; the loaders read {settings} at start: restart them after a change")
        }
        None => format!("{err}; the loaders pick up new rights on their own"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_line_says_an_unknown_role_fails_after_its_batch_was_accepted() {
        let config = IntegrationConfig {
            default_role: Some("25".into()),
            ..IntegrationConfig::default_for("acme")
        };
        let line = role(Some(&config));
        assert_eq!(line.state, CheckState::NotCheckable);
        assert!(
            line.detail.contains("accepts a batch whatever its roles")
                && line.detail.contains("dead-letters")
                && !line.detail.contains("refuses"),
            "{}",
            line.detail
        );
    }

    #[test]
    fn a_refused_credential_names_the_settings_in_use_and_missing_rights_name_none() {
        use peoplesync_oomnitza::{Error, ErrorKind, OomnitzaAuth, OomnitzaConfig};
        let client = |auth| {
            OomnitzaClient::new(OomnitzaConfig::new("https://acme.oomnitza.com", auth))
                .expect("a client")
        };
        let token = client(OomnitzaAuth::ApiToken("t".to_owned().into()));
        let password = client(OomnitzaAuth::Password {
            login: "sync".into(),
            password: "p".to_owned().into(),
        });
        let refused = Error::new(ErrorKind::Unauthorized, "refused").with_status(401);
        let forbidden = Error::new(ErrorKind::Unauthorized, "forbidden").with_status(403);
        assert!(credentials_refused(&token, &refused).contains("OOMNITZA_API_TOKEN"));
        let said = credentials_refused(&password, &refused);
        assert!(
            said.contains("OOMNITZA_LOGIN") && !said.contains("OOMNITZA_API_TOKEN"),
            "{said}"
        );
        let said = credentials_refused(&token, &forbidden);
        assert!(!said.contains("OOMNITZA_API_TOKEN"), "{said}");
    }

    #[test]
    fn the_sage_people_lines_name_the_answering_replica_and_the_lease_holder() {
        let note = replica_note("extractor-b", Some("extractor-a"));
        assert!(
            note.contains("extractor-b")
                && note.contains("standby")
                && note.contains("extractor-a"),
            "{note}"
        );
        let note = replica_note("extractor-a", Some("extractor-a"));
        assert!(
            note.contains("extractor-a") && note.contains("holds the scheduler lease"),
            "{note}"
        );
        assert!(!note.contains("standby"), "{note}");
        assert!(replica_note("extractor-a", None).contains("no replica holds"));
    }

    #[test]
    fn unchecked_field_ids_say_whether_oomnitza_refused_or_did_not_answer() {
        assert_eq!(fields_unchecked(CheckState::Passed), None);
        let refused = fields_unchecked(CheckState::Misconfigured).expect("a line");
        assert_eq!(refused.state, CheckState::NotCheckable);
        assert!(
            refused.detail.contains("refused the credentials"),
            "{}",
            refused.detail
        );
        let down = fields_unchecked(CheckState::Unreachable).expect("a line");
        assert_eq!(down.state, CheckState::NotCheckable);
        assert!(
            down.detail.contains("did not answer") && !down.detail.contains("refused"),
            "{}",
            down.detail
        );
    }

    #[test]
    fn a_pause_is_named_with_who_and_why_and_a_refused_config_as_the_cause_to_fix() {
        let operator = PauseFlag::now(true, "ops@host", Some("Oomnitza maintenance".into()));
        let said = paused_line(&operator);
        assert_eq!(said.state, CheckState::Waiting, "a pause is not a failure");
        assert!(
            said.detail.contains("ops@host")
                && said.detail.contains("Oomnitza maintenance")
                && said.detail.contains("syncctl resume")
                && !said.detail.contains("cause to fix"),
            "{}",
            said.detail
        );
        let refused = PauseFlag::refused(4, "unknown field id 'X'".into());
        let said = paused_line(&refused);
        assert!(
            said.detail.contains("config revision 4")
                && said.detail.contains("unknown field id 'X'")
                && said.detail.contains("cause to fix")
                && said.detail.contains("syncctl integration put"),
            "{}",
            said.detail
        );
        assert_eq!(said.state, CheckState::Misconfigured, "the cause to fix");
    }

    #[test]
    fn misconfigured_wins_over_unreachable_and_not_checkable_is_not_a_failure() {
        let lines =
            |states: &[CheckState]| states.iter().map(|s| line("x", *s, "")).collect::<Vec<_>>();
        use CheckState::*;
        let verdict = |states: &[CheckState]| report("i", lines(states)).verdict();
        assert_eq!(verdict(&[Passed, NotCheckable]), pb::CheckVerdict::Ready);
        assert_eq!(
            verdict(&[Passed, Unreachable]),
            pb::CheckVerdict::Unreachable
        );
        assert_eq!(
            verdict(&[Unreachable, Misconfigured, Passed]),
            pb::CheckVerdict::Misconfigured
        );
    }
}
