//! `syncctl dlq`: list, summarise, replay and purge dead letters.

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use peoplesync_proto::v1 as pb;

use crate::client::{Client, Failure, exit, request};
use crate::{Output, follow, output, print, render, run_exit, run_id, status, table};

#[derive(Debug, Args)]
pub(crate) struct Selector {
    /// Exactly these DLQ sequences (repeatable).
    #[arg(long = "seq", value_name = "SEQUENCE")]
    sequences: Vec<u64>,
    /// Only letters of this run (the full id, or its last characters as `syncctl runs` shows
    /// them).
    #[arg(long)]
    run: Option<String>,
    /// Only letters whose reason contains this text (case-insensitive).
    #[arg(long)]
    reason: Option<String>,
    /// Only letters of this worker.
    #[arg(long)]
    worker: Option<String>,
}

impl Selector {
    /// The selector to send, with `--run` resolved to a full run id.
    async fn resolve(
        &self,
        client: &mut Client,
        integration: &str,
        all: bool,
    ) -> Result<pb::DeadLetterSelector, Failure> {
        let run_id = run_id::resolve_given(client, integration, self.run.as_deref()).await?;
        Ok(pb::DeadLetterSelector {
            integration_id: integration.to_owned(),
            sequences: self.sequences.clone(),
            run_id: run_id.unwrap_or_default(),
            reason_contains: self.reason.clone().unwrap_or_default(),
            worker_id: self.worker.clone().unwrap_or_default(),
            all,
        })
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters, least recently seen first, with the runs each was seen in.
    List {
        #[command(flatten)]
        selector: Selector,
        /// At most this many (up to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this sequence (a previous page's last).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Load the selected dead letters again (after a fix), in a new replay run.
    Replay {
        #[command(flatten)]
        selector: Selector,
        /// Replay every dead letter of the integration.
        #[arg(long)]
        all: bool,
        /// Follow the replay run until it is done.
        #[arg(long)]
        watch: bool,
    },
    /// Count the selected dead letters by reason (SummarizeDeadLetters).
    Summary {
        #[command(flatten)]
        selector: Selector,
    },
    /// Delete the selected dead letters (asks first on a terminal).
    Purge {
        #[command(flatten)]
        selector: Selector,
        /// Purge every dead letter of the integration.
        #[arg(long)]
        all: bool,
        /// Only count what would be purged.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

pub(crate) async fn dlq_command(
    client: &mut Client,
    output: Output,
    integration: &str,
    bars: bool,
    command: DlqCommand,
) -> Result<u8, Failure> {
    match command {
        DlqCommand::List {
            selector,
            limit,
            after,
        } => {
            let selector = selector.resolve(client, integration, false).await?;
            let reply = client
                .list_dead_letters(request(pb::ListDeadLettersRequest {
                    selector: Some(selector),
                    limit,
                    after_sequence: after,
                }))
                .await?
                .into_inner();
            print(output, &render::dead_letters(&reply), || {
                render::dead_letters_text(&reply)
            })?;
            Ok(exit::OK)
        }
        DlqCommand::Replay {
            selector,
            all,
            watch,
        } => {
            let selector = selector.resolve(client, integration, all).await?;
            let reply = client
                .replay_dead_letters(request(pb::ReplayDeadLettersRequest {
                    selector: Some(selector),
                    limit: 0,
                }))
                .await?
                .into_inner();
            let failed = !reply.failures.is_empty();
            if watch && !reply.run_id.is_empty() {
                if output == Output::Text {
                    output::stderr(&format!(
                        "{} dead letters replayed in run {}\n{}",
                        reply.replayed,
                        reply.run_id,
                        replay_notes(&reply)
                    ));
                }
                let done = follow(client, output, integration, &reply.run_id, bars).await?;
                return Ok(if failed {
                    exit::FAILED
                } else {
                    run_exit(&done, true)
                });
            }
            print(output, &render::replay(&reply), || {
                let head = if !reply.run_id.is_empty() {
                    format!(
                        "{} dead letters replayed in run {} (follow it: syncctl watch {})\n",
                        reply.replayed, reply.run_id, reply.run_id
                    )
                } else if reply.failures.is_empty() && reply.without_event == 0 {
                    "no dead letter matched\n".to_owned()
                } else {
                    "nothing replayed\n".to_owned()
                };
                head + &replay_notes(&reply)
            })?;
            Ok(if failed { exit::FAILED } else { exit::OK })
        }
        DlqCommand::Summary { selector } => {
            let selector = selector.resolve(client, integration, false).await?;
            let reply = client
                .summarize_dead_letters(request(pb::SummarizeDeadLettersRequest {
                    selector: Some(selector),
                }))
                .await?
                .into_inner();
            print(output, &status::summary_json(&reply), || {
                status::summary_text(&reply, table::width())
            })?;
            Ok(exit::OK)
        }
        DlqCommand::Purge {
            selector,
            all,
            dry_run,
            yes,
        } => {
            let selector = selector.resolve(client, integration, all).await?;
            let purge = |dry_run, through_sequence| {
                request(pb::PurgeDeadLettersRequest {
                    selector: Some(selector.clone()),
                    dry_run,
                    through_sequence,
                })
            };
            let ask = !dry_run && !yes && std::io::stdin().is_terminal();
            // What the operator confirms is what is purged: not letters filed meanwhile.
            let mut through = 0;
            if ask {
                let count = client
                    .purge_dead_letters(purge(true, 0))
                    .await?
                    .into_inner();
                if count.purged == 0 {
                    output::stdout("no dead letter matches; nothing purged\n")?;
                    return Ok(exit::OK);
                }
                if !confirm(&format!(
                    "purge {} dead letter(s) of {integration}? they cannot be replayed afterwards [y/N] ",
                    count.purged
                )) {
                    output::stderr("nothing purged\n");
                    return Ok(exit::FAILED);
                }
                through = count.through_sequence;
            }
            let reply = client
                .purge_dead_letters(purge(dry_run, through))
                .await?
                .into_inner();
            let value = serde_json::json!({"purged": reply.purged, "dry_run": dry_run});
            print(output, &value, || {
                if dry_run {
                    format!("{} dead letters would be purged\n", reply.purged)
                } else {
                    format!("{} dead letters purged\n", reply.purged)
                }
            })?;
            Ok(exit::OK)
        }
    }
}

/// What a replay left behind, a line each: the letters not replayed and why, the letters
/// without an event, and whether more letters match.
fn replay_notes(reply: &pb::ReplayDeadLettersResponse) -> String {
    let mut text = String::new();
    for f in &reply.failures {
        text.push_str(&format!("not replayed: {}: {}\n", f.sequence, f.error));
    }
    if reply.without_event > 0 {
        text.push_str(&format!(
            "{} selected dead letters hold no event to replay (stage verification or extractor) \
             and were left out: the next run sends those workers again once the cause is fixed; \
             purge the letters afterwards (syncctl dlq list shows them)\n",
            reply.without_event
        ));
    }
    if reply.more {
        text.push_str("more dead letters match; run the replay again\n");
    }
    text
}

/// Asks `question` on the terminal; true on `y` or `yes`.
fn confirm(question: &str) -> bool {
    output::stderr(question);
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}
