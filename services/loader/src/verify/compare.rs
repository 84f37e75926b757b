//! Comparing a record as sent with a user as Oomnitza shows it: which attribute a read shows
//! each bulk field as, and whether every value a read can show is the one sent.

use super::*;

/// The attribute a user read shows bulk field `field` as, when it is known: the documented
/// system fields, and custom fields (32 hexadecimal digits) under their id in lower case.
pub fn read_name(field: &str) -> Option<String> {
    let custom = field.len() == 32 && field.chars().all(|c| c.is_ascii_hexdigit());
    (custom || peoplesync_oomnitza::is_system_field(field))
        .then(|| peoplesync_oomnitza::read_attribute(field))
}

/// A JSON object as its members' raw text, borrowed from the document: records and users are
/// compared without building a `Value` per member.
pub type Fields<'a> = HashMap<&'a str, &'a RawValue, foldhash::fast::RandomState>;

/// The members of the JSON object `text`, borrowed (`None` when it is not an object).
pub fn fields(text: &str) -> Option<Fields<'_>> {
    serde_json::from_str(text).ok()
}

/// The attribute and value a record is looked for by: the first sync field with a value.
pub(super) fn lookup_of(sync_fields: &[String], record: &Fields<'_>) -> Option<(String, String)> {
    sync_fields.iter().find_map(|field| {
        let value = record.get(field.as_str()).and_then(|v| text(v))?;
        Some((read_name(field)?, value.into_owned()))
    })
}

/// Compares a sent record with the user read back (`None`: no user holds its sync value).
pub fn compare(
    sent: &Fields<'_>,
    user: Option<&Fields<'_>>,
    insert_only: bool,
    update_only: bool,
) -> Comparison {
    compare_named(sent, user, insert_only, update_only, |field| {
        read_name(field).map(Cow::Owned)
    })
}

/// [`compare`], with the read attribute of each field from `read_name_of` (a per-run cache).
pub(super) fn compare_named<'n>(
    sent: &Fields<'_>,
    user: Option<&Fields<'_>>,
    insert_only: bool,
    update_only: bool,
    read_name_of: impl Fn(&str) -> Option<Cow<'n, str>>,
) -> Comparison {
    let mut unverifiable = Vec::new();
    let Some(user) = user else {
        let check = if update_only {
            Check::SkippedByPreference
        } else {
            Check::NotApplied("no user holds the record's sync value".to_owned())
        };
        return Comparison {
            check,
            unverifiable,
        };
    };
    let mut differences = Vec::new();
    for (field, value) in sent {
        let name = read_name_of(field);
        let Some(held) = name.as_deref().and_then(|name| user.get(name)) else {
            unverifiable.push((*field).to_owned());
            continue;
        };
        let caseless = name
            .as_deref()
            .is_some_and(|n| peoplesync_oomnitza::CASELESS_ATTRIBUTES.contains(&n));
        if !same(value, held, caseless) {
            differences.push(format!(
                "{field} holds {}, sent {}",
                shown_value(held),
                shown_value(value)
            ));
        }
    }
    // Members come in no particular order: messages are sorted so they read the same.
    unverifiable.sort_unstable();
    differences.sort_unstable();
    let check = if differences.is_empty() {
        Check::Confirmed
    } else if insert_only {
        Check::SkippedByPreference
    } else {
        Check::NotApplied(differences.join("; "))
    };
    Comparison {
        check,
        unverifiable,
    }
}

/// A value as text for comparing: strings as they are (borrowed when they hold no escapes),
/// numbers and booleans as written, an object by its `id` (a role read as an object); `None`
/// for null and empty text.
pub(super) fn text(value: &RawValue) -> Option<Cow<'_, str>> {
    let raw = value.get();
    let text = match raw.as_bytes().first()? {
        b'n' => return None,
        b'"' => match serde_json::from_str::<&str>(raw) {
            Ok(borrowed) => Cow::Borrowed(borrowed),
            Err(_) => Cow::Owned(serde_json::from_str::<String>(raw).ok()?),
        },
        b'{' => {
            let object: Fields<'_> = serde_json::from_str(raw).ok()?;
            return object
                .get("id")
                .and_then(|id| text(id))
                .map(|t| Cow::Owned(t.into_owned()));
        }
        _ => Cow::Borrowed(raw),
    };
    (!text.is_empty()).then_some(text)
}

/// `text` in lower case, borrowed when it has no upper-case letter.
pub(super) fn lower(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_uppercase) {
        Cow::Owned(text.to_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// Whether Oomnitza holding `held` means it applied `sent`.
pub(super) fn same(sent: &RawValue, held: &RawValue, caseless: bool) -> bool {
    if sent.get() == held.get() {
        return true;
    }
    match (text(sent), text(held)) {
        (None, None) => true,
        (Some(a), Some(b)) if caseless => a.to_lowercase() == b.to_lowercase(),
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

pub(super) fn shown_value(value: &RawValue) -> String {
    match text(value) {
        None => "nothing".to_owned(),
        Some(text) => format!("{:?}", text.chars().take(80).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The JSON text of `value`, to borrow [`Fields`] from.
    fn json(value: Value) -> String {
        value.to_string()
    }

    #[test]
    fn a_user_holding_what_was_sent_is_confirmed_and_unreadable_fields_are_listed() {
        let sent = json(json!({
            "USER": "Ada@Example.com", "EMAIL": "Ada@Example.com", "PERMISSIONS_ID": "25",
            "FIRST_NAME": "Ada", "POSITION": null,
            "6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C": "a2G1",
            "SAAS": {"sync_key": "email", "name": "Sage People"}
        }));
        let user = json(json!({
            "username": "ada@example.com", "email": "ada@example.com", "role": 25,
            "first_name": "Ada", "position": "", "6c1f0a2b9d3e4f5a8b7c6d5e4f3a2b1c": "a2G1"
        }));
        let (sent, user) = (fields(&sent).unwrap(), fields(&user).unwrap());
        let result = compare(&sent, Some(&user), false, false);
        assert_eq!(result.check, Check::Confirmed);
        assert_eq!(result.unverifiable, ["SAAS"]);
    }

    #[test]
    fn a_different_value_or_no_user_is_not_applied_unless_the_preference_explains_it() {
        let sent = json(json!({"EMAIL": "ada@example.com", "POSITION": "CTO"}));
        let user = json(json!({"email": "ada@example.com", "position": "Engineer"}));
        let (sent, user) = (fields(&sent).unwrap(), fields(&user).unwrap());
        let Check::NotApplied(why) = compare(&sent, Some(&user), false, false).check else {
            panic!("a different value is not applied");
        };
        assert_eq!(why, r#"POSITION holds "Engineer", sent "CTO""#);
        assert_eq!(
            compare(&sent, Some(&user), true, false).check,
            Check::SkippedByPreference,
            "create only leaves existing users alone"
        );
        assert!(matches!(
            compare(&sent, None, false, false).check,
            Check::NotApplied(_)
        ));
        assert_eq!(
            compare(&sent, None, false, true).check,
            Check::SkippedByPreference,
            "update only creates nobody"
        );
    }

    #[test]
    fn a_custom_field_the_read_does_not_show_is_unverifiable_not_wrong() {
        let sent =
            json(json!({"EMAIL": "a@x", "0F9E8D7C6B5A49382716A5B4C3D2E1F0": "UK", "odd": 1}));
        let user = json(json!({"email": "a@x"}));
        let (sent, user) = (fields(&sent).unwrap(), fields(&user).unwrap());
        let result = compare(&sent, Some(&user), false, false);
        assert_eq!(result.check, Check::Confirmed);
        assert_eq!(
            result.unverifiable,
            ["0F9E8D7C6B5A49382716A5B4C3D2E1F0", "odd"]
        );
    }

    #[test]
    fn records_are_looked_up_by_their_first_sync_value() {
        let record = json(json!({"EMAIL": null, "6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C": "a2G1"}));
        let sync = [
            "EMAIL".to_owned(),
            "6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C".to_owned(),
        ];
        assert_eq!(
            lookup_of(&sync, &fields(&record).unwrap()),
            Some(("6c1f0a2b9d3e4f5a8b7c6d5e4f3a2b1c".into(), "a2G1".into()))
        );
    }

    #[test]
    fn counts_move_from_written_to_dead_lettered_and_filtered() {
        let mut counts = OutcomeCounts {
            written: 10,
            ..Default::default()
        };
        move_written(&mut counts, 3, 2);
        assert_eq!(
            (counts.written, counts.dead_lettered, counts.filtered),
            (5, 3, 2)
        );
        assert_eq!(counts.total(), 10);
    }
}
