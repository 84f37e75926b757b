//! `syncctl status`: one integration at a glance (GetStatus), as text for people or JSON.

use peoplesync_proto::v1 as pb;
use serde_json::{Value, json};

use crate::render::{enum_name, time};
use crate::table;

/// The status as JSON.
pub fn json(status: &pb::IntegrationStatus) -> Value {
    let pause = status.pause.clone().unwrap_or_default();
    let summary = status.dead_letters.clone().unwrap_or_default();
    json!({
        "integration_id": status.integration_id,
        "paused": pause.paused,
        "pause": crate::render::pause(&pause),
        "refused_config_revision": status.refused_config_revision,
        "config_revision": status.config_revision,
        "scheduler_leader": status.scheduler_leader,
        "leader_renewed_at": time(status.leader_renewed_at.as_ref()),
        "schedule": status.schedule,
        "next_run_at": time(status.next_run_at.as_ref()),
        "last_run": status.last_run.as_ref().map(crate::render::run),
        "events_waiting": status.events_waiting,
        "events_in_flight": status.events_in_flight,
        "loaders": status.loaders.iter().map(|l| json!({
            "name": l.name, "version": l.version, "seen_at": time(l.seen_at.as_ref()),
            "not_ready": l.not_ready, "notes": l.notes,
        })).collect::<Vec<_>>(),
        "removals_held": status.removals_held,
        "runs_holding_removals": status.runs_holding_removals,
        "dead_letters": summary_json(&summary),
        "problems": status.problems,
    })
}

/// A dead-letter summary as JSON.
pub fn summary_json(summary: &pb::DeadLetterSummary) -> Value {
    json!({
        "total": summary.total,
        "truncated": summary.truncated,
        "reasons": summary.reasons.iter().map(|r| json!({
            "reason": r.reason, "stage": r.stage, "count": r.count,
        })).collect::<Vec<_>>(),
    })
}

/// A dead-letter summary for people: a table of counts by reason.
pub fn summary_text(summary: &pb::DeadLetterSummary, width: u16) -> String {
    if summary.total == 0 {
        return "no dead letters\n".to_owned();
    }
    let mut table = table::new(width);
    table.set_header(vec!["COUNT", "STAGE", "REASON"]);
    for r in &summary.reasons {
        table.add_row(vec![r.count.to_string(), r.stage.clone(), r.reason.clone()]);
    }
    let mut out = format!("{table}\n");
    out.push_str(&format!(
        "{} dead letter(s){}\n",
        summary.total,
        if summary.truncated {
            " counted; more are held than one summary reads"
        } else {
            ""
        }
    ));
    out
}

/// The status for people.
pub fn text(status: &pb::IntegrationStatus, width: u16) -> String {
    let now = chrono::Utc::now();
    let pause = status.pause.clone().unwrap_or_default();
    let mut out = format!("integration {}\n", status.integration_id);
    let line = |out: &mut String, name: &str, value: String| {
        out.push_str(&format!("  {name:<16} {value}\n"));
    };
    let loading = if !pause.paused {
        "not paused: loaders take events as they come".to_owned()
    } else if status.refused_config_revision > 0 {
        format!(
            "PAUSED: Oomnitza refused config revision {} as a whole — {} (store a corrected config to resume)",
            status.refused_config_revision, pause.reason
        )
    } else {
        let mut text = format!("PAUSED by {}", pause.by);
        if !pause.reason.is_empty() {
            text.push_str(&format!(": {}", pause.reason));
        }
        text.push_str(" (syncctl resume)");
        text
    };
    line(&mut out, "state", loading);
    line(
        &mut out,
        "config",
        if status.config_revision == 0 {
            "none stored".to_owned()
        } else {
            format!("revision {}", status.config_revision)
        },
    );
    line(
        &mut out,
        "scheduler",
        if status.scheduler_leader.is_empty() {
            "no extractor holds the lease".to_owned()
        } else {
            format!(
                "{} (renewed {})",
                status.scheduler_leader,
                table::ago(status.leader_renewed_at.as_ref(), now)
            )
        },
    );
    if !status.schedule.is_empty() {
        let next = match status.next_run_at.as_ref() {
            Some(at) => format!(
                "next {} ({})",
                time(Some(at)).as_str().unwrap_or("-"),
                table::ago(Some(at), now)
            ),
            None => "no next start".to_owned(),
        };
        line(&mut out, "schedule", format!("{}; {next}", status.schedule));
    }
    match &status.last_run {
        Some(run) => {
            let c = run.counts.unwrap_or_default();
            line(
                &mut out,
                "last run",
                format!(
                    "{} {} (started {}, took {})",
                    run.run_id,
                    enum_name(run.outcome().as_str_name(), "RUN_OUTCOME_"),
                    table::ago(run.started_at.as_ref(), now),
                    table::took(run, now),
                ),
            );
            line(
                &mut out,
                "",
                format!(
                    "read {}, written {}, unchanged {}, filtered {}, dead-lettered {}, pending {}",
                    run.published + run.removed,
                    c.written,
                    c.unchanged,
                    c.filtered,
                    c.dead_lettered,
                    run.pending
                ),
            );
            if !run.removals_skipped.is_empty() {
                line(
                    &mut out,
                    "",
                    format!(
                        "removals NOT computed (leavers since the baseline not announced): {}",
                        run.removals_skipped
                    ),
                );
            }
        }
        None => line(&mut out, "last run", "none yet".to_owned()),
    }
    line(
        &mut out,
        "stream",
        format!(
            "{} event(s) waiting, {} being loaded",
            status.events_waiting, status.events_in_flight
        ),
    );
    line(
        &mut out,
        "loaders",
        if status.loaders.is_empty() {
            "none seen in the last minute".to_owned()
        } else {
            status
                .loaders
                .iter()
                .map(loader)
                .collect::<Vec<_>>()
                .join("; ")
        },
    );
    line(
        &mut out,
        "removals held",
        if status.removals_held == 0 {
            "0".to_owned()
        } else {
            format!(
                "{} in run(s) {} (syncctl approve-removals RUN)",
                status.removals_held,
                status.runs_holding_removals.join(", ")
            )
        },
    );
    let summary = status.dead_letters.clone().unwrap_or_default();
    line(
        &mut out,
        "dead letters",
        summary.total.to_string() + if summary.truncated { "+" } else { "" },
    );
    if summary.total > 0 {
        for row in summary_text(&summary, width.saturating_sub(4)).lines() {
            if !row.trim().is_empty() && !row.contains("dead letter(s)") {
                out.push_str(&format!("    {row}\n"));
            }
        }
    }
    for problem in &status.problems {
        line(&mut out, "problem", problem.clone());
    }
    out
}

/// One loader replica as `syncctl status` prints it: name and version, then what its
/// `/readyz` says when it is not ready or notes something (Oomnitza down, credentials refused).
fn loader(replica: &pb::LoaderReplica) -> String {
    let mut said: Vec<String> = Vec::new();
    if !replica.not_ready.is_empty() {
        said.push(format!("not ready: {}", replica.not_ready.join(", ")));
    }
    let mut notes: Vec<(&String, &String)> = replica.notes.iter().collect();
    notes.sort();
    said.extend(
        notes
            .into_iter()
            .map(|(subject, note)| format!("{subject}: {note}")),
    );
    match said.is_empty() {
        true => format!("{} ({})", replica.name, replica.version),
        false => format!(
            "{} ({}) — {}",
            replica.name,
            replica.version,
            said.join("; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loader_says_why_it_takes_no_records() {
        let mut replica = pb::LoaderReplica {
            name: "loader-1".into(),
            version: "0.1.0".into(),
            ..Default::default()
        };
        assert_eq!(loader(&replica), "loader-1 (0.1.0)");
        replica.not_ready = vec!["nats".into()];
        replica
            .notes
            .insert("oomnitza".into(), "Credentials: refused".into());
        replica.notes.insert("config acme".into(), "invalid".into());
        assert_eq!(
            loader(&replica),
            "loader-1 (0.1.0) — not ready: nats; config acme: invalid; oomnitza: Credentials: refused"
        );
    }

    #[test]
    fn a_last_run_that_could_not_compute_removals_is_called_out() {
        let reason = "the seen list of the baseline run r1 is not in ascending byte order \
                      (a2G7e000000008sEAA came before a2G7E000000008tUAA), so this run's list \
                      cannot be compared with it";
        let mut status = pb::IntegrationStatus {
            integration_id: "acme".into(),
            last_run: Some(pb::Run {
                run_id: "r2".into(),
                full: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!text(&status, 100).contains("NOT computed"));
        if let Some(run) = status.last_run.as_mut() {
            run.removals_skipped = reason.into();
        }
        let shown = text(&status, 100);
        assert!(
            shown.contains(&format!(
                "removals NOT computed (leavers since the baseline not announced): {reason}"
            )),
            "{shown}"
        );
        assert_eq!(json(&status)["last_run"]["removals_skipped"], reason);
    }
}
