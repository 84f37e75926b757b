//! A leaver's update (`[[leavers.set]]`): posted as an update-only bulk record into the run's
//! portion, then confirmed by reading the user back, since Oomnitza applies bulk records
//! asynchronously. A redelivered update is not posted again while the run log shows the run's
//! records processing, and one the run log names as failed is dead-lettered with its reason.

use peoplesync_oomnitza::{BulkRequest, OomnitzaClient, read_attribute};
use serde_json::Value;

use super::{Failed, Found, from_oomnitza};
use crate::pipeline::Item;

/// Pauses before each read of a leaver's user after its update was posted (Oomnitza applies bulk
/// records asynchronously, usually within a second).
const READ_BACK_WAITS: [std::time::Duration; 4] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(300),
    std::time::Duration::from_millis(600),
    std::time::Duration::from_millis(1000),
];

/// How long after the worker was read a leaver's update may wait for Oomnitza to process the
/// run's records without counting towards a dead letter; then it is retried as any failure.
pub(super) const PROCESSING_PATIENCE: std::time::Duration =
    std::time::Duration::from_secs(6 * 3600);

/// Posts a leaver's update `record` into the run's portion and waits for a read of the user to
/// show `fields`. Oomnitza applies bulk records afterwards; until a read shows the update the
/// event comes back. A redelivery does not post again while the run log shows records of the
/// run processing (its earlier post may be among them, and each new post would keep the count
/// up): it waits for them, for at most [`PROCESSING_PATIENCE`] after the worker was read. The
/// copy requeued after `max_deliver` deliveries counts as a first delivery and posts once.
pub(super) async fn post_update(
    client: &OomnitzaClient,
    item: &Item,
    found: &Found<'_>,
    (worker_id, ident): (&str, &str),
    record: &serde_json::Map<String, Value>,
    fields: &serde_json::Map<String, Value>,
) -> Result<(), Failed> {
    let who = [Some(worker_id), record.get("USER").and_then(Value::as_str)];
    if item.delivered > 1 {
        match after_the_post(client, item, ident, &who).await {
            Some(Failed::Processing(_)) => {
                return Err(Failed::Processing(format!(
                    "the leaver update of user {ident} does not show yet, and Oomnitza is \
                     still processing records of the run; not posting it again meanwhile"
                )));
            }
            Some(refused @ Failed::Dead(..)) => return Err(refused),
            _ => {}
        }
    }
    let sync_field = [found.field.to_owned()];
    client
        .post_bulk(&BulkRequest {
            portion: &item.key.run_id,
            sync_field: &sync_field,
            insert_only: false,
            update_only: true,
            records: std::slice::from_ref(record),
            error: None,
        })
        .await
        .map_err(|err| match crate::deliver::is_envelope_refusal(&err) {
            true => Failed::Refused(err),
            false => from_oomnitza(err),
        })?;
    let mut missing = Vec::new();
    for wait in READ_BACK_WAITS {
        tokio::time::sleep(wait).await;
        let back = client
            .find_user_by(found.attribute, worker_id)
            .await
            .map_err(from_oomnitza)?;
        missing = not_shown(fields, back.first());
        if missing.is_empty() {
            return Ok(());
        }
    }
    let reason = format!(
        "Oomnitza accepted the leaver update of user {ident}, but reading the user back does not show {} yet",
        missing.join(", ")
    );
    Err(match after_the_post(client, item, ident, &who).await {
        Some(Failed::Processing(processing)) => {
            Failed::Processing(format!("{reason}; {processing}"))
        }
        Some(refused) => refused,
        None => Failed::Retry(reason),
    })
}

/// What the run log of `item`'s run says of a leaver update posted earlier that a read does
/// not show: Oomnitza failed it, naming the user by one of `who` (dead-lettered with its
/// reason: posting it again would fail the same way, each post making the run log show it
/// processing again); or it shows records processing, which at the end of a large run may be
/// thousands before this one (the leaver waits without counting towards a dead letter, for at
/// most [`PROCESSING_PATIENCE`] after its worker was read); or neither (`None`).
async fn after_the_post(
    client: &OomnitzaClient,
    item: &Item,
    ident: &str,
    who: &[Option<&str>],
) -> Option<Failed> {
    let log = client.run_log(&item.key.run_id).await.ok()?;
    if let Some(message) = who.iter().flatten().find_map(|v| log.failure_naming(v)) {
        return Some(Failed::Dead(
            format!(
                "Oomnitza did not apply the leaver update of user {ident}: {message}; fix the \
                 leavers.set values (or the tenant), then `syncctl dlq replay` this letter"
            ),
            None,
        ));
    }
    let waited = chrono::Utc::now().timestamp_millis() - item.observed_at_ms;
    let patient = u64::try_from(waited).is_ok_and(|ms| ms < PROCESSING_PATIENCE.as_millis() as u64);
    (patient && log.counts.processing > 0).then(|| {
        Failed::Processing(format!(
            "Oomnitza is still processing {} records of the run",
            log.counts.processing
        ))
    })
}

/// Whether `user` (as read) shows every field of `sent` with the value sent; a field the read
/// does not carry is not shown.
pub(super) fn shows_all(sent: &serde_json::Map<String, Value>, user: &Value) -> bool {
    sent.iter().all(|(field, value)| {
        let attribute = read_attribute(field);
        user.get(&attribute)
            .is_some_and(|shown| same(&attribute, shown, value))
    })
}

/// Whether a read's `shown` value of `attribute` is `sent`, compared as text; usernames and
/// e-mails ignoring case ([`peoplesync_oomnitza::CASELESS_ATTRIBUTES`]).
fn same(attribute: &str, shown: &Value, sent: &Value) -> bool {
    let (shown, sent) = (as_text(shown), as_text(sent));
    if peoplesync_oomnitza::CASELESS_ATTRIBUTES.contains(&attribute) {
        shown.to_lowercase() == sent.to_lowercase()
    } else {
        shown == sent
    }
}

/// The fields of `sent` that `user` (as read back) does not show with the value sent,
/// compared as text (an object, such as a role, by its `id`). A field whose attribute the read
/// does not carry at all cannot be compared and is passed over, as the run's check does; with
/// no user, every field is missing.
pub(super) fn not_shown(
    sent: &serde_json::Map<String, Value>,
    user: Option<&Value>,
) -> Vec<String> {
    sent.iter()
        .filter(|(field, value)| match user {
            None => true,
            Some(user) => {
                let attribute = read_attribute(field);
                user.get(&attribute)
                    .is_some_and(|shown| !same(&attribute, shown, value))
            }
        })
        .map(|(field, _)| field.clone())
        .collect()
}

/// A value as text for comparing what was sent with what a read shows: strings trimmed, null
/// as empty, an object (a role read as one) by its `id`, anything else as JSON.
fn as_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.trim().to_owned(),
        Value::Object(o) => o.get("id").map(as_text).unwrap_or_default(),
        other => other.to_string(),
    }
}
