//! Evaluation: filters, mapping, null handling, required fields, SaaS blocks, previews.

use serde_json::{Map, Value, json};

use super::*;
use crate::config::{FilterMode, IntegrationType, MappingEntry, SaasConfig};
use crate::defaults::{FULL_ADDRESS_TEMPLATE, SAGE_USER_ID_FIELD};
use crate::fixtures::{ada, tracking, with_template};
use crate::preview::preview;

fn evaluate(integration: &Integration, raw: &Value) -> Evaluation {
    let worker = Worker::from_raw(raw).unwrap();
    integration.evaluate(&RecordInput {
        raw,
        worker: &worker,
        tracking: &tracking(),
    })
}

fn compile(config: IntegrationConfig) -> Integration {
    Integration::compile(config).unwrap_or_else(|e| panic!("{e}"))
}

fn default_integration() -> Integration {
    compile(IntegrationConfig::default_for("sage-people"))
}

fn record(evaluation: Evaluation) -> Map<String, Value> {
    match evaluation {
        Evaluation::Load { record } => record,
        other => panic!("not loaded: {other:?}"),
    }
}

/// Asserts that `evaluation` is unloadable for a reason starting with `prefix`; returns it.
#[track_caller]
fn assert_unloadable(evaluation: Evaluation, prefix: &str) -> String {
    let Evaluation::Unloadable { reason } = evaluation else {
        panic!("not unloadable: {evaluation:?}");
    };
    assert!(reason.starts_with(prefix), "{reason}");
    reason
}

/// Whether `integration` loads `raw` (true) or filters it out (false); panics when the
/// record is unloadable.
fn loads(integration: &Integration, raw: &Value) -> bool {
    match evaluate(integration, raw) {
        Evaluation::Load { .. } => true,
        Evaluation::Filtered { .. } => false,
        unloadable => panic!("neither loaded nor filtered: {unloadable:?}"),
    }
}

/// The default config plus field AAAA…, a template that fails on Ada: her full name is
/// not a date.
fn with_failing_template() -> IntegrationConfig {
    let mut config = IntegrationConfig::default_for("sage-people");
    config.mapping.push(MappingEntry::new(
        "AAAA0000AAAA0000AAAA0000AAAA0000",
        MappingSource::Template("{{ response.fullName | date_format }}".into()),
    ));
    config
}

fn with_condition(condition: &str) -> Integration {
    let mut config = IntegrationConfig::default_for("sage-people");
    config.filter.mode = FilterMode::IfConditions;
    config.filter.condition = Some(condition.to_owned());
    compile(config)
}

#[test]
fn default_mapping_produces_the_bulk_record() {
    let r = record(evaluate(&default_integration(), &ada()));
    assert_eq!(r["USER"], "Ada.Lovelace@Example.com");
    assert_eq!(r["EMAIL"], "Ada.Lovelace@Example.com");
    assert_eq!(r["FIRST_NAME"], "Ada");
    assert_eq!(r["LAST_NAME"], "Lovelace");
    assert_eq!(r["POSITION"], "Principal Engineer");
    assert_eq!(r["ADDRESS"], "1 Example Street");
    assert_eq!(
        r["C7CF509BC913A2B9CB68E294F7008542"], "Floor 2",
        "Address line 2"
    );
    assert_eq!(r["PERMISSIONS_ID"], "25");
    assert_eq!(r[SAGE_USER_ID_FIELD], "a2G7E000000LlIDUA0");
    assert_eq!(
        r["81B4B7565B7EAC89EDA804A0081232DD"],
        json!(true),
        "Employment Active keeps its type"
    );
    assert_eq!(
        r["95231F6736CCE3D415F4640310AD5C14"],
        Value::Null,
        "End Date is null, not \"None\""
    );
    assert_eq!(r.len(), 21, "7 system fields and 14 custom fields");
    assert!(!r.contains_key("SAAS"));
    assert!(!r.contains_key("restore_archived"));
}

#[test]
fn sync_field_is_the_sync_keys() {
    assert_eq!(default_integration().sync_field(), ["EMAIL"]);
}

#[test]
fn absent_values_are_null_in_the_record() {
    let raw = json!({"id": "x1", "emailAddress": "x@example.com", "currentEmployment": null, "workAddress": null});
    let r = record(evaluate(&default_integration(), &raw));
    assert_eq!(r["POSITION"], Value::Null);
    assert_eq!(r["ADDRESS"], Value::Null);
    assert_eq!(r["FIRST_NAME"], Value::Null);
    assert!(
        r.values()
            .all(|v| v != "None" && v != "none" && v != "undefined" && v != "")
    );
}

#[test]
fn non_ascii_values_are_kept() {
    let raw = json!({"id": "x1", "firstName": "Zoë", "lastName": "Ångström", "emailAddress": "zoë@exämple.de",
        "workAddress": {"city": "Zürich", "line1": "Bahnhofstraße 1", "line2": "東京"}});
    let r = record(evaluate(&default_integration(), &raw));
    assert_eq!(r["FIRST_NAME"], "Zoë");
    assert_eq!(r["EMAIL"], "zoë@exämple.de");
    assert_eq!(r["ADDRESS"], "Bahnhofstraße 1");
    assert_eq!(r["C7CF509BC913A2B9CB68E294F7008542"], "東京");
    assert_eq!(r["0B2DBA0D0F0FB3DD061E3A9B052D8280"], "Zürich");
}

#[test]
fn always_filter_loads_every_worker() {
    assert!(loads(&default_integration(), &ada()));
}

#[test]
fn true_condition_loads_the_worker() {
    let integration = with_condition("worker.employment_active and worker.region == 'EMEA'");
    assert!(loads(&integration, &ada()));
}

#[test]
fn false_condition_filters_with_the_condition_in_the_reason() {
    let integration = with_condition("worker.region == 'APAC'");
    assert_eq!(
        evaluate(&integration, &ada()),
        Evaluation::Filtered {
            reason: "condition `worker.region == 'APAC'` is false".into()
        }
    );
}

#[test]
fn conditions_on_missing_values_are_false_not_errors() {
    let raw = json!({"id": "x1", "emailAddress": "x@example.com", "workAddress": null});
    let integration =
        with_condition("worker.region == 'EMEA' or response.workAddress.country == 'France'");
    assert!(!loads(&integration, &raw));
}

#[test]
fn conditions_can_use_response_and_connect() {
    let integration = with_condition(
        "response.hrDepartment in ['Engineering', 'IT'] and connect.credentials == 'default'",
    );
    assert!(loads(&integration, &ada()));
    let integration = with_condition("'.example.com' in connect.hostname");
    assert!(!loads(&integration, &ada()));
}

#[test]
fn a_condition_that_fails_at_run_time_makes_the_record_unloadable() {
    let integration = with_condition("worker.start_date | date_format('%H') == '00'");
    assert_unloadable(
        evaluate(&integration, &ada()),
        "filter condition `worker.start_date",
    );
}

#[test]
fn a_condition_kept_with_mode_always_does_not_filter() {
    let mut config = IntegrationConfig::default_for("sage-people");
    config.filter.condition = Some("false".into());
    assert!(loads(&compile(config), &ada()));
}

#[test]
fn deprecated_restore_archived_adds_nothing_to_the_record() {
    let mut config = IntegrationConfig::default_for("sage-people");
    config.filter.restore_archived = true;
    let with_flag = record(evaluate(&compile(config), &ada()));
    let without = record(evaluate(&default_integration(), &ada()));
    assert!(!with_flag.contains_key("restore_archived"));
    assert_eq!(with_flag, without, "the key changes nothing that is sent");
}

#[test]
fn empty_required_fields_make_the_record_unloadable() {
    let raw = json!({"id": "x1", "fullName": "No Mail"});
    assert_eq!(
        evaluate(&default_integration(), &raw),
        Evaluation::Unloadable {
            reason: "required field USER is empty (mapped from source Email)".into()
        }
    );
    let mut config = IntegrationConfig::default_for("sage-people");
    config.mapping[0].source = MappingSource::Source("ID".into());
    assert_eq!(
        evaluate(&compile(config), &raw),
        Evaluation::Unloadable {
            reason: "required field EMAIL is empty (mapped from source Email)".into()
        }
    );
}

#[test]
fn a_role_template_that_renders_empty_makes_the_record_unloadable() {
    let config = with_template(
        IntegrationConfig::default_for("sage-people"),
        "PERMISSIONS_ID",
        "{{ response.role }}",
    );
    let reason = assert_unloadable(
        evaluate(&compile(config), &ada()),
        "required field PERMISSIONS_ID",
    );
    assert_eq!(
        reason,
        "required field PERMISSIONS_ID is empty (mapped from template `{{ response.role }}`)"
    );
}

#[test]
fn when_every_sync_key_is_empty_the_record_is_unloadable() {
    let mut config = with_template(
        IntegrationConfig::default_for("sage-people"),
        SAGE_USER_ID_FIELD,
        "{{ response.nothing }}",
    );
    config.sync_keys = vec![SAGE_USER_ID_FIELD.into()];
    assert_unloadable(
        evaluate(&compile(config), &ada()),
        "every sync key is empty: 6C1F",
    );
}

#[test]
fn template_runtime_errors_make_the_record_unloadable() {
    let reason = assert_unloadable(
        evaluate(&compile(with_failing_template()), &ada()),
        "field AAAA0000AAAA0000AAAA0000AAAA0000: template `{{ response.fullName | date_format }}` failed:",
    );
    assert!(reason.contains("`Ada Lovelace` is not a date"), "{reason}");
}

#[test]
fn custom_api_fields_read_the_raw_record() {
    let mut config = IntegrationConfig::default_for("sage-people");
    config.mapping.push(
        MappingEntry::new(
            "CCCC0000CCCC0000CCCC0000CCCC0000",
            MappingSource::Template("{{ response.currentEmployment.name }}".into()),
        )
        .with_label("Employment Ref"),
    );
    let r = record(evaluate(&compile(config), &ada()));
    assert_eq!(r["CCCC0000CCCC0000CCCC0000CCCC0000"], "2019.02 #35");
}

#[test]
fn additional_and_tracking_sources_are_mapped() {
    let mut config = IntegrationConfig::default_for("sage-people");
    config.additional_fields = vec!["Cost Centre".into()];
    for (field, source) in [
        ("DDDD0000DDDD0000DDDD0000DDDD0001", "Cost Centre"),
        ("DDDD0000DDDD0000DDDD0000DDDD0002", "Connect: Credentials"),
        ("DDDD0000DDDD0000DDDD0000DDDD0003", "Connect: Hostname"),
    ] {
        config.mapping.push(MappingEntry::new(
            field,
            MappingSource::Source(source.into()),
        ));
    }
    let r = record(evaluate(&compile(config), &ada()));
    assert_eq!(r["DDDD0000DDDD0000DDDD0000DDDD0001"], "CC-104");
    assert_eq!(r["DDDD0000DDDD0000DDDD0000DDDD0002"], "default");
    assert_eq!(
        r["DDDD0000DDDD0000DDDD0000DDDD0003"],
        "acme.my.salesforce.com"
    );
}

#[test]
fn literal_values_and_settings_are_constant() {
    let mut config = IntegrationConfig::default_for("sage-people");
    config.mapping.push(MappingEntry::new(
        "PHONE",
        MappingSource::Value(json!("n/a")),
    ));
    config.mapping.push(MappingEntry::new(
        "EEEE0000EEEE0000EEEE0000EEEE0000",
        MappingSource::Setting("id".into()),
    ));
    let r = record(evaluate(&compile(config), &ada()));
    assert_eq!(r["PHONE"], "n/a");
    assert_eq!(r["EEEE0000EEEE0000EEEE0000EEEE0000"], "sage-people");
}

fn saas_config(saas: SaasConfig) -> IntegrationConfig {
    let mut config = IntegrationConfig::default_for("sage-people");
    config.integration_type = IntegrationType::UserAndSaasUser;
    config.saas = Some(saas);
    config
}

#[test]
fn saas_object_is_built_from_the_settings() {
    let integration = compile(saas_config(SaasConfig {
        sync_key: Some("EMAIL".into()),
        name: Some("Sage People".into()),
        selected_saas_id: Some("4711".into()),
    }));
    let r = record(evaluate(&integration, &ada()));
    assert_eq!(
        r["SAAS"],
        json!({"sync_key": "EMAIL", "selected_saas_id": "4711", "name": "Sage People"})
    );
}

#[test]
fn saas_object_leaves_out_settings_that_are_not_set() {
    let integration = compile(saas_config(SaasConfig {
        sync_key: Some(" EMAIL ".into()),
        name: None,
        selected_saas_id: Some("4711".into()),
    }));
    let r = record(evaluate(&integration, &ada()));
    assert_eq!(
        r["SAAS"],
        json!({"sync_key": "EMAIL", "selected_saas_id": "4711"})
    );
}

#[test]
fn saas_object_is_the_same_on_every_record() {
    let integration = compile(saas_config(SaasConfig {
        sync_key: Some("Sage People user".into()),
        name: Some("Sage People".into()),
        selected_saas_id: None,
    }));
    let other = json!({"id": "a2G7E000000ZZZZUA0", "emailAddress": "grace.hopper@example.com",
        "firstName": "Grace", "lastName": "Hopper"});
    let first = record(evaluate(&integration, &ada()));
    let second = record(evaluate(&integration, &other));
    assert_ne!(first["EMAIL"], second["EMAIL"]);
    assert_eq!(first["SAAS"], second["SAAS"]);
    assert_eq!(first["SAAS"]["sync_key"], "Sage People user");
}

#[test]
fn preview_shows_the_record_and_where_each_value_came_from() {
    let p = default_integration().preview_raw(&ada(), &tracking());
    let r = p.evaluation.record().unwrap();
    assert_eq!(r["EMAIL"], "Ada.Lovelace@Example.com");
    let email = p.fields.iter().find(|f| f.field == "EMAIL").unwrap();
    assert_eq!(email.origin, "source Email");
    assert!(email.required && email.sync_key && !email.unique);
    let role = p
        .fields
        .iter()
        .find(|f| f.field == "PERMISSIONS_ID")
        .unwrap();
    assert_eq!(role.origin, "setting default_role");
    assert_eq!(role.value, Some(json!("25")));
    let sage = p
        .fields
        .iter()
        .find(|f| f.field == SAGE_USER_ID_FIELD)
        .unwrap();
    assert_eq!(sage.label.as_deref(), Some("Sage User ID"));
    assert!(sage.unique);
    let address = p.fields.iter().find(|f| f.field == "ADDRESS").unwrap();
    assert_eq!(address.origin, "source Address line 1");
    assert_eq!(p.fields.len(), 21);
}

#[test]
fn preview_says_which_condition_filtered_the_worker() {
    let mut config = IntegrationConfig::default_for("sage-people");
    config.filter.mode = FilterMode::IfConditions;
    config.filter.condition = Some("worker.region == 'APAC'".into());
    let p = preview(&config, &ada(), &tracking()).unwrap();
    assert_eq!(
        p.evaluation.reason(),
        Some("condition `worker.region == 'APAC'` is false")
    );
    assert!(matches!(p.evaluation, Evaluation::Filtered { .. }));
    // The values are still shown.
    assert_eq!(
        p.fields
            .iter()
            .find(|f| f.field == "FIRST_NAME")
            .unwrap()
            .value,
        Some(json!("Ada"))
    );
}

#[test]
fn preview_says_which_required_field_is_empty() {
    let raw = json!({"id": "x1"});
    let p = preview(&IntegrationConfig::default_for("x"), &raw, &tracking()).unwrap();
    assert_eq!(
        p.evaluation.reason(),
        Some("required field USER is empty (mapped from source Email)")
    );
    assert_eq!(
        p.fields.iter().find(|f| f.field == "USER").unwrap().value,
        Some(Value::Null)
    );
}

#[test]
fn preview_reports_template_errors_per_field() {
    let p = preview(&with_failing_template(), &ada(), &tracking()).unwrap();
    let field = p
        .fields
        .iter()
        .find(|f| f.field == "AAAA0000AAAA0000AAAA0000AAAA0000")
        .unwrap();
    assert_eq!(field.value, None);
    assert!(
        field
            .error
            .as_deref()
            .is_some_and(|e| e.contains("is not a date"))
    );
    assert!(matches!(p.evaluation, Evaluation::Unloadable { .. }));
}

#[test]
fn preview_of_a_record_without_id_says_it_cannot_be_normalised() {
    let p = default_integration().preview_raw(&json!({"fullName": "X"}), &tracking());
    assert_eq!(
        p.evaluation.reason(),
        Some("record cannot be normalised: employee record has no `id`")
    );
    assert!(p.fields.is_empty());
}

#[test]
fn preview_of_an_invalid_config_returns_its_problems() {
    let mut config = IntegrationConfig::default_for("x");
    config.sync_keys.clear();
    assert!(preview(&config, &ada(), &tracking()).is_err());
}

#[test]
fn the_default_mapping_builds_no_template_context() {
    assert!(!default_integration().needs_context());
    let config = with_template(
        IntegrationConfig::default_for("x"),
        "ADDRESS",
        FULL_ADDRESS_TEMPLATE,
    );
    assert!(compile(config).needs_context());
}

#[test]
fn the_full_address_template_joins_the_lines_present() {
    let integration = compile(with_template(
        IntegrationConfig::default_for("x"),
        "ADDRESS",
        FULL_ADDRESS_TEMPLATE,
    ));
    assert_eq!(
        record(evaluate(&integration, &ada()))["ADDRESS"],
        "1 Example Street, Floor 2"
    );
    let raw = json!({"id": "x1", "emailAddress": "x@example.com", "workAddress": {"line2": "Unit 4", "line3": "Dock 7"}});
    assert_eq!(
        record(evaluate(&integration, &raw))["ADDRESS"],
        "Unit 4, Dock 7"
    );
    let raw = json!({"id": "x1", "emailAddress": "x@example.com"});
    assert_eq!(record(evaluate(&integration, &raw))["ADDRESS"], Value::Null);
}

#[test]
fn integrations_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Integration>();
}

#[test]
fn documented_conditions_and_templates_work() {
    for condition in [
        "worker.employment_active and worker.region == 'EMEA'",
        "worker.country in ['United Kingdom', 'Ireland']",
        "response.hrDepartment == 'Engineering' or worker.job_title is defined",
        "worker.end_date is none or worker.end_date >= '2025-01-01'",
        "'.my.salesforce.com' in connect.hostname",
    ] {
        let integration = with_condition(condition);
        let evaluation = evaluate(&integration, &ada());
        assert!(
            matches!(
                evaluation,
                Evaluation::Load { .. } | Evaluation::Filtered { .. }
            ),
            "{condition}: {evaluation:?}"
        );
    }
    let mut config = IntegrationConfig::default_for("docs");
    config.additional_fields = vec!["Cost Centre".into()];
    let templates = [
        "{{ response.currentEmployment.name }}",
        "{{ worker.start_date | date_format('%d/%m/%Y') }}",
        "{% for f in response.additionalFields %}{% if f.name == 'Cost Centre' %}{{ f.value }}{% endif %}{% endfor %}",
        "{{ worker.email | split_email }}",
        "{{ response.fullName | last_from_full }}",
    ];
    for (i, t) in templates.iter().enumerate() {
        config.mapping.push(MappingEntry::new(
            format!("{i:032X}"),
            MappingSource::Template((*t).into()),
        ));
    }
    let r = record(evaluate(&compile(config), &ada()));
    assert_eq!(r[&format!("{:032X}", 0)], "2019.02 #35");
    assert_eq!(r[&format!("{:032X}", 1)], "04/02/2019");
    assert_eq!(r[&format!("{:032X}", 2)], "CC-104");
    assert_eq!(r[&format!("{:032X}", 3)], "Ada.Lovelace");
    assert_eq!(r[&format!("{:032X}", 4)], "Lovelace");
}

#[test]
fn only_configs_that_read_the_raw_record_ask_for_it() {
    assert!(
        !default_integration().reads_raw(),
        "the default maps normalised fields only"
    );
    assert!(!with_condition("worker.region == 'EMEA'").reads_raw());
    assert!(with_condition("response.hrDepartment == 'Engineering'").reads_raw());
    let mut config = IntegrationConfig::default_for("sage-people");
    config.additional_fields = vec!["Cost Centre".into()];
    config.mapping.push(MappingEntry::new(
        "POSITION",
        MappingSource::Source("Cost Centre".into()),
    ));
    config.mapping.retain(|m| {
        m.field != "POSITION" || matches!(&m.source, MappingSource::Source(s) if s == "Cost Centre")
    });
    assert!(
        compile(config).reads_raw(),
        "additional fields live in the raw record"
    );
}

#[test]
fn hidden_control_characters_never_reach_a_record() {
    use crate::mapping::without_hidden_controls;
    assert_eq!(
        without_hidden_controls(json!("Ada\u{0}\u{7} Love\u{202E}lace\u{2066}")),
        json!("Ada Lovelace")
    );
    assert_eq!(
        without_hidden_controls(json!("1 Example St\nFloor 2\tEast")),
        json!("1 Example St\nFloor 2\tEast"),
        "tabs and line breaks stay"
    );
    assert_eq!(without_hidden_controls(json!(25)), json!(25));
    assert_eq!(
        without_hidden_controls(json!("Zoë O'Brien")),
        json!("Zoë O'Brien")
    );
}
