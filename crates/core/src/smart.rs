//! Smart mapping: proposes a mapping from the source fields (the 17 integration fields, the
//! tracking fields and additional fields seen) to a target catalog (Oomnitza's system user
//! fields plus the tenant's custom fields), with a confidence per entry. Matching is by
//! normalised-name similarity plus a synonym table; the role comes from `default_role`, and
//! ID goes to the unique "Sage User ID" custom field Oomnitza's own Sage People integration
//! recommends.

use crate::config::{MappingEntry, MappingSource};
use crate::names::{normalise, similarity};
use crate::source::{CONNECT_CREDENTIALS, CONNECT_HOSTNAME};
use crate::validate::ROLE_FIELD;
use crate::worker::IntegrationField;

/// The label of the custom field Oomnitza's own Sage People integration recommends for ID.
pub const SAGE_USER_ID_LABEL: &str = "Sage User ID";
/// Below this, a name similarity is not proposed.
const MIN_SIMILARITY: f64 = 0.75;

/// One Oomnitza user field that a mapping can target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetField {
    /// Field id: `EMAIL`, or a custom field's 32-hex id.
    pub id: String,
    /// Name shown in Oomnitza: "Email", "Sage User ID".
    pub label: String,
    /// A system field (as opposed to a custom field).
    pub system: bool,
    /// Declared unique in Oomnitza.
    pub unique: bool,
}

impl TargetField {
    /// A custom field.
    pub fn custom(id: impl Into<String>, label: impl Into<String>) -> TargetField {
        TargetField {
            id: id.into(),
            label: label.into(),
            system: false,
            unique: false,
        }
    }

    /// Marks the field unique.
    pub fn unique(mut self) -> TargetField {
        self.unique = true;
        self
    }

    /// Oomnitza's system user fields.
    pub fn system_user_fields() -> Vec<TargetField> {
        [
            ("USER", "Username", true),
            ("EMAIL", "Email", true),
            ("FIRST_NAME", "First Name", false),
            ("LAST_NAME", "Last Name", false),
            ("PHONE", "Phone", false),
            ("POSITION", "Position", false),
            ("ADDRESS", "Address", false),
            (ROLE_FIELD, "Role", false),
        ]
        .into_iter()
        .map(|(id, label, unique)| TargetField {
            id: id.to_owned(),
            label: label.to_owned(),
            system: true,
            unique,
        })
        .collect()
    }
}

/// One proposed mapping entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The entry, ready for the config (`field` is empty when `creates_field`).
    pub entry: MappingEntry,
    /// How sure the match is, from 0 to 1.
    pub confidence: f64,
    /// Why it was proposed.
    pub reason: String,
    /// The target does not exist yet: create it in Oomnitza (with `entry.label`, unique when
    /// `entry.unique`), then put its id in `entry.field`.
    pub creates_field: bool,
}

/// (source label, target names, confidence): curated matches that names alone miss.
const SYNONYMS: &[(&str, &[&str], f64)] = &[
    ("Email", &["USER", "Username", "User Name", "Login"], 0.95),
    ("Email", &["Email Address", "E-mail", "Work Email"], 0.95),
    ("Job Title", &["POSITION", "Title", "Job"], 0.95),
    ("ID", &[SAGE_USER_ID_LABEL], 1.0),
    (
        "ID",
        &[
            "Employee ID",
            "Employee Number",
            "Worker ID",
            "Sage ID",
            "HR ID",
        ],
        0.9,
    ),
    ("First Name", &["Given Name", "Forename"], 0.9),
    ("Last Name", &["Surname", "Family Name"], 0.9),
    (
        "Full Name",
        &["Name", "Display Name", "Employee Name"],
        0.85,
    ),
    ("HR Department", &["Department", "Dept", "Team"], 0.9),
    (
        "Employment Active",
        &["Active", "Is Active", "Employee Status", "Status"],
        0.8,
    ),
    (
        "Start Date",
        &["Hire Date", "Date Hired", "Joining Date"],
        0.9,
    ),
    (
        "End Date",
        &["Termination Date", "Leave Date", "Leaving Date"],
        0.9,
    ),
    ("Work Location", &["Location", "Office", "Site"], 0.9),
    (
        "Address line 1",
        &["ADDRESS", "Street", "Street Address"],
        0.8,
    ),
    (
        "Postal Code",
        &["Zip", "Zip Code", "Postcode", "Post Code"],
        0.9,
    ),
    ("Region", &["State", "Province", "County"], 0.85),
    ("City", &["Town"], 0.85),
    ("Employment Name", &["Employment", "Contract"], 0.75),
];

/// Proposes a mapping of the standard sources plus `additional_fields` onto `targets`.
///
/// Each target gets at most one source; a source gets one target unless the matches are
/// near-certain (Email → USER and EMAIL). PERMISSIONS_ID is proposed as
/// `setting = "default_role"`. ID goes to a "Sage User ID"-like target, or to a new unique
/// "Sage User ID" field (`creates_field`). Results follow the integration's field order.
pub fn suggest_mapping(additional_fields: &[String], targets: &[TargetField]) -> Vec<Suggestion> {
    let sources: Vec<&str> = IntegrationField::ALL
        .iter()
        .map(|f| f.label())
        .chain([CONNECT_CREDENTIALS, CONNECT_HOSTNAME])
        .chain(
            additional_fields
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty()),
        )
        .collect();

    // Every plausible (source, target) pair with its score and reason.
    let mut pairs: Vec<(usize, usize, f64, String)> = Vec::new();
    for (si, source) in sources.iter().enumerate() {
        for (ti, target) in targets.iter().enumerate() {
            if target.id == ROLE_FIELD {
                continue;
            }
            if let Some(p) = score(source, target) {
                pairs.push((si, ti, p.0, p.1));
            }
        }
    }
    // Best first; ties keep source order, then catalog order.
    pairs.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));

    let mut target_taken = vec![false; targets.len()];
    let mut source_uses = vec![0usize; sources.len()];
    let mut chosen: Vec<(usize, usize, f64, String)> = Vec::new();
    for (si, ti, confidence, reason) in pairs {
        if target_taken[ti] || (source_uses[si] > 0 && confidence < 0.9) {
            continue;
        }
        target_taken[ti] = true;
        source_uses[si] += 1;
        chosen.push((si, ti, confidence, reason));
    }
    chosen.sort_by_key(|c| (c.0, c.1));

    let mut out: Vec<Suggestion> = chosen
        .into_iter()
        .map(|(si, ti, confidence, reason)| {
            let target = &targets[ti];
            let is_id = sources[si] == IntegrationField::Id.label();
            let mut entry = MappingEntry::new(
                target.id.clone(),
                MappingSource::Source(sources[si].to_owned()),
            );
            if !target.system {
                entry.label = Some(target.label.clone());
            }
            entry.unique = target.unique || is_id;
            Suggestion {
                entry,
                confidence,
                reason,
                creates_field: false,
            }
        })
        .collect();

    let id_mapped = out
        .iter()
        .any(|s| matches!(&s.entry.source, MappingSource::Source(n) if n == "ID"));
    if !id_mapped {
        // ID is the first integration field, so its suggestion comes first.
        out.insert(
            0,
            Suggestion {
                entry: MappingEntry::new(String::new(), MappingSource::Source("ID".to_owned()))
                    .with_label(SAGE_USER_ID_LABEL)
                    .unique(),
                confidence: 1.0,
                reason: "Oomnitza's own Sage People integration recommends a unique custom field \"Sage User ID\" for ID; create it in Oomnitza and use its id".to_owned(),
                creates_field: true,
            },
        );
    }
    if let Some(role) = targets.iter().find(|t| t.id == ROLE_FIELD) {
        out.push(Suggestion {
            entry: MappingEntry::new(
                role.id.clone(),
                MappingSource::Setting("default_role".to_owned()),
            ),
            confidence: 1.0,
            reason: "a role is required; every loaded user gets default_role".to_owned(),
            creates_field: false,
        });
    }
    out
}

/// How well `source` fits `target`, and why; `None` when not plausible.
fn score(source: &str, target: &TargetField) -> Option<(f64, String)> {
    let (label, id) = (normalise(&target.label), normalise(&target.id));
    let mut best: Option<(f64, String)> = None;
    let mut consider = |score: f64, reason: String| {
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, reason));
        }
    };
    for (from, names, confidence) in SYNONYMS {
        if *from == source
            && names.iter().any(|n| {
                let n = normalise(n);
                n == label || n == id
            })
        {
            consider(*confidence, format!("synonym: {source} → {}", target.label));
        }
    }
    let by_name = similarity(source, &target.label).max(similarity(source, &target.id));
    if by_name >= MIN_SIMILARITY {
        let reason = if by_name >= 1.0 {
            format!("same name: {source} → {}", target.label)
        } else {
            format!(
                "similar name: {source} → {} ({:.0}%)",
                target.label,
                by_name * 100.0
            )
        };
        consider(by_name, reason);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::{SAGE_USER_ID_FIELD, default_custom_fields};

    fn catalog() -> Vec<TargetField> {
        let mut targets = TargetField::system_user_fields();
        targets.extend(default_custom_fields());
        targets
    }

    fn target_of<'a>(suggestions: &'a [Suggestion], source: &str) -> Vec<&'a str> {
        suggestions
            .iter()
            .filter(|s| matches!(&s.entry.source, MappingSource::Source(n) if n == source))
            .map(|s| s.entry.field.as_str())
            .collect()
    }

    #[test]
    fn email_goes_to_username_and_email() {
        let s = suggest_mapping(&[], &catalog());
        assert_eq!(target_of(&s, "Email"), ["USER", "EMAIL"]);
    }

    #[test]
    fn every_integration_field_gets_a_suggestion_with_the_default_catalog() {
        let s = suggest_mapping(&[], &catalog());
        let expected = [
            ("ID", SAGE_USER_ID_FIELD),
            ("Full Name", "90F9ECE5CF35465D81C0B0EFEA36B9B9"),
            ("First Name", "FIRST_NAME"),
            ("Last Name", "LAST_NAME"),
            ("HR Department", "C583F14DF518A47CFC81FA82D2BEEA81"),
            ("Job Title", "POSITION"),
            ("Employment Name", "79F6775B33FDA6C86A99064BFEFDCE5A"),
            ("Employment Active", "81B4B7565B7EAC89EDA804A0081232DD"),
            ("Start Date", "E473495E0439123AB70EEAB2F302D943"),
            ("End Date", "95231F6736CCE3D415F4640310AD5C14"),
            ("Work Location", "B6A3AA2E8D50A3BFDDD3C75DB65A0E58"),
            ("Address line 1", "ADDRESS"),
            ("City", "0B2DBA0D0F0FB3DD061E3A9B052D8280"),
            ("Region", "AFB80BE5C9E8734CAD3A5B691E0FBBCE"),
            ("Postal Code", "60FC0AA45364C8F31A7A14ABCB8CEC61"),
            ("Country", "E76904FECB7C27B3025753959C16C45F"),
        ];
        for (source, field) in expected {
            assert_eq!(target_of(&s, source), [field], "{source}");
        }
        assert_eq!(
            target_of(&s, "Address line 2"),
            ["C7CF509BC913A2B9CB68E294F7008542"]
        );
        assert_eq!(
            target_of(&s, "Address line 3"),
            ["3930E01B43E6EE3239F77ECE0679736E"]
        );
        for suggestion in &s {
            assert!((0.0..=1.0).contains(&suggestion.confidence));
            assert!(!suggestion.reason.is_empty());
        }
    }

    #[test]
    fn role_is_proposed_from_default_role() {
        let s = suggest_mapping(&[], &catalog());
        let role = s
            .iter()
            .find(|s| s.entry.field == "PERMISSIONS_ID")
            .unwrap();
        assert_eq!(
            role.entry.source,
            MappingSource::Setting("default_role".into())
        );
        assert_eq!(role.confidence, 1.0);
    }

    #[test]
    fn id_goes_to_an_existing_sage_user_id_field_as_unique() {
        let s = suggest_mapping(&[], &catalog());
        let id = s
            .iter()
            .find(|s| s.entry.field == SAGE_USER_ID_FIELD)
            .unwrap();
        assert!(id.entry.unique);
        assert_eq!(id.entry.label.as_deref(), Some("Sage User ID"));
        assert_eq!(id.confidence, 1.0);
        assert!(!id.creates_field);
    }

    #[test]
    fn without_a_sage_user_id_field_a_new_unique_one_is_proposed() {
        let s = suggest_mapping(&[], &TargetField::system_user_fields());
        let id = s.iter().find(|s| s.creates_field).unwrap();
        assert_eq!(id.entry.source, MappingSource::Source("ID".into()));
        assert_eq!(id.entry.label.as_deref(), Some("Sage User ID"));
        assert!(id.entry.unique);
        assert!(id.entry.field.is_empty());
    }

    #[test]
    fn synonyms_match_names_that_differ() {
        let targets = vec![
            TargetField::custom("A1", "Hire Date"),
            TargetField::custom("A2", "Zip Code"),
            TargetField::custom("A3", "Employee Number"),
            TargetField::custom("A4", "Office"),
        ];
        let s = suggest_mapping(&[], &targets);
        assert_eq!(target_of(&s, "Start Date"), ["A1"]);
        assert_eq!(target_of(&s, "Postal Code"), ["A2"]);
        assert_eq!(target_of(&s, "ID"), ["A3"]);
        assert_eq!(target_of(&s, "Work Location"), ["A4"]);
        let hire = s.iter().find(|s| s.entry.field == "A1").unwrap();
        assert!(hire.reason.starts_with("synonym"), "{}", hire.reason);
        assert!(hire.confidence < 1.0);
    }

    #[test]
    fn additional_and_tracking_fields_match_by_name() {
        let targets = vec![
            TargetField::custom("B1", "Cost Center"),
            TargetField::custom("B2", "Connect Hostname"),
        ];
        let s = suggest_mapping(&["Cost Centre".to_owned()], &targets);
        assert_eq!(target_of(&s, "Cost Centre"), ["B1"]);
        assert_eq!(target_of(&s, "Connect: Hostname"), ["B2"]);
        let cost = s.iter().find(|s| s.entry.field == "B1").unwrap();
        assert!(cost.confidence >= 0.75 && cost.confidence < 1.0);
    }

    #[test]
    fn unrelated_targets_get_no_suggestion() {
        let targets = vec![TargetField::custom("C1", "Favourite Colour")];
        let s = suggest_mapping(&[], &targets);
        assert!(s.iter().all(|s| s.entry.field != "C1"));
    }

    #[test]
    fn suggestions_build_a_valid_config_with_the_default_catalog() {
        let mut config = crate::config::IntegrationConfig::default_for("smart");
        config.mapping = suggest_mapping(&[], &catalog())
            .into_iter()
            .map(|s| s.entry)
            .collect();
        assert_eq!(config.validate(), Ok(()));
    }
}
