//! The template filters peoplesync adds to minijinja's built-ins, and the replacements for
//! `lower`, `upper`, `trim` and `default` that keep a missing value missing (minijinja's own
//! would turn `none` into the text "none"). Every filter passes `none`/undefined through.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use minijinja::value::{Kwargs, Rest, Value};
use minijinja::{Environment, Error, ErrorKind};

/// The filters peoplesync defines or replaces; also the first "did you mean" candidates for
/// an unknown filter.
pub const CUSTOM: [&str; 9] = [
    "lower",
    "upper",
    "trim",
    "default",
    "split_email",
    "date_format",
    "first_from_full",
    "last_from_full",
    "concat",
];

/// Built-in filters operators commonly reach for, also offered as suggestions.
pub(crate) const BUILTIN: [&str; 14] = [
    "title",
    "capitalize",
    "replace",
    "length",
    "join",
    "first",
    "last",
    "int",
    "float",
    "string",
    "round",
    "tojson",
    "truncate",
    "d",
];

/// Registers every filter on `env`.
pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_filter("lower", lower);
    env.add_filter("upper", upper);
    env.add_filter("trim", trim);
    env.add_filter("default", default);
    env.add_filter("d", default);
    env.add_filter("split_email", split_email);
    env.add_filter("date_format", date_format);
    env.add_filter("first_from_full", first_from_full);
    env.add_filter("last_from_full", last_from_full);
    env.add_filter("concat", concat);
}

/// Missing: undefined, none, or a blank string.
pub(crate) fn is_missing(value: &Value) -> bool {
    value.is_undefined() || value.is_none() || value.as_str().is_some_and(|s| s.trim().is_empty())
}

/// The value's text, or `None` when missing (undefined or none).
fn text(value: &Value) -> Option<String> {
    if value.is_undefined() || value.is_none() {
        None
    } else if let Some(s) = value.as_str() {
        Some(s.to_owned())
    } else {
        Some(value.to_string())
    }
}

fn map_text(value: &Value, f: impl FnOnce(&str) -> String) -> Value {
    match text(value) {
        Some(s) => Value::from(f(&s)),
        None => value.clone(),
    }
}

fn lower(value: &Value) -> Value {
    map_text(value, str::to_lowercase)
}

fn upper(value: &Value) -> Value {
    map_text(value, str::to_uppercase)
}

fn trim(value: &Value, chars: Option<String>) -> Value {
    map_text(value, |s| match &chars {
        Some(chars) => {
            let set: Vec<char> = chars.chars().collect();
            s.trim_matches(&set[..]).to_owned()
        }
        None => s.trim().to_owned(),
    })
}

/// `default(fallback='', boolean=false)`: the fallback when the value is missing
/// (undefined, none or blank), or with `boolean=true` also when it is false-ish.
fn default(value: &Value, fallback: Option<Value>, boolean: Option<Value>) -> Value {
    let lax = boolean.is_some_and(|b| b.is_true());
    if is_missing(value) || (lax && !value.is_true()) {
        fallback.unwrap_or_else(|| Value::from(""))
    } else {
        value.clone()
    }
}

/// The local part of an e-mail address: `ada.lovelace@example.com` → `ada.lovelace`.
fn split_email(value: &Value) -> Value {
    map_text(value, |s| {
        let s = s.trim();
        s.split_once('@').map_or(s, |(local, _)| local).to_owned()
    })
}

/// Reformats a date (`YYYY-MM-DD`, RFC 3339, or `YYYY-MM-DDTHH:MM:SS`) with a strftime
/// format, default `%Y-%m-%d`: `{{ worker.start_date | date_format('%d/%m/%Y') }}`.
fn date_format(value: &Value, format: Option<String>) -> Result<Value, Error> {
    let Some(input) = text(value) else {
        return Ok(value.clone());
    };
    let input = input.trim();
    if input.is_empty() {
        return Ok(Value::from(()));
    }
    let format = format.unwrap_or_else(|| "%Y-%m-%d".to_owned());
    let items: Vec<Item<'_>> = StrftimeItems::new(&format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("date_format: `{format}` is not a valid strftime format"),
        ));
    }
    let mut out = String::new();
    let written = if let Ok(date) = NaiveDate::parse_from_str(input, "%Y-%m-%d") {
        write!(out, "{}", date.format_with_items(items.iter()))
    } else if let Ok(dt) = DateTime::parse_from_rfc3339(input) {
        write!(out, "{}", dt.format_with_items(items.iter()))
    } else if let Ok(dt) = NaiveDateTime::parse_from_str(input, "%Y-%m-%dT%H:%M:%S%.f") {
        write!(out, "{}", dt.format_with_items(items.iter()))
    } else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("date_format: `{input}` is not a date (expected YYYY-MM-DD or RFC 3339)"),
        ));
    };
    match written {
        Ok(()) => Ok(Value::from(out)),
        Err(_) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "date_format: format `{format}` asks for something `{input}` does not have (a time of day?)"
            ),
        )),
    }
}

/// (first, last) of a full name: "Ada King Lovelace" → (Ada, Lovelace);
/// "Lovelace, Ada" → (Ada, Lovelace); a single word is a first name only.
fn split_full(full: &str) -> (Option<String>, Option<String>) {
    if let Some((last, first)) = full.split_once(',') {
        let first = first.split_whitespace().next().map(str::to_owned);
        let last = Some(last.trim().to_owned()).filter(|s| !s.is_empty());
        return (first, last);
    }
    let words: Vec<&str> = full.split_whitespace().collect();
    let first = words.first().map(|w| (*w).to_owned());
    let last = (words.len() > 1).then(|| words[words.len() - 1].to_owned());
    (first, last)
}

fn first_from_full(value: &Value) -> Value {
    match text(value) {
        Some(s) => split_full(&s)
            .0
            .map_or_else(|| Value::from(()), Value::from),
        None => value.clone(),
    }
}

fn last_from_full(value: &Value) -> Value {
    match text(value) {
        Some(s) => split_full(&s)
            .1
            .map_or_else(|| Value::from(()), Value::from),
        None => value.clone(),
    }
}

/// `concat(*parts, sep='')`: the value and the parts, as text, joined with `sep`, leaving
/// out undefined, none and empty (`""`) parts; none when nothing is left. Whitespace-only
/// parts are kept, so `concat(' ', last)` works as a separator.
/// `{{ worker.address_line1 | concat(worker.address_line2, worker.address_line3, sep=', ') }}`.
fn concat(value: &Value, mut parts: Rest<Value>) -> Result<Value, Error> {
    let mut sep = String::new();
    if parts.last().is_some_and(Value::is_kwargs)
        && let Some(kw) = parts.pop()
    {
        let kwargs = Kwargs::try_from(kw)?;
        sep = kwargs.get::<Option<String>>("sep")?.unwrap_or_default();
        kwargs.assert_all_used()?;
    }
    let mut out = String::new();
    let mut first = true;
    for part in std::iter::once(value).chain(parts.iter()) {
        if part.is_undefined() || part.is_none() {
            continue;
        }
        let start = out.len();
        if !first {
            out.push_str(&sep);
        }
        let sep_end = out.len();
        match part.as_str() {
            Some(s) => out.push_str(s),
            None => {
                let _ = write!(out, "{part}");
            }
        }
        if out.len() == sep_end {
            // An empty part adds nothing, not even a separator.
            out.truncate(start);
        } else {
            first = false;
        }
    }
    if out.trim().is_empty() {
        Ok(Value::from(()))
    } else {
        Ok(Value::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_split_into_first_and_last() {
        assert_eq!(
            split_full("Ada King Lovelace"),
            (Some("Ada".into()), Some("Lovelace".into()))
        );
        assert_eq!(
            split_full("Lovelace, Ada King"),
            (Some("Ada".into()), Some("Lovelace".into()))
        );
        assert_eq!(split_full("Cher"), (Some("Cher".into()), None));
        assert_eq!(split_full("  "), (None, None));
        assert_eq!(
            split_full("Łukasz Żółć"),
            (Some("Łukasz".into()), Some("Żółć".into()))
        );
    }

    #[test]
    fn missing_means_undefined_none_or_blank() {
        assert!(is_missing(&Value::UNDEFINED));
        assert!(is_missing(&Value::from(())));
        assert!(is_missing(&Value::from("  ")));
        assert!(!is_missing(&Value::from(0)));
        assert!(!is_missing(&Value::from(false)));
    }
}
