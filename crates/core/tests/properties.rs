//! Property tests: whatever Sage People sends and whatever an operator types, the engine
//! answers with a value or an error — it never panics.

use std::collections::BTreeSet;

use peoplesync_core::fixtures::{self, tracking};
use peoplesync_core::template::CUSTOM_FILTERS;
use peoplesync_core::{
    Evaluation, FilterMode, IntegrationConfig, IntegrationType, MappingEntry, MappingSource,
    RecordInput, SaasConfig, Worker, record_hash, record_json,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Arbitrary JSON, with object keys often drawn from the Sage People employee shape.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}".prop_map(Value::String),
    ];
    let key = prop_oneof![prop::sample::select(employee_keys()), ".{0,6}",];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every object key of the sample employee record, nested ones included.
fn employee_keys() -> Vec<String> {
    fn collect(value: &Value, keys: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    keys.insert(key.clone());
                    collect(child, keys);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| collect(item, keys)),
            _ => {}
        }
    }
    let mut keys = BTreeSet::new();
    collect(&fixtures::ada(), &mut keys);
    keys.into_iter().collect()
}

/// An employee-shaped record with arbitrary values in every field.
fn employee() -> impl Strategy<Value = Value> {
    (
        json_value(),
        json_value(),
        json_value(),
        json_value(),
        json_value(),
        ".{1,10}",
    )
        .prop_map(|(email, employment, address, extra, name, id)| {
            json!({"id": id, "emailAddress": email, "currentEmployment": employment,
                   "workAddress": address, "additionalFields": extra, "fullName": name})
        })
}

/// Template-ish text: Jinja punctuation, roots, filters and arbitrary characters.
fn template_text() -> impl Strategy<Value = String> {
    let tokens: Vec<&str> = [
        "{{",
        "}}",
        "{%",
        "%}",
        "{#",
        "#}",
        "(",
        ")",
        "[",
        "]",
        "|",
        ".",
        ",",
        "'",
        "\"",
        "=",
        "==",
        " ",
        "response",
        "worker",
        "connect",
        "emailAddress",
        "email",
        "sep=",
        "if",
        "for",
        "in",
        "endif",
        "endfor",
        "set",
        "range",
        "none",
        "true",
        "~",
        "*",
        "9999999",
        "'%d/%m/%Y'",
        "'%Q'",
        "-",
        "+",
    ]
    .into_iter()
    .chain(CUSTOM_FILTERS)
    .collect();
    let token = prop_oneof![
        prop::sample::select(tokens).prop_map(str::to_owned),
        ".{0,3}",
    ];
    prop::collection::vec(token, 0..24).prop_map(|t| t.concat())
}

/// The words a missing value must never be written as.
const MISSING_WORDS: [&str; 3] = ["None", "none", "undefined"];

/// Whether `template` may write one of [`MISSING_WORDS`] on purpose: as literal text (outside
/// `{{ }}` and `{% %}`), or through a string literal in a tag (`{{ 'none' }}`, `'NO' | lower`,
/// `default('none')`). Then a record may rightly hold it.
fn writes_a_missing_word(template: &str) -> bool {
    let mut literal = String::new();
    let mut rest = template;
    while let Some(start) = rest.find(['{']) {
        literal.push_str(&rest[..start]);
        let after = &rest[start..];
        let close = match after.get(..2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            Some("{#") => "#}",
            _ => {
                literal.push('{');
                rest = &after[1..];
                continue;
            }
        };
        match after.find(close) {
            Some(end) if after[..end].contains(['\'', '"']) => return true,
            Some(end) => rest = &after[end + 2..],
            None => return true,
        }
    }
    literal.push_str(rest);
    MISSING_WORDS.iter().any(|word| literal.contains(word))
}

/// Evaluates and previews `raw` with `config`, when both are usable.
fn exercise(config: &IntegrationConfig, raw: &Value) {
    let Ok(integration) = peoplesync_core::Integration::compile(config.clone()) else {
        return;
    };
    if let Ok(worker) = Worker::from_raw(raw) {
        let input = RecordInput {
            raw,
            worker: &worker,
            tracking: &tracking(),
        };
        let evaluation = integration.evaluate(&input);
        let preview = integration.preview(&input);
        assert_eq!(evaluation, preview.evaluation);
        if let Evaluation::Load { record } = &evaluation {
            for (field, value) in record {
                let literal = config.mapping.iter().any(|entry| {
                    entry.field == *field
                        && matches!(&entry.source, MappingSource::Template(t) if writes_a_missing_word(t))
                });
                if !literal {
                    for word in MISSING_WORDS {
                        assert_ne!(value, word, "{field}");
                    }
                }
            }
            let _ = record_hash(record);
        }
    }
    let _ = integration.preview_raw(raw, &tracking());
}

fn templated_config() -> IntegrationConfig {
    let mut config = IntegrationConfig::default_for("prop");
    for (i, template) in [
        "{{ response.emailAddress | lower | split_email }}",
        "{{ response.currentEmployment.startDate | date_format('%d/%m/%Y') }}",
        "{{ response.fullName | first_from_full }} {{ response.fullName | last_from_full }}",
        "{{ response.workAddress | default('x') }}",
        "{{ response.additionalFields[0].value | trim | upper }}",
        "{{ worker.city | concat(worker.region, sep=' / ') }}",
    ]
    .into_iter()
    .enumerate()
    {
        config.mapping.push(MappingEntry::new(
            format!("{i:032X}"),
            MappingSource::Template(template.to_owned()),
        ));
    }
    config.filter.mode = FilterMode::IfConditions;
    config.filter.condition =
        Some("response.id and (worker.region != 'X' or response.currentEmployment.active)".into());
    config
}

#[test]
fn a_missing_word_written_as_literal_text_is_told_from_one_in_an_expression() {
    for word in MISSING_WORDS {
        assert!(writes_a_missing_word(word));
        assert!(writes_a_missing_word(&format!("x {word} {{{{ y }}}}")));
        assert!(!writes_a_missing_word(&format!("{{{{ {word} }}}}")));
        assert!(writes_a_missing_word(&format!("{{{{ '{word}' }}}}")));
        assert!(writes_a_missing_word("{{ 'NONE' | lower }}"));
        assert!(!writes_a_missing_word(&format!(
            "{{% if {word} %}}a{{% endif %}}"
        )));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_json_records_never_panic(raw in json_value()) {
        exercise(&IntegrationConfig::default_for("prop"), &raw);
        exercise(&templated_config(), &raw);
    }

    #[test]
    fn arbitrary_employee_records_never_panic(raw in employee()) {
        exercise(&IntegrationConfig::default_for("prop"), &raw);
        exercise(&templated_config(), &raw);
    }

    #[test]
    fn arbitrary_template_strings_never_panic(template in template_text(), raw in employee()) {
        let mut config = IntegrationConfig::default_for("prop");
        config.mapping.push(MappingEntry::new("PHONE", MappingSource::Template(template.clone())));
        let _ = config.validate();
        exercise(&config, &raw);
        let mut config = IntegrationConfig::default_for("prop");
        config.filter.mode = FilterMode::IfConditions;
        config.filter.condition = Some(template);
        exercise(&config, &raw);
    }

    #[test]
    fn records_carry_only_mapped_fields_and_the_same_saas_object(raw in employee(), restore in any::<bool>()) {
        let mut config = IntegrationConfig::default_for("prop");
        config.integration_type = IntegrationType::UserAndSaasUser;
        config.saas = Some(SaasConfig {
            sync_key: Some("EMAIL".into()),
            name: Some("Sage People".into()),
            selected_saas_id: None,
        });
        // Deprecated: accepted, but never adds a key to the record.
        config.filter.restore_archived = restore;
        let integration = peoplesync_core::Integration::compile(config.clone())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Ok(worker) = Worker::from_raw(&raw) else { return Ok(()) };
        let evaluation = integration.evaluate(&RecordInput { raw: &raw, worker: &worker, tracking: &tracking() });
        if let Evaluation::Load { record } = evaluation {
            for key in record.keys() {
                prop_assert!(key == "SAAS" || config.entry(key).is_some(), "unexpected record key {}", key);
            }
            prop_assert_eq!(&record["SAAS"], &json!({"sync_key": "EMAIL", "name": "Sage People"}));
        }
    }

    #[test]
    fn arbitrary_config_text_never_panics(text in "(\\PC|\n|\\[|\\]|=|\"){0,200}") {
        let _ = IntegrationConfig::from_toml(&text);
    }

    #[test]
    fn edited_default_config_text_never_panics(cut in 0usize..4000, insert in ".{0,8}") {
        let text = IntegrationConfig::default_for("prop").to_toml();
        let at = text.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(text.len());
        let edited = format!("{}{insert}{}", &text[..at], &text[at..]);
        let _ = IntegrationConfig::from_toml(&edited);
    }

    #[test]
    fn record_hash_ignores_key_order(pairs in prop::collection::vec((".{0,6}", json_value()), 0..10)) {
        let forward: Map<String, Value> = pairs.iter().cloned().collect();
        let mut reversed_pairs: Vec<(String, Value)> = forward.clone().into_iter().collect();
        reversed_pairs.reverse();
        let reversed: Map<String, Value> = reversed_pairs.into_iter().collect();
        prop_assert_eq!(record_hash(&forward), record_hash(&reversed));
    }

    #[test]
    fn the_json_sent_hashes_like_the_record(pairs in prop::collection::vec((".{0,6}", json_value()), 0..10)) {
        let record: Map<String, Value> = pairs.into_iter().collect();
        let (_, hash) = record_json(&record).unwrap();
        prop_assert_eq!(hash, record_hash(&record));
    }
}
