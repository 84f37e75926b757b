//! Executing a prepared run: the listing, then removals, the run record and its events; or,
//! when the listing stopped early, the state it leaves and whether its checkpoint stays.

use super::listing::Listing;
use super::*;

impl PreparedRun {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.checkpoint.run_id
    }

    /// Whether it resumes an interrupted run.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Lists, publishes and completes the run; stops between pages when `cancel` fires.
    pub async fn execute(self, cancel: CancellationToken) -> Result<RunSummary, RunError> {
        let integration = self.extraction.integration().to_owned();
        metrics::gauge!(metric::EXTRACTOR_RUN_IN_PROGRESS, "integration" => integration.clone())
            .set(1.0);
        let run_id = self.checkpoint.run_id.clone();
        let extraction = self.extraction.clone();
        let result = self
            .execute_inner(cancel)
            .await
            .map_err(|stop| extraction.error(Some(&run_id), stop));
        metrics::gauge!(metric::EXTRACTOR_RUN_IN_PROGRESS, "integration" => integration.clone())
            .set(0.0);
        let outcome = match &result {
            Ok(summary) if summary.removals_held > 0 => "removals_held",
            Ok(_) => "completed",
            Err(err) => err.outcome(),
        };
        if let Ok(RunSummary {
            removals_skipped: Some(_),
            ..
        }) = &result
        {
            metrics::counter!(metric::EXTRACTOR_REMOVALS_SKIPPED, "integration" => integration.clone())
                .increment(1);
        }
        metrics::counter!(metric::EXTRACTOR_RUNS, "integration" => integration, "outcome" => outcome).increment(1);
        result
    }

    async fn execute_inner(self, cancel: CancellationToken) -> Result<RunSummary, Stop> {
        let PreparedRun {
            extraction,
            mut checkpoint,
            checkpoints,
            resumed,
            client,
            credentials,
            started,
            mut keys,
            end_dates,
        } = self;
        let inner = &*extraction.inner;
        let integration = inner.integration.as_str();
        let mut publisher = inner.bus.publisher(inner.options.publish_window);
        let mut pages = 0;

        if checkpoint.ending.is_none() {
            let mut listing = Listing {
                extraction: &extraction,
                checkpoints: &checkpoints,
                journal: &inner.journal,
                publisher: &mut publisher,
                checkpoint: &mut checkpoint,
                events: None,
                credentials: &credentials,
                client: &client,
                acked: VecDeque::new(),
                window: inner.options.publish_window as u64,
                pending: None,
                recorded_at: Instant::now(),
                pages: &mut pages,
                keys: keys.as_mut(),
                end_dates,
            };
            let stop = listing.list(&cancel).await;
            let finished = listing.finish().await;
            match (stop, finished) {
                (Ok(()), Ok(())) => {
                    if let Some(keys) = &keys {
                        keys.save(&inner.bus, integration, &checkpoint.run_id, resumed)
                            .await?;
                    }
                }
                (Err(stop), _) | (Ok(()), Err(stop)) => {
                    return Err(extraction
                        .stop(&checkpoints, &mut publisher, &checkpoint, resumed, stop)
                        .await);
                }
            }
        }

        let events = EventBuilder::new(
            integration,
            &checkpoint.run_id,
            &credentials,
            &client.hostname(),
        )
        .resending(checkpoint.resend_all);
        let (decision, removed) = {
            let _settling = extraction.removal_lock().lock().await;
            let decision = match checkpoint.ending.clone() {
                Some(decision) => decision,
                None => {
                    let decision = removals::decide(
                        &inner.bus,
                        integration,
                        &checkpoint.run_id,
                        checkpoint.filter.as_deref(),
                        &inner.options.removals,
                    )
                    .await?;
                    checkpoint.ending = Some(decision.clone());
                    checkpoints.save(integration, &checkpoint).await?;
                    decision
                }
            };
            let check = removals::LeaverCheck {
                client: &client,
                end_dates,
            };
            let settled = removals::settle(
                &inner.bus,
                &inner.journal,
                &mut publisher,
                &events,
                &checkpoint.run_id,
                checkpoint.filter.as_deref(),
                &decision,
                checkpoint.published,
                check,
            )
            .await;
            match settled {
                Ok(removed) => (decision, removed),
                // Sage People could not say who left: the run keeps its checkpoint (and its
                // decision) where the failure is one to resume, and settles again then.
                Err(err) => {
                    return Err(extraction
                        .stop(
                            &checkpoints,
                            &mut publisher,
                            &checkpoint,
                            resumed,
                            err.into(),
                        )
                        .await);
                }
            }
        };
        match &decision {
            Decision::Held { count, baseline } => {
                tracing::warn!(integration, run_id = %checkpoint.run_id,
                held = count, baseline,
                "removals held for approval: more workers disappeared than the removal policy allows; approve them with the approve-removals command (syncctl) if they are real")
            }
            Decision::Skipped { reason } => {
                tracing::warn!(integration, run_id = %checkpoint.run_id, reason,
                "removals not computed: this run announces none of the workers who left since the baseline run. \
                The baseline and any held removals are kept, so the first later full run that computes removals announces \
                them; if the list out of order is the baseline's, every later run stops here too. \
                See docs/operations.md, \"When removals are not computed\"")
            }
            Decision::Rebased { reason } => {
                tracing::warn!(integration, run_id = %checkpoint.run_id, reason,
                "removals not computed: workers who left since the baseline run are not announced, and this run is the \
                new baseline. See docs/operations.md, \"When removals are not computed\"")
            }
            Decision::Publish { count } if *count > 0 => {
                tracing::info!(integration, run_id = %checkpoint.run_id,
                removed, no_longer_listed = count, "published removals")
            }
            _ => {}
        }
        let held = decision.held();
        let removals_skipped = decision.not_computed().map(str::to_owned);
        let counts = Counts {
            removed,
            removals_held: held,
            ..counts(&checkpoint)
        };
        inner
            .journal
            .complete(&checkpoint.run_id, counts, removals_skipped.as_deref())
            .await?;
        checkpoints.clear(integration).await?;
        tracing::info!(integration, run_id = %checkpoint.run_id, published = checkpoint.published,
            removed, removals_held = held, skipped = checkpoint.skipped, pages, "run completed");
        Ok(RunSummary {
            run_id: checkpoint.run_id.clone(),
            published: checkpoint.published,
            removed,
            removals_held: held,
            removals_skipped,
            skipped: checkpoint.skipped,
            pages,
            resumed,
            elapsed: started.elapsed(),
        })
    }
}

impl Extraction {
    /// Ends a listing that stopped early: records the state, and keeps or drops the checkpoint.
    /// Sage People refusing the configuration or credentials of a run taken up from its
    /// checkpoint (`resumed`) keeps it, as [`Extraction::fail_settings`] does: once an operator
    /// fixed the cause, the next run goes on from the marker instead of reading, and spending
    /// API quota on, those pages again. A new run refused so is over, like one refused its
    /// settings: the loaders finalize what it loaded instead of waiting for the fix.
    async fn stop(
        &self,
        checkpoints: &Checkpoints,
        publisher: &mut Publisher,
        checkpoint: &Checkpoint,
        resumed: bool,
        stop: Stop,
    ) -> Stop {
        let integration = &self.inner.integration;
        let run_id = &checkpoint.run_id;
        let stop = stop.of_run(resumed);
        let message = match &stop {
            Stop::Bus(_) => return stop,
            Stop::Interrupted => {
                // Keep the counts current for whoever resumes it; the state stays running.
                let _ = publisher.flush().await;
                let _ = self
                    .inner
                    .journal
                    .progress(run_id, counts(checkpoint))
                    .await;
                tracing::info!(%integration, %run_id, published = checkpoint.published,
                    "run interrupted between pages; its checkpoint is kept");
                return stop;
            }
            stop => stop.message().unwrap_or_default(),
        };
        let state = stop.state();
        if state == RunState::QuotaExhausted {
            tracing::warn!(%integration, %run_id, "{message}");
        } else {
            tracing::error!(%integration, %run_id, "{message}");
        }
        if let Err(err) = self.record_failure(checkpoint, state, &message).await {
            return err.into();
        }
        if !stop.resumable()
            && let Err(err) = checkpoints.clear(integration).await
        {
            return err.into();
        }
        stop
    }
}
