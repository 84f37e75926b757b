//! Whether this replica may pull an integration's events now: not while an operator has
//! paused the integration (KV `peoplesync_state`, key `pause.<integration>`, watched by every
//! replica), and not while Oomnitza cannot take records — it refuses the credentials, its URL
//! is wrong, or it kept failing past the retries. Then pulling stops, the state is reported,
//! and Oomnitza is re-checked only at a slow interval, so an outage or a revoked token causes
//! neither a retry storm nor dead-lettered good data.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use peoplesync_bus::Bus;
use peoplesync_bus::pause::{self, PauseFlag};
use peoplesync_oomnitza::OomnitzaClient;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why Oomnitza cannot take records now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 401/403: bad credentials or missing rights.
    Credentials,
    /// 404 for the bulk endpoint: `OOMNITZA_URL` is wrong.
    Misconfigured,
    /// Bulk posts, or a leaver's calls, kept failing transiently past their retries: the probe
    /// asks the bulk and users endpoints too, so that an outage of one of them alone keeps the
    /// intake closed.
    Unavailable,
}

/// One integration's pause flag as this replica last read it.
#[derive(Debug, Clone, Default)]
struct PauseState {
    paused: bool,
    /// KV revision of the flag it was read from.
    revision: u64,
    /// The config revision whose records Oomnitza refused, for a loader's own pause.
    refused_config_revision: Option<u64>,
    /// Why it is paused.
    reason: Option<String>,
}

/// What the credential check said of the token, after another call was refused for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// Refused too (401/403): the credential gate is closed.
    Refused,
    /// Passed now: the token lacks a right the refused call needs.
    Passes,
    /// Passed within the last [`CHECK_KEPT`], so not asked again.
    PassedRecently,
    /// No answer (Oomnitza failing, a timeout): nothing is known of the token.
    Unanswered,
}

impl TokenCheck {
    /// Whether the token is known to pass the credential check.
    pub fn passes(self) -> bool {
        matches!(self, TokenCheck::Passes | TokenCheck::PassedRecently)
    }
}

/// How long a passed credential check is taken as the answer for frequent calls refused
/// meanwhile, so that a token lacking one right (refused on every read of a portion) does not
/// make a credential check of every refused read.
pub const CHECK_KEPT: Duration = Duration::from_secs(30);

/// The open/closed state of every integration's intake, shared by the replica's tasks.
#[derive(Clone)]
pub struct Gates {
    /// Integration → its pause flag as last read.
    paused: Arc<RwLock<HashMap<String, PauseState>>>,
    failure: Arc<RwLock<Option<(Failure, String)>>>,
    changed: Arc<watch::Sender<u64>>,
    /// Where pauses and failures are noted for `/readyz`.
    readiness: peoplesync_runtime::Readiness,
    /// When the credential check last passed after another call was refused.
    token_passed: Arc<RwLock<Option<std::time::Instant>>>,
    /// Integration → until when its "leavers waiting" note stands unless set again.
    leavers_waiting: Arc<std::sync::Mutex<HashMap<String, tokio::time::Instant>>>,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            paused: Arc::default(),
            failure: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            readiness: peoplesync_runtime::Readiness::new(),
            token_passed: Arc::default(),
            leavers_waiting: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gates").finish_non_exhaustive()
    }
}

impl Gates {
    /// Where the replica's `/readyz` conditions and notes are kept.
    pub fn readiness(&self) -> &peoplesync_runtime::Readiness {
        &self.readiness
    }

    /// Gates that note pauses and failures on `readiness` (shown by `/readyz`).
    pub fn noting_on(readiness: peoplesync_runtime::Readiness) -> Gates {
        Gates {
            readiness,
            ..Gates::default()
        }
    }

    /// Whether `integration`'s events may be pulled now.
    pub fn is_open(&self, integration: &str) -> bool {
        !self.is_paused(integration) && self.failure().is_none()
    }

    /// Whether an operator paused `integration`.
    pub fn is_paused(&self, integration: &str) -> bool {
        self.paused
            .read()
            .is_ok_and(|flags| flags.get(integration).is_some_and(|state| state.paused))
    }

    /// When a loader paused `integration` because Oomnitza refused its records as a whole: the
    /// config revision refused, and why.
    pub fn refusal(&self, integration: &str) -> Option<(u64, String)> {
        let flags = self.paused.read().ok()?;
        let state = flags.get(integration).filter(|state| state.paused)?;
        Some((
            state.refused_config_revision?,
            state.reason.clone().unwrap_or_default(),
        ))
    }

    /// Every integration paused because Oomnitza refused its records as a whole, with the
    /// config revision refused.
    pub fn refusals(&self) -> Vec<(String, u64)> {
        self.paused
            .read()
            .map(|flags| {
                flags
                    .iter()
                    .filter(|(_, state)| state.paused)
                    .filter_map(|(id, state)| Some((id.clone(), state.refused_config_revision?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Why Oomnitza cannot take records, while it cannot.
    pub fn failure(&self) -> Option<(Failure, String)> {
        self.failure.read().ok().and_then(|f| f.clone())
    }

    /// Waits until `integration`'s gate is open.
    pub async fn wait_open(&self, integration: &str) {
        let mut changes = self.changed.subscribe();
        while !self.is_open(integration) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Records whether `integration` is paused, as read at KV `revision`; a read older than
    /// the one already recorded (the watch and the start-up read race) is ignored.
    pub fn set_paused(&self, integration: &str, paused: bool, revision: u64) {
        let flag = paused.then(|| PauseFlag::now(true, "", None));
        self.set_flag(integration, flag.as_ref(), revision);
    }

    /// Applies `flag` on this replica only (it could not be stored in KV), at the revision
    /// already recorded: the next flag the watch delivers still replaces it.
    pub fn set_flag_locally(&self, integration: &str, flag: &PauseFlag) {
        let revision = self
            .paused
            .read()
            .ok()
            .and_then(|flags| flags.get(integration).map(|state| state.revision))
            .unwrap_or(0);
        self.set_flag(integration, Some(flag), revision);
    }

    /// Records `integration`'s pause flag (`None`: never paused, or deleted), as read at KV
    /// `revision`; a read older than the one already recorded is ignored.
    pub fn set_flag(&self, integration: &str, flag: Option<&PauseFlag>, revision: u64) {
        let paused = flag.is_some_and(|f| f.paused);
        if let Ok(mut flags) = self.paused.write() {
            let previous = flags.get(integration).cloned();
            if previous
                .as_ref()
                .is_some_and(|seen| seen.revision > revision)
            {
                // An older read than what the watch already delivered.
                return;
            }
            let state = PauseState {
                paused,
                revision,
                refused_config_revision: flag
                    .filter(|f| f.paused)
                    .and_then(|f| f.refused_config_revision),
                reason: flag.and_then(|f| f.reason.clone()),
            };
            let refused = state.refused_config_revision.is_some();
            let note = paused.then(|| {
                let by = flag.map_or("", |f| f.by.as_str());
                let reason = flag
                    .and_then(|f| f.reason.as_deref())
                    .unwrap_or("no reason given");
                format!("paused by {by}: {reason}")
            });
            self.readiness
                .note(&format!("integration {integration}"), note);
            flags.insert(integration.to_owned(), state);
            let was = previous.as_ref().map(|p| p.paused);
            if was != Some(paused) && (paused || previous.is_some()) {
                tracing::info!(
                    integration,
                    paused,
                    reason = flag.and_then(|f| f.reason.as_deref()).unwrap_or(""),
                    "integration {}",
                    if paused { "paused" } else { "resumed" }
                );
            }
            metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_PAUSED, "integration" => integration.to_owned())
                .set(if paused { 1.0 } else { 0.0 });
            metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_CONFIGURATION_REFUSED, "integration" => integration.to_owned())
                .set(if refused { 1.0 } else { 0.0 });
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Notes on `/readyz` (and so in `syncctl status`) that leavers of `integration` wait for
    /// Oomnitza to process their run's records (`note`: what they wait for). The note goes
    /// once a leaver of it settles here ([`Gates::clear_leavers_waiting`]), or when it is not
    /// set again within `lasting`: the waiting leaver may come back to another replica.
    pub fn note_leavers_waiting(&self, integration: &str, note: String, lasting: Duration) {
        let until = tokio::time::Instant::now() + lasting;
        // The note is set and cleared under the lock, so that a clear and a set cannot cross.
        let Ok(mut waiting) = self.leavers_waiting.lock() else {
            return;
        };
        let new = waiting.insert(integration.to_owned(), until).is_none();
        self.readiness
            .note(&format!("leavers {integration}"), Some(note));
        drop(waiting);
        if !new {
            // The task that expires it is already waiting.
            return;
        }
        let (gates, integration) = (self.clone(), integration.to_owned());
        tokio::spawn(async move {
            let mut until = until;
            loop {
                tokio::time::sleep_until(until).await;
                let Ok(mut waiting) = gates.leavers_waiting.lock() else {
                    return;
                };
                match waiting.get(&integration).copied() {
                    // Set again meanwhile: it stands until then.
                    Some(later) if later > until => until = later,
                    Some(_) => {
                        waiting.remove(&integration);
                        gates
                            .readiness
                            .note(&format!("leavers {integration}"), None);
                        return;
                    }
                    // Cleared by a settled leaver (a later note has a task of its own).
                    None => return,
                }
            }
        });
    }

    /// Clears `integration`'s "leavers waiting" note: a leaver of it settled.
    pub fn clear_leavers_waiting(&self, integration: &str) {
        if let Ok(mut waiting) = self.leavers_waiting.lock() {
            waiting.remove(integration);
            self.readiness.note(&format!("leavers {integration}"), None);
        }
    }

    /// Records that Oomnitza cannot take records (`Some(reason)`) or can again (`None`).
    pub fn set_failure(&self, kind: Failure, reason: Option<String>) {
        if let Ok(mut slot) = self.failure.write() {
            match (&reason, slot.is_some()) {
                (Some(reason), false) => tracing::error!(?kind, %reason,
                    "Oomnitza cannot take records; stopped pulling until it answers again"),
                (None, true) => tracing::info!("Oomnitza answers again; pulling resumes"),
                _ => {}
            }
            let credentials = reason.is_some() && kind == Failure::Credentials;
            self.readiness.note(
                "oomnitza",
                reason
                    .as_ref()
                    .map(|r| format!("{kind:?}: {r}; pulling stopped until Oomnitza answers")),
            );
            metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_CREDENTIALS_FAILING)
                .set(if credentials { 1.0 } else { 0.0 });
            *slot = reason.map(|r| (kind, r));
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Records that Oomnitza refused `client`'s credentials (`err`, a 401 or 403), naming the
    /// settings that hold them.
    pub fn set_refused_credentials(
        &self,
        client: &OomnitzaClient,
        err: &peoplesync_oomnitza::Error,
    ) {
        let reason = peoplesync_control::credentials_refused(client, err);
        self.set_failure(Failure::Credentials, Some(reason));
    }

    /// After a call other than a post was refused for the credentials, asks the credential
    /// check: only when that is refused too is the credential gate closed
    /// ([`TokenCheck::Refused`]). Its probe is that check, so a token that only lacks a right
    /// one call needs (reading a portion or a user's assets, deleting a user, finalizing) must
    /// not close the gate, or it would reopen at the next probe and close again at the next
    /// call, in a loop. With `reuse_a_recent_pass`, after a `403` (a right refused, rather
    /// than the token), a check that passed within [`CHECK_KEPT`] is not made again: for a
    /// call made often, such as a read of a portion's state, whose refusal only warns. A
    /// caller that acts on the answer (a leaver dead-lettered as lacking a right) asks afresh.
    pub async fn refuse_if_the_token_is_refused(
        &self,
        client: &OomnitzaClient,
        refused: &peoplesync_oomnitza::Error,
        reuse_a_recent_pass: bool,
    ) -> TokenCheck {
        let recent = self
            .token_passed
            .read()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < CHECK_KEPT);
        if reuse_a_recent_pass && recent && refused.status() == Some(403) {
            return TokenCheck::PassedRecently;
        }
        match client.check_auth().await {
            Ok(()) => {
                if let Ok(mut at) = self.token_passed.write() {
                    *at = Some(std::time::Instant::now());
                }
                TokenCheck::Passes
            }
            Err(refused) if refused.kind() == peoplesync_oomnitza::ErrorKind::Unauthorized => {
                self.set_refused_credentials(client, &refused);
                TokenCheck::Refused
            }
            Err(_) => TokenCheck::Unanswered,
        }
    }

    /// Follows the pause flags in KV until the watch ends or `shutdown`.
    pub async fn watch_pauses(&self, bus: &Bus, shutdown: CancellationToken) {
        let mut watch = match bus.pauses().watch().await {
            Ok(watch) => watch,
            Err(err) => {
                tracing::error!(error = %err, "cannot watch pause flags; Pause/Resume will not reach this replica until the watch is re-created");
                return;
            }
        };
        loop {
            let entry = tokio::select! {
                () = shutdown.cancelled() => return,
                entry = watch.next() => entry,
            };
            let Some(entry) = entry else { return };
            match entry {
                Ok(entry) => {
                    let Some(integration) = pause::integration_of(&entry.key) else {
                        continue;
                    };
                    let flag = (entry.operation == kv::Operation::Put)
                        .then(|| pause::decode(&entry.value).ok())
                        .flatten();
                    self.set_flag(integration, flag.as_ref(), entry.revision);
                }
                Err(err) => tracing::warn!(error = %err, "pause flag watch error"),
            }
        }
    }

    /// While Oomnitza cannot take records, re-checks it every `interval` until it answers.
    pub async fn probe_oomnitza(
        &self,
        client: OomnitzaClient,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut changes = self.changed.subscribe();
        loop {
            if self.failure().is_none() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            // Posts, leavers and finalize set failures too: probe for the one set now.
            let Some((kind, _)) = self.failure() else {
                continue;
            };
            // The credential check answers from another part of Oomnitza than the bulk and
            // users endpoints: after posts or a leaver's calls failed, those endpoints must
            // answer too, or an outage of one alone would reopen the gate to fail each event
            // again, cycle after cycle, until its deliveries run out.
            let answered = match client.check_auth().await {
                Ok(()) if kind == Failure::Unavailable => match client.bulk_answers().await {
                    Ok(()) => client.users_answer().await,
                    failed => failed,
                },
                other => other,
            };
            match answered {
                Ok(()) => self.set_failure(kind, None),
                Err(err) if err.kind() == peoplesync_oomnitza::ErrorKind::Unauthorized => {
                    self.set_refused_credentials(&client, &err);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "Oomnitza still cannot take records; will check again")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peoplesync_sims::oomnitza::{OomnitzaFaults, OomnitzaSim};

    fn client(sim: &OomnitzaSim) -> OomnitzaClient {
        let token = secrecy::SecretString::from("sim-oomnitza-token");
        OomnitzaClient::new(peoplesync_oomnitza::OomnitzaConfig::new(
            sim.url(),
            peoplesync_oomnitza::OomnitzaAuth::ApiToken(token),
        ))
        .unwrap()
    }

    fn refused(status: u16) -> peoplesync_oomnitza::Error {
        peoplesync_oomnitza::Error::new(peoplesync_oomnitza::ErrorKind::Unauthorized, "refused")
            .with_status(status)
    }

    #[tokio::test(start_paused = true)]
    async fn a_leavers_note_stands_while_it_is_set_again_and_goes_after_its_time() {
        let readiness = peoplesync_runtime::Readiness::new();
        let gates = Gates::noting_on(readiness.clone());
        let note = || readiness.status().notes.get("leavers acme").cloned();
        let (minute, secs) = (Duration::from_secs(60), Duration::from_secs);
        gates.note_leavers_waiting("acme", "waiting".into(), minute);
        tokio::time::sleep(secs(40)).await;
        gates.note_leavers_waiting("acme", "still".into(), minute);
        tokio::time::sleep(secs(30)).await;
        assert_eq!(note().as_deref(), Some("still"), "set again, it stands");
        tokio::time::sleep(secs(31)).await;
        assert_eq!(note(), None, "gone a minute after it was last set");
        // Cleared by a settled leaver, then set again: the new note gets its whole time.
        gates.note_leavers_waiting("acme", "again".into(), minute);
        tokio::time::sleep(secs(30)).await;
        gates.clear_leavers_waiting("acme");
        assert_eq!(note(), None);
        gates.note_leavers_waiting("acme", "third".into(), minute);
        tokio::time::sleep(secs(59)).await;
        assert_eq!(note().as_deref(), Some("third"));
        tokio::time::sleep(secs(2)).await;
        assert_eq!(note(), None);
    }

    #[tokio::test]
    async fn the_credential_check_after_a_refused_call_says_refused_passes_or_unanswered() {
        let sim = OomnitzaSim::spawn(Default::default()).await.unwrap();
        let (client, gates) = (client(&sim), Gates::default());
        let check = gates
            .refuse_if_the_token_is_refused(&client, &refused(403), true)
            .await;
        assert_eq!(check, TokenCheck::Passes);
        assert!(
            gates.failure().is_none(),
            "a token lacking one right keeps the gate open"
        );
        // Soon after: a frequent call refused a right is not checked again; a caller acting on
        // the answer asks afresh, and so does any caller after a 401.
        let asked = sim.stats().api_requests;
        for (status, reuse, said, requests) in [
            (403, true, TokenCheck::PassedRecently, asked),
            (403, false, TokenCheck::Passes, asked + 1),
            (401, true, TokenCheck::Passes, asked + 2),
        ] {
            let check = gates
                .refuse_if_the_token_is_refused(&client, &refused(status), reuse)
                .await;
            let made = sim.stats().api_requests;
            assert_eq!((check, made), (said, requests), "{status}, reuse {reuse}");
        }

        let gates = Gates::default();
        sim.set_faults(OomnitzaFaults {
            outage_for_ms: Some(60_000),
            ..OomnitzaFaults::default()
        });
        let mut unanswered = peoplesync_oomnitza::OomnitzaConfig::new(
            sim.url(),
            peoplesync_oomnitza::OomnitzaAuth::ApiToken("sim-oomnitza-token".into()),
        );
        unanswered.retry.max_attempts = 1;
        let client = OomnitzaClient::new(unanswered).unwrap();
        let check = gates
            .refuse_if_the_token_is_refused(&client, &refused(403), false)
            .await;
        assert_eq!(
            check,
            TokenCheck::Unanswered,
            "nothing is known of the token"
        );
        assert!(gates.failure().is_none());

        sim.set_faults(OomnitzaFaults {
            forbidden: true,
            ..OomnitzaFaults::default()
        });
        let check = gates
            .refuse_if_the_token_is_refused(&client, &refused(403), false)
            .await;
        assert_eq!(check, TokenCheck::Refused);
        assert!(matches!(gates.failure(), Some((Failure::Credentials, _))));
    }

    #[test]
    fn an_older_read_of_a_pause_flag_never_undoes_a_newer_one() {
        let gates = Gates::default();
        assert!(gates.is_open("acme"), "open until a flag says otherwise");
        gates.set_paused("acme", true, 7);
        gates.set_paused("acme", false, 0);
        assert!(
            gates.is_paused("acme"),
            "the start-up read found no flag, but the watch had one"
        );
        gates.set_paused("acme", false, 9);
        assert!(gates.is_open("acme"));
        gates.set_paused("acme", true, 8);
        assert!(gates.is_open("acme"), "a stale read does not pause again");
        assert!(gates.is_open("other"));
    }
}
