//! Preparing a run: its record and checkpoint (or the interrupted one taken up), the
//! integration's settings checked, the Sage People client and the sync-key guard.

use super::*;

impl Extraction {
    /// Starts a run (or takes up the interrupted one) up to the point where it has an id:
    /// the run record exists, the checkpoint is stored, the settings are checked. With
    /// `resend_all` the run sends every record even when unchanged (drift repair; an
    /// interrupted run taken up keeps resending if it did).
    pub async fn prepare(&self, trigger: &str, resend_all: bool) -> Result<PreparedRun, RunError> {
        let started = Instant::now();
        let taken = self
            .take_up(trigger, resend_all)
            .await
            .map_err(|stop| self.error(None, stop))?;
        let run_id = taken.checkpoint.run_id.clone();
        self.ready(taken, started)
            .await
            .map_err(|stop| self.error(Some(&run_id), stop))
    }

    /// Takes up the interrupted run, or starts a new one: a run record and a checkpoint.
    async fn take_up(&self, trigger: &str, resend_all: bool) -> Result<TakenUp, Stop> {
        let inner = &*self.inner;
        let integration = inner.integration.as_str();
        inner
            .seen_ready
            .get_or_try_init(|| async { inner.bus.seen().ensure().await })
            .await?;
        let checkpoints = inner.bus.checkpoints();
        let journal = &inner.journal;
        let settings = settings::load(&inner.bus, integration).await;
        // NATS not answering is no reason to give up an interrupted run: stop here, before any
        // run state changes, and let the next trigger resume it.
        if let Err(err) = &settings
            && matches!(err, SettingsError::Unreadable { .. })
        {
            return Err(Stop::Bus(BusError::request(
                format!("starting a run of {integration}"),
                err.to_string(),
            )));
        }
        let filter = settings.as_ref().ok().and_then(|s| s.source_filter.clone());
        // The org the run reads: the credential set, and its login host if it is configured.
        let org = settings.as_ref().ok().map(|s| {
            (
                s.credentials.clone(),
                inner.sources.login_host(&s.credentials),
            )
        });

        let mut existing = checkpoints.load(integration).await?;
        if let Some(checkpoint) = &existing {
            let record = journal.record(&checkpoint.run_id).await?;
            let stale = match &record {
                None => true,
                Some(record) => record.state == RunState::Completed,
            };
            if stale {
                tracing::info!(integration, run_id = %checkpoint.run_id, "dropping the checkpoint of a run that has ended");
                checkpoints.clear(integration).await?;
                existing = None;
            }
        }
        // A run whose marker and seen list belong to another filter or another org is not
        // resumed: it is closed, and the listing starts again in a new run.
        let changed = existing
            .as_ref()
            .zip(org.as_ref())
            .filter(|(checkpoint, _)| checkpoint.ending.is_none())
            .and_then(|(checkpoint, (credentials, login_host))| {
                if checkpoint.filter != filter {
                    Some(format!(
                        "the integration's source_filter changed from {:?} to {:?}",
                        checkpoint.filter, filter
                    ))
                } else {
                    checkpoint
                        .org_change(credentials, login_host.as_deref())
                        .map(|change| format!("{change}: it may read another Sage People org"))
                }
            });
        if let Some(checkpoint) = &existing
            && let Some(change) = changed
        {
            let message = format!("superseded: {change}, so the listing starts again in a new run");
            tracing::warn!(integration, run_id = %checkpoint.run_id, "{message}");
            self.record_failure(checkpoint, RunState::Failed, &message)
                .await?;
            checkpoints.clear(integration).await?;
            existing = None;
        }

        let (checkpoint, resumed) = match existing {
            Some(mut checkpoint) => {
                checkpoint.resumes += 1;
                // A checkpoint of an older version learns its org from the run that takes it up.
                if let Some((credentials, Some(login_host))) = &org
                    && checkpoint.credentials.is_none()
                {
                    checkpoint.credentials = Some(credentials.clone());
                    checkpoint.login_host = Some(login_host.clone());
                }
                checkpoint.resend_all |= resend_all;
                inner
                    .bus
                    .seen()
                    .purge_pages(
                        integration,
                        &checkpoint.run_id,
                        checkpoint.pages,
                        UNCOMMITTED_PAGES,
                    )
                    .await?;
                checkpoints.save(integration, &checkpoint).await?;
                journal
                    .resume(&checkpoint.run_id, counts(&checkpoint))
                    .await?;
                tracing::info!(integration, run_id = %checkpoint.run_id, marker = ?checkpoint.marker,
                    published = checkpoint.published, trigger,
                    "resuming an interrupted run from its checkpoint");
                (checkpoint, true)
            }
            None => {
                let run_id = uuid::Uuid::now_v7().to_string();
                let (credentials, login_host) = org.unzip();
                let checkpoint = Checkpoint {
                    resend_all,
                    credentials,
                    login_host: login_host.flatten(),
                    ..Checkpoint::start(&run_id, filter.clone())
                };
                // The checkpoint first: one without a record is dropped as stale by the next
                // run, while a record without a checkpoint would be left running.
                checkpoints.save(integration, &checkpoint).await?;
                journal.start(&run_id, trigger, resend_all).await?;
                tracing::info!(integration, %run_id, trigger, "run started");
                (checkpoint, false)
            }
        };

        Ok(TakenUp {
            checkpoint,
            checkpoints,
            resumed,
            settings,
        })
    }

    /// Checks the settings of a run taken up, and builds what its listing needs.
    async fn ready(&self, taken: TakenUp, started: Instant) -> Result<PreparedRun, Stop> {
        let inner = &*self.inner;
        let integration = inner.integration.as_str();
        let TakenUp {
            checkpoint,
            checkpoints,
            resumed,
            settings,
        } = taken;
        let settings = match settings {
            Ok(settings) => settings,
            Err(err) => {
                return Err(self
                    .fail_settings(&checkpoints, &checkpoint, resumed, err.to_string())
                    .await);
            }
        };
        if let Some(source_filter) = &settings.source_filter
            && let Err(problem) = filter::validate(source_filter)
        {
            let message = format!(
                "the source_filter of integration {integration} (`{source_filter}`) is not a valid Sage People $filter: {problem}; fix it in the integration config and run again"
            );
            return Err(self
                .fail_settings(&checkpoints, &checkpoint, resumed, message)
                .await);
        }
        let client = match inner.sources.client(&settings.credentials) {
            Ok(client) => client,
            Err(problem) => {
                let message = format!(
                    "integration {integration} reads with credential set {:?}, which cannot be used: {problem}",
                    settings.credentials
                );
                return Err(self
                    .fail_settings(&checkpoints, &checkpoint, resumed, message)
                    .await);
            }
        };
        let keys = self.sync_key_guard(&client, &settings.credentials).await?;
        let end_dates = crate::ended::EndDates::of(integration, &settings);
        Ok(PreparedRun {
            extraction: self.clone(),
            checkpoint,
            checkpoints,
            resumed,
            client,
            credentials: settings.credentials,
            started,
            keys,
            end_dates,
        })
    }

    /// The run's sync-key guard, from the integration's mapping and the keys shared in the
    /// previous full run.
    async fn sync_key_guard(
        &self,
        client: &SageClient,
        credentials: &str,
    ) -> Result<Option<SyncKeyGuard>, Stop> {
        let integration = self.inner.integration.as_str();
        let config = match settings::load_config(&self.inner.bus, integration).await {
            Ok(config) => config,
            Err(err) => {
                return Err(Stop::Bus(BusError::request(
                    format!("reading the mapping of {integration}"),
                    err,
                )));
            }
        };
        let mapping = match peoplesync_core::Integration::compile(config) {
            Ok(mapping) => mapping,
            Err(err) => {
                tracing::warn!(integration, error = %err,
                    "the mapping does not compile, so workers sharing a sync key cannot be found this run");
                return Ok(None);
            }
        };
        let tracking = peoplesync_core::Tracking {
            credentials: credentials.to_owned(),
            hostname: client.hostname(),
        };
        Ok(Some(
            SyncKeyGuard::load(&self.inner.bus, integration, mapping, tracking).await?,
        ))
    }

    /// Records the run of `checkpoint` as failed by its settings (`message` says what to fix).
    /// A new run drops its checkpoint: it is over. A run taken up from its checkpoint keeps
    /// it (`resumed`), so once the settings are fixed it goes on from its marker instead of
    /// reading, and spending API quota on, its pages again.
    async fn fail_settings(
        &self,
        checkpoints: &Checkpoints,
        checkpoint: &Checkpoint,
        resumed: bool,
        message: String,
    ) -> Stop {
        let integration = &self.inner.integration;
        let message = crate::error::until_fixed(message, resumed);
        tracing::error!(integration, run_id = %checkpoint.run_id, "{message}");
        if let Err(err) = self
            .record_failure(checkpoint, RunState::Failed, &message)
            .await
        {
            return err.into();
        }
        if !resumed && let Err(err) = checkpoints.clear(integration).await {
            return err.into();
        }
        metrics::counter!(metric::EXTRACTOR_RUNS, "integration" => integration.clone(), "outcome" => "failed")
            .increment(1);
        Stop::Settings {
            message,
            checkpoint_kept: resumed,
        }
    }

    /// Marks the run of `checkpoint` as stopped in `state` with `message`, and says so on the
    /// runs subject.
    pub(super) async fn record_failure(
        &self,
        checkpoint: &Checkpoint,
        state: RunState,
        message: &str,
    ) -> Result<(), BusError> {
        self.inner
            .journal
            .fail(&checkpoint.run_id, state, counts(checkpoint), message)
            .await
    }
}

/// A run taken up (new or interrupted), before its settings are checked.
struct TakenUp {
    checkpoint: Checkpoint,
    checkpoints: Checkpoints,
    resumed: bool,
    settings: Result<settings::IntegrationSettings, SettingsError>,
}
