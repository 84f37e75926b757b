//! Run ids as people type them: the full id, or its last characters as `syncctl runs` shows
//! them (`…21ea282df718`). A run id is a UUIDv7, whose first characters are a timestamp shared
//! by runs close in time and whose last twelve are random, so the tail is what tells runs apart.
//! Every command that names a run (`runs get`, `watch`, `leavers --run`, `dlq … --run`,
//! `approve-removals`) resolves it here, so a tail works everywhere and a run no one has is
//! NOT_FOUND (exit 4) rather than an empty answer.

use peoplesync_proto::v1 as pb;

use crate::client::{Client, Failure, exit, request};

/// Characters of a run id the runs table shows.
pub const SHOWN: usize = 12;
/// Characters of a full run id.
const FULL: usize = 36;
/// Runs searched for a short id.
const SEARCHED: u32 = 500;

/// How the runs table shows `run_id`.
pub fn short(run_id: &str) -> String {
    let chars: Vec<char> = run_id.chars().collect();
    if chars.len() <= SHOWN {
        return run_id.to_owned();
    }
    let tail: String = chars[chars.len() - SHOWN..].iter().collect();
    format!("…{tail}")
}

/// The full id of the run `typed` names: itself when it is a full id, else the one run of
/// `integration` (among the newest 500) whose id ends with it.
pub async fn resolve(
    client: &mut Client,
    integration: &str,
    typed: &str,
) -> Result<String, Failure> {
    let typed = typed
        .trim()
        .trim_start_matches('…')
        .trim_start_matches("...");
    if typed.chars().count() >= FULL {
        return Ok(typed.to_owned());
    }
    if typed.chars().count() < 4 {
        return Err(Failure::usage(format!(
            "run id {typed:?} is too short; give the full id or at least its last 4 characters"
        )));
    }
    let runs = client
        .list_runs(request(pb::ListRunsRequest {
            integration_id: integration.to_owned(),
            limit: SEARCHED,
        }))
        .await?
        .into_inner()
        .runs;
    let matching: Vec<&str> = runs
        .iter()
        .map(|r| r.run_id.as_str())
        .filter(|id| id.ends_with(typed))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "no run of {integration} ends with {typed:?} (among the newest {SEARCHED}); list runs with \
                 `syncctl runs`, or give the full id of a run no longer listed"
            ),
        )),
        several => Err(Failure::usage(format!(
            "{typed:?} ends {} runs of {integration}: {}; give more characters",
            several.len(),
            several.join(", ")
        ))),
    }
}

/// The full id of an optional `--run`: [`resolve`] when one is given.
pub async fn resolve_given(
    client: &mut Client,
    integration: &str,
    typed: Option<&str>,
) -> Result<Option<String>, Failure> {
    match typed {
        Some(typed) => resolve(client, integration, typed).await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_random_tail_is_shown() {
        assert_eq!(
            short("01a24c54-63bf-77aa-a0cf-21ea282df718"),
            "…21ea282df718"
        );
        assert_eq!(short("abc"), "abc");
    }
}
