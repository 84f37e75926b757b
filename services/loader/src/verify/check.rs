//! The check of one finalized run: the claim, the run log until nothing is processing, the
//! users read back (all pages, or by key) and judged, and the run record updated once.

use super::processing::{self, Waited};
use super::*;

impl Verifier {
    /// A verifier acting as `replica`.
    pub fn new(
        bus: Bus,
        client: OomnitzaClient,
        integrations: Integrations,
        replica: String,
        settings: VerifySettings,
    ) -> Verifier {
        let runs = bus.runs();
        Verifier {
            bus,
            runs,
            client,
            integrations,
            replica,
            settings,
            handing_back: Arc::default(),
        }
    }

    /// Whether checks are on (`verify.enabled`).
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Checks the run if it waits for a check (or its checker's claim expired) and this
    /// replica wins the claim; otherwise does nothing.
    pub async fn verify(&self, integration: &str, run_id: &str) -> Result<(), BusError> {
        if self.is_handing_back(run_id) {
            return Ok(());
        }
        let now = chrono::Utc::now().to_rfc3339();
        let mut won = false;
        let claimed = self
            .runs
            .update(integration, run_id, |record| {
                won = needs_verify(record);
                if won && let Some(v) = record.verification.as_mut() {
                    v.state = VerifyState::Claimed {
                        by: self.replica.clone(),
                        at: now.clone(),
                    };
                }
                won
            })
            .await?;
        let accepted = claimed
            .and_then(|record| record.verification)
            .map_or(0, |v| v.accepted);
        if !won {
            return Ok(());
        }
        let started = Instant::now();
        tracing::info!(integration, run_id, "checking what Oomnitza applied");
        let mut claim = Claim {
            verifier: self,
            integration,
            run_id,
            renewed: Instant::now(),
        };
        let log = match self.wait_processed(&mut claim).await {
            Ok(log) => log,
            Err(reason) => return self.give_up(&mut claim, reason).await,
        };
        let failures: Vec<String> = log
            .failed_messages()
            .iter()
            .map(|m| m.to_lowercase())
            .collect();
        let config = self.integrations.get(integration);
        let judge = Arc::new(Judge::new(config.as_deref(), failures));
        let mut tally = Tally::default();
        let group = self.settings.read_batch.max(1);
        let mut written = WrittenEvents::open(&self.bus, integration, run_id, group).await?;
        let checked = if (PAGE_ALL_FROM..=PAGE_ALL_UP_TO).contains(&accepted) {
            self.check_by_pages(&judge, &mut written, &mut claim, &mut tally)
                .await
        } else {
            self.check_by_keys(&judge, &mut written, &mut claim, &mut tally)
                .await
        };
        match checked {
            Ok(()) => {}
            Err(Stop::Bus(err)) => return Err(err),
            Err(Stop::Unreadable(reason)) => {
                return self.give_up(&mut claim, reason).await;
            }
        }
        let at = chrono::Utc::now().to_rfc3339();
        let unverifiable: Vec<String> = tally.unverifiable.iter().cloned().collect();
        let run_log = Some(run_log_counts(&log));
        let mut ours = false;
        self.runs
            .update(integration, run_id, |record| {
                ours = false;
                let Some(v) = record.verification.as_mut() else {
                    return false;
                };
                if !matches!(&v.state, VerifyState::Claimed { by, .. } if *by == self.replica) {
                    return false;
                }
                ours = true;
                v.state = VerifyState::Verified {
                    by: self.replica.clone(),
                    at: at.clone(),
                };
                v.confirmed = tally.confirmed;
                v.not_applied = tally.not_applied;
                v.unverifiable_fields = unverifiable.clone();
                v.run_log = run_log;
                let counts = record.counts.get_or_insert_with(OutcomeCounts::default);
                move_written(counts, tally.not_applied, tally.skipped);
                true
            })
            .await?;
        if !ours {
            // Another replica took the check over; its outcomes and counts are its own.
            tracing::info!(integration, run_id, "the check was taken over; leaving it");
            return Ok(());
        }
        outcomes::purge(&self.bus, integration, run_id).await?;
        let label = |result: &'static str, n: u64| {
            metrics::counter!(peoplesync_runtime::metrics::names::LOADER_RECORDS_VERIFIED,
                "integration" => integration.to_owned(), "result" => result)
            .increment(n);
        };
        label("confirmed", tally.confirmed);
        label("not_applied", tally.not_applied);
        metrics::counter!(peoplesync_runtime::metrics::names::LOADER_RUNS_CHECKED,
            "integration" => integration.to_owned(), "state" => "verified")
        .increment(1);
        tracing::info!(
            integration,
            run_id,
            confirmed = tally.confirmed,
            not_applied = tally.not_applied,
            skipped_by_preference = tally.skipped,
            unverifiable = ?tally.unverifiable,
            reading_sent_ms = tally.reading_sent.as_millis() as u64,
            reading_users_ms = tally.reading_users.as_millis() as u64,
            judging_ms = tally.judging.as_millis() as u64,
            took_ms = started.elapsed().as_millis() as u64,
            "run verified against Oomnitza"
        );
        Ok(())
    }

    /// Reads the run log until nothing is processing, renewing the claim, for at most
    /// `verify.processing_timeout_secs`; gives up early on a read that waiting cannot mend.
    async fn wait_processed(&self, claim: &mut Claim<'_>) -> Result<RunLog, String> {
        let limit = Duration::from_secs(self.settings.processing_timeout_secs);
        let started = Instant::now();
        let mut said = started;
        let mut wait = Duration::from_millis(20);
        loop {
            let read = self.client.run_log(claim.run_id).await;
            let last = match processing::after_read(read, started.elapsed(), limit) {
                Waited::Processed(log) => return Ok(log),
                Waited::GiveUp(reason) => return Err(reason),
                Waited::Waiting(last) => last,
            };
            // Waiting is said, at most once a minute, never in silence.
            if said.elapsed() >= PROGRESS_EVERY {
                said = Instant::now();
                tracing::warn!(integration = claim.integration, run_id = claim.run_id,
                    waited_s = started.elapsed().as_secs(), limit_s = limit.as_secs(), %last,
                    "still waiting for Oomnitza to finish processing the run before checking it");
            }
            claim.renew().await;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LOG_POLL_MAX);
        }
    }

    /// Checks the written records group by group, reading their users back by sync value.
    async fn check_by_keys(
        &self,
        judge: &Judge,
        written: &mut WrittenEvents,
        claim: &mut Claim<'_>,
        tally: &mut Tally,
    ) -> Result<(), Stop> {
        while let Some(events) = written.next_group().await.map_err(Stop::Bus)? {
            claim.renew().await;
            let pending: Vec<Pending> = events.into_iter().map(|e| judge.pending(e)).collect();
            let letters = self.check_pending(judge, pending, tally).await?;
            self.settle_not_applied(claim, letters).await?;
        }
        Ok(())
    }

    /// Checks the written records against every user, read page by page (two pages at a time):
    /// for a run that wrote many users, far fewer requests than reading them by key. Records
    /// not met on any page (a user created while the pages were read could shift them) are
    /// read by key before they count as not applied.
    async fn check_by_pages(
        &self,
        judge: &Arc<Judge>,
        written: &mut WrittenEvents,
        claim: &mut Claim<'_>,
        tally: &mut Tally,
    ) -> Result<(), Stop> {
        let mut letters = Vec::new();
        let mut waiting: HashMap<String, HashMap<String, Pending>> = HashMap::new();
        let started = Instant::now();
        while let Some(events) = written.next_group().await.map_err(Stop::Bus)? {
            for pending in events.into_iter().map(|e| judge.pending(e)) {
                match pending.lookup.clone() {
                    Some((attribute, value)) => {
                        waiting
                            .entry(attribute)
                            .or_default()
                            .insert(value.to_lowercase(), pending);
                    }
                    None => letters.extend(judge.judge(pending, None, tally)),
                }
            }
        }
        tally.reading_sent += started.elapsed();
        // Two pages are read while the two before are judged on a blocking thread: reading
        // waits on Oomnitza, judging is CPU. (Reading the first pages while what was sent is
        // read from NATS was tried: on two cores it made the check slower.)
        let mut state = PageState {
            judge: judge.clone(),
            waiting,
            tally: Tally::default(),
            letters,
        };
        let paging = Instant::now();
        let mut skip = 0u32;
        let mut bodies = self.read_two_pages(skip).await;
        // The first page read last time: a server (or a gateway before it) that ignores `skip`
        // answers it again, and would keep this loop reading for ever.
        let mut last_first: Option<Bytes> = None;
        loop {
            claim.renew().await;
            let (first, second) = bodies;
            let pages = [first?, second?];
            if last_first.as_ref() == Some(&pages[0]) {
                tracing::warn!(host = %self.client.host(), skip,
                    "Oomnitza answered the same page of users for a later skip (it may be \
                     ignoring `skip`); the records not met yet are read by key instead");
                break;
            }
            last_first = Some(pages[0].clone());
            skip = skip.saturating_add(2 * READ_PAGE);
            let judging = tokio::task::spawn_blocking(move || {
                let last = state.judge_pages(&pages);
                (state, last)
            });
            let (next, judged) = futures::future::join(self.read_two_pages(skip), judging).await;
            let (judged, last) = judged
                .map_err(|e| Stop::Unreadable(format!("judging a page of users failed: {e}")))?;
            state = judged;
            let last = last?;
            self.settle_not_applied(claim, std::mem::take(&mut state.letters))
                .await?;
            if last || state.waiting.values().all(HashMap::is_empty) {
                break;
            }
            bodies = next;
        }
        let PageState {
            waiting,
            tally: judged,
            ..
        } = state;
        tally.add(judged);
        // Reading and judging the pages overlap: this is the time of both.
        tally.reading_users += paging.elapsed();
        let rest: Vec<Pending> = waiting
            .into_values()
            .flat_map(HashMap::into_values)
            .collect();
        for chunk in rest.chunks(self.settings.read_batch.max(1)) {
            let letters = self.check_pending(judge, chunk.to_vec(), tally).await?;
            self.settle_not_applied(claim, letters).await?;
        }
        Ok(())
    }

    /// Two pages of users as JSON text, from `skip` on, read at the same time.
    async fn read_two_pages(&self, skip: u32) -> (Result<Bytes, Stop>, Result<Bytes, Stop>) {
        let read = |skip: u32| async move {
            self.client
                .find_users_json("", READ_PAGE, skip)
                .await
                .map_err(|e| Stop::Unreadable(format!("cannot read the users: {e}")))
        };
        futures::future::join(read(skip), read(skip.saturating_add(READ_PAGE))).await
    }

    /// Reads back the users of `pending` by sync value and judges each record.
    async fn check_pending(
        &self,
        judge: &Judge,
        pending: Vec<Pending>,
        tally: &mut Tally,
    ) -> Result<Vec<NotApplied>, Stop> {
        let mut wanted: HashMap<&str, Vec<String>> = HashMap::new();
        for (attribute, value) in pending.iter().filter_map(|p| p.lookup.as_ref()) {
            wanted.entry(attribute).or_default().push(value.clone());
        }
        // Users as JSON text, found by (attribute, value) as held and ignoring case: a tenant
        // that matches case-sensitively can hold both `ada@example.com` and `Ada@Example.com`,
        // and the user holding the value as sent is the record's.
        let mut users: Vec<String> = Vec::new();
        let mut exact: HashMap<(String, String), usize> = HashMap::new();
        let mut caseless: HashMap<(String, String), usize> = HashMap::new();
        for (attribute, values) in &wanted {
            for user in self.read_users(attribute, values).await? {
                let Ok(json) = serde_json::to_string(&user) else {
                    continue;
                };
                let value = fields(&json).and_then(|user| {
                    user.get(*attribute)
                        .and_then(|v| text(v))
                        .map(Cow::into_owned)
                });
                if let Some(value) = value {
                    let index = users.len();
                    caseless
                        .entry(((*attribute).to_owned(), value.to_lowercase()))
                        .or_insert(index);
                    exact
                        .entry(((*attribute).to_owned(), value))
                        .or_insert(index);
                    users.push(json);
                }
            }
        }
        let mut letters = Vec::new();
        for pending in pending {
            let user = pending
                .lookup
                .as_ref()
                .and_then(|(a, v)| {
                    exact
                        .get(&(a.clone(), v.clone()))
                        .or_else(|| caseless.get(&(a.clone(), v.to_lowercase())))
                })
                .and_then(|&index| fields(&users[index]));
            letters.extend(judge.judge(pending, user.as_ref(), tally));
        }
        Ok(letters)
    }

    /// Users whose `attribute` is one of `values`, a few hundred per request; a username or
    /// e-mail with capitals is asked for in lower case too (see
    /// [`OomnitzaClient::find_users_in`]), as a user stored as `ada@example.com` for
    /// `Ada@Example.com` holds the record.
    async fn read_users(
        &self,
        attribute: &str,
        values: &[String],
    ) -> Result<Vec<Map<String, Value>>, Stop> {
        let users = self
            .client
            .find_users_in(attribute, values, READ_PAGE)
            .await
            .map_err(|err| Stop::Unreadable(format!("cannot read the users back: {err}")))?;
        Ok(users
            .into_iter()
            .filter_map(|user| match user {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .collect())
    }

    /// Dead-letters the records Oomnitza did not apply (those with a letter) and drops their
    /// applied hashes (where this run still wrote the latest), so the next run sends them again.
    async fn settle_not_applied(
        &self,
        claim: &Claim<'_>,
        letters: Vec<NotApplied>,
    ) -> Result<(), Stop> {
        if letters.is_empty() {
            return Ok(());
        }
        let (integration, run_id) = (claim.integration, claim.run_id);
        for NotApplied {
            letter,
            applied_key,
            record,
        } in letters
        {
            if let Some(mut letter) = letter {
                letter.integration = integration.to_owned();
                letter.run_id = run_id.to_owned();
                letter.original_subject = names::workers_subject(integration);
                tracing::warn!(integration, run_id, worker = %letter.worker_id, reason = %letter.reason,
                    "Oomnitza accepted a record but did not apply it; dead-lettering it");
                dlq::record(&self.bus, &letter, record.into())
                    .await
                    .map_err(Stop::Bus)?;
            }
            self.bus
                .applied()
                .forget_if_written_by(&applied_key, run_id)
                .await;
        }
        Ok(())
    }

    /// Hands this replica's claim on `run_id`'s check back (to pending) after `wait`, so that
    /// the next sweep of any replica takes the check up again instead of waiting
    /// [`CLAIM_EXPIRY`] for the claim to lapse: for a check NATS stopped answering midway, as
    /// during a cluster's leader election. Meanwhile this replica does not claim the check
    /// again; a claim another replica took, or a check that ended, is left alone.
    pub async fn hand_back(
        &self,
        integration: &str,
        run_id: &str,
        wait: Duration,
    ) -> Result<(), BusError> {
        self.set_handing_back(run_id, true);
        tokio::time::sleep(wait).await;
        let handed = self.hand_back_now(integration, run_id).await;
        self.set_handing_back(run_id, false);
        handed
    }

    fn is_handing_back(&self, run_id: &str) -> bool {
        self.handing_back
            .lock()
            .is_ok_and(|runs| runs.contains(run_id))
    }

    fn set_handing_back(&self, run_id: &str, on: bool) {
        if let Ok(mut runs) = self.handing_back.lock() {
            if on {
                runs.insert(run_id.to_owned());
            } else {
                runs.remove(run_id);
            }
        }
    }

    async fn hand_back_now(&self, integration: &str, run_id: &str) -> Result<(), BusError> {
        self.runs
            .update(integration, run_id, |record| {
                let Some(v) = record.verification.as_mut() else {
                    return false;
                };
                if !matches!(&v.state, VerifyState::Claimed { by, .. } if *by == self.replica) {
                    return false;
                }
                v.state = VerifyState::Pending;
                true
            })
            .await
            .map(drop)
    }

    /// Ends a check that cannot be completed: the run keeps its accepted counts, marked
    /// unverified with `reason`. What it wrote is sent again by the next run (Oomnitza counts
    /// what did land as unchanged), so a record that failed inside Oomnitza is not left out
    /// until its worker changes.
    async fn give_up(&self, claim: &mut Claim<'_>, reason: String) -> Result<(), BusError> {
        let (integration, run_id) = (claim.integration, claim.run_id);
        tracing::error!(integration, run_id, %reason,
            "cannot verify the run against Oomnitza; the next run sends its records again");
        forget_written(&self.bus, integration, run_id, Some(claim)).await?;
        let at = chrono::Utc::now().to_rfc3339();
        let (bus, runs) = (&self.bus, &self.runs);
        close_check(bus, runs, integration, run_id, "unverified", |record| {
            let Some(v) = record.verification.as_mut() else {
                return false;
            };
            // Only while the check is still this replica's: one that took it over decides.
            if !matches!(&v.state, VerifyState::Claimed { by, .. } if *by == self.replica) {
                return false;
            }
            v.state = VerifyState::Unverified {
                by: self.replica.clone(),
                at: at.clone(),
                reason: reason.clone(),
            };
            true
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use peoplesync_bus::{BusSettings, Verification};

    use super::*;

    fn claimed_by(by: &str) -> Verification {
        Verification {
            state: VerifyState::Claimed {
                by: by.to_owned(),
                at: chrono::Utc::now().to_rfc3339(),
            },
            accepted: 10,
            confirmed: 0,
            not_applied: 0,
            unverifiable_fields: Vec::new(),
            run_log: None,
        }
    }

    #[tokio::test]
    async fn a_check_handed_back_is_taken_up_by_the_next_sweep_and_anothers_is_left_alone() {
        let nats = peoplesync_testkit::NatsServer::start();
        let bus = Bus::connect(nats.url(), "hand-back-test", BusSettings::default())
            .await
            .unwrap();
        let client = OomnitzaClient::new(peoplesync_oomnitza::OomnitzaConfig::new(
            "http://127.0.0.1:9",
            peoplesync_oomnitza::OomnitzaAuth::ApiToken("unused".to_owned().into()),
        ))
        .unwrap();
        let settings = crate::LoaderConfig::default().verify;
        let verifier = Verifier::new(
            bus.clone(),
            client,
            Integrations::default(),
            "loader-1".to_owned(),
            settings,
        );
        let runs = bus.runs();
        for (run_id, holder) in [("ours", "loader-1"), ("theirs", "loader-2")] {
            let mut record = RunRecord::start("acme", run_id, true, "test");
            record.finalize = FinalizeState::Finalized {
                by: holder.to_owned(),
                at: chrono::Utc::now().to_rfc3339(),
            };
            record.verification = Some(claimed_by(holder));
            runs.create(&record).await.unwrap();
            assert!(!needs_verify(&record), "a fresh claim is not taken up");
            verifier
                .hand_back("acme", run_id, Duration::from_millis(10))
                .await
                .unwrap();
        }
        let (ours, _) = runs.get("acme", "ours").await.unwrap().unwrap();
        assert!(needs_verify(&ours), "{:?}", ours.verification);
        let (theirs, _) = runs.get("acme", "theirs").await.unwrap().unwrap();
        assert!(!needs_verify(&theirs), "another replica's claim stands");
    }
}
