//! The normalised worker: the 17 fields of Oomnitza's Sage People integration, read from one
//! raw Sage People employee record (`GET /services/apexrest/spapi/v4/employees`).
//!
//! Normalising is forgiving: any field may be null, `currentEmployment` and `workAddress` may
//! be null as a whole, and blank strings count as absent. Only a record without an `id` cannot
//! be normalised, because nothing downstream could identify it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One worker, normalised. Absent values are `None`, never `""`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    /// Sage People employee id (`id`), e.g. `a2G7E000000LlIDUA0`.
    pub id: String,
    /// `fullName`.
    pub full_name: Option<String>,
    /// `firstName`.
    pub first_name: Option<String>,
    /// `lastName`.
    pub last_name: Option<String>,
    /// `emailAddress`, trimmed, in the case Sage People holds it: rewriting it would rename
    /// users created earlier with mixed case. Compare addresses ignoring case when matching.
    pub email: Option<String>,
    /// `hrDepartment`.
    pub hr_department: Option<String>,
    /// `currentEmployment.jobTitle`.
    pub job_title: Option<String>,
    /// `currentEmployment.name`.
    pub employment_name: Option<String>,
    /// `currentEmployment.active`.
    pub employment_active: Option<bool>,
    /// `currentEmployment.startDate` (`YYYY-MM-DD`).
    pub start_date: Option<String>,
    /// `currentEmployment.endDate` (`YYYY-MM-DD`).
    pub end_date: Option<String>,
    /// `workAddress.name`.
    pub work_location: Option<String>,
    /// `workAddress.line1`.
    pub address_line1: Option<String>,
    /// `workAddress.line2`.
    pub address_line2: Option<String>,
    /// `workAddress.line3`.
    pub address_line3: Option<String>,
    /// `workAddress.city`.
    pub city: Option<String>,
    /// `workAddress.region`.
    pub region: Option<String>,
    /// `workAddress.postalCode`.
    pub postal_code: Option<String>,
    /// `workAddress.country`.
    pub country: Option<String>,
}

/// Where a record came from: Oomnitza's tracking fields "Connect: Credentials" and
/// "Connect: Hostname".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracking {
    /// Name of the extractor's credential set used to read the record.
    pub credentials: String,
    /// The Sage People (Salesforce) host the record was read from.
    pub hostname: String,
}

/// Why a raw record could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormaliseError {
    /// The record is not a JSON object.
    #[error("employee record is not a JSON object")]
    NotAnObject,
    /// The record has no usable `id`.
    #[error("employee record has no `id`")]
    MissingId,
    /// The record's `id` cannot name the worker on the bus (the reason says why).
    #[error("employee record's id cannot be used: {0}")]
    UnusableId(String),
}

/// The 17 fields of the integration, in the order of Oomnitza's field list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrationField {
    /// ID
    Id,
    /// Full Name
    FullName,
    /// First Name
    FirstName,
    /// Last Name
    LastName,
    /// Email
    Email,
    /// HR Department
    HrDepartment,
    /// Job Title
    JobTitle,
    /// Employment Name
    EmploymentName,
    /// Employment Active
    EmploymentActive,
    /// Start Date
    StartDate,
    /// End Date
    EndDate,
    /// Work Location
    WorkLocation,
    /// Address line 1
    AddressLine1,
    /// Address line 2
    AddressLine2,
    /// Address line 3
    AddressLine3,
    /// City
    City,
    /// Region
    Region,
    /// Postal Code
    PostalCode,
    /// Country
    Country,
}

impl IntegrationField {
    /// Every integration field, in Oomnitza's order.
    pub const ALL: [IntegrationField; 19] = [
        Self::Id,
        Self::FullName,
        Self::FirstName,
        Self::LastName,
        Self::Email,
        Self::HrDepartment,
        Self::JobTitle,
        Self::EmploymentName,
        Self::EmploymentActive,
        Self::StartDate,
        Self::EndDate,
        Self::WorkLocation,
        Self::AddressLine1,
        Self::AddressLine2,
        Self::AddressLine3,
        Self::City,
        Self::Region,
        Self::PostalCode,
        Self::Country,
    ];

    /// The field's name as Oomnitza's integration shows it ("Job Title").
    pub fn label(self) -> &'static str {
        match self {
            Self::Id => "ID",
            Self::FullName => "Full Name",
            Self::FirstName => "First Name",
            Self::LastName => "Last Name",
            Self::Email => "Email",
            Self::HrDepartment => "HR Department",
            Self::JobTitle => "Job Title",
            Self::EmploymentName => "Employment Name",
            Self::EmploymentActive => "Employment Active",
            Self::StartDate => "Start Date",
            Self::EndDate => "End Date",
            Self::WorkLocation => "Work Location",
            Self::AddressLine1 => "Address line 1",
            Self::AddressLine2 => "Address line 2",
            Self::AddressLine3 => "Address line 3",
            Self::City => "City",
            Self::Region => "Region",
            Self::PostalCode => "Postal Code",
            Self::Country => "Country",
        }
    }

    /// The field's snake_case name, as templates see it under `worker.`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::FullName => "full_name",
            Self::FirstName => "first_name",
            Self::LastName => "last_name",
            Self::Email => "email",
            Self::HrDepartment => "hr_department",
            Self::JobTitle => "job_title",
            Self::EmploymentName => "employment_name",
            Self::EmploymentActive => "employment_active",
            Self::StartDate => "start_date",
            Self::EndDate => "end_date",
            Self::WorkLocation => "work_location",
            Self::AddressLine1 => "address_line1",
            Self::AddressLine2 => "address_line2",
            Self::AddressLine3 => "address_line3",
            Self::City => "city",
            Self::Region => "region",
            Self::PostalCode => "postal_code",
            Self::Country => "country",
        }
    }

    /// Looks a field up by its label, ignoring case ("job title" → `JobTitle`).
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.label().eq_ignore_ascii_case(label.trim()))
    }

    /// The field's value in `worker`, as JSON (`null` when absent).
    pub fn value(self, worker: &Worker) -> Value {
        match self.borrowed(worker) {
            FieldRef::Text(text) => text.map_or(Value::Null, |s| Value::String(s.to_owned())),
            FieldRef::Flag(flag) => flag.map_or(Value::Null, Value::Bool),
        }
    }

    /// The field's value in `worker`, borrowed: each caller builds its own value type from it.
    pub(crate) fn borrowed(self, worker: &Worker) -> FieldRef<'_> {
        use FieldRef::{Flag, Text};
        match self {
            Self::Id => Text(Some(&worker.id)),
            Self::FullName => Text(worker.full_name.as_deref()),
            Self::FirstName => Text(worker.first_name.as_deref()),
            Self::LastName => Text(worker.last_name.as_deref()),
            Self::Email => Text(worker.email.as_deref()),
            Self::HrDepartment => Text(worker.hr_department.as_deref()),
            Self::JobTitle => Text(worker.job_title.as_deref()),
            Self::EmploymentName => Text(worker.employment_name.as_deref()),
            Self::EmploymentActive => Flag(worker.employment_active),
            Self::StartDate => Text(worker.start_date.as_deref()),
            Self::EndDate => Text(worker.end_date.as_deref()),
            Self::WorkLocation => Text(worker.work_location.as_deref()),
            Self::AddressLine1 => Text(worker.address_line1.as_deref()),
            Self::AddressLine2 => Text(worker.address_line2.as_deref()),
            Self::AddressLine3 => Text(worker.address_line3.as_deref()),
            Self::City => Text(worker.city.as_deref()),
            Self::Region => Text(worker.region.as_deref()),
            Self::PostalCode => Text(worker.postal_code.as_deref()),
            Self::Country => Text(worker.country.as_deref()),
        }
    }
}

/// One field's value in a worker, borrowed: every field is text but the employment flag.
pub(crate) enum FieldRef<'a> {
    /// A text field; `None` when absent.
    Text(Option<&'a str>),
    /// `currentEmployment.active`; `None` when absent.
    Flag(Option<bool>),
}

impl Worker {
    /// Normalises one raw Sage People employee record.
    pub fn from_raw(raw: &Value) -> Result<Worker, NormaliseError> {
        if !raw.is_object() {
            return Err(NormaliseError::NotAnObject);
        }
        let id = text_at(raw, &["id"]).ok_or(NormaliseError::MissingId)?;
        let employment = ["currentEmployment"];
        let address = ["workAddress"];
        let nested = |parent: &[&str; 1], key: &str| text_at(raw, &[parent[0], key]);
        Ok(Worker {
            id,
            full_name: text_at(raw, &["fullName"]),
            first_name: text_at(raw, &["firstName"]),
            last_name: text_at(raw, &["lastName"]),
            email: text_at(raw, &["emailAddress"]),
            hr_department: text_at(raw, &["hrDepartment"]),
            job_title: nested(&employment, "jobTitle"),
            employment_name: nested(&employment, "name"),
            employment_active: raw
                .get("currentEmployment")
                .and_then(|e| e.get("active"))
                .and_then(Value::as_bool),
            start_date: nested(&employment, "startDate"),
            end_date: nested(&employment, "endDate"),
            work_location: nested(&address, "name"),
            address_line1: nested(&address, "line1"),
            address_line2: nested(&address, "line2"),
            address_line3: nested(&address, "line3"),
            city: nested(&address, "city"),
            region: nested(&address, "region"),
            postal_code: nested(&address, "postalCode"),
            country: nested(&address, "country"),
        })
    }

    /// The worker as a JSON object with snake_case keys: the `worker` root of templates.
    pub fn to_json(&self) -> Value {
        Value::Object(
            IntegrationField::ALL
                .into_iter()
                .map(|f| (f.key().to_owned(), f.value(self)))
                .collect(),
        )
    }
}

/// The trimmed, non-empty text at `path`; numbers and booleans are rendered as text.
fn text_at(raw: &Value, path: &[&str]) -> Option<String> {
    let mut node = raw;
    for key in path {
        node = node.get(key)?;
    }
    let text = match node {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn full_record_maps_every_field() {
        // Ada, with padding around her e-mail address and a blank third address line: both are
        // tidied away.
        let mut raw = crate::fixtures::ada();
        raw["emailAddress"] = json!(" Ada.Lovelace@Example.com ");
        raw["workAddress"]["line3"] = json!("");
        let w = Worker::from_raw(&raw).unwrap();
        assert_eq!(w.id, "a2G7E000000LlIDUA0");
        assert_eq!(w.email.as_deref(), Some("Ada.Lovelace@Example.com"));
        assert_eq!(w.job_title.as_deref(), Some("Principal Engineer"));
        assert_eq!(w.employment_active, Some(true));
        assert_eq!(w.end_date, None);
        assert_eq!(w.address_line3, None, "blank strings count as absent");
        assert_eq!(w.postal_code.as_deref(), Some("EC1A 1AA"));
        assert_eq!(w.to_json()["work_location"], "London HQ");
    }

    #[test]
    fn null_employment_and_address_leave_their_fields_absent() {
        let raw = json!({"id": "x1", "currentEmployment": null, "workAddress": null});
        let w = Worker::from_raw(&raw).unwrap();
        assert_eq!(w.job_title, None);
        assert_eq!(w.employment_active, None);
        assert_eq!(w.city, None);
    }

    #[test]
    fn record_without_id_is_refused() {
        assert_eq!(
            Worker::from_raw(&json!({"fullName": "X"})),
            Err(NormaliseError::MissingId)
        );
        assert_eq!(
            Worker::from_raw(&json!([1, 2])),
            Err(NormaliseError::NotAnObject)
        );
    }

    #[test]
    fn labels_round_trip() {
        for f in IntegrationField::ALL {
            assert_eq!(IntegrationField::from_label(f.label()), Some(f));
        }
        assert_eq!(
            IntegrationField::from_label("job title"),
            Some(IntegrationField::JobTitle)
        );
    }
}
