//! Listing employees page by page with the stateless `marker`: each page is decoded in one serde
//! pass into raw JSON records, which the extractor normalises and publishes as they are.

use serde::Deserialize;
use serde_json::Value;

use crate::client::{Call, SageClient};
use crate::error::{Error, ErrorKind};
use crate::limits::ApiUsage;

/// Path of the Employees API under the instance URL.
pub(crate) const EMPLOYEES_PATH: [&str; 5] = ["services", "apexrest", "spapi", "v4", "employees"];

/// One page of employees.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// The employees as Sage People sent them, in ascending `id` order. Empty at the end of the
    /// list (a `204 No Content` or an empty `data` array).
    pub records: Vec<Value>,
    /// The org's API usage reported with this page.
    pub api_usage: Option<ApiUsage>,
}

impl Page {
    /// Whether this page ends the list.
    pub fn is_end(&self) -> bool {
        self.records.is_empty()
    }

    /// The marker that continues the list after this page: the last employee's `id`.
    /// `None` at the end of the list.
    pub fn next_marker(&self) -> Option<&str> {
        self.records.last()?.get("id")?.as_str()
    }
}

/// The Employees API envelope; `version` and any other member are skipped without being built.
#[derive(Deserialize)]
struct Envelope {
    pub data: Vec<Value>,
}

/// Maps a body that would not decode: a body that ends early was cut off in transit
/// ([`ErrorKind::Transient`]); anything else is not the documented shape, as a proxy's own
/// page is not ([`ErrorKind::Undecodable`]). Both are retried, and both leave a run resumable.
/// A body that decodes but breaks the listing's contract is an [`ErrorKind::InvalidResponse`]
/// instead.
pub(crate) fn decode_error(error: serde_json::Error, host: &str, what: &str) -> Error {
    let (kind, detail) = if error.is_eof() {
        (ErrorKind::Transient, "was cut off")
    } else {
        (ErrorKind::Undecodable, "is not the documented shape")
    };
    Error::new(
        kind,
        format!(
            "the answer of Sage People at {host} to {what} {detail} ({error}); if this persists, \
             report it to the peoplesync maintainers with the Sage People version"
        ),
    )
    .with_source(error)
}

/// Decodes one page's body: the records, checked so that the listing can go on — its last
/// employee has a string `id`, and that id is past `marker` (records come in ascending `id`
/// order, so a page that does not move on would be read again and again).
fn decode_page(
    status: u16,
    body: &[u8],
    marker: Option<&str>,
    host: &str,
    what: &str,
) -> Result<Vec<Value>, Error> {
    if status == 204 {
        return Ok(Vec::new());
    }
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|error| decode_error(error, host, what))?;
    let records = envelope.data;
    let Some(last) = records.last() else {
        return Ok(records);
    };
    let Some(last) = last.get("id").and_then(Value::as_str) else {
        return Err(Error::new(
            ErrorKind::InvalidResponse,
            format!(
                "the answer of Sage People at {host} to {what} ends with an employee without a \
                 string `id`, so the listing cannot continue; report it to the peoplesync \
                 maintainers with the Sage People version"
            ),
        ));
    };
    // Going back is judged under both byte order and case-blind order (the reference says
    // "by id, ascending" without naming the collation), so only a page that repeats its marker
    // or goes back under both readings is refused.
    if let Some(marker) = marker
        && (last == marker
            || (last < marker && last.to_ascii_lowercase() < marker.to_ascii_lowercase()))
    {
        return Err(Error::new(
            ErrorKind::InvalidResponse,
            format!(
                "the answer of Sage People at {host} to {what} ends with employee {last}, which \
                 is not past the marker, so the listing would not move on; report it to the \
                 peoplesync maintainers with the Sage People version"
            ),
        ));
    }
    Ok(records)
}

impl SageClient {
    /// Reads the page after `marker` (the first page when `None`), optionally filtered with a
    /// `$filter` expression such as `workAddress.country eq 'France'`.
    ///
    /// Transient failures are retried within the configured policy; an expired token is renewed
    /// once and the page re-read. An empty [`Page::records`] ends the list.
    pub async fn list_page(
        &self,
        marker: Option<&str>,
        filter: Option<&str>,
    ) -> Result<Page, Error> {
        let what = match marker {
            Some(marker) => format!("listing employees after {marker}"),
            None => "listing employees from the start".to_owned(),
        };
        let call = Call {
            what: &what,
            path: &EMPLOYEES_PATH,
            marker,
            filter,
            answers: &[],
        };
        self.call(&call, |reply| {
            Ok(Page {
                records: decode_page(reply.status, &reply.body, marker, &reply.host, &what)?,
                api_usage: reply.usage,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decodes_records_and_ignores_other_members() {
        let body =
            br#"{"version":"4.8","data":[{"id":"a1","fullName":null},{"id":"a2"}],"extra":{}}"#;
        let records = decode_page(200, body, None, "h", "listing").unwrap();
        assert_eq!(
            records,
            [json!({"id":"a1","fullName":null}), json!({"id":"a2"})]
        );
        let page = Page {
            records,
            api_usage: None,
        };
        assert_eq!(page.next_marker(), Some("a2"));
        assert!(!page.is_end());
    }

    #[test]
    fn both_endings_give_an_empty_page() {
        assert!(
            decode_page(204, b"", None, "h", "listing")
                .unwrap()
                .is_empty()
        );
        assert!(
            decode_page(200, br#"{"data":[]}"#, None, "h", "listing")
                .unwrap()
                .is_empty()
        );
        assert!(Page::default().is_end());
        assert_eq!(Page::default().next_marker(), None);
    }

    #[test]
    fn a_cut_off_body_is_transient() {
        let error =
            decode_page(200, br#"{"data":[{"id":"a1"},{"id":"#, None, "h", "listing").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
        let error = decode_page(200, b"", None, "h", "listing").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
    }

    #[test]
    fn a_body_that_is_not_the_documented_json_is_undecodable() {
        for body in [
            &br#"{"records":[]}"#[..],
            br#"{"data":{}}"#,
            b"<html>",
            b"<!DOCTYPE html><html><body>Please sign in</body></html>",
        ] {
            let error = decode_page(200, body, None, "h", "listing").unwrap_err();
            assert_eq!(
                error.kind(),
                ErrorKind::Undecodable,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(error.to_string().contains("not the documented shape"));
        }
    }

    #[test]
    fn a_page_ending_with_an_employee_without_a_string_id_is_an_invalid_response() {
        for body in [
            &br#"{"data":[{"name":"x"}]}"#[..],
            br#"{"data":[{"id":"a1"},{"id":7}]}"#,
        ] {
            let error = decode_page(200, body, None, "h", "listing").unwrap_err();
            assert_eq!(
                error.kind(),
                ErrorKind::InvalidResponse,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(error.to_string().contains("without a string `id`"));
        }
    }

    #[test]
    fn a_page_past_its_marker_under_a_case_blind_order_is_accepted() {
        // Byte order puts `Z` before `a`; a case-blind order puts it after.
        let body = br#"{"data":[{"id":"a2GZ"}]}"#;
        assert!(decode_page(200, body, Some("a2Ga"), "h", "listing").is_ok());
    }

    #[test]
    fn a_page_that_does_not_move_past_its_marker_is_an_invalid_response() {
        let body = br#"{"data":[{"id":"a1"},{"id":"a2"}]}"#;
        assert_eq!(
            decode_page(200, body, Some("a1"), "h", "listing")
                .unwrap()
                .len(),
            2
        );
        for marker in ["a2", "a3"] {
            let error = decode_page(200, body, Some(marker), "h", "listing").unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidResponse);
            assert!(error.to_string().contains("not past the marker"), "{error}");
        }
    }
}
