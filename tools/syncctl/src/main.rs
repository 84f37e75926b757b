//! `syncctl`: the peoplesync control plane from a terminal. Every subcommand is one gRPC call
//! to a loader replica (any replica answers); `run --watch` and `watch` follow a run with
//! progress bars and end with a summary. `--output json` prints machine-readable replies, and
//! the exit code says what happened (see `exit` in client.rs and docs/control-plane.md).

mod client;
mod dlq;
mod integration;
mod leavers;
mod output;
mod render;
mod run_id;
mod status;
mod table;
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use peoplesync_proto::v1 as pb;
use serde_json::Value;

use crate::client::{Client, Failure, exit, request};

/// Control peoplesync: trigger and watch runs, manage integration configs, preview and sync
/// single workers, pause loading, and handle dead letters.
#[derive(Debug, Parser)]
#[command(name = "syncctl", version, propagate_version = true)]
struct Cli {
    /// The control plane of any loader replica. The token comes from PEOPLESYNC_CONTROL_TOKEN
    /// or PEOPLESYNC_CONTROL_TOKEN_FILE.
    #[arg(
        long,
        global = true,
        env = "PEOPLESYNC_CONTROL_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    url: String,
    /// CA certificate (PEM) to trust for an https:// URL, besides the public roots.
    #[arg(long, global = true, env = "PEOPLESYNC_CONTROL_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The integration to act on.
    #[arg(
        short,
        long,
        global = true,
        env = "PEOPLESYNC_INTEGRATION",
        default_value = "sage-people"
    )]
    integration: String,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// For people.
    Text,
    /// For scripts: one JSON document per command.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The integration at a glance (GetStatus): paused and why, scheduler and next run, last
    /// run, events waiting, loaders seen, removals held, dead letters by reason.
    Status,
    /// Check the integration before its first run (CheckIntegration): NATS, config, Sage People
    /// and Oomnitza credentials and fields. Exit 0 ready, 7 misconfigured, 5 unreachable.
    Check,
    /// Start a full run now (TriggerSync), or name the run already going.
    Run(RunArgs),
    /// Run history (ListRuns), or one run (`runs get RUN`).
    Runs(RunsArgs),
    /// One run with its counts (GetRun); same as `runs get`.
    #[command(name = "run-status")]
    RunStatus {
        /// The run id, or its last characters as `syncctl runs` shows them.
        run_id: String,
        /// Exit 1 when the run has dead-lettered events.
        #[arg(long)]
        fail_on_dead_letters: bool,
    },
    /// Follow a run until it is done, with progress bars (WatchRun).
    Watch(WatchArgs),
    /// Read, store or check the integration config.
    Integration {
        #[command(subcommand)]
        command: integration::IntegrationCommand,
    },
    /// Propose a mapping from Sage People fields to Oomnitza user fields (SuggestMapping).
    SuggestMapping(SuggestArgs),
    /// Dry-run one worker: the filter's verdict, the record that would be sent, and how it
    /// differs from the user in Oomnitza (PreviewWorker).
    Preview {
        /// The Sage People employee id.
        worker_id: String,
    },
    /// Read one worker from Sage People and load it now (SyncWorker).
    SyncWorker {
        /// The Sage People employee id.
        worker_id: String,
        /// Follow the single-worker run until it is done.
        #[arg(long)]
        watch: bool,
    },
    /// Stop every loader replica pulling this integration's events (Pause).
    Pause {
        /// Why (shown to other operators).
        #[arg(long)]
        reason: Option<String>,
        /// Who pauses (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Let the loaders pull this integration's events again (Resume).
    Resume {
        /// Who resumes (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Publish the removals a run held back for approval (ApproveRemovals).
    ApproveRemovals {
        /// The run whose removals to release: the full id, or its last characters as `syncctl
        /// runs` shows them.
        run_id: String,
        /// Publish none of them: accept the run's list as the baseline, with no leaver action
        /// for anyone it no longer lists (after a deliberate source_filter change).
        #[arg(long)]
        rebaseline: bool,
    },
    /// The leavers of a run with their end date, the action taken and the assets they still
    /// hold, or those held for approval (ListLeavers).
    Leavers(leavers::LeaversArgs),
    /// List, replay or purge dead letters.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Follow the run with progress bars until it is done, then print a summary.
    #[arg(long)]
    watch: bool,
    /// With --watch: exit 1 when events were dead-lettered.
    #[arg(long, requires = "watch")]
    fail_on_dead_letters: bool,
    /// Send every record, even one identical to what was last written: puts right hand edits
    /// made in Oomnitza (drift repair). Takes longer than a normal run.
    #[arg(long)]
    full: bool,
}

#[derive(Debug, Args)]
struct RunsArgs {
    #[command(subcommand)]
    command: Option<RunsCommand>,
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// List runs of every integration.
    #[arg(long)]
    all_integrations: bool,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// List runs, newest first.
    List,
    /// One run with its counts.
    Get {
        /// The run id, or its last characters as `syncctl runs` shows them.
        run_id: String,
        /// Exit 1 when the run has dead-lettered events.
        #[arg(long)]
        fail_on_dead_letters: bool,
    },
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// The run id, or its last characters as `syncctl runs` shows them.
    run_id: String,
    /// Exit 1 when events were dead-lettered.
    #[arg(long)]
    fail_on_dead_letters: bool,
}

#[derive(Debug, Args)]
struct SuggestArgs {
    /// A Sage People additional field to consider (repeatable).
    #[arg(long = "additional-field", value_name = "NAME")]
    additional_fields: Vec<String>,
    /// A custom user field of your Oomnitza tenant: ID:LABEL or ID:LABEL:unique (repeatable).
    #[arg(long = "custom-field", value_name = "ID:LABEL[:unique]")]
    custom_fields: Vec<String>,
    /// Also offer the custom fields of the shipped default config.
    #[arg(long)]
    default_custom_fields: bool,
    /// Do not read the additional fields of the stored integration config.
    #[arg(long)]
    ignore_integration: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            output::stderr(&format!("syncctl: cannot start: {err}\n"));
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            output::stderr(&format!("syncctl: {}\n", failure.message));
            ExitCode::from(failure.code)
        }
    }
}

/// Prints `value` as JSON or `text` for people (see [`output`] for a closed stdout).
pub(crate) fn print(
    output: Output,
    value: &Value,
    text: impl FnOnce() -> String,
) -> Result<(), Failure> {
    match output {
        Output::Json => output::stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        )),
        Output::Text => output::stdout(&text()),
    }
}

fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .map(|user| format!("{user} (syncctl)"))
        .unwrap_or_else(|| "syncctl".to_owned())
}

/// Prints a run's state.
fn print_run(output: Output, run: &pb::Run) -> Result<(), Failure> {
    print(output, &render::run(run), || render::run_text(run))
}

/// Follows `run_id` until it is done and prints how it ended; returns the finished run.
pub(crate) async fn follow(
    client: &mut Client,
    output: Output,
    integration: &str,
    run_id: &str,
    bars: bool,
) -> Result<pb::Run, Failure> {
    let done = watch::watch(client, integration, run_id, bars).await?;
    print_run(output, &done)?;
    Ok(done)
}

/// Prints a pause flag as Pause and Resume answer it.
fn print_pause(output: Output, state: &pb::PauseState) -> Result<(), Failure> {
    print(output, &render::pause(state), || {
        format!("{}\n", render::pause_text(state))
    })
}

/// The exit code a finished run gives.
pub(crate) fn run_exit(run: &pb::Run, fail_on_dead_letters: bool) -> u8 {
    let dead = run.counts.as_ref().map_or(0, |c| c.dead_lettered);
    match run.outcome() {
        pb::RunOutcome::Failed | pb::RunOutcome::Interrupted | pb::RunOutcome::Canceled => {
            exit::FAILED
        }
        _ if fail_on_dead_letters && dead > 0 => exit::FAILED,
        _ => exit::OK,
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    let Cli {
        url,
        ca_file,
        integration,
        output,
        command,
    } = cli;
    if let Command::Completions { shell } = command {
        // Into memory first: clap_complete panics when a write fails.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "syncctl", &mut script);
        output::stdout(&String::from_utf8_lossy(&script))?;
        return Ok(exit::OK);
    }
    // The services read PEOPLESYNC_INTEGRATION as a list; inside their containers it may name
    // several integrations, and each command acts on one.
    if integration.contains(',') {
        return Err(Failure::usage(format!(
            "the integration `{integration}` names several (PEOPLESYNC_INTEGRATION is a list for \
             the services): name the one to act on with -i/--integration"
        )));
    }
    let mut client = client::connect(&url, ca_file.as_deref()).await?;
    let bars = output == Output::Text && std::io::stderr().is_terminal();
    let id = integration.as_str();
    match command {
        Command::Completions { .. } => Ok(exit::OK),
        Command::Status => {
            let reply = client
                .get_status(request(pb::GetStatusRequest {
                    integration_id: id.to_owned(),
                }))
                .await?
                .into_inner();
            print(output, &status::json(&reply), || {
                status::text(&reply, table::width())
            })?;
            Ok(exit::OK)
        }
        Command::Run(args) => {
            let started = client
                .trigger_sync(request(pb::TriggerSyncRequest {
                    integration_id: id.to_owned(),
                    resend_all: args.full,
                }))
                .await?
                .into_inner();
            if !args.watch {
                let value = serde_json::json!({
                    "run_id": started.run_id, "already_running": started.already_running,
                });
                print(output, &value, || {
                    if started.already_running {
                        format!("run {} is already going\n", started.run_id)
                    } else {
                        format!("run {} started\n", started.run_id)
                    }
                })?;
                return Ok(exit::OK);
            }
            if output == Output::Text {
                output::stderr(&format!(
                    "{} run {}\n",
                    if started.already_running {
                        "watching the run already going:"
                    } else {
                        "started"
                    },
                    started.run_id
                ));
            }
            let done = follow(&mut client, output, id, &started.run_id, bars).await?;
            Ok(run_exit(&done, args.fail_on_dead_letters))
        }
        Command::Runs(args) => match args.command {
            Some(RunsCommand::Get {
                run_id,
                fail_on_dead_letters,
            }) => {
                let run_id = run_id::resolve(&mut client, id, &run_id).await?;
                get_run(&mut client, output, id, &run_id, fail_on_dead_letters).await
            }
            Some(RunsCommand::List) | None => {
                let runs = client
                    .list_runs(request(pb::ListRunsRequest {
                        integration_id: if args.all_integrations {
                            String::new()
                        } else {
                            id.to_owned()
                        },
                        limit: args.limit,
                    }))
                    .await?
                    .into_inner()
                    .runs;
                let value = Value::Array(runs.iter().map(render::run).collect());
                print(output, &value, || {
                    render::runs_text(&runs, table::width(), args.all_integrations)
                })?;
                Ok(exit::OK)
            }
        },
        Command::RunStatus {
            run_id,
            fail_on_dead_letters,
        } => {
            let run_id = run_id::resolve(&mut client, id, &run_id).await?;
            get_run(&mut client, output, id, &run_id, fail_on_dead_letters).await
        }
        Command::Watch(args) => {
            let run_id = run_id::resolve(&mut client, id, &args.run_id).await?;
            let done = follow(&mut client, output, id, &run_id, bars).await?;
            Ok(run_exit(&done, args.fail_on_dead_letters))
        }
        Command::Integration { command } => {
            integration::integration_command(&mut client, output, id, command).await
        }
        Command::SuggestMapping(args) => {
            let mut custom_fields = Vec::new();
            for spec in &args.custom_fields {
                let mut parts = spec.splitn(3, ':');
                let field_id = parts.next().unwrap_or_default().trim();
                let label = parts.next().unwrap_or_default().trim();
                let unique = match parts.next().map(str::trim) {
                    None | Some("") => false,
                    Some("unique") => true,
                    Some(other) => {
                        return Err(Failure::usage(format!(
                            "--custom-field {spec:?}: the third part must be `unique`, not {other:?}"
                        )));
                    }
                };
                if field_id.is_empty() {
                    return Err(Failure::usage(format!(
                        "--custom-field {spec:?}: give ID:LABEL"
                    )));
                }
                custom_fields.push(pb::TargetField {
                    id: field_id.to_owned(),
                    label: label.to_owned(),
                    unique,
                });
            }
            let reply = client
                .suggest_mapping(request(pb::SuggestMappingRequest {
                    integration_id: if args.ignore_integration {
                        String::new()
                    } else {
                        id.to_owned()
                    },
                    additional_fields: args.additional_fields,
                    custom_fields,
                    include_default_custom_fields: args.default_custom_fields,
                }))
                .await?
                .into_inner();
            print(output, &render::suggestions(&reply), || {
                render::suggestions_text(&reply)
            })?;
            Ok(exit::OK)
        }
        Command::Check => {
            let reply = client
                .check_integration(request(pb::CheckIntegrationRequest {
                    integration_id: id.to_owned(),
                }))
                .await?
                .into_inner();
            print(output, &render::check(&reply), || {
                render::check_text(&reply)
            })?;
            Ok(match reply.verdict() {
                pb::CheckVerdict::Ready => exit::OK,
                pb::CheckVerdict::Misconfigured => exit::MISCONFIGURED,
                pb::CheckVerdict::Unreachable | pb::CheckVerdict::Unspecified => exit::UNAVAILABLE,
            })
        }
        Command::Preview { worker_id } => {
            let reply = client
                .preview_worker(request(pb::PreviewWorkerRequest {
                    integration_id: id.to_owned(),
                    worker_id,
                }))
                .await?
                .into_inner();
            print(output, &render::preview(&reply), || {
                render::preview_text(&reply)
            })?;
            Ok(exit::OK)
        }
        Command::SyncWorker { worker_id, watch } => {
            let reply = client
                .sync_worker(request(pb::SyncWorkerRequest {
                    integration_id: id.to_owned(),
                    worker_id: worker_id.clone(),
                }))
                .await?
                .into_inner();
            if !watch {
                let value = serde_json::json!({"run_id": reply.run_id});
                print(output, &value, || {
                    format!("worker {worker_id} published in run {}\n", reply.run_id)
                })?;
                return Ok(exit::OK);
            }
            let done = follow(&mut client, output, id, &reply.run_id, bars).await?;
            Ok(run_exit(&done, true))
        }
        Command::Pause { reason, by } => {
            let state = client
                .pause(request(pb::PauseRequest {
                    integration_id: id.to_owned(),
                    by: who(by),
                    reason: reason.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            print_pause(output, &state)?;
            Ok(exit::OK)
        }
        Command::Resume { by } => {
            let state = client
                .resume(request(pb::ResumeRequest {
                    integration_id: id.to_owned(),
                    by: who(by),
                }))
                .await?
                .into_inner();
            print_pause(output, &state)?;
            Ok(exit::OK)
        }
        Command::ApproveRemovals { run_id, rebaseline } => {
            let run_id = run_id::resolve(&mut client, id, &run_id).await?;
            let reply = client
                .approve_removals(request(pb::ApproveRemovalsRequest {
                    integration_id: id.to_owned(),
                    run_id: run_id.clone(),
                    without_leaver_actions: rebaseline,
                }))
                .await?
                .into_inner();
            let value = serde_json::json!({
                "run_id": run_id,
                "released": reply.released,
                "rebaselined": rebaseline,
            });
            print(output, &value, || match rebaseline {
                true => format!(
                    "run {run_id} is the new baseline; its held removals were dropped, no leaver action taken\n"
                ),
                false => format!("{} removals of run {run_id} released\n", reply.released),
            })?;
            Ok(exit::OK)
        }
        Command::Dlq { command } => dlq::dlq_command(&mut client, output, id, bars, command).await,
        Command::Leavers(args) => leavers::command(&mut client, output, id, &args).await,
    }
}

async fn get_run(
    client: &mut Client,
    output: Output,
    integration: &str,
    run_id: &str,
    fail_on_dead_letters: bool,
) -> Result<u8, Failure> {
    let run = client
        .get_run(request(pb::GetRunRequest {
            integration_id: integration.to_owned(),
            run_id: run_id.to_owned(),
        }))
        .await?
        .into_inner();
    print_run(output, &run)?;
    Ok(if run.done {
        run_exit(&run, fail_on_dead_letters)
    } else {
        exit::OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_exit_2_as_documented() {
        let err = Cli::try_parse_from(["syncctl", "run", "--fail-on-dead-letters"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(exit::USAGE));
    }

    #[test]
    fn failed_runs_and_dead_letters_give_exit_1_only_when_asked() {
        let mut run = pb::Run {
            outcome: pb::RunOutcome::SucceededWithDeadLetters.into(),
            counts: Some(pb::RunCounts {
                dead_lettered: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(run_exit(&run, false), exit::OK);
        assert_eq!(run_exit(&run, true), exit::FAILED);
        run.outcome = pb::RunOutcome::Failed.into();
        assert_eq!(run_exit(&run, false), exit::FAILED);
    }
}
