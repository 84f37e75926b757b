//! Reading one employee by id, for syncing a single worker on demand, and asking Sage People
//! whether that employee passes a filter. The answer to a read is the OpenAPI's
//! `EmployeeResponse`: `data` holds one employee object, not a list.

use serde::Deserialize;
use serde_json::Value;

use crate::client::{Call, SageClient};
use crate::error::{Error, ErrorKind, answer_of};
use crate::fault::{Fault, refuses_filter};
use crate::paging::decode_error;

/// The single-employee envelope; `version` and other members are skipped.
#[derive(Deserialize)]
struct Envelope {
    data: Value,
}

impl SageClient {
    /// Reads the employee with this Sage People id; `Ok(None)` when Sage People does not know it.
    ///
    /// Retries, token renewal and error kinds are as for [`SageClient::list_page`].
    pub async fn get_employee(&self, id: &str) -> Result<Option<Value>, Error> {
        let what = format!("reading employee {id}");
        let path = ["services", "apexrest", "spapi", "v4", "employees", id];
        let call = Call {
            what: &what,
            path: &path,
            marker: None,
            filter: None,
            answers: &[404],
        };
        self.call(&call, |reply| {
            if reply.status == 404 {
                return missing_or_misrouted(&reply.body, &reply.host, &what);
            }
            decode_employee(reply.status, &reply.body, &reply.host, &what)
        })
        .await
    }

    /// Whether employee `id` passes `filter`, as Sage People itself judges it: the first page
    /// of the listing with `$filter=id eq '<id>' and (<filter>)` holds the employee or not.
    /// The org's own comparison rules (letter case, dates, nulls) apply, as in a full run with
    /// `filter`. Pass the id as Sage People names the employee (the `id` of the record read).
    ///
    /// Sage People does not publish whether its filters accept `id`. If it refuses the combined
    /// filter, the error (kind [`ErrorKind::Configuration`]) says that either `id` or `filter`
    /// itself was refused, and that whether the employee passes cannot be told.
    pub async fn passes_filter(&self, id: &str, filter: &str) -> Result<bool, Error> {
        // A quote inside a literal is written twice ('O''Brien').
        let combined = format!("id eq '{}' and ({filter})", id.replace('\'', "''"));
        let page = self
            .list_page(None, Some(&combined))
            .await
            .map_err(|error| {
                let refused = error.kind() == ErrorKind::Configuration
                    && error.code().is_some_and(refuses_filter);
                if !refused {
                    return error;
                }
                let message = format!(
                    "Sage People at {} refused the filter `{combined}` that asks whether \
                     employee {id} passes the integration's source_filter ({}): either its \
                     filters do not accept `id` (Sage People does not publish whether they do) \
                     or it refuses the source_filter itself (`syncctl check` reads a page with \
                     the source_filter alone and tells which); so whether employee {id} is \
                     inside the source_filter cannot be told",
                    self.hostname(),
                    answer_of(&error)
                );
                error.with_message(message)
            })?;
        Ok(page
            .records
            .iter()
            .any(|record| record.get("id").and_then(Value::as_str) == Some(id)))
    }
}

/// Decodes `{"data": {...}}`: the employee, checked to carry a string `id`.
fn decode_employee(
    status: u16,
    body: &[u8],
    host: &str,
    what: &str,
) -> Result<Option<Value>, Error> {
    if status == 204 {
        return Ok(None);
    }
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|error| decode_error(error, host, what))?;
    let shape = match &envelope.data {
        Value::Object(_) if envelope.data.get("id").and_then(Value::as_str).is_some() => {
            return Ok(Some(envelope.data));
        }
        Value::Object(_) => "an employee without a string `id`",
        Value::Array(_) => "a list where the Employees API 4.8 answers one employee object",
        _ => "no employee object in `data`",
    };
    Err(Error::new(
        ErrorKind::InvalidResponse,
        format!(
            "the answer of Sage People at {host} to {what} holds {shape}; report it to the \
             peoplesync maintainers with the Sage People version"
        ),
    ))
}

/// A `404` means "no such employee", unless its envelope carries a published inner code that
/// says the set-up is wrong (those are fatal whatever the status), or Salesforce says the URL
/// itself matches no Apex REST service, which means the Employees API is not installed in this
/// org.
fn missing_or_misrouted(body: &[u8], host: &str, what: &str) -> Result<Option<Value>, Error> {
    let fault = Fault::parse(body);
    let no_service = fault.code.as_deref() == Some("NOT_FOUND")
        && fault
            .message
            .as_deref()
            .is_some_and(|message| message.contains("Could not find a match for URL"));
    let set_up_wrong = fault
        .code
        .as_deref()
        .is_some_and(crate::fault::is_configuration_code);
    if no_service || set_up_wrong {
        return Err(crate::fault::classify_api(
            404,
            fault,
            &crate::fault::Request {
                host,
                what,
                filter: None,
                marker: None,
            },
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_employee_is_decoded_from_an_object_in_data() {
        let body = br#"{"version":"4.8","data":{"id":"a2G1","fullName":"Ada"}}"#;
        let employee = decode_employee(200, body, "h", "reading").unwrap();
        assert_eq!(
            employee,
            Some(serde_json::json!({"id":"a2G1","fullName":"Ada"}))
        );
    }

    #[test]
    fn a_list_or_an_employee_without_id_is_an_invalid_response() {
        for body in [
            &br#"{"data":[{"id":"a2G1"}]}"#[..],
            br#"{"data":{"fullName":"Ada"}}"#,
            br#"{"data":null}"#,
        ] {
            let error = decode_employee(200, body, "h", "reading").unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidResponse);
        }
    }

    #[test]
    fn a_plain_404_is_no_such_employee() {
        let body = br#"{"error":{"code":"REQUEST_ERROR","message":"Employee not found"}}"#;
        assert_eq!(missing_or_misrouted(body, "h", "reading").unwrap(), None);
        assert_eq!(missing_or_misrouted(b"", "h", "reading").unwrap(), None);
    }

    #[test]
    fn a_404_for_an_unknown_service_is_configuration() {
        let body = br#"[{"errorCode":"NOT_FOUND","message":"Could not find a match for URL"}]"#;
        let error = missing_or_misrouted(body, "h", "reading").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration);
    }

    #[test]
    fn a_404_with_a_published_set_up_code_is_configuration_not_a_missing_employee() {
        let body = br#"{"error":{"code":"SAGE_PEOPLE_CONFIGURATION","message":"No access",
            "innererror":{"code":"MISSING_API_PERMISSION"}}}"#;
        let error = missing_or_misrouted(body, "h", "reading").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration);
        assert!(error.to_string().contains("permission set"), "{error}");
        // A code a retry may cure is not taken for a set-up error.
        let body =
            br#"{"error":{"code":"REQUEST_ERROR","innererror":{"code":"UNKNOWN_EXCEPTION"}}}"#;
        assert_eq!(missing_or_misrouted(body, "h", "reading").unwrap(), None);
    }
}
