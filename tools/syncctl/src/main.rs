//! `syncctl`: the peoplesync control plane from a terminal. Every subcommand is one gRPC call
//! to a loader replica (any replica answers); `run --watch` and `watch` follow a run with
//! progress bars and end with a summary. `--output json` prints machine-readable replies, and
//! the exit code says what happened (see `exit` in client.rs and docs/control-plane.md).

mod client;
mod render;
mod status;
mod table;
mod watch;

use std::io::{IsTerminal, Read};
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
enum Output {
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
        /// The run id.
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
        command: IntegrationCommand,
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
        /// The run whose removals to release.
        run_id: String,
    },
    /// List, replay or purge dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
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
        /// The run id.
        run_id: String,
        /// Exit 1 when the run has dead-lettered events.
        #[arg(long)]
        fail_on_dead_letters: bool,
    },
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// The run id.
    run_id: String,
    /// Exit 1 when events were dead-lettered.
    #[arg(long)]
    fail_on_dead_letters: bool,
}

#[derive(Debug, Subcommand)]
enum IntegrationCommand {
    /// Print the stored config (TOML on stdout, its revision on stderr).
    Get,
    /// Store a config from a file (`-` for stdin) if it is valid and the revision matches.
    Put {
        /// The TOML file.
        file: PathBuf,
        /// The revision you read (`syncctl integration get`); a newer one fails with exit 6.
        #[arg(long, conflicts_with_all = ["create", "force"])]
        revision: Option<u64>,
        /// Create the config of an integration that has none.
        #[arg(long, conflicts_with = "force")]
        create: bool,
        /// Replace whatever is stored (reads the current revision first).
        #[arg(long)]
        force: bool,
    },
    /// Check a config file (`-` for stdin) and print every problem; nothing is stored.
    Validate {
        /// The TOML file.
        file: PathBuf,
    },
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

#[derive(Debug, Args)]
struct Selector {
    /// Exactly these DLQ sequences (repeatable).
    #[arg(long = "seq", value_name = "SEQUENCE")]
    sequences: Vec<u64>,
    /// Only letters of this run.
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
    fn to_proto(&self, integration: &str, all: bool) -> pb::DeadLetterSelector {
        pb::DeadLetterSelector {
            integration_id: integration.to_owned(),
            sequences: self.sequences.clone(),
            run_id: self.run.clone().unwrap_or_default(),
            reason_contains: self.reason.clone().unwrap_or_default(),
            worker_id: self.worker.clone().unwrap_or_default(),
            all,
        }
    }
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("syncctl: cannot start: {err}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("syncctl: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Prints `value` as JSON or `text` for people.
fn print(output: Output, value: &Value, text: impl FnOnce() -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        ),
        Output::Text => print!("{}", text()),
    }
}

fn read_input(path: &PathBuf) -> Result<String, Failure> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::usage(format!("reading the config from stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("reading {}: {e}", path.display())))
}

/// Asks `question` on the terminal; true on `y` or `yes`.
fn confirm(question: &str) -> bool {
    use std::io::Write;
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .map(|user| format!("{user} (syncctl)"))
        .unwrap_or_else(|| "syncctl".to_owned())
}

/// The exit code a finished run gives.
fn run_exit(run: &pb::Run, fail_on_dead_letters: bool) -> u8 {
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
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "syncctl",
            &mut std::io::stdout(),
        );
        return Ok(exit::OK);
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
            });
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
                });
                return Ok(exit::OK);
            }
            if output == Output::Text {
                eprintln!(
                    "{} run {}",
                    if started.already_running {
                        "watching the run already going:"
                    } else {
                        "started"
                    },
                    started.run_id
                );
            }
            let done = watch::watch(&mut client, id, &started.run_id, bars).await?;
            print(output, &render::run(&done), || render::run_text(&done));
            Ok(run_exit(&done, args.fail_on_dead_letters))
        }
        Command::Runs(args) => match args.command {
            Some(RunsCommand::Get {
                run_id,
                fail_on_dead_letters,
            }) => get_run(&mut client, output, id, &run_id, fail_on_dead_letters).await,
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
                });
                Ok(exit::OK)
            }
        },
        Command::RunStatus {
            run_id,
            fail_on_dead_letters,
        } => get_run(&mut client, output, id, &run_id, fail_on_dead_letters).await,
        Command::Watch(args) => {
            let done = watch::watch(&mut client, id, &args.run_id, bars).await?;
            print(output, &render::run(&done), || render::run_text(&done));
            Ok(run_exit(&done, args.fail_on_dead_letters))
        }
        Command::Integration { command } => {
            integration_command(&mut client, output, id, command).await
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
            });
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
            });
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
            });
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
                });
                return Ok(exit::OK);
            }
            let done = watch::watch(&mut client, id, &reply.run_id, bars).await?;
            print(output, &render::run(&done), || render::run_text(&done));
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
            print(output, &render::pause(&state), || {
                format!("{}\n", render::pause_text(&state))
            });
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
            print(output, &render::pause(&state), || {
                format!("{}\n", render::pause_text(&state))
            });
            Ok(exit::OK)
        }
        Command::ApproveRemovals { run_id } => {
            let reply = client
                .approve_removals(request(pb::ApproveRemovalsRequest {
                    integration_id: id.to_owned(),
                    run_id: run_id.clone(),
                }))
                .await?
                .into_inner();
            let value = serde_json::json!({"run_id": run_id, "released": reply.released});
            print(output, &value, || {
                format!("{} removals of run {run_id} released\n", reply.released)
            });
            Ok(exit::OK)
        }
        Command::Dlq { command } => dlq_command(&mut client, output, id, bars, command).await,
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
    print(output, &render::run(&run), || render::run_text(&run));
    Ok(if run.done {
        run_exit(&run, fail_on_dead_letters)
    } else {
        exit::OK
    })
}

async fn integration_command(
    client: &mut Client,
    output: Output,
    integration: &str,
    command: IntegrationCommand,
) -> Result<u8, Failure> {
    match command {
        IntegrationCommand::Get => {
            let config = client
                .get_integration(request(pb::GetIntegrationRequest {
                    integration_id: integration.to_owned(),
                }))
                .await?
                .into_inner();
            if output == Output::Text {
                eprintln!(
                    "# integration {} at revision {}{}",
                    config.integration_id,
                    config.revision,
                    if config.pause.as_ref().is_some_and(|p| p.paused) {
                        " (paused)"
                    } else {
                        ""
                    }
                );
            }
            print(output, &render::integration(&config), || {
                config.toml.clone()
            });
            Ok(exit::OK)
        }
        IntegrationCommand::Put {
            file,
            revision,
            create,
            force,
        } => {
            let toml = read_input(&file)?;
            let revision = match (revision, create, force) {
                (Some(revision), _, _) => revision,
                (None, true, _) => 0,
                (None, false, true) => {
                    match client
                        .get_integration(request(pb::GetIntegrationRequest {
                            integration_id: integration.to_owned(),
                        }))
                        .await
                    {
                        Ok(current) => current.into_inner().revision,
                        Err(status) if status.code() == tonic::Code::NotFound => 0,
                        Err(status) => return Err(status.into()),
                    }
                }
                (None, false, false) => {
                    return Err(Failure::usage(
                        "say which revision you are replacing: --revision N (from `syncctl integration get`), \
                         --create for a new integration, or --force to replace whatever is stored",
                    ));
                }
            };
            let reply = client
                .put_integration(request(pb::PutIntegrationRequest {
                    integration_id: integration.to_owned(),
                    toml,
                    revision,
                }))
                .await?
                .into_inner();
            let value =
                serde_json::json!({"integration_id": integration, "revision": reply.revision});
            print(output, &value, || {
                format!(
                    "integration {integration} stored at revision {}; the loaders apply it to their next batch\n",
                    reply.revision
                )
            });
            Ok(exit::OK)
        }
        IntegrationCommand::Validate { file } => {
            let toml = read_input(&file)?;
            let reply = client
                .validate_integration(request(pb::ValidateIntegrationRequest { toml }))
                .await?
                .into_inner();
            print(output, &render::validation(&reply), || {
                if reply.valid {
                    "valid\n".to_owned()
                } else {
                    let mut text = format!("{} problem(s):\n", reply.problems.len());
                    for p in &reply.problems {
                        if p.location.is_empty() {
                            text.push_str(&format!("- [{}] {}\n", p.kind, p.message));
                        } else {
                            text.push_str(&format!(
                                "- [{}] {}: {}\n",
                                p.kind, p.location, p.message
                            ));
                        }
                    }
                    text
                }
            });
            Ok(if reply.valid { exit::OK } else { exit::USAGE })
        }
    }
}

async fn dlq_command(
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
            let reply = client
                .list_dead_letters(request(pb::ListDeadLettersRequest {
                    selector: Some(selector.to_proto(integration, false)),
                    limit,
                    after_sequence: after,
                }))
                .await?
                .into_inner();
            print(output, &render::dead_letters(&reply), || {
                render::dead_letters_text(&reply)
            });
            Ok(exit::OK)
        }
        DlqCommand::Replay {
            selector,
            all,
            watch,
        } => {
            let reply = client
                .replay_dead_letters(request(pb::ReplayDeadLettersRequest {
                    selector: Some(selector.to_proto(integration, all)),
                    limit: 0,
                }))
                .await?
                .into_inner();
            let failed = !reply.failures.is_empty();
            if watch && !reply.run_id.is_empty() {
                if output == Output::Text {
                    eprintln!(
                        "{} dead letters replayed in run {}",
                        reply.replayed, reply.run_id
                    );
                }
                let done = watch::watch(client, integration, &reply.run_id, bars).await?;
                print(output, &render::run(&done), || render::run_text(&done));
                return Ok(if failed {
                    exit::FAILED
                } else {
                    run_exit(&done, true)
                });
            }
            print(output, &render::replay(&reply), || {
                let mut text = if reply.run_id.is_empty() {
                    "no dead letter matched\n".to_owned()
                } else {
                    format!(
                        "{} dead letters replayed in run {} (follow it: syncctl watch {})\n",
                        reply.replayed, reply.run_id, reply.run_id
                    )
                };
                for f in &reply.failures {
                    text.push_str(&format!("not replayed: {}: {}\n", f.sequence, f.error));
                }
                if reply.more {
                    text.push_str("more dead letters match; run the replay again\n");
                }
                text
            });
            Ok(if failed { exit::FAILED } else { exit::OK })
        }
        DlqCommand::Summary { selector } => {
            let reply = client
                .summarize_dead_letters(request(pb::SummarizeDeadLettersRequest {
                    selector: Some(selector.to_proto(integration, false)),
                }))
                .await?
                .into_inner();
            print(output, &status::summary_json(&reply), || {
                status::summary_text(&reply, table::width())
            });
            Ok(exit::OK)
        }
        DlqCommand::Purge {
            selector,
            all,
            dry_run,
            yes,
        } => {
            let selector = selector.to_proto(integration, all);
            let purge = |dry_run| {
                request(pb::PurgeDeadLettersRequest {
                    selector: Some(selector.clone()),
                    dry_run,
                })
            };
            let ask = !dry_run && !yes && std::io::stdin().is_terminal();
            if ask {
                let count = client.purge_dead_letters(purge(true)).await?.into_inner();
                if count.purged == 0 {
                    println!("no dead letter matches; nothing purged");
                    return Ok(exit::OK);
                }
                if !confirm(&format!(
                    "purge {} dead letter(s) of {integration}? they cannot be replayed afterwards [y/N] ",
                    count.purged
                )) {
                    eprintln!("nothing purged");
                    return Ok(exit::FAILED);
                }
            }
            let reply = client.purge_dead_letters(purge(dry_run)).await?.into_inner();
            let value = serde_json::json!({"purged": reply.purged, "dry_run": dry_run});
            print(output, &value, || {
                if dry_run {
                    format!("{} dead letters would be purged\n", reply.purged)
                } else {
                    format!("{} dead letters purged\n", reply.purged)
                }
            });
            Ok(exit::OK)
        }
    }
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
