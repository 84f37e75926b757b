//! Turning what went wrong into gRPC statuses an operator can act on: bad input is
//! INVALID_ARGUMENT naming the field, NATS trouble is UNAVAILABLE naming what was asked, and
//! the extractor's own command errors keep their meaning.

use peoplesync_bus::BusError;
use peoplesync_bus::control::CommandError;
use tonic::Status;

/// NATS failed while doing `what`.
pub(crate) fn bus(what: &str, err: BusError) -> Status {
    Status::unavailable(format!(
        "{what}: {err}; the loader could not reach NATS JetStream — check that nats-server is up \
         and reachable from the loader (NATS_URL), then retry"
    ))
}

/// A KV or stream call failed while doing `what`.
pub(crate) fn nats(what: &str, err: impl std::fmt::Display) -> Status {
    Status::unavailable(format!(
        "{what}: {err}; check that nats-server is up and reachable from the loader, then retry"
    ))
}

/// How many items a listing request asks for: `default` for 0 (unset), never more than `max`.
pub(crate) fn limit(requested: u32, default: usize, max: usize) -> usize {
    match requested {
        0 => default,
        n => usize::try_from(n).unwrap_or(max).min(max),
    }
}

/// Checks an integration id from a request.
pub(crate) fn integration_id(id: &str) -> Result<&str, Status> {
    let id = id.trim();
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "integration_id is empty; name the integration, e.g. \"sage-people\"",
        ));
    }
    peoplesync_bus::names::validate_integration_id(id).map_err(Status::invalid_argument)?;
    Ok(id)
}

/// Checks a required, non-empty request field (a run or worker id).
pub(crate) fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is empty")));
    }
    if value.len() > 200 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Status::invalid_argument(format!(
            "{field} {value:?} is not an id (no spaces, at most 200 characters)"
        )));
    }
    Ok(value)
}

/// The extractor refused or failed a command.
pub(crate) fn command(integration: &str, command: &str, err: CommandError) -> Status {
    let message = format!(
        "the extractor of integration {integration} answered `{command}` with: {}",
        err.message
    );
    match err.code.as_str() {
        "invalid" => Status::invalid_argument(message),
        "not_found" => Status::not_found(message),
        "misconfigured" => misconfigured(format!(
            "{message}; fix the setting, then check with CheckIntegration (syncctl check)"
        )),
        "unavailable" => Status::unavailable(message),
        "failed" => Status::unavailable(format!(
            "{message}; see the extractor's log for Sage People or NATS errors, fix them and retry"
        )),
        _ => Status::unknown(message),
    }
}

/// A configuration problem: FAILED_PRECONDITION, marked with `peoplesync-error: misconfigured`
/// (see `peoplesync_proto::error_kind`).
pub(crate) fn misconfigured(message: String) -> Status {
    use peoplesync_proto::error_kind;
    let mut status = Status::failed_precondition(message);
    status.metadata_mut().insert(
        error_kind::KEY,
        tonic::metadata::MetadataValue::from_static(error_kind::MISCONFIGURED),
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_limit_is_the_default_and_none_passes_the_maximum() {
        assert_eq!(limit(0, 100, 1_000), 100);
        assert_eq!(limit(7, 100, 1_000), 7);
        assert_eq!(limit(5_000, 100, 1_000), 1_000);
        assert_eq!(limit(u32::MAX, 100, 1_000), 1_000);
    }
}
