//! What syncctl prints: each reply as JSON (`--output json`, stable field names for scripts)
//! or as text for people (tables and summaries).

use peoplesync_proto::Timestamp;
use peoplesync_proto::v1 as pb;
use serde_json::{Value, json};

/// An enum value's name without its type prefix, lower-cased: `RUN_OUTCOME_SUCCEEDED` →
/// `succeeded`.
pub fn enum_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_lowercase()
}

/// A timestamp as RFC 3339 (null when unset).
pub fn time(ts: Option<&Timestamp>) -> Value {
    ts.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

/// A JSON text field as JSON (null when empty, the text itself when it is not JSON).
fn embedded(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// When `run` settled: the latest of the times it records (extraction end, finalize,
/// verification, cancellation) once it is done; `None` while it is not. The extraction end
/// alone would make a run still loading look finished.
pub fn settled_at(run: &pb::Run) -> Option<Timestamp> {
    if !run.done {
        return None;
    }
    [
        run.finished_at.as_ref(),
        run.finalize.as_ref().and_then(|f| f.at.as_ref()),
        run.verification.as_ref().and_then(|v| v.at.as_ref()),
        run.canceled_at.as_ref(),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|t| (t.seconds, t.nanos))
    .copied()
}

/// A run.
pub fn run(run: &pb::Run) -> Value {
    let counts = run.counts.unwrap_or_default();
    let finalize = run.finalize.clone().unwrap_or_default();
    json!({
        "integration_id": run.integration_id,
        "run_id": run.run_id,
        "full": run.full,
        "trigger": run.trigger,
        "state": enum_name(run.state().as_str_name(), "RUN_STATE_"),
        "outcome": enum_name(run.outcome().as_str_name(), "RUN_OUTCOME_"),
        "started_at": time(run.started_at.as_ref()),
        "finished_at": time(run.finished_at.as_ref()),
        "settled_at": time(settled_at(run).as_ref()),
        "took_seconds": crate::table::took_seconds(run, chrono::Utc::now()),
        "published": run.published,
        "removed": run.removed,
        "removals_held": run.removals_held,
        "removals_skipped": (!run.removals_skipped.is_empty()).then_some(&run.removals_skipped),
        "moved_out": run.moved_out,
        "skipped": run.skipped,
        "counts": {
            "written": counts.written,
            "unchanged": counts.unchanged,
            "filtered": counts.filtered,
            "dead_lettered": counts.dead_lettered,
            "canceled": counts.canceled,
            "stale": counts.stale,
            "leavers": counts.leavers,
        },
        "leavers_with_assets": run.leavers_with_assets,
        "pending": run.pending,
        "counts_final": run.counts_final,
        "finalize": {
            "state": enum_name(finalize.state().as_str_name(), "FINALIZE_STATE_"),
            "by": finalize.by,
            "at": time(finalize.at.as_ref()),
        },
        "error": run.error,
        "done": run.done,
        "resend_all": run.resend_all,
        "verification": run.verification.as_ref().map(verification),
        "canceled": (!run.canceled_noticed_by.is_empty()).then(|| json!({
            "noticed_by": run.canceled_noticed_by,
            "at": time(run.canceled_at.as_ref()),
        })),
    })
}

/// The check of a finalized run against what Oomnitza holds.
fn verification(v: &pb::RunVerification) -> Value {
    json!({
        "state": enum_name(v.state().as_str_name(), "VERIFICATION_STATE_"),
        "accepted": v.accepted,
        "confirmed": v.confirmed,
        "not_applied": v.not_applied,
        "unverifiable_fields": v.unverifiable_fields,
        "reason": v.reason,
        "by": v.by,
        "at": time(v.at.as_ref()),
    })
}

/// A run as a summary table.
pub fn run_text(run: &pb::Run) -> String {
    let counts = run.counts.unwrap_or_default();
    let finalize = run.finalize.clone().unwrap_or_default();
    let mut out = format!(
        "run {}  ({}, {}, trigger {})\n",
        run.run_id,
        run.integration_id,
        if run.full { "full" } else { "partial" },
        run.trigger
    );
    let rows: [(&str, String); 16] = [
        (
            "outcome",
            enum_name(run.outcome().as_str_name(), "RUN_OUTCOME_"),
        ),
        ("state", enum_name(run.state().as_str_name(), "RUN_STATE_")),
        ("published", run.published.to_string()),
        ("removed", run.removed.to_string()),
        ("removals held", run.removals_held.to_string()),
        ("skipped", run.skipped.to_string()),
        ("written", counts.written.to_string()),
        ("unchanged", counts.unchanged.to_string()),
        ("filtered", counts.filtered.to_string()),
        ("dead-lettered", counts.dead_lettered.to_string()),
        ("canceled", counts.canceled.to_string()),
        ("stale", counts.stale.to_string()),
        ("leavers", counts.leavers.to_string()),
        (
            "leavers holding assets",
            run.leavers_with_assets.to_string(),
        ),
        ("pending", run.pending.to_string()),
        ("finalize", {
            let state = enum_name(finalize.state().as_str_name(), "FINALIZE_STATE_");
            if finalize.by.is_empty() {
                state
            } else {
                format!("{state} by {}", finalize.by)
            }
        }),
    ];
    for (name, value) in rows {
        out.push_str(&format!("  {name:<14} {value:>12}\n"));
    }
    if run.moved_out > 0 {
        out.push_str(&format!(
            "  {:<14} {:>12}   no longer listed, still employed: outside the source_filter, not leavers\n",
            "moved out", run.moved_out
        ));
    }
    if !run.removals_skipped.is_empty() {
        out.push_str(&format!(
            "  {:<14} NOT COMPUTED: {}\n  {:<14} workers who left since the baseline were not announced; a later run\n  \
             {:<14} that computes removals announces them (docs/operations.md, \"When removals are not computed\")\n",
            "removals", run.removals_skipped, "", ""
        ));
    }
    let started = time(run.started_at.as_ref());
    if let Some(started) = started.as_str() {
        out.push_str(&format!("  {:<14} {started}\n", "started"));
    }
    if let Some(finished) = time(run.finished_at.as_ref()).as_str() {
        out.push_str(&format!("  {:<14} {finished}\n", "finished"));
    }
    if let Some(settled) = time(settled_at(run).as_ref()).as_str() {
        out.push_str(&format!("  {:<14} {settled}\n", "settled"));
    }
    if run.started_at.is_some() {
        let took = crate::table::took(run, chrono::Utc::now());
        let so_far = if run.done { "" } else { " so far" };
        out.push_str(&format!("  {:<14} {took}{so_far}\n", "took"));
    }
    if let Some(v) = &run.verification {
        let state = enum_name(v.state().as_str_name(), "VERIFICATION_STATE_");
        out.push_str(&format!(
            "  {:<14} {state}: {} accepted, {} confirmed, {} not applied\n",
            "verification", v.accepted, v.confirmed, v.not_applied
        ));
        if !v.unverifiable_fields.is_empty() {
            out.push_str(&format!(
                "  {:<14} {}\n",
                "not readable",
                v.unverifiable_fields.join(", ")
            ));
        }
        if !v.reason.is_empty() {
            out.push_str(&format!("  {:<14} {}\n", "unverified", v.reason));
        }
    }
    if !run.canceled_noticed_by.is_empty() {
        let at = time(run.canceled_at.as_ref());
        out.push_str(&format!(
            "  {:<14} in Oomnitza; noticed by {} at {}\n",
            "canceled",
            run.canceled_noticed_by,
            at.as_str().unwrap_or("?")
        ));
    }
    if run.resend_all {
        out.push_str(&format!("  {:<14} every record sent (--full)\n", "resend"));
    }
    if !run.error.is_empty() {
        out.push_str(&format!("  {:<14} {}\n", "error", run.error));
    }
    out
}

/// The run history for people: one line per run, fitted to `width` columns (wrapping the
/// widest cells), with the random tail of each run id (`syncctl runs get` takes it), short UTC
/// times, the duration and what started each run.
pub fn runs_text(runs: &[pb::Run], width: u16, all_integrations: bool) -> String {
    let mut header = vec!["RUN", "STARTED", "TOOK", "TRIGGER", "OUTCOME"];
    if all_integrations {
        header.insert(1, "INTEGRATION");
    }
    header.extend(["READ", "WRITTEN", "DEAD", "HELD", "PENDING"]);
    let mut table = crate::table::new(width);
    table.set_header(header);
    let now = chrono::Utc::now();
    let mut not_computed = 0;
    for run in runs {
        let c = run.counts.unwrap_or_default();
        // Words, so a narrow column wraps between them.
        let mut outcome = enum_name(run.outcome().as_str_name(), "RUN_OUTCOME_").replace('_', " ");
        if !run.removals_skipped.is_empty() {
            not_computed += 1;
            outcome.push_str(", removals not computed");
        }
        let mut row = vec![
            crate::run_id::short(&run.run_id),
            crate::table::short_time(run.started_at.as_ref()),
            crate::table::took(run, now),
            run.trigger.clone(),
            outcome,
        ];
        if all_integrations {
            row.insert(1, run.integration_id.clone());
        }
        row.extend([
            (run.published + run.removed).to_string(),
            c.written.to_string(),
            c.dead_lettered.to_string(),
            run.removals_held.to_string(),
            run.pending.to_string(),
        ]);
        table.add_row(row);
    }
    let outcome = if all_integrations { 5 } else { 4 };
    crate::table::right_align_from(&mut table, outcome + 1);
    crate::table::only_wrap(&mut table, outcome);
    let mut out = format!("{table}\n");
    if not_computed > 0 {
        out.push_str(&format!(
            "{not_computed} run(s) could not compute removals: workers who left since the baseline were not\n\
             announced by them. `syncctl runs get RUN` says why; a run that computes removals announces them.\n"
        ));
    }
    out
}

/// A pause state.
pub fn pause(state: &pb::PauseState) -> Value {
    json!({
        "integration_id": state.integration_id,
        "paused": state.paused,
        "by": state.by,
        "at": time(state.at.as_ref()),
        "reason": state.reason,
    })
}

/// A pause state for people.
pub fn pause_text(state: &pb::PauseState) -> String {
    let what = if state.paused { "paused" } else { "running" };
    let mut out = format!("{}: {what}", state.integration_id);
    if !state.by.is_empty() {
        out.push_str(&format!(" (set by {}", state.by));
        if let Some(at) = time(state.at.as_ref()).as_str() {
            out.push_str(&format!(" at {at}"));
        }
        out.push(')');
    }
    if !state.reason.is_empty() {
        out.push_str(&format!(": {}", state.reason));
    }
    out
}

/// A stored integration config.
pub fn integration(config: &pb::Integration) -> Value {
    json!({
        "integration_id": config.integration_id,
        "revision": config.revision,
        "toml": config.toml,
        "pause": config.pause.as_ref().map(pause),
    })
}

/// Validation problems.
pub fn validation(reply: &pb::ValidateIntegrationResponse) -> Value {
    json!({
        "valid": reply.valid,
        "problems": reply.problems.iter().map(|p| json!({
            "kind": p.kind, "location": p.location, "message": p.message,
        })).collect::<Vec<_>>(),
    })
}

/// Mapping suggestions.
pub fn suggestions(reply: &pb::SuggestMappingResponse) -> Value {
    json!({
        "suggestions": reply.suggestions.iter().map(|s| json!({
            "field": s.field, "label": s.label, "unique": s.unique,
            "source_kind": s.source_kind, "source": s.source,
            "confidence": s.confidence, "reason": s.reason, "creates_field": s.creates_field,
        })).collect::<Vec<_>>(),
        "toml": reply.toml,
    })
}

/// Mapping suggestions for people.
pub fn suggestions_text(reply: &pb::SuggestMappingResponse) -> String {
    let mut out = format!(
        "{:<34} {:<22} {:<30} {:>5}  {}\n",
        "FIELD", "LABEL", "FROM", "CONF", "WHY"
    );
    for s in &reply.suggestions {
        let field = if s.creates_field {
            "(create this field)".to_owned()
        } else {
            s.field.clone()
        };
        out.push_str(&format!(
            "{:<34} {:<22} {:<30} {:>4.0}%  {}\n",
            field,
            s.label,
            format!("{} {}", s.source_kind, s.source),
            s.confidence * 100.0,
            s.reason
        ));
    }
    out.push_str("\n# as config:\n");
    out.push_str(&reply.toml);
    out
}

/// A worker preview.
pub fn preview(reply: &pb::PreviewWorkerResponse) -> Value {
    json!({
        "verdict": enum_name(reply.verdict().as_str_name(), "VERDICT_"),
        "reason": reply.reason,
        "record": embedded(&reply.record_json),
        "fields": reply.fields.iter().map(|f| json!({
            "field": f.field, "label": f.label, "origin": f.origin,
            "value": embedded(&f.value_json), "error": f.error,
            "required": f.required, "sync_key": f.sync_key, "unique": f.unique,
        })).collect::<Vec<_>>(),
        "sync_key": reply.sync_key,
        "sync_key_value": reply.sync_key_value,
        "user_exists": reply.user_exists,
        "current_user": embedded(&reply.current_user_json),
        "diff": reply.diff.iter().map(|d| json!({
            "field": d.field, "attribute": d.attribute, "label": d.label,
            "current": embedded(&d.current_json), "proposed": embedded(&d.proposed_json),
            "change": enum_name(d.change().as_str_name(), "CHANGE_"),
        })).collect::<Vec<_>>(),
        "oomnitza_error": reply.oomnitza_error,
        "raw": embedded(&reply.raw_json),
        "config_revision": reply.config_revision,
    })
}

/// A worker preview for people.
pub fn preview_text(reply: &pb::PreviewWorkerResponse) -> String {
    let verdict = enum_name(reply.verdict().as_str_name(), "VERDICT_");
    let mut out = format!("verdict: {verdict}");
    if !reply.reason.is_empty() {
        out.push_str(&format!(" ({})", reply.reason));
    }
    out.push('\n');
    out.push_str(&format!("config revision: {}\n", reply.config_revision));
    if !reply.sync_key.is_empty() {
        out.push_str(&format!(
            "Oomnitza user with {} = {}: {}\n",
            reply.sync_key,
            reply.sync_key_value,
            if reply.user_exists {
                "exists"
            } else {
                "none (would be created)"
            }
        ));
    }
    if !reply.oomnitza_error.is_empty() {
        out.push_str(&format!("warning: {}\n", reply.oomnitza_error));
    }
    out.push_str(&format!(
        "\n{:<34} {:<10} {:<30} {}\n",
        "FIELD", "CHANGE", "NOW", "WOULD SEND"
    ));
    for d in &reply.diff {
        let name = if d.label.is_empty() {
            d.field.clone()
        } else {
            format!("{} ({})", d.label, &d.field[..d.field.len().min(8)])
        };
        out.push_str(&format!(
            "{:<34} {:<10} {:<30} {}\n",
            name,
            enum_name(d.change().as_str_name(), "CHANGE_"),
            d.current_json,
            d.proposed_json
        ));
    }
    for f in reply.fields.iter().filter(|f| !f.error.is_empty()) {
        out.push_str(&format!(
            "error in {} ({}): {}\n",
            f.field, f.origin, f.error
        ));
    }
    out
}

/// Dead letters.
pub fn dead_letters(reply: &pb::ListDeadLettersResponse) -> Value {
    json!({
        "letters": reply.letters.iter().map(dead_letter).collect::<Vec<_>>(),
        "next_after_sequence": reply.next_after_sequence,
        "held": reply.held,
    })
}

fn dead_letter(letter: &pb::DeadLetter) -> Value {
    json!({
        "sequence": letter.sequence,
        "integration_id": letter.integration_id,
        "run_id": letter.run_id,
        "worker_id": letter.worker_id,
        "reason": letter.reason,
        "stage": letter.stage,
        "http_status": (letter.http_status != 0).then_some(letter.http_status),
        "body_excerpt": letter.body_excerpt,
        "attempts": letter.attempts,
        "at": time(letter.at.as_ref()),
        "runs_seen": letter.runs_seen,
        "first_run_id": letter.first_run_id,
        "first_seen": time(letter.first_seen.as_ref()),
    })
}

/// Dead letters for people.
pub fn dead_letters_text(reply: &pb::ListDeadLettersResponse) -> String {
    let mut out = format!(
        "{:>8} {:<20} {:>4} {:<25} {:<25} {:<38} {:<9} {}\n",
        "SEQ", "WORKER", "RUNS", "FIRST SEEN", "LAST SEEN", "LAST RUN", "STAGE", "REASON"
    );
    for l in &reply.letters {
        let when = |t: Option<&Timestamp>| match time(t) {
            Value::String(text) => text,
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:>8} {:<20} {:>4} {:<25} {:<25} {:<38} {:<9} {}\n",
            l.sequence,
            l.worker_id,
            l.runs_seen.max(1),
            when(l.first_seen.as_ref()),
            when(l.at.as_ref()),
            l.run_id,
            l.stage,
            l.reason
        ));
    }
    out.push_str(&format!(
        "{} shown; {} held in the queue",
        reply.letters.len(),
        reply.held
    ));
    if reply.next_after_sequence != 0 {
        out.push_str(&format!(
            "; more after sequence {} (--after {})",
            reply.next_after_sequence, reply.next_after_sequence
        ));
    }
    out.push('\n');
    out
}

/// A replay.
pub fn replay(reply: &pb::ReplayDeadLettersResponse) -> Value {
    json!({
        "run_id": reply.run_id,
        "replayed": reply.replayed,
        "failures": reply.failures.iter().map(|f| json!({"sequence": f.sequence, "error": f.error})).collect::<Vec<_>>(),
        "more": reply.more,
        "without_event": reply.without_event,
    })
}

/// An integration check.
pub fn check(reply: &pb::CheckIntegrationResponse) -> Value {
    json!({
        "integration_id": reply.integration_id,
        "verdict": enum_name(reply.verdict().as_str_name(), "CHECK_VERDICT_"),
        "checks": reply.checks.iter().map(|c| json!({
            "name": c.name,
            "outcome": enum_name(c.outcome().as_str_name(), "CHECK_OUTCOME_"),
            "detail": c.detail,
        })).collect::<Vec<_>>(),
    })
}

/// An integration check for people: a line per check, then the verdict.
pub fn check_text(reply: &pb::CheckIntegrationResponse) -> String {
    let mut out = String::new();
    for c in &reply.checks {
        let mark = match c.outcome() {
            pb::CheckOutcome::Passed => "ok  ",
            pb::CheckOutcome::Misconfigured => "FIX ",
            pb::CheckOutcome::Unreachable => "DOWN",
            pb::CheckOutcome::Waiting => "WAIT",
            pb::CheckOutcome::NotCheckable | pb::CheckOutcome::Unspecified => "--  ",
        };
        out.push_str(&format!("{mark} {:<20} {}\n", c.name, c.detail));
    }
    let verdict = match reply.verdict() {
        pb::CheckVerdict::Ready
            if reply
                .checks
                .iter()
                .any(|c| c.outcome() == pb::CheckOutcome::Waiting) =>
        {
            "ready: the integration can run, but its loading waits (the lines marked WAIT)"
                .to_owned()
        }
        pb::CheckVerdict::Ready => "ready: the integration can run".to_owned(),
        pb::CheckVerdict::Misconfigured => {
            "misconfigured: fix the lines marked FIX, then check again".to_owned()
        }
        pb::CheckVerdict::Unreachable | pb::CheckVerdict::Unspecified => {
            "unreachable: a service marked DOWN did not answer; check it, then check again"
                .to_owned()
        }
    };
    out.push_str(&format!("{}: {verdict}\n", reply.integration_id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(
            enum_name("RUN_OUTCOME_SUCCEEDED_WITH_DEAD_LETTERS", "RUN_OUTCOME_"),
            "succeeded_with_dead_letters"
        );
    }

    #[test]
    fn dead_letters_show_how_many_runs_they_were_seen_in() {
        let reply = pb::ListDeadLettersResponse {
            letters: vec![pb::DeadLetter {
                sequence: 42,
                worker_id: "a2G7E000000LlIDUA0".into(),
                run_id: "run-3".into(),
                stage: "pipeline".into(),
                reason: "required field EMAIL is empty (mapped from source Email)".into(),
                at: Some(Timestamp {
                    seconds: 1_700_172_800,
                    nanos: 0,
                }),
                runs_seen: 3,
                first_run_id: "run-1".into(),
                first_seen: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            held: 1,
            ..Default::default()
        };
        let value = dead_letters(&reply);
        assert_eq!(value["letters"][0]["runs_seen"], 3);
        assert_eq!(value["letters"][0]["first_run_id"], "run-1");
        assert_eq!(
            value["letters"][0]["first_seen"],
            "2023-11-14T22:13:20+00:00"
        );
        let text = dead_letters_text(&reply);
        let row = text.lines().nth(1).unwrap_or_default();
        assert!(row.contains("   3 2023-11-14T22:13:20+00:00"), "{text}");
        assert!(row.contains("2023-11-16T22:13:20+00:00"), "{text}");
        assert!(row.contains("run-3"), "{text}");
    }

    #[test]
    fn a_run_renders_with_its_counts_and_times() {
        let run = pb::Run {
            run_id: "r1".into(),
            outcome: pb::RunOutcome::Succeeded.into(),
            started_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            counts: Some(pb::RunCounts {
                written: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        let value = super::run(&run);
        assert_eq!(value["outcome"], "succeeded");
        assert_eq!(value["counts"]["written"], 7);
        assert_eq!(value["started_at"], "2023-11-14T22:13:20+00:00");
        assert!(run_text(&run).contains("written"));
    }

    #[test]
    fn a_run_that_could_not_compute_removals_says_so_and_why() {
        let reason = "the seen list of the baseline run r1 is not in ascending byte order \
                      (a2G7e000000008sEAA came before a2G7E000000008tUAA), so this run's list \
                      cannot be compared with it";
        let run = pb::Run {
            run_id: "r2".into(),
            full: true,
            removals_skipped: reason.into(),
            ..Default::default()
        };
        assert_eq!(super::run(&run)["removals_skipped"], reason);
        let text = run_text(&run);
        assert!(
            text.contains(&format!("removals       NOT COMPUTED: {reason}")),
            "{text}"
        );
        let computed = pb::Run::default();
        assert!(super::run(&computed)["removals_skipped"].is_null());
        assert!(!run_text(&computed).contains("NOT COMPUTED"));
    }

    #[test]
    fn workers_who_moved_out_of_the_filter_are_counted_apart_from_leavers() {
        let run = pb::Run {
            run_id: "r3".into(),
            full: true,
            removed: 2,
            moved_out: 5,
            ..Default::default()
        };
        assert_eq!(super::run(&run)["moved_out"], 5);
        let text = run_text(&run);
        assert!(
            text.contains("moved out") && text.contains("5   no longer listed, still employed"),
            "{text}"
        );
        assert!(!run_text(&pb::Run::default()).contains("moved out"));
    }

    #[test]
    fn a_check_prints_a_line_per_check_and_the_verdict() {
        let reply = pb::CheckIntegrationResponse {
            integration_id: "acme".into(),
            checks: vec![
                pb::IntegrationCheck {
                    name: "nats".into(),
                    outcome: pb::CheckOutcome::Passed.into(),
                    detail: "connected".into(),
                },
                pb::IntegrationCheck {
                    name: "oomnitza.token".into(),
                    outcome: pb::CheckOutcome::Misconfigured.into(),
                    detail: "refused; set OOMNITZA_API_TOKEN".into(),
                },
            ],
            verdict: pb::CheckVerdict::Misconfigured.into(),
        };
        let text = check_text(&reply);
        assert!(text.contains("ok   nats"), "{text}");
        assert!(text.contains("FIX  oomnitza.token"), "{text}");
        assert!(
            text.ends_with("acme: misconfigured: fix the lines marked FIX, then check again\n"),
            "{text}"
        );
        let json = check(&reply);
        assert_eq!(json["verdict"], "misconfigured");
        assert_eq!(json["checks"][1]["outcome"], "misconfigured");
    }
}
