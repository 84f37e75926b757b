//! Start-up checks: the Oomnitza credentials are tried once before the first event is pulled,
//! so that a refused token stops pulling and sets `credentials_failing` at once rather than
//! after the first run's first batch. The gates' own probe clears the failure once Oomnitza
//! accepts the credentials again. Then each integration's mapped field ids are tried with a
//! one-record test run (nothing applied): an id Oomnitza does not know pauses the integration
//! with the reason, as a refused batch would, before any event is loaded; a refusal that names
//! none of them is logged with Oomnitza's answer.
//!
//! A refused credential does not take the loader out of rotation: its control plane must stay
//! reachable, so that `syncctl check` can say what is wrong.

use peoplesync_bus::PauseFlag;
use peoplesync_oomnitza::{ErrorKind, FieldProbe};

use crate::application::Application;

/// Checks the Oomnitza credentials now; a refusal is recorded as [`Failure::Credentials`].
/// Returns whether Oomnitza answered (accepting or refusing them).
pub async fn check_credentials(loader: &Application) -> bool {
    match loader.client().check_auth().await {
        Ok(()) => {
            tracing::info!(host = %loader.client().host(), "Oomnitza accepted the credentials");
            true
        }
        Err(err) if err.kind() == ErrorKind::Unauthorized => {
            loader
                .gates()
                .set_refused_credentials(loader.client(), &err);
            true
        }
        Err(err) => {
            tracing::warn!(error = %err,
                "cannot check the Oomnitza credentials at start; Oomnitza may be unreachable \
                 (the mapped field ids are not tried now: an unknown one pauses the integration \
                 at its first refused batch)");
            false
        }
    }
}

/// Tries every integration's mapped field ids with Oomnitza; pauses an integration whose ids
/// Oomnitza does not know (resumed, as after any configuration refusal, by storing a newer
/// config revision or `syncctl resume`). Skipped while the credentials fail. Called only when
/// Oomnitza answered the credential check: against an unreachable Oomnitza each probe would
/// wait out its timeouts, one integration after another, before the loader pulls anything (a
/// refused field id still pauses the integration at its first batch).
pub async fn check_fields(loader: &Application) {
    if loader.gates().failure().is_some() {
        return;
    }
    for id in loader.integrations().ids() {
        let Some((integration, revision)) = loader.integrations().get_with_revision(&id) else {
            continue;
        };
        if loader.gates().is_paused(&id) {
            continue;
        }
        let config = integration.config();
        let probe = match peoplesync_control::probe_mapped_fields(loader.client(), config).await {
            Ok(probe) => probe,
            Err(err) => {
                tracing::warn!(integration = %id, error = %err,
                    "cannot check the mapped field ids at start; Oomnitza may be unreachable");
                continue;
            }
        };
        match finding(&id, probe) {
            Finding::Known => {
                tracing::info!(integration = %id, "Oomnitza knows the mapped field ids")
            }
            Finding::Refused(reason) => tracing::warn!(integration = %id, %reason,
                "Oomnitza refused the start-up test run of the mapped field ids"),
            Finding::Unknown(reason) => {
                tracing::error!(integration = %id, %reason, "pausing the integration at start");
                let flag = PauseFlag::refused(revision, reason);
                match loader.bus().pauses().set(&id, &flag).await {
                    Ok(kv_revision) => loader.gates().set_flag(&id, Some(&flag), kv_revision),
                    Err(err) => {
                        tracing::error!(integration = %id, error = %err, "cannot store the pause flag; pausing this replica only");
                        loader.gates().set_flag_locally(&id, &flag);
                    }
                }
            }
        }
    }
}

/// What the probe of integration `id`'s field ids means (at start-up, and after a refusal
/// during a run).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finding {
    /// Oomnitza knows every mapped field id.
    Known,
    /// Oomnitza does not know some of them: pause the integration, with this reason.
    Unknown(String),
    /// Oomnitza refused the test run without naming a mapped field: report it, with this
    /// reason, and load on (the ids may be fine; the batches tell).
    Refused(String),
}

/// Reads the answer of the probe of integration `id`'s field ids.
pub(crate) fn finding(id: &str, probe: FieldProbe) -> Finding {
    match probe {
        FieldProbe::Known { .. } => Finding::Known,
        FieldProbe::Refused { unknown, message } if !unknown.is_empty() => {
            Finding::Unknown(format!(
                "Oomnitza does not know the field id(s) {} mapped by integration {id} ({message}): \
             create them in Oomnitza or correct `field` in the mapping, then store the config \
             with `syncctl integration put` (which resumes loading)",
                unknown.join(", ")
            ))
        }
        FieldProbe::Refused { message, .. } => Finding::Refused(format!(
            "Oomnitza refused a one-record test run of the fields mapped by integration {id} \
             without naming one of them ({message}); check `sync_keys` and the mapped field ids \
             against that answer (`syncctl check` asks again); loading goes on"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_naming_no_mapped_field_is_reported_with_oomnitzas_answer() {
        let probe = FieldProbe::Refused {
            unknown: Vec::new(),
            message: "400: sync_field is not a list".to_owned(),
        };
        let Finding::Refused(reason) = finding("acme", probe) else {
            panic!("a refusal is not success");
        };
        assert!(
            reason.contains("400: sync_field is not a list") && reason.contains("`sync_keys`"),
            "{reason}"
        );
        let unknown = FieldProbe::Refused {
            unknown: vec!["0123abcd".to_owned()],
            message: "unknown field".to_owned(),
        };
        assert!(matches!(finding("acme", unknown), Finding::Unknown(r) if r.contains("0123abcd")));
        assert_eq!(
            finding("acme", FieldProbe::Known { status: 200 }),
            Finding::Known
        );
    }
}
