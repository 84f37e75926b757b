//! The shipped default integration: all 17 Sage People fields mapped, to Oomnitza system
//! fields where one fits and otherwise to custom fields with fixed ids and labels (which an
//! Oomnitza tenant, or the simulator, declares once). Email → Username and Email, a role
//! from `default_role`, and the seed's unique "Sage User ID" for ID. Only `source` and
//! `setting` mappings, so the per-record cost stays at the template-free minimum.

use crate::config::{
    FilterConfig, IntegrationConfig, IntegrationType, MappingEntry, MappingSource, Preference,
    ScheduleConfig,
};
use crate::smart::TargetField;

/// Id of the custom field "Sage User ID" (unique), mapped from ID.
pub const SAGE_USER_ID_FIELD: &str = "6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C";

/// The default config's custom fields: (id, label, mapped from integration field).
pub const DEFAULT_CUSTOM_FIELDS: [(&str, &str, &str); 14] = [
    (SAGE_USER_ID_FIELD, "Sage User ID", "ID"),
    ("90F9ECE5CF35465D81C0B0EFEA36B9B9", "Full Name", "Full Name"),
    (
        "C583F14DF518A47CFC81FA82D2BEEA81",
        "Department",
        "HR Department",
    ),
    (
        "79F6775B33FDA6C86A99064BFEFDCE5A",
        "Employment Name",
        "Employment Name",
    ),
    (
        "81B4B7565B7EAC89EDA804A0081232DD",
        "Employment Active",
        "Employment Active",
    ),
    (
        "E473495E0439123AB70EEAB2F302D943",
        "Start Date",
        "Start Date",
    ),
    ("95231F6736CCE3D415F4640310AD5C14", "End Date", "End Date"),
    (
        "B6A3AA2E8D50A3BFDDD3C75DB65A0E58",
        "Work Location",
        "Work Location",
    ),
    (
        "C7CF509BC913A2B9CB68E294F7008542",
        "Address Line 2",
        "Address line 2",
    ),
    (
        "3930E01B43E6EE3239F77ECE0679736E",
        "Address Line 3",
        "Address line 3",
    ),
    ("0B2DBA0D0F0FB3DD061E3A9B052D8280", "City", "City"),
    ("AFB80BE5C9E8734CAD3A5B691E0FBBCE", "Region", "Region"),
    (
        "60FC0AA45364C8F31A7A14ABCB8CEC61",
        "Postal Code",
        "Postal Code",
    ),
    ("E76904FECB7C27B3025753959C16C45F", "Country", "Country"),
];

/// A template for a one-line address from lines 1–3 (the default maps line 1 to ADDRESS and
/// keeps the default free of templates, which cost about 1 µs per record each).
pub const FULL_ADDRESS_TEMPLATE: &str =
    "{{ worker.address_line1 | concat(worker.address_line2, worker.address_line3, sep=', ') }}";

/// The custom fields of the default config, as a smart-mapping catalog would list them.
pub fn default_custom_fields() -> Vec<TargetField> {
    DEFAULT_CUSTOM_FIELDS
        .iter()
        .map(|(id, label, _)| {
            let field = TargetField::custom(*id, *label);
            if *id == SAGE_USER_ID_FIELD {
                field.unique()
            } else {
                field
            }
        })
        .collect()
}

/// The default config for integration `id`.
pub(crate) fn default_config(id: &str) -> IntegrationConfig {
    let source = |s: &str| MappingSource::Source(s.to_owned());
    let mut mapping = vec![
        MappingEntry::new("USER", source("Email")),
        MappingEntry::new("EMAIL", source("Email")),
        MappingEntry::new("FIRST_NAME", source("First Name")),
        MappingEntry::new("LAST_NAME", source("Last Name")),
        MappingEntry::new("POSITION", source("Job Title")),
        MappingEntry::new("ADDRESS", source("Address line 1")),
        MappingEntry::new(
            "PERMISSIONS_ID",
            MappingSource::Setting("default_role".to_owned()),
        ),
    ];
    mapping.extend(DEFAULT_CUSTOM_FIELDS.iter().map(|(field, label, from)| {
        let entry = MappingEntry::new(*field, source(from)).with_label(*label);
        if *field == SAGE_USER_ID_FIELD {
            entry.unique()
        } else {
            entry
        }
    }));
    IntegrationConfig {
        id: id.to_owned(),
        integration_type: IntegrationType::User,
        preference: Preference::CreateAndUpdate,
        sync_keys: vec!["EMAIL".to_owned()],
        default_role: Some("25".to_owned()),
        credentials: "default".to_owned(),
        source_filter: None,
        additional_fields: Vec::new(),
        schedule: ScheduleConfig {
            every: Some("24h".to_owned()),
            at: Some("02:00".to_owned()),
            timezone: None,
            cron: None,
        },
        filter: FilterConfig::default(),
        saas: None,
        leavers: crate::leavers::LeaverConfig::default(),
        mapping,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::IntegrationField;

    #[test]
    fn default_config_is_valid() {
        let config = IntegrationConfig::default_for("sage-people");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.sync_keys, ["EMAIL"]);
        assert_eq!(config.default_role.as_deref(), Some("25"));
        assert_eq!(config.credentials, "default");
    }

    #[test]
    fn default_config_maps_all_seventeen_fields() {
        let config = IntegrationConfig::default_for("sage-people");
        for field in IntegrationField::ALL {
            let label = field.label();
            let by_source = config
                .mapping
                .iter()
                .any(|m| matches!(&m.source, MappingSource::Source(s) if s == label));
            let by_template = config.mapping.iter().any(|m| {
                matches!(&m.source, MappingSource::Template(t) if t.contains(&format!("worker.{}", field.key())))
            });
            assert!(by_source || by_template, "{label} is not mapped");
        }
    }

    #[test]
    fn default_custom_fields_have_distinct_hex_ids_and_labels() {
        let mut ids: Vec<&str> = DEFAULT_CUSTOM_FIELDS.iter().map(|f| f.0).collect();
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()))
        );
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), DEFAULT_CUSTOM_FIELDS.len());
        assert!(
            default_custom_fields()
                .iter()
                .any(|f| f.label == "Sage User ID" && f.unique)
        );
    }
}
