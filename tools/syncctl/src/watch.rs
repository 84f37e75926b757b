//! Following a run with WatchRun: two progress bars on stderr (events published by the
//! extractor, and events the loaders have accounted for, with the counts so far), hidden when
//! stderr is not a terminal; the last update is returned for the summary. A warning the
//! control plane sends with an update (a run that stopped making progress) is printed on
//! stderr, above the bars, whether they are shown or not.

use std::time::Duration;

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use peoplesync_proto::v1 as pb;
use tonic::Request;

use crate::client::{Client, Failure, exit};

/// Watches `run_id` until it is done; returns its last state.
pub async fn watch(
    client: &mut Client,
    integration: &str,
    run_id: &str,
    bars: bool,
) -> Result<pb::Run, Failure> {
    let mut stream = client
        .watch_run(Request::new(pb::WatchRunRequest {
            integration_id: integration.to_owned(),
            run_id: run_id.to_owned(),
        }))
        .await?
        .into_inner();
    let progress = Progress::new(bars);
    let mut last: Option<pb::Run> = None;
    while let Some(update) = stream.next().await {
        let run = match update {
            Ok(run) => run,
            Err(status) => {
                progress.clear();
                return Err(status.into());
            }
        };
        if let Some(warning) = new_warning(&run, last.as_ref()) {
            progress.warn(warning);
        }
        progress.show(&run);
        let done = run.done;
        last = Some(run);
        if done {
            progress.finish();
            break;
        }
    }
    match last.filter(|r| r.done) {
        Some(run) => Ok(run),
        None => {
            progress.clear();
            Err(Failure::new(
                exit::UNAVAILABLE,
                format!(
                    "the watch of run {run_id} ended before the run was done (the loader replica stopped?); \
                     run `syncctl watch {run_id}` to go on"
                ),
            ))
        }
    }
}

/// The warning of `run` to print: one it carries that the update before did not.
fn new_warning<'a>(run: &'a pb::Run, before: Option<&pb::Run>) -> Option<&'a str> {
    let warning = run.warning.as_str();
    (!warning.is_empty() && before.is_none_or(|b| b.warning != warning)).then_some(warning)
}

/// The load bar's position and length. While the extractor still publishes, the total is not
/// known yet (and the published count the run record shows lags what the loaders already
/// counted), so the bar stays short of its end: it reaches 100% only once publishing ended and
/// every event is accounted for.
pub(crate) fn load_progress(run: &pb::Run) -> (u64, u64) {
    let expected = run.published + run.removed;
    let accounted = expected.saturating_sub(run.pending);
    if run.state() == pb::RunState::Running {
        (accounted, expected + 1)
    } else {
        (accounted, expected.max(1))
    }
}

struct Progress {
    multi: MultiProgress,
    published: ProgressBar,
    loaded: ProgressBar,
}

impl Progress {
    fn new(visible: bool) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let published = multi.add(
            ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner:.green} extract  {pos:>7} published  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        );
        published.enable_steady_tick(Duration::from_millis(120));
        let loaded = multi.add(
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} load     {pos:>7}/{len:7} {percent:>3}%  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("█▉▊▋▌▍▎▏ "),
            ),
        );
        Progress {
            multi,
            published,
            loaded,
        }
    }

    fn show(&self, run: &pb::Run) {
        let expected = run.published + run.removed;
        let (accounted, length) = load_progress(run);
        self.published.set_position(expected);
        let state = crate::render::enum_name(run.state().as_str_name(), "RUN_STATE_");
        self.published.set_message(state);
        if run.state() != pb::RunState::Running {
            self.published.disable_steady_tick();
        }
        self.loaded.set_length(length);
        self.loaded.set_position(accounted);
        let c = run.counts.unwrap_or_default();
        self.loaded.set_message(format!(
            "written {} · unchanged {} · filtered {} · dead-lettered {} · pending {}{}",
            c.written,
            c.unchanged,
            c.filtered,
            c.dead_lettered,
            run.pending,
            if run.state() == pb::RunState::Running {
                " · still publishing"
            } else {
                ""
            }
        ));
    }

    /// Prints `warning` on stderr, above the bars when they are shown.
    fn warn(&self, warning: &str) {
        let line = format!("syncctl: warning: {warning}");
        // Hidden bars print nothing, not even lines above them.
        if self.multi.is_hidden() || self.multi.println(&line).is_err() {
            crate::output::stderr(&format!("{line}\n"));
        }
    }

    /// Leaves the final bars on screen above the summary.
    fn finish(&self) {
        self.published.finish();
        self.loaded.finish();
    }

    fn clear(&self) {
        self.published.finish_and_clear();
        self.loaded.finish_and_clear();
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_printed_when_it_first_comes_and_when_it_changes() {
        let quiet = pb::Run::default();
        let stalled = |secs: u64| pb::Run {
            warning: format!("no progress for {secs} s"),
            ..Default::default()
        };
        assert_eq!(new_warning(&quiet, None), None);
        assert_eq!(
            new_warning(&stalled(60), Some(&quiet)),
            Some("no progress for 60 s")
        );
        assert_eq!(new_warning(&stalled(60), Some(&stalled(60))), None);
        assert_eq!(
            new_warning(&stalled(120), Some(&stalled(60))),
            Some("no progress for 120 s")
        );
        assert_eq!(
            new_warning(&stalled(60), None),
            Some("no progress for 60 s")
        );
    }

    #[test]
    fn the_bar_is_never_full_while_the_run_is_still_publishing() {
        let mut run = pb::Run {
            state: pb::RunState::Running.into(),
            published: 500,
            pending: 0,
            ..Default::default()
        };
        let (position, length) = load_progress(&run);
        assert!(position < length, "{position}/{length} while publishing");
        run.state = pb::RunState::Completed.into();
        let (position, length) = load_progress(&run);
        assert_eq!(position, length);
        run.pending = 10;
        let (position, length) = load_progress(&run);
        assert_eq!((position, length), (490, 500));
    }
}
