//! `syncctl integration`: read, store or check the integration config.

use std::io::Read;
use std::path::PathBuf;

use clap::Subcommand;
use peoplesync_proto::v1 as pb;

use crate::client::{Client, Failure, exit, request};
use crate::{Output, print, render};

#[derive(Debug, Subcommand)]
pub(crate) enum IntegrationCommand {
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

pub(crate) async fn integration_command(
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
                crate::output::stderr(&format!(
                    "# integration {} at revision {}{}\n",
                    config.integration_id,
                    config.revision,
                    config.pause.as_ref().map_or_else(String::new, paused_by)
                ));
            }
            print(output, &render::integration(&config), || {
                config.toml.clone()
            })?;
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
            })?;
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
            })?;
            Ok(if reply.valid { exit::OK } else { exit::USAGE })
        }
    }
}

/// ` (paused by WHO: WHY)` for a paused integration, else nothing.
fn paused_by(pause: &pb::PauseState) -> String {
    if !pause.paused {
        return String::new();
    }
    let by = if pause.by.is_empty() { "?" } else { &pause.by };
    match pause.reason.as_str() {
        "" => format!(" (paused by {by})"),
        reason => format!(" (paused by {by}: {reason})"),
    }
}
