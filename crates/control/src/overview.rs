//! GetStatus: one integration at a glance, read from the bus — the pause flag (and whether a
//! configuration refusal set it), the stored config's schedule and next start, the scheduler
//! lease's holder, the newest run, the consumer's backlog, the loader replicas that announced
//! themselves, removals held for approval and dead letters by reason. A part that cannot be
//! read is named in `problems` and the rest is still answered.

use chrono::Utc;
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
            match IntegrationConfig::from_toml(&text)
                .map_err(|e| e.to_string())
                .and_then(|c| Plan::from_config(&c.schedule).map_err(|e| e.to_string()))
            {
                Ok(plan) => {
                    out.schedule = plan.describe();
                    out.next_run_at = plan
                        .next_after(Utc::now())
                        .and_then(|at| runs::timestamp(&at.to_rfc3339()));
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
