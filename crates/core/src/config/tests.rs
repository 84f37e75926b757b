//! Parsing and validation: every message, on TOML an operator could write.

use serde_json::json;

use super::*;

/// The issue's example config, completed with the required fields.
const EXAMPLE: &str = r#"
id = "sage-people"
type = "user"
preference = "create_and_update"
sync_keys = ["EMAIL"]
default_role = "25"
credentials = "default"

[schedule]
every = "24h"
at = "02:00"

[filter]
mode = "always"
restore_archived = false

[[mapping]]
field = "USER"
source = "Email"

[[mapping]]
field = "EMAIL"
source = "Email"

[[mapping]]
field = "6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C"
label = "Sage User ID"
source = "ID"
unique = true

[[mapping]]
field = "POSITION"
template = "{{ response.currentEmployment.jobTitle | default('Unknown') }}"

[[mapping]]
field = "PERMISSIONS_ID"
setting = "default_role"
"#;

/// `EXAMPLE` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "{from}");
    EXAMPLE.replacen(from, to, 1)
}

/// The errors of `text`, which must not be valid.
fn errors(text: &str) -> ValidationErrors {
    match IntegrationConfig::from_toml(text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts `text` fails with a problem at `location` whose message contains `message`.
fn assert_problem(text: &str, location: &str, message: &str) {
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|e| e.location == location && e.message.contains(message)),
        "expected `{location}: …{message}…`, got:\n{errs}"
    );
}

/// `EXAMPLE` with `from` replaced by `to` is refused with a problem at `location` whose
/// message contains `message`.
fn assert_edit_refused(from: &str, to: &str, location: &str, message: &str) {
    assert_problem(&edit(from, to), location, message);
}

/// `EXAMPLE` with `from` replaced by `to` is accepted.
fn assert_edit_accepted(from: &str, to: &str) {
    let text = edit(from, to);
    if let Err(errs) = IntegrationConfig::from_toml(&text) {
        panic!("refused:\n{errs}\n{text}");
    }
}

#[test]
fn example_config_parses() {
    let config = IntegrationConfig::from_toml(EXAMPLE).unwrap();
    assert_eq!(config.id, "sage-people");
    assert_eq!(config.integration_type, IntegrationType::User);
    assert_eq!(config.preference, Preference::CreateAndUpdate);
    assert_eq!(config.sync_keys, ["EMAIL"]);
    assert_eq!(
        config.schedule.every_duration(),
        Some(std::time::Duration::from_secs(86_400))
    );
    assert_eq!(config.schedule.at_time(), Some((2, 0)));
    assert_eq!(config.mapping.len(), 5);
    assert!(config.mapping[2].unique);
    assert_eq!(config.mapping[2].label.as_deref(), Some("Sage User ID"));
    assert_eq!(
        config.mapping[4].source,
        MappingSource::Setting("default_role".into())
    );
}

#[test]
fn defaults_apply_to_keys_left_out() {
    let text = r#"
id = "minimal"
default_role = "25"
[[mapping]]
source = "Email"
field = "USER"
[[mapping]]
source = "Email"
field = "EMAIL"
unique = true
[[mapping]]
setting = "default_role"
field = "PERMISSIONS_ID"
"#;
    let config = IntegrationConfig::from_toml(text).unwrap();
    assert_eq!(config.integration_type, IntegrationType::User);
    assert_eq!(config.preference, Preference::CreateAndUpdate);
    assert_eq!(config.sync_keys, ["EMAIL"]);
    assert_eq!(config.credentials, "default");
    assert_eq!(config.filter.mode, FilterMode::Always);
    assert!(config.schedule.is_empty());
}

#[test]
fn to_toml_round_trips() {
    for config in [
        IntegrationConfig::from_toml(EXAMPLE).unwrap(),
        IntegrationConfig::default_for("sage-people"),
    ] {
        let text = config.to_toml();
        let again = IntegrationConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again, config);
    }
}

#[test]
fn round_trip_keeps_literal_values_saas_and_filters() {
    let text = edit("type = \"user\"", "type = \"user_and_saas_user\"\nsource_filter = \"workAddress.country eq 'France'\"\nadditional_fields = [\"Cost Centre\"]")
        .replace("mode = \"always\"", "mode = \"if_conditions\"\ncondition = \"worker.region == 'EMEA'\"")
        .replace("restore_archived = false", "restore_archived = true\n[saas]\nsync_key = \"EMAIL\"\nname = \"Sage People\"")
        + "\n[[mapping]]\nfield = \"PHONE\"\nvalue = 42\n[[mapping]]\nfield = \"ADDRESS\"\nsource = \"Cost Centre\"\n";
    let config = IntegrationConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.entry("PHONE").map(|e| &e.source),
        Some(&MappingSource::Value(json!(42)))
    );
    let again = IntegrationConfig::from_toml(&config.to_toml()).unwrap();
    assert_eq!(again, config);
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = edit("id = \"sage-people\"", "id = \"\"\ncolour = \"blue\"")
        .replace("source = \"ID\"", "source = \"Identifier\"")
        .replace("every = \"24h\"", "every = \"daily\"");
    let errs = errors(&text);
    assert!(errs.len() >= 4, "{errs}");
    assert!(errs.mentions("id: is missing or empty"));
    assert!(errs.mentions("colour: unknown key"));
    assert!(errs.mentions("unknown source \"Identifier\""));
    assert!(errs.mentions("schedule.every"));
}

#[test]
fn toml_syntax_errors_give_the_position() {
    let errs = errors("id = \"x\"\nmapping = [\n");
    let e = errs.iter().next().unwrap();
    assert_eq!(e.kind, ValidationKind::Syntax);
    assert!(e.message.starts_with("not valid TOML"), "{e}");
    assert!(e.message.contains("line"), "{e}");
}

#[test]
fn unknown_keys_are_refused_everywhere_with_suggestions() {
    assert_edit_refused(
        "credentials",
        "credential",
        "credential",
        "unknown key; did you mean \"credentials\"?",
    );
    assert_edit_refused(
        "every = ",
        "evry = ",
        "schedule.evry",
        "did you mean \"every\"?",
    );
    assert_edit_refused(
        "mode = ",
        "mood = ",
        "filter.mood",
        "did you mean \"mode\"?",
    );
    assert_edit_refused(
        "source = \"ID\"",
        "source = \"ID\"\nuniqe = true",
        "mapping #3 (6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C)",
        "unknown key `uniqe`; did you mean \"unique\"?",
    );
    assert_problem(
        &(EXAMPLE.to_owned() + "[removals]\naction = \"archive\"\n"),
        "removals",
        "unknown key",
    );
    let saas = edit("type = \"user\"", "type = \"user_and_saas_user\"")
        + "[saas]\nsync_key = \"EMAIL\"\nname = \"Sage People\"\nid = \"x\"\n";
    assert_problem(&saas, "saas.id", "unknown key");
}

#[test]
fn wrong_types_name_the_key_and_the_type() {
    assert_edit_refused(
        "sync_keys = [\"EMAIL\"]",
        "sync_keys = \"EMAIL\"",
        "sync_keys",
        "must be a list of strings, found string",
    );
    assert_edit_refused(
        "restore_archived = false",
        "restore_archived = \"no\"",
        "filter.restore_archived",
        "must be true or false, found string",
    );
    assert_edit_refused(
        "unique = true",
        "unique = \"yes\"",
        "mapping #3 (6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C)",
        "`unique` must be true or false",
    );
    assert_edit_refused(
        "id = \"sage-people\"",
        "id = 7",
        "id",
        "must be a string, found integer",
    );
    assert_edit_refused(
        "[schedule]",
        "schedule = 1\n[schedulex]",
        "schedule",
        "must be a table",
    );
    assert_edit_refused(
        "setting = \"default_role\"",
        "value = [1, 2]",
        "mapping #5 (PERMISSIONS_ID)",
        "`value` must be a string, number or boolean",
    );
}

#[test]
fn choices_list_the_allowed_values() {
    assert_edit_refused(
        "type = \"user\"",
        "type = \"users\"",
        "type",
        "\"users\" is not one of \"user\", \"user_and_saas_user\"; did you mean \"user\"?",
    );
    assert_edit_refused(
        "preference = \"create_and_update\"",
        "preference = \"insert_only\"",
        "preference",
        "is not one of \"create_and_update\", \"create_only\", \"update_only\"",
    );
    assert_edit_refused(
        "mode = \"always\"",
        "mode = \"sometimes\"",
        "filter.mode",
        "is not one of \"always\", \"if_conditions\"",
    );
}

#[test]
fn both_create_only_and_update_only_cannot_be_expressed() {
    // There is one key with three values; the envelope flags derive from it.
    assert_edit_refused(
        "preference = \"create_and_update\"",
        "insert_only = true\nupdate_only = true",
        "insert_only",
        "unknown key",
    );
    let config =
        IntegrationConfig::from_toml(&edit("\"create_and_update\"", "\"update_only\"")).unwrap();
    assert!(config.preference.update_only() && !config.preference.insert_only());
}

#[test]
fn user_email_and_role_are_required() {
    assert_edit_refused(
        "field = \"USER\"",
        "field = \"FIRST_NAME\"",
        "mapping",
        "USER (Username) must be mapped",
    );
    let no_email =
        edit("field = \"EMAIL\"", "field = \"LAST_NAME\"").replace("[\"EMAIL\"]", "[\"USER\"]");
    assert_problem(&no_email, "mapping", "EMAIL must be mapped");
    assert_edit_refused(
        "field = \"PERMISSIONS_ID\"",
        "field = \"PHONE\"",
        "mapping",
        "PERMISSIONS_ID (Role) must be mapped",
    );
}

#[test]
fn role_setting_needs_a_default_role() {
    assert_edit_refused(
        "default_role = \"25\"\n",
        "",
        "mapping #5 (PERMISSIONS_ID)",
        "uses setting default_role, but `default_role` is not set",
    );
    assert_edit_refused(
        "default_role = \"25\"",
        "default_role = \" \"",
        "default_role",
        "is empty",
    );
}

#[test]
fn a_role_given_as_a_literal_needs_no_default_role() {
    let text =
        edit("default_role = \"25\"\n", "").replace("setting = \"default_role\"", "value = \"25\"");
    assert!(IntegrationConfig::from_toml(&text).is_ok());
}

#[test]
fn every_sync_key_must_be_mapped_and_unique() {
    assert_edit_refused(
        "[\"EMAIL\"]",
        "[\"EMAIL\", \"EMPLOYEE_ID\"]",
        "sync_keys",
        "sync key EMPLOYEE_ID is not mapped",
    );
    assert_edit_refused(
        "[\"EMAIL\"]",
        "[\"EMAL\"]",
        "sync_keys",
        "did you mean \"EMAIL\"?",
    );
    assert_edit_refused(
        "[\"EMAIL\"]",
        "[\"POSITION\"]",
        "sync_keys",
        "sync key POSITION is not a unique field",
    );
    assert_edit_refused("[\"EMAIL\"]", "[]", "sync_keys", "is empty");
    assert_edit_refused(
        "[\"EMAIL\"]",
        "[\"EMAIL\", \"EMAIL\"]",
        "sync_keys",
        "lists EMAIL twice",
    );
    assert_edit_accepted(
        "[\"EMAIL\"]",
        "[\"6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C\", \"EMAIL\"]",
    );
}

#[test]
fn at_least_one_field_is_unique() {
    assert_edit_refused(
        "unique = true",
        "unique = false",
        "mapping",
        "no entry is marked `unique = true`",
    );
}

#[test]
fn unknown_sources_suggest_a_name() {
    assert_edit_refused(
        "source = \"ID\"",
        "source = \"Job Titel\"",
        "mapping #3 (6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C)",
        "unknown source \"Job Titel\"; did you mean \"Job Title\"?",
    );
    assert_edit_refused(
        "source = \"ID\"",
        "source = \"Cost Centre\"",
        "mapping #3 (6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C)",
        "names listed in `additional_fields`",
    );
    let declared = edit(
        "credentials = \"default\"",
        "credentials = \"default\"\nadditional_fields = [\"Cost Centre\"]",
    )
    .replace("source = \"ID\"", "source = \"Cost Centre\"");
    assert!(IntegrationConfig::from_toml(&declared).is_ok());
}

#[test]
fn tracking_fields_are_valid_sources() {
    let text = EXAMPLE.to_owned()
        + "[[mapping]]\nfield = \"AAAA0000AAAA0000AAAA0000AAAA0000\"\nsource = \"Connect: Credentials\"\n[[mapping]]\nfield = \"BBBB0000BBBB0000BBBB0000BBBB0000\"\nsource = \"Connect: Hostname\"\n";
    assert!(IntegrationConfig::from_toml(&text).is_ok());
}

#[test]
fn additional_fields_must_be_distinct_and_new() {
    let text = edit(
        "credentials = \"default\"",
        "credentials = \"default\"\nadditional_fields = [\"Cost Centre\", \"cost centre\", \"Email\", \"\"]",
    );
    assert_problem(&text, "additional_fields", "lists \"cost centre\" twice");
    assert_problem(
        &text,
        "additional_fields",
        "\"Email\" is already an integration or tracking field",
    );
    assert_problem(&text, "additional_fields", "contains an empty name");
}

#[test]
fn template_syntax_errors_give_entry_and_position() {
    assert_edit_refused(
        "| default('Unknown') }}",
        "| default('Unknown') }",
        "mapping #4 (POSITION)",
        "template syntax error at line 1, column",
    );
    let long = edit(
        "jobTitle | default('Unknown')",
        &format!("{} | default('Unknown')", "x".repeat(250)),
    );
    assert_problem(
        &long,
        "mapping #4 (POSITION)",
        "Oomnitza refuses paths over 256",
    );
    assert_edit_refused(
        "response.currentEmployment",
        "respose.currentEmployment",
        "mapping #4 (POSITION)",
        "unknown variable `respose`; did you mean \"response\"?",
    );
    assert_edit_refused(
        "default('Unknown')",
        "defualt('Unknown')",
        "mapping #4 (POSITION)",
        "did you mean \"default\"?",
    );
}

#[test]
fn entries_need_exactly_one_value_source() {
    assert_edit_refused(
        "setting = \"default_role\"",
        "label = \"Role\"",
        "mapping #5 (PERMISSIONS_ID)",
        "needs one of `source`, `template`, `setting` or `value`",
    );
    assert_edit_refused(
        "source = \"ID\"",
        "source = \"ID\"\nvalue = \"x\"",
        "mapping #3 (6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C)",
        "has `source` and `value`; give exactly one",
    );
}

#[test]
fn field_ids_are_checked() {
    assert_edit_refused(
        "field = \"POSITION\"",
        "field = \"job.title\"",
        "mapping #4 (job.title)",
        "contains `.`",
    );
    assert_edit_refused(
        "field = \"POSITION\"",
        "field = \"job title\"",
        "mapping #4 (job title)",
        "contains ` `",
    );
    assert_edit_refused(
        "field = \"POSITION\"",
        "field = \"\"",
        "mapping #4",
        "`field` is missing or empty",
    );
    assert_edit_refused(
        "field = \"POSITION\"",
        "field = \"SAAS\"",
        "mapping #4 (SAAS)",
        "is reserved",
    );
    assert_edit_refused(
        "field = \"POSITION\"",
        "field = \"EMAIL\"",
        "mapping #4 (EMAIL)",
        "already mapped by mapping #2",
    );
    assert_edit_refused(
        "label = \"Sage User ID\"",
        "label = \"\"",
        "mapping #3 (6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C)",
        "`label` is empty",
    );
}

#[test]
fn settings_and_values_are_checked() {
    assert_edit_refused(
        "setting = \"default_role\"",
        "setting = \"default_rol\"",
        "mapping #5 (PERMISSIONS_ID)",
        "unknown setting \"default_rol\"; did you mean \"default_role\"?",
    );
    assert_edit_refused(
        "setting = \"default_role\"",
        "value = \"\"",
        "mapping #5 (PERMISSIONS_ID)",
        "`value` is empty",
    );
}

#[test]
fn integration_id_and_credentials_are_checked() {
    assert_edit_refused(
        "id = \"sage-people\"",
        "id = \"sage.people\"",
        "id",
        "contains `.`",
    );
    assert_problem(
        &edit(
            "id = \"sage-people\"",
            &format!("id = \"{}\"", "a".repeat(65)),
        ),
        "id",
        "at most 64",
    );
    assert_edit_refused("id = \"sage-people\"\n", "", "id", "is missing or empty");
    assert_edit_refused(
        "credentials = \"default\"",
        "credentials = \"\"",
        "credentials",
        "is empty",
    );
}

#[test]
fn filter_conditions_are_required_and_compiled() {
    assert_edit_refused(
        "mode = \"always\"",
        "mode = \"if_conditions\"",
        "filter.condition",
        "is required when filter.mode = \"if_conditions\"",
    );
    assert_edit_refused(
        "mode = \"always\"",
        "mode = \"if_conditions\"\ncondition = \"worker.region ==\"",
        "filter.condition",
        "condition syntax error at line 1, column",
    );
    assert_edit_refused(
        "mode = \"always\"",
        "mode = \"if_conditions\"\ncondition = \"wroker.region == 'EMEA'\"",
        "filter.condition",
        "did you mean \"worker\"?",
    );
    // Kept while mode is "always", but still checked.
    assert_edit_refused(
        "mode = \"always\"",
        "mode = \"always\"\ncondition = \"worker.region ==\"",
        "filter.condition",
        "syntax error",
    );
}

#[test]
fn saas_table_matches_the_type() {
    let saas_type = edit("type = \"user\"", "type = \"user_and_saas_user\"");
    assert_problem(&saas_type, "saas", "needs a [saas] table with `sync_key`");
    assert_problem(&(saas_type.clone() + "[saas]\n"), "saas", "needs `name`");
    let config = IntegrationConfig::from_toml(
        &(saas_type.clone() + "[saas]\nsync_key = \"EMAIL\"\nselected_saas_id = \"42\"\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let saas = config.saas.unwrap_or_default();
    assert_eq!(saas.sync_key.as_deref(), Some("EMAIL"));
    assert_eq!(saas.selected_saas_id.as_deref(), Some("42"));
    assert_problem(
        &(EXAMPLE.to_owned() + "[saas]\nsync_key = \"EMAIL\"\nname = \"Sage People\"\n"),
        "saas",
        "only used when type = \"user_and_saas_user\"",
    );
}

#[test]
fn saas_sync_key_is_a_required_setting() {
    let saas_type = edit("type = \"user\"", "type = \"user_and_saas_user\"");
    // A config written before `sync_key` existed is refused with a message saying what to set.
    let before = saas_type.clone() + "[saas]\nname = \"Sage People\"\n";
    assert_problem(
        &before,
        "saas.sync_key",
        "is missing or empty; set it to the SaaS sync key configured for this integration in Oomnitza",
    );
    assert_eq!(errors(&before).len(), 1, "{}", errors(&before));
    assert_problem(
        &(saas_type.clone() + "[saas]\nsync_key = \" \"\nname = \"Sage People\"\n"),
        "saas.sync_key",
        "is missing or empty",
    );
    assert_problem(
        &(saas_type + "[saas]\nsync_key = 1\nname = \"Sage People\"\n"),
        "saas.sync_key",
        "must be a string, found integer",
    );
}

#[test]
fn restore_archived_is_accepted_but_deprecated() {
    let config = IntegrationConfig::from_toml(EXAMPLE).unwrap();
    assert!(config.deprecations().is_empty(), "false is the default");
    let config =
        IntegrationConfig::from_toml(&edit("restore_archived = false", "restore_archived = true"))
            .unwrap_or_else(|e| panic!("an existing config must stay valid: {e}"));
    let deprecations = config.deprecations();
    assert_eq!(deprecations.len(), 1);
    assert_eq!(deprecations[0].kind, ValidationKind::Deprecated);
    assert_eq!(deprecations[0].location, "filter.restore_archived");
    assert!(
        deprecations[0].message.contains("no effect"),
        "{}",
        deprecations[0]
    );
}

#[test]
fn schedule_formats_are_checked() {
    assert_edit_refused(
        "every = \"24h\"",
        "every = \"24 hours\"",
        "schedule.every",
        "is not an interval",
    );
    assert_edit_refused(
        "at = \"02:00\"",
        "at = \"2am\"",
        "schedule.at",
        "is not a time of day",
    );
    assert_edit_refused(
        "at = \"02:00\"",
        "at = \"02:00\"\ntimezone = \"\"",
        "schedule.timezone",
        "is empty",
    );
    assert_edit_refused(
        "at = \"02:00\"",
        "at = \"02:00\"\ncron = \"0 2 * * *\"",
        "schedule.cron",
        "either cron or every/at",
    );
    assert_edit_refused(
        "every = \"24h\"\nat = \"02:00\"",
        "cron = \"0 2 * *\"\ntimezone = \"Europe/London\"",
        "schedule.cron",
        "has 4 fields",
    );
    assert_edit_accepted(
        "every = \"24h\"\nat = \"02:00\"",
        "cron = \"0 2 * * MON-FRI\"\ntimezone = \"Europe/London\"",
    );
}

/// What only the extractor's own parsers see: these used to pass validation and fail at 02:00.
#[test]
fn schedules_and_filters_the_extractor_would_refuse_are_refused_naming_the_key() {
    let cases = [
        (
            edit(
                "at = \"02:00\"",
                "at = \"02:00\"\ntimezone = \"Mars/Olympus\"",
            ),
            "schedule.timezone",
            "IANA time zone",
        ),
        (
            edit("every = \"24h\"\nat = \"02:00\"", "cron = \"61 2 * * *\""),
            "schedule.cron",
            "is not a cron expression",
        ),
        (
            edit("every = \"24h\"", "every = \"10s\""),
            "schedule.every",
            "once a minute",
        ),
        (
            edit(
                "credentials = \"default\"",
                "credentials = \"default\"\nsource_filter = \"workAddress.country is 'France'\"",
            ),
            "source_filter",
            "character",
        ),
    ];
    for (text, key, hint) in cases {
        assert_problem(&text, key, hint);
    }
}

#[test]
fn source_filter_is_passed_through_when_well_formed() {
    let ok = edit(
        "credentials = \"default\"",
        "credentials = \"default\"\nsource_filter = \"workAddress.country eq 'France'\"",
    );
    let config = IntegrationConfig::from_toml(&ok).unwrap();
    assert_eq!(
        config.source_filter.as_deref(),
        Some("workAddress.country eq 'France'")
    );
    assert_edit_refused(
        "credentials = \"default\"",
        "credentials = \"default\"\nsource_filter = \"workAddress.country eq 'France\"",
        "source_filter",
        "is not closed",
    );
    assert_edit_refused(
        "credentials = \"default\"",
        "credentials = \"default\"\nsource_filter = \"\"",
        "source_filter",
        "is empty",
    );
}

#[test]
fn validate_agrees_with_from_toml() {
    let mut config = IntegrationConfig::from_toml(EXAMPLE).unwrap();
    assert_eq!(config.validate(), Ok(()));
    config.sync_keys = vec!["NOPE".into()];
    let errs = config.validate().unwrap_err();
    assert!(errs.mentions("sync key NOPE is not mapped"), "{errs}");
}

#[test]
fn an_empty_mapping_is_refused() {
    let start = EXAMPLE.find("[[mapping]]").unwrap();
    let text = &EXAMPLE[..start];
    assert_problem(text, "mapping", "has no entries");
    assert_problem(text, "mapping", "USER (Username) must be mapped");
}

#[test]
fn mapping_keys_of_the_wrong_type_are_named() {
    assert_edit_refused(
        "field = \"POSITION\"",
        "field = 7",
        "mapping #4",
        "`field` must be a string, found integer",
    );
    assert_edit_refused(
        "label = \"Sage User ID\"",
        "label = 1",
        "mapping #3 (6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C)",
        "`label` must be a string, found integer",
    );
    assert_edit_refused(
        "source = \"ID\"",
        "source = [\"ID\"]",
        "mapping #3 (6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C)",
        "`source` must be a string, found array",
    );
    assert_problem(
        &("mapping = 3\n".to_owned() + EXAMPLE).replace("[[mapping]]", "[[mappingx]]"),
        "mapping",
        "must be an array of tables",
    );
}

#[test]
fn long_conditions_are_refused() {
    let condition = format!("worker.region == '{}'", "x".repeat(4100));
    let text = edit(
        "mode = \"always\"",
        &format!("mode = \"if_conditions\"\ncondition = \"{condition}\""),
    );
    assert_problem(&text, "filter.condition", "use at most 4096");
}

#[test]
fn unknown_tests_and_functions_in_templates_are_refused() {
    assert_edit_refused(
        "| default('Unknown') }}",
        "is frobbed }}",
        "mapping #4 (POSITION)",
        "unknown test",
    );
    assert_edit_refused(
        "response.currentEmployment.jobTitle | default('Unknown')",
        "range(1) | frob",
        "mapping #4 (POSITION)",
        "unknown filter",
    );
}
