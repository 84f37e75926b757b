use serde_json::{Value, json};

use super::*;
use crate::fixtures::{self, tracking};

/// The shared Ada with a middle name, blank second and third address lines and a `profile`.
fn ada() -> Value {
    let mut raw = fixtures::ada();
    raw["fullName"] = json!("Ada King Lovelace");
    raw["workAddress"]["line2"] = Value::Null;
    raw["workAddress"]["line3"] = json!("");
    raw["profile"] = json!({"x": "from profile", "badge number": 42});
    raw
}

/// Compiles `source` and renders it against `raw`.
fn render_with(source: &str, raw: &Value) -> Result<Value, String> {
    let mut engine = Engine::new();
    let (compiled, roots) = engine.add_template("t", source)?;
    let worker = Worker::from_raw(raw).unwrap_or_default();
    let ctx = context(&ContextPlan::new(&roots), raw, &worker, &tracking());
    engine.render(&compiled, &ctx)
}

fn render(source: &str) -> Value {
    match render_with(source, &ada()) {
        Ok(v) => v,
        Err(e) => panic!("{source}: {e}"),
    }
}

/// Asserts that rendering `source` against Ada fails with an error that mentions `part`.
#[track_caller]
fn assert_render_fails(source: &str, part: &str) {
    match render_with(source, &ada()) {
        Ok(value) => panic!("{source} rendered {value}"),
        Err(err) => assert!(err.contains(part), "{source}: {err}"),
    }
}

/// Asserts that `source` does not compile and the error mentions `part`; returns the error.
#[track_caller]
fn assert_refused(source: &str, part: &str) -> String {
    let Err(err) = Engine::new().add_template("t", source) else {
        panic!("{source} compiled");
    };
    assert!(err.contains(part), "{source}: {err}");
    err
}

#[test]
fn oomnitza_path_form_reads_the_raw_record() {
    assert_eq!(
        render("{{response.emailAddress}}"),
        json!("Ada.Lovelace@Example.com")
    );
    assert_eq!(
        render("{{ response.currentEmployment.jobTitle }}"),
        json!("Principal Engineer")
    );
}

#[test]
fn oomnitza_subscript_form_reads_keys_with_spaces() {
    assert_eq!(
        render(r#"{{response.profile["x"]}}"#),
        json!("from profile")
    );
    assert_eq!(
        render(r#"{{ response.profile["badge number"] }}"#),
        json!(42)
    );
}

#[test]
fn oomnitza_literal_form_is_the_literal() {
    assert_eq!(render(r#"{{"literal"}}"#), json!("literal"));
    assert_eq!(render("{{ 25 }}"), json!(25));
}

#[test]
fn worker_and_connect_roots_are_available() {
    assert_eq!(
        render("{{ worker.email }}"),
        json!("Ada.Lovelace@Example.com")
    );
    assert_eq!(render("{{ worker.employment_active }}"), json!(true));
    assert_eq!(render("{{ connect.credentials }}"), json!("default"));
    assert_eq!(
        render("{{ connect.hostname }}"),
        json!("acme.my.salesforce.com")
    );
}

#[test]
fn single_expressions_keep_their_type_and_mixed_templates_are_text() {
    assert_eq!(
        render("{{ response.currentEmployment.active }}"),
        json!(true)
    );
    assert_eq!(
        render("Active: {{ response.currentEmployment.active }}"),
        json!("Active: True")
    );
    assert_eq!(
        render("{{ worker.first_name }} {{ worker.last_name }}"),
        json!("Ada Lovelace")
    );
}

#[test]
fn missing_values_are_null_never_none_or_undefined() {
    for source in [
        "{{ response.nothing }}",
        "{{ response.currentEmployment.endDate }}",
        "{{ response.nothing.deeper.still }}",
        r#"{{ response.profile["missing"] }}"#,
        "{{ worker.end_date }}",
        "{{ response.workAddress.line2 | lower }}",
        "{{ response.workAddress.line2 | upper | trim }}",
        "{{ response.workAddress.line3 }}",
        "{{ none }}",
        "{{ response.nothing }} {{ worker.end_date }}",
    ] {
        assert_eq!(render(source), Value::Null, "{source}");
    }
    let text = render("x{{ response.nothing }}{{ none }}");
    assert_eq!(text, json!("x"));
}

#[test]
fn null_parent_objects_yield_null_not_an_error() {
    let raw = json!({"id": "x1", "currentEmployment": null, "workAddress": null});
    assert_eq!(
        render_with("{{ response.currentEmployment.jobTitle }}", &raw),
        Ok(Value::Null)
    );
    assert_eq!(
        render_with("{{ response.workAddress.city | default('Unknown') }}", &raw),
        Ok(json!("Unknown"))
    );
}

#[test]
fn default_replaces_missing_null_and_blank_values() {
    assert_eq!(
        render("{{ response.nothing | default('Unknown') }}"),
        json!("Unknown")
    );
    assert_eq!(
        render("{{ response.currentEmployment.endDate | default('open') }}"),
        json!("open")
    );
    assert_eq!(
        render("{{ response.workAddress.line3 | default('-') }}"),
        json!("-")
    );
    assert_eq!(
        render("{{ response.firstName | default('x') }}"),
        json!("Ada")
    );
    assert_eq!(render("{{ false | default('x') }}"), json!(false));
    assert_eq!(render("{{ false | default('x', true) }}"), json!("x"));
}

#[test]
fn case_and_trim_filters_work_on_text() {
    assert_eq!(
        render("{{ response.emailAddress | lower }}"),
        json!("ada.lovelace@example.com")
    );
    assert_eq!(render("{{ response.firstName | upper }}"), json!("ADA"));
    assert_eq!(render("{{ '  padded  ' | trim }}"), json!("padded"));
    assert_eq!(render("{{ '--x--' | trim('-') }}"), json!("x"));
}

#[test]
fn split_email_gives_the_local_part() {
    assert_eq!(
        render("{{ worker.email | split_email }}"),
        json!("Ada.Lovelace")
    );
    assert_eq!(
        render("{{ 'no-at-sign' | split_email }}"),
        json!("no-at-sign")
    );
    assert_eq!(render("{{ response.nothing | split_email }}"), Value::Null);
}

#[test]
fn date_format_reformats_dates_and_refuses_non_dates() {
    assert_eq!(
        render("{{ worker.start_date | date_format('%d/%m/%Y') }}"),
        json!("04/02/2019")
    );
    assert_eq!(
        render("{{ worker.start_date | date_format }}"),
        json!("2019-02-04")
    );
    assert_eq!(
        render("{{ '2019-02-04T09:30:00Z' | date_format('%Y-%m-%d %H:%M') }}"),
        json!("2019-02-04 09:30")
    );
    assert_eq!(
        render("{{ worker.end_date | date_format('%d/%m/%Y') }}"),
        Value::Null
    );
    assert_render_fails("{{ 'soon' | date_format }}", "`soon` is not a date");
    assert_render_fails(
        "{{ worker.start_date | date_format('%Q') }}",
        "not a valid strftime format",
    );
    assert_render_fails(
        "{{ worker.start_date | date_format('%H:%M') }}",
        "does not have",
    );
}

#[test]
fn names_split_from_the_full_name() {
    assert_eq!(
        render("{{ response.fullName | first_from_full }}"),
        json!("Ada")
    );
    assert_eq!(
        render("{{ response.fullName | last_from_full }}"),
        json!("Lovelace")
    );
    assert_eq!(render("{{ 'Cher' | last_from_full }}"), Value::Null);
    assert_eq!(
        render("{{ response.nothing | first_from_full }}"),
        Value::Null
    );
}

#[test]
fn concat_joins_present_parts_with_the_separator() {
    assert_eq!(
        render("{{ worker.first_name | concat(' ', worker.last_name) }}"),
        json!("Ada Lovelace")
    );
    assert_eq!(
        render("{{ worker.address_line1 | concat(worker.address_line2, worker.city, sep=', ') }}"),
        json!("1 Example Street, London")
    );
    assert_eq!(
        render("{{ worker.address_line2 | concat(worker.address_line3, sep=', ') }}"),
        Value::Null
    );
    assert_render_fails("{{ 'a' | concat('b', spe=', ') }}", "spe");
}

#[test]
fn non_ascii_data_passes_through_and_case_maps() {
    let raw = json!({"id": "x1", "fullName": "Zoë Ångström-Łukasiewicz", "firstName": "Zoë",
        "emailAddress": "ZOË@EXAMPLE.DE", "workAddress": {"city": "Zürich", "region": "東京"}});
    for (source, expected) in [
        ("{{ response.firstName | upper }}", "ZOË"),
        ("{{ worker.email }}", "ZOË@EXAMPLE.DE"),
        ("{{ worker.city }} / {{ worker.region }}", "Zürich / 東京"),
        (
            "{{ response.fullName | last_from_full }}",
            "Ångström-Łukasiewicz",
        ),
        ("{{ 'Straße' | lower }}", "straße"),
    ] {
        assert_eq!(render_with(source, &raw), Ok(json!(expected)), "{source}");
    }
}

#[test]
fn text_output_is_trimmed_and_lists_become_json_text() {
    assert_eq!(render("  {{ worker.first_name }}  "), json!("Ada"));
    assert_eq!(render("{{ [1, 'a'] }}"), json!("[1,\"a\"]"));
    assert_eq!(
        render("{{ response.profile }}"),
        json!(r#"{"badge number":42,"x":"from profile"}"#)
    );
}

#[test]
fn html_is_never_escaped() {
    assert_eq!(render("{{ '<b>&' }}"), json!("<b>&"));
    assert_eq!(render("x {{ '<b>&' }}"), json!("x <b>&"));
}

#[test]
fn strings_containing_braces_are_still_one_expression() {
    assert_eq!(render(r#"{{ "a}}b" }}"#), json!("a}}b"));
}

#[test]
fn syntax_errors_report_line_and_column() {
    let err = assert_refused("{{ response.email", "line 1, column");
    assert!(
        err.starts_with("template syntax error at line 1, column"),
        "{err}"
    );
    assert_refused("Name: {{ worker.first_name | }}", "line 1, column 30");
    assert_refused("a\n{% if x %}b", "line 2");
}

#[test]
fn templates_over_256_characters_are_refused() {
    let long = format!("{{{{ response.{} }}}}", "a".repeat(260));
    assert_refused(&long, "Oomnitza refuses paths over 256");
    let exactly = format!("{{{{ response.{} }}}}", "a".repeat(256 - 15));
    assert_eq!(exactly.chars().count(), 256);
    assert!(Engine::new().add_template("t", &exactly).is_ok());
}

#[test]
fn empty_templates_are_refused() {
    assert_refused("  ", "template is empty");
}

#[test]
fn unknown_roots_are_refused_with_a_suggestion() {
    assert_refused(
        "{{ responce.email }}",
        "unknown variable `responce`; did you mean \"response\"?",
    );
    assert_refused("{{ user.email }}", "unknown variable `user`");
}

#[test]
fn loop_variables_and_globals_are_not_unknown_roots() {
    assert_eq!(
        render("{% for i in range(2) %}{{ i }}{% endfor %}"),
        json!("01")
    );
    assert_eq!(
        render("{% set x = worker.first_name %}{{ x }}"),
        json!("Ada")
    );
}

#[test]
fn unknown_filters_are_refused_with_a_suggestion() {
    let err = assert_refused("{{ response.emailAddress | lowr }}", "unknown filter");
    assert!(err.contains("did you mean \"lower\"?"), "{err}");
}

#[test]
fn roots_are_detected_so_unused_ones_are_not_built() {
    let mut engine = Engine::new();
    let (_, roots) = engine.add_template("a", "{{ response.id }}").unwrap();
    let keys = |k: &[&str]| Need::Keys(k.iter().map(|s| (*s).to_owned()).collect());
    assert_eq!(
        roots,
        Roots {
            response: keys(&["id"]),
            worker: Need::Nothing,
            connect: false
        }
    );
    let (_, roots) = engine.add_template("b", "{{ 'x' }}").unwrap();
    assert!(!roots.any());
    let (_, roots) = engine
        .add_template(
            "c",
            "{{ worker.city | concat(worker.region) }}{{ response.workAddress.city }}",
        )
        .unwrap();
    assert_eq!(roots.worker, keys(&["city", "region"]));
    assert_eq!(roots.response, keys(&["workAddress"]));
    let (_, roots) = engine
        .add_template("d", "{{ response['workAddress'] }}{{ worker | length }}")
        .unwrap();
    assert_eq!(roots.response, Need::Everything);
    assert_eq!(roots.worker, Need::Everything);
}

#[test]
fn partial_contexts_give_the_same_values_as_full_ones() {
    for source in [
        "{{ response.workAddress.city }}",
        "{{ response['workAddress']['city'] }}",
        "{% set w = worker %}{{ w.city }}",
        "{% for f in response.additionalFields %}{{ f.value }}{% endfor %}",
        "{{ worker.employment_active }}",
        "{{ worker.nonexistent }}",
        "{{ worker | length }}",
    ] {
        let mut engine = Engine::new();
        let (compiled, roots) = engine.add_template("t", source).unwrap();
        let raw = ada();
        let worker = Worker::from_raw(&raw).unwrap();
        let partial = engine.render(
            &compiled,
            &context(&ContextPlan::new(&roots), &raw, &worker, &tracking()),
        );
        let full = engine.render(
            &compiled,
            &context(&ContextPlan::new(&Roots::all()), &raw, &worker, &tracking()),
        );
        assert_eq!(partial, full, "{source}");
    }
}

#[test]
fn runaway_templates_run_out_of_fuel() {
    assert_render_fails(
        "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
        "fuel",
    );
}

#[test]
fn conditions_are_expressions_and_cannot_escape_their_wrapper() {
    let mut engine = Engine::new();
    let raw = ada();
    let worker = Worker::from_raw(&raw).unwrap();
    let ctx = context(&ContextPlan::new(&Roots::all()), &raw, &worker, &tracking());
    let (c, _) = engine
        .add_condition("c1", "worker.employment_active and worker.region == 'EMEA'")
        .unwrap();
    assert_eq!(engine.condition(&c, &ctx), Ok(true));
    let (c, _) = engine.add_condition("c2", "worker.region == '%}'").unwrap();
    assert_eq!(engine.condition(&c, &ctx), Ok(false));
    let err = engine.add_condition("c3", "x) %}{% if (true").unwrap_err();
    assert!(err.starts_with("condition syntax error"), "{err}");
    let err = engine.add_condition("c4", "worker.region ==").unwrap_err();
    assert!(err.contains("column"), "{err}");
}

#[test]
fn normalise_output_trims_and_nulls_blanks() {
    assert_eq!(normalise_output(json!(" a ")), json!("a"));
    assert_eq!(normalise_output(json!("   ")), Value::Null);
    assert_eq!(normalise_output(json!(3)), json!(3));
    assert_eq!(normalise_output(json!({"a": 1})), json!("{\"a\":1}"));
}

#[test]
fn a_stray_closing_brace_pair_in_a_condition_is_a_syntax_error_not_a_panic() {
    let mut engine = Engine::new();
    let err = engine.add_condition("c", "}}{{").unwrap_err();
    assert_eq!(
        err,
        "condition syntax error at line 1, column 1: `}}` cannot appear in a condition"
    );
    let err = engine
        .add_condition("c", "worker.x == 1 }} and true")
        .unwrap_err();
    assert!(err.contains("column 15"), "{err}");
    // Inside strings and nested literals it is fine.
    assert!(engine.add_condition("d", "worker.region == '}}'").is_ok());
    assert!(
        engine
            .add_condition("e", "worker.region in {'a': {'b': 1}}")
            .is_ok()
    );
}

#[test]
fn stray_variable_end_ignores_strings_and_nesting() {
    assert_eq!(stray_variable_end("a }} b"), Some(2));
    assert_eq!(stray_variable_end("'}}' ~ \"}}\""), None);
    assert_eq!(stray_variable_end("'it\\'s }}'"), None);
    assert_eq!(stray_variable_end("{'a': {'b': 1}}"), None);
    assert_eq!(stray_variable_end("(a }} b)"), None);
}
