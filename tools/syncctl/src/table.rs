//! Tables for people: width-aware (comfy-table wraps the widest cells to fit the terminal, or
//! [`DEFAULT_WIDTH`] columns when output is not a terminal), borderless, with short UTC times
//! and durations.

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, presets};
use peoplesync_proto::Timestamp;
use peoplesync_proto::v1 as pb;

/// The width tables fit when stdout is not a terminal.
pub const DEFAULT_WIDTH: u16 = 100;

/// The width to fit: the terminal's, else [`DEFAULT_WIDTH`].
pub fn width() -> u16 {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        let mut table = Table::new();
        table.set_content_arrangement(ContentArrangement::Dynamic);
        table.width().unwrap_or(DEFAULT_WIDTH)
    } else {
        DEFAULT_WIDTH
    }
}

/// An empty borderless table fitted to `width` columns.
pub fn new(width: u16) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width);
    table
}

/// Right-aligns the columns from `first` on (the counts).
pub fn right_align_from(table: &mut Table, first: usize) {
    let columns = table.column_count();
    for index in first..columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Keeps every column but `wrapping` at its content's width (ids, times and counts stay on one
/// line), with one space between columns; `wrapping` takes what is left and wraps.
pub fn only_wrap(table: &mut Table, wrapping: usize) {
    let columns = table.column_count();
    for index in 0..columns {
        if let Some(column) = table.column_mut(index) {
            column.set_padding((0, 1));
            if index != wrapping {
                column.set_constraint(ColumnConstraint::ContentWidth);
            }
        }
    }
}

fn datetime(ts: Option<&Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    ts.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
}

/// `MM-DD HH:MM` in UTC, or `-`.
pub fn short_time(ts: Option<&Timestamp>) -> String {
    datetime(ts).map_or_else(|| "-".to_owned(), |t| t.format("%m-%d %H:%M").to_string())
}

/// Seconds from the run's start until it settled (finalized and verified, canceled, failed or
/// interrupted), or until `now` while it has not; `None` without a start.
pub fn took_seconds(run: &pb::Run, now: chrono::DateTime<chrono::Utc>) -> Option<u64> {
    let start = datetime(run.started_at.as_ref())?;
    let end = datetime(crate::render::settled_at(run).as_ref()).unwrap_or(now);
    Some((end - start).num_seconds().max(0).unsigned_abs())
}

/// [`took_seconds`] for people: `45s`, `3m12s`, `2h05m`, or `-`.
pub fn took(run: &pb::Run, now: chrono::DateTime<chrono::Utc>) -> String {
    took_seconds(run, now).map_or_else(|| "-".to_owned(), duration)
}

/// A duration in seconds, compactly.
pub fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How long ago `ts` was, compactly (`3m12s ago`), or `-`.
pub fn ago(ts: Option<&Timestamp>, now: chrono::DateTime<chrono::Utc>) -> String {
    match datetime(ts) {
        Some(t) if t <= now => format!("{} ago", duration((now - t).num_seconds().unsigned_abs())),
        Some(t) => format!("in {}", duration((t - now).num_seconds().unsigned_abs())),
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_compact() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(192), "3m12s");
        assert_eq!(duration(7500), "2h05m");
    }

    fn at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn a_run_took_until_it_settled_or_until_now_while_it_has_not() {
        let start = 1_780_000_000;
        let now = chrono::DateTime::from_timestamp(start + 600, 0).unwrap();
        // Extracted in 4 s, still loading ten minutes later.
        let mut run = pb::Run {
            outcome: pb::RunOutcome::Loading.into(),
            started_at: at(start),
            finished_at: at(start + 4),
            ..Default::default()
        };
        assert_eq!(took(&run, now), "10m00s");
        assert_eq!(crate::render::settled_at(&run), None);
        // Finalized at 5 min, verified at 6 min: settled when verified.
        run.outcome = pb::RunOutcome::Succeeded.into();
        run.done = true;
        run.finalize = Some(pb::FinalizeStatus {
            state: pb::FinalizeState::Finalized.into(),
            at: at(start + 300),
            ..Default::default()
        });
        run.verification = Some(pb::RunVerification {
            state: pb::VerificationState::Verified.into(),
            at: at(start + 360),
            ..Default::default()
        });
        assert_eq!(took(&run, now), "6m00s");
        assert_eq!(took_seconds(&run, now), Some(360));
        let value = crate::render::run(&run);
        assert_eq!(value["took_seconds"], 360, "{value}");
        assert_eq!(value["settled_at"], "2026-05-28T20:32:40+00:00", "{value}");
        let text = crate::render::run_text(&run);
        assert!(text.contains("took           6m00s\n"), "{text}");
        // Canceled in Oomnitza at 2 min.
        let canceled = pb::Run {
            outcome: pb::RunOutcome::Canceled.into(),
            done: true,
            started_at: at(start),
            finished_at: at(start + 4),
            finalize: Some(pb::FinalizeStatus {
                state: pb::FinalizeState::Canceled.into(),
                at: at(start + 120),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(took(&canceled, now), "2m00s");
        // A failed run settled when its extraction ended.
        let failed = pb::Run {
            outcome: pb::RunOutcome::Failed.into(),
            done: true,
            started_at: at(start),
            finished_at: at(start + 4),
            ..Default::default()
        };
        assert_eq!(took(&failed, now), "4s");
        assert!(crate::render::run_text(&pb::Run { done: false, ..run }).contains("so far"));
    }

    #[test]
    fn the_runs_table_fits_100_columns() {
        let started = Timestamp {
            seconds: 1_780_000_000,
            nanos: 0,
        };
        let run = pb::Run {
            integration_id: "sage-people".into(),
            run_id: "019a7c1e-5b2d-7c3e-9f00-0123456789ab".into(),
            trigger: "schedule".into(),
            outcome: pb::RunOutcome::SucceededWithDeadLetters.into(),
            started_at: Some(started),
            finished_at: Some(Timestamp {
                seconds: started.seconds + 754,
                nanos: 0,
            }),
            done: true,
            published: 1_234_567,
            removals_held: 75,
            counts: Some(pb::RunCounts {
                written: 1_200_000,
                dead_lettered: 34_567,
                ..Default::default()
            }),
            ..Default::default()
        };
        let skipped = pb::Run {
            removals_skipped: "the seen list of the baseline run … is not in ascending byte order"
                .into(),
            ..run.clone()
        };
        for all in [false, true] {
            let text =
                crate::render::runs_text(&[run.clone(), skipped.clone()], DEFAULT_WIDTH, all);
            for line in text.lines() {
                assert!(
                    line.chars().count() <= usize::from(DEFAULT_WIDTH),
                    "{} columns: {line:?}",
                    line.chars().count()
                );
            }
            assert!(text.contains("12m34s"), "{text}");
            assert!(
                text.contains("…0123456789ab"),
                "the run id's tail, unwrapped: {text}"
            );
            assert!(text.contains("schedule"), "{text}");
            let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                words.contains("letters, removals not computed"),
                "the outcome cell wraps between words: {text}"
            );
            assert!(
                text.contains("1 run(s) could not compute removals"),
                "{text}"
            );
        }
    }
}
