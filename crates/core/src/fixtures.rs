//! Sample data shared by this crate's unit tests, property tests and benchmark, so that they
//! all start from one record. Not part of the API: other crates should not rely on it.

use serde_json::{Value, json};

use crate::{IntegrationConfig, MappingSource, Tracking};

/// Ada Lovelace's raw Sage People employee record: every field set but the employment's end
/// date and the third address line, the email address in mixed case, one additional field.
pub fn ada() -> Value {
    json!({
        "id": "a2G7E000000LlIDUA0", "fullName": "Ada Lovelace", "firstName": "Ada",
        "lastName": "Lovelace", "emailAddress": "Ada.Lovelace@Example.com",
        "hrDepartment": "Engineering",
        "currentEmployment": {"name": "2019.02 #35", "jobTitle": "Principal Engineer",
            "startDate": "2019-02-04", "endDate": null, "active": true},
        "workAddress": {"name": "London HQ", "line1": "1 Example Street", "line2": "Floor 2",
            "line3": null, "city": "London", "region": "EMEA",
            "postalCode": "EC1A 1AA", "country": "United Kingdom"},
        "additionalFields": [{"name": "Cost Centre", "value": "CC-104", "source": "fHCM2__Cost_Centre__c"}]
    })
}

/// The tracking of a record read with the `default` credentials from `acme.my.salesforce.com`.
pub fn tracking() -> Tracking {
    Tracking {
        credentials: "default".into(),
        hostname: "acme.my.salesforce.com".into(),
    }
}

/// `config` with `field` mapped from `template` instead of its own source.
///
/// # Panics
/// When `config` maps nothing to `field`: the caller's test would otherwise prove nothing.
pub fn with_template(
    mut config: IntegrationConfig,
    field: &str,
    template: &str,
) -> IntegrationConfig {
    let entry = config.mapping.iter_mut().find(|m| m.field == field);
    let Some(entry) = entry else {
        panic!("the config maps nothing to {field}");
    };
    entry.source = MappingSource::Template(template.to_owned());
    config
}
