//! Reading one employee by id, for syncing a single worker on demand.

use serde_json::Value;

use crate::client::{Call, SageClient};
use crate::error::Error;
use crate::fault::Fault;
use crate::paging::decode_page;

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
            Ok(decode_page(reply.status, &reply.body, &reply.host, &what)?
                .into_iter()
                .next())
        })
        .await
    }
}

/// A `404` means "no such employee", unless Salesforce says the URL itself matches no Apex REST
/// service, which means the Employees API is not installed in this org.
fn missing_or_misrouted(body: &[u8], host: &str, what: &str) -> Result<Option<Value>, Error> {
    let fault = Fault::parse(body);
    let no_service = fault.code.as_deref() == Some("NOT_FOUND")
        && fault
            .message
            .as_deref()
            .is_some_and(|message| message.contains("Could not find a match for URL"));
    if no_service {
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
    use crate::error::ErrorKind;

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
}
