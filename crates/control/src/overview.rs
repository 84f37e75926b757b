//! GetStatus: one integration at a glance, read from the bus — the pause flag (and whether a
//! configuration refusal set it), the stored config's schedule and next start, the scheduler
//! lease's holder, the newest run, the consumer's backlog, the loader replicas that announced
//! themselves, removals held for approval and dead letters by reason. A part that cannot be
//! read, and a schedule with no next start, is named in `problems` and the rest is still
//! answered.

use chrono::{DateTime, Utc};
use peoplesync_bus::Bus;
use peoplesync_core::IntegrationConfig;
use peoplesync_core::plan::Plan;
use peoplesync_proto::v1 as pb;
use tonic::Status;

use crate::integrations::Configs;
use crate::runs::{self, RunViews};
use crate::{dead_letters, pause, status};

/// Reads the status of `integration`.
pub(crate) async fn get(
    bus: &Bus,
    configs: &Configs,
    run_views: &RunViews,
    integration: &str,
) -> Result<pb::IntegrationStatus, Status> {
    let mut out = pb::IntegrationStatus {
        integration_id: integration.to_owned(),
        ..Default::default()
    };
    let mut problems = Vec::new();

    let flag = pause::read(bus, integration).await?;
    out.pause = Some(pause::view(integration, flag.as_ref()));
    out.refused_config_revision = flag
        .as_ref()
        .filter(|f| f.paused)
        .and_then(|f| f.refused_config_revision)
        .unwrap_or(0);

    match configs.stored(integration).await? {
        Some((text, revision)) => {
            out.config_revision = revision;
            match schedule(&text, Utc::now()) {
                Ok((described, next)) => {
                    out.schedule = described;
                    out.next_run_at = runs::timestamp(&next.to_rfc3339());
                }
                Err(err) => problems.push(format!(
                    "the stored config (revision {revision}) has no usable schedule: {err}"
                )),
            }
        }
        None => problems.push(format!(
            "no config is stored for {integration}; start a loader with --integration or use PutIntegration"
        )),
    }

    match bus.lease_holder(integration).await {
        Ok(Some(lease)) => {
            out.scheduler_leader = lease.holder;
            out.leader_renewed_at = runs::timestamp(&lease.renewed_at);
        }
        Ok(None) => {}
        Err(err) => problems.push(format!("reading the scheduler lease: {err}")),
    }

    let records = bus
        .runs()
        .list(Some(integration))
        .await
        .map_err(|e| status::bus("listing runs", e))?;
    if let Some(newest) = records.first() {
        out.last_run = Some(run_views.get(integration, &newest.run_id).await?);
    }
    for record in records.iter().filter(|r| r.removals_held > 0) {
        out.removals_held += record.removals_held;
        out.runs_holding_removals.push(record.run_id.clone());
    }

    match bus.backlog(integration).await {
        Ok(Some((waiting, in_flight))) => {
            out.events_waiting = waiting;
            out.events_in_flight = in_flight;
        }
        Ok(None) => problems.push(format!(
            "no loader consumer of {integration} yet: no events can be counted until a loader of {integration} starts"
        )),
        Err(err) => problems.push(err.to_string()),
    }

    match bus.replicas_seen(Utc::now()).await {
        Ok(seen) => {
            out.loaders = seen
                .into_iter()
                .map(|a| pb::LoaderReplica {
                    seen_at: runs::timestamp(&a.at),
                    name: a.replica,
                    version: a.version,
                    not_ready: a.not_ready,
                    notes: a.notes.into_iter().collect(),
                })
                .collect();
        }
        Err(err) => problems.push(format!("listing loader replicas: {err}")),
    }

    out.dead_letters = Some(
        dead_letters::summarize(
            bus,
            Some(pb::DeadLetterSelector {
                integration_id: integration.to_owned(),
                ..Default::default()
            }),
        )
        .await?,
    );
    out.problems = problems;
    Ok(out)
}

/// The schedule of the stored config `text` in words, and its next start after `now`; why no
/// run will start on it otherwise (a config stored before such schedules were refused).
fn schedule(text: &str, now: DateTime<Utc>) -> Result<(String, DateTime<Utc>), String> {
    let config = IntegrationConfig::from_toml(text).map_err(|e| e.to_string())?;
    let plan = Plan::from_config(&config.schedule).map_err(|e| e.to_string())?;
    match plan.next_after(now) {
        Some(next) => Ok((plan.describe(), next)),
        None => Err(format!(
            "{} has no start after {now}, so no scheduled run will start; fix [schedule] in the integration config",
            plan.describe()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(schedule: peoplesync_core::ScheduleConfig) -> String {
        let mut config = IntegrationConfig::default_for("acme");
        config.schedule = schedule;
        config.to_toml()
    }

    #[test]
    fn the_schedule_and_its_next_start_are_reported() {
        let now = DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        let (described, next) = schedule(
            &stored(peoplesync_core::ScheduleConfig {
                at: Some("05:30".into()),
                ..Default::default()
            }),
            now,
        )
        .expect("a schedule");
        assert_eq!(described, "every 1d from 05:30 UTC");
        assert_eq!(next.to_rfc3339(), "2025-06-02T05:30:00+00:00");
    }

    #[test]
    fn a_schedule_that_never_starts_a_run_is_a_problem() {
        let problem = schedule(
            &stored(peoplesync_core::ScheduleConfig {
                cron: Some("0 2 30 2 *".into()),
                ..Default::default()
            }),
            Utc::now(),
        )
        .unwrap_err();
        assert!(problem.contains("schedule.cron"), "{problem}");
        // A plan read without error that still has no next start (past the last date chrono
        // can count to) is reported too, not shown without a next run.
        let problem = schedule(
            &stored(peoplesync_core::ScheduleConfig::default()),
            DateTime::<Utc>::MAX_UTC,
        )
        .unwrap_err();
        assert!(problem.contains("no scheduled run will start"), "{problem}");
    }
}
