//! `syncctl leavers`: the leavers a run handled — end date, the action taken in Oomnitza and
//! the assets each still held — or, with `--held`, the leavers the accidental-deletion
//! threshold holds for approval (ListLeavers).

use clap::Args;
use peoplesync_proto::v1 as pb;
use serde_json::{Value, json};

use crate::Output;
use crate::client::{Client, Failure, exit, request};

/// Arguments of `syncctl leavers`.
#[derive(Debug, Args)]
pub struct LeaversArgs {
    /// The run: the full id, or its last characters as `syncctl runs` shows them (default: the
    /// latest run that handled leavers).
    #[arg(long = "run", value_name = "RUN")]
    run_id: Option<String>,
    /// List the leavers held for approval instead (release them with approve-removals).
    #[arg(long, conflicts_with = "run_id")]
    held: bool,
}

/// Runs `syncctl leavers`.
pub async fn command(
    client: &mut Client,
    output: Output,
    integration: &str,
    args: &LeaversArgs,
) -> Result<u8, Failure> {
    let run_id = crate::run_id::resolve_given(client, integration, args.run_id.as_deref()).await?;
    let reply = client
        .list_leavers(request(pb::ListLeaversRequest {
            integration_id: integration.to_owned(),
            run_id: run_id.unwrap_or_default(),
            held: args.held,
        }))
        .await?
        .into_inner();
    crate::print(output, &to_json(&reply, args.held), || {
        to_text(&reply, args.held)
    })?;
    Ok(exit::OK)
}

fn asset_json(asset: &pb::LeaverAsset) -> Value {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    json!({"id": asset.id, "name": text(&asset.name), "serial": text(&asset.serial)})
}

fn to_json(reply: &pb::ListLeaversResponse, held: bool) -> Value {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let leavers: Vec<Value> = reply
        .leavers
        .iter()
        .map(|l| {
            json!({
                "worker_id": l.worker_id,
                "name": text(&l.name),
                "email": text(&l.email),
                "reason": l.reason,
                "end_date": text(&l.end_date),
                "action": l.action,
                "oomnitza_user": text(&l.oomnitza_user),
                "assets": l.assets.iter().map(asset_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut value = json!({
        "run_id": text(&reply.run_id),
        "leavers": leavers,
    });
    if held {
        value["held"] = json!(reply.held_count);
    } else {
        value["count"] = json!(reply.leavers.len());
        value["with_assets"] = json!(reply.with_assets);
    }
    value
}

fn to_text(reply: &pb::ListLeaversResponse, held: bool) -> String {
    if reply.run_id.is_empty() {
        return if held {
            "no leavers are held for approval\n".to_owned()
        } else {
            "no run has handled leavers yet\n".to_owned()
        };
    }
    let mut out = if held {
        format!(
            "{} leavers of run {} held for approval (release them with `syncctl approve-removals {}`)\n",
            reply.held_count, reply.run_id, reply.run_id
        )
    } else {
        format!(
            "{} leavers in run {}, {} still holding assets\n",
            reply.leavers.len(),
            reply.run_id,
            reply.with_assets
        )
    };
    for l in &reply.leavers {
        let who = match (l.name.as_str(), l.email.as_str()) {
            ("", "") => l.worker_id.clone(),
            (name, "") => format!("{name} ({})", l.worker_id),
            ("", email) => format!("{email} ({})", l.worker_id),
            (name, email) => format!("{name} <{email}> ({})", l.worker_id),
        };
        let end = if l.end_date.is_empty() {
            String::new()
        } else {
            format!(", ended {}", l.end_date)
        };
        out.push_str(&format!("  {who}: {}{end} — {}\n", l.reason, l.action));
        for a in &l.assets {
            let mut line = format!("      asset {}", a.id);
            if !a.name.is_empty() {
                line.push_str(&format!(" {}", a.name));
            }
            if !a.serial.is_empty() {
                line.push_str(&format!(" (serial {})", a.serial));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    if held && (reply.leavers.len() as u64) < reply.held_count {
        out.push_str(&format!(
            "  … and {} more\n",
            reply.held_count - reply.leavers.len() as u64
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaver_is_shown_with_their_end_date_action_and_assets() {
        let reply = pb::ListLeaversResponse {
            run_id: "r2".into(),
            leavers: vec![pb::Leaver {
                worker_id: "a1".into(),
                name: "Ada Lovelace".into(),
                reason: "end_date".into(),
                end_date: "2026-12-05".into(),
                action: "updated".into(),
                assets: vec![pb::LeaverAsset {
                    id: "EQ-1".into(),
                    name: "MacBook Pro".into(),
                    serial: "C02X".into(),
                }],
                ..Default::default()
            }],
            with_assets: 1,
            held_count: 0,
        };
        let text = to_text(&reply, false);
        assert!(
            text.contains("1 leavers in run r2, 1 still holding assets"),
            "{text}"
        );
        assert!(
            text.contains("Ada Lovelace (a1): end_date, ended 2026-12-05 — updated"),
            "{text}"
        );
        assert!(
            text.contains("asset EQ-1 MacBook Pro (serial C02X)"),
            "{text}"
        );
        let value = to_json(&reply, false);
        assert_eq!(value["leavers"][0]["assets"][0]["serial"], "C02X");
        assert_eq!(value["with_assets"], 1);
    }
}
