//! Tables for people: width-aware (comfy-table wraps the widest cells to fit the terminal, or
//! [`DEFAULT_WIDTH`] columns when output is not a terminal), borderless, with short UTC times
//! and durations.

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, presets};
use peoplesync_proto::Timestamp;

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

/// How long from `started` to `finished` (or to `now` while running): `45s`, `3m12s`, `2h05m`.
pub fn took(
    started: Option<&Timestamp>,
    finished: Option<&Timestamp>,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let Some(start) = datetime(started) else {
        return "-".to_owned();
    };
    let end = datetime(finished).unwrap_or(now);
    duration((end - start).num_seconds().max(0).unsigned_abs())
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
    use peoplesync_proto::v1 as pb;

    #[test]
    fn durations_are_compact() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(192), "3m12s");
        assert_eq!(duration(7500), "2h05m");
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
