//! The SQL-like `filter` of `GET /api/v3/users`: `field eq 'v'`, `field ne 'v'`,
//! `field IN ['a', 'b']`, `field LIKE 'pat%'` (`%` any run, `_` one character),
//! `field IS NULL`, `field IS NOT NULL`, joined with `and` / `or` and grouped with parentheses.
//! Field names are the lower-case attribute names of the users listing. An `IN` list may hold
//! hundreds of values (a client reading users back by key); it is matched through a set.

use std::collections::HashSet;

use serde_json::Value;

use super::validate::scalar_text;
use crate::expr::{self, Cursor, Expr, Lexicon, Limits, Token};

/// A parsed filter.
pub(crate) type Filter = Expr<Condition>;

/// One condition on one attribute.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Condition {
    Eq(String, Value),
    Ne(String, Value),
    In(String, InList),
    Like(String, String),
    IsNull(String),
    IsNotNull(String),
}

/// The values of an `IN` list, with their texts in a set for matching.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct InList {
    values: Vec<Value>,
    texts: HashSet<String>,
    null: bool,
}

impl InList {
    fn new(values: Vec<Value>) -> Self {
        let texts = values.iter().filter_map(scalar_text).collect();
        let null = values.iter().any(Value::is_null);
        Self {
            values,
            texts,
            null,
        }
    }

    fn contains(&self, field: &Value) -> bool {
        match field {
            Value::Null => self.null,
            other => scalar_text(other).is_some_and(|t| self.texts.contains(&t)),
        }
    }
}

/// Longest accepted filter in tokens (an `IN` list of a few hundred e-mails fits), most
/// conditions, and deepest parenthesis nesting: `and`/`or` chains and parentheses are parsed
/// and evaluated recursively, so request data must not be able to exhaust the stack.
const LIMITS: Limits = Limits {
    max_tokens: 20_000,
    max_conditions: 200,
    max_depth: 16,
};

/// Parses a filter over the given field names; the error says what is wrong.
pub(crate) fn parse(
    input: &str,
    fields: &[String],
    backslash_escapes: bool,
) -> Result<Filter, String> {
    let lexicon = Lexicon {
        backslash_in_single_quotes: backslash_escapes,
        ..Lexicon::WITH_LISTS
    };
    expr::parse(input, lexicon, LIMITS, |cursor| condition(cursor, fields))
}

/// `field op ...`.
fn condition(cursor: &mut Cursor, fields: &[String]) -> Result<Condition, String> {
    let Some(Token::Word(field)) = cursor.next() else {
        return Err("expected a field name".into());
    };
    if !fields.contains(&field) {
        return Err(format!("'{field}' is not a user attribute"));
    }
    let op = match cursor.next() {
        Some(Token::Word(w)) => w.to_ascii_lowercase(),
        _ => return Err(format!("an operator must follow '{field}'")),
    };
    match op.as_str() {
        "eq" => Ok(Condition::Eq(field, literal(cursor)?)),
        "ne" => Ok(Condition::Ne(field, literal(cursor)?)),
        "like" => match cursor.next() {
            Some(Token::Str(pattern)) => Ok(Condition::Like(field, pattern)),
            _ => Err("LIKE needs a quoted pattern".into()),
        },
        "in" => {
            if cursor.next() != Some(Token::LBracket) {
                return Err("IN needs a list in brackets: IN ['a', 'b']".into());
            }
            let mut values = vec![literal(cursor)?];
            loop {
                match cursor.next() {
                    Some(Token::Comma) => values.push(literal(cursor)?),
                    Some(Token::RBracket) => break,
                    _ => return Err("the IN list is not closed with ']'".into()),
                }
            }
            Ok(Condition::In(field, InList::new(values)))
        }
        "is" => {
            let negated = cursor.keyword("not");
            if !cursor.keyword("null") {
                return Err("IS must be followed by NULL or NOT NULL".into());
            }
            Ok(if negated {
                Condition::IsNotNull(field)
            } else {
                Condition::IsNull(field)
            })
        }
        other => Err(format!("'{other}' is not a supported operator")),
    }
}

fn literal(cursor: &mut Cursor) -> Result<Value, String> {
    match cursor.next() {
        Some(Token::Str(s)) => Ok(Value::String(s)),
        Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            "null" => Ok(Value::Null),
            _ => match w.parse::<f64>() {
                Ok(n) if n.is_finite() => Ok(Value::String(w)),
                _ => Err(format!("'{w}' is not a value (quote strings)")),
            },
        },
        other => Err(format!("expected a value, found {other:?}")),
    }
}

/// Values are compared by their text, so `role eq 25` and `role eq '25'` agree.
fn same(field: &Value, wanted: &Value) -> bool {
    match (field, wanted) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        _ => scalar_text(field).is_some() && scalar_text(field) == scalar_text(wanted),
    }
}

/// SQL `LIKE`: `%` matches any run of characters, `_` exactly one.
pub(crate) fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // matches[j] = pattern[..i] matches text[..j]
    let mut matches = vec![false; t.len() + 1];
    matches[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        match pc {
            '%' => {
                let mut seen = false;
                for j in 0..=t.len() {
                    seen |= matches[j];
                    next[j] = seen;
                }
            }
            _ => {
                for j in 1..=t.len() {
                    next[j] = matches[j - 1] && (pc == '_' || pc == t[j - 1]);
                }
            }
        }
        matches = next;
    }
    matches[t.len()]
}

impl Condition {
    fn holds<'v>(&self, attribute: &impl Fn(&str) -> Option<&'v Value>) -> bool {
        let get = |f: &str| attribute(f).unwrap_or(&Value::Null);
        match self {
            Condition::Eq(f, v) => same(get(f), v),
            Condition::Ne(f, v) => !same(get(f), v),
            Condition::In(f, list) => list.contains(get(f)),
            Condition::Like(f, pattern) => scalar_text(get(f)).is_some_and(|t| like(&t, pattern)),
            Condition::IsNull(f) => get(f).is_null(),
            Condition::IsNotNull(f) => !get(f).is_null(),
        }
    }
}

/// True if the user (lower-case attribute view) satisfies `filter`.
#[cfg(test)]
pub(crate) fn matches(filter: &Filter, user: &Value) -> bool {
    matches_by(filter, &|f: &str| user.get(f))
}

/// True if the user whose attribute values `attribute` gives satisfies `filter`.
pub(crate) fn matches_by<'v, F>(filter: &Filter, attribute: &F) -> bool
where
    F: Fn(&str) -> Option<&'v Value>,
{
    filter.eval(&|condition: &Condition| condition.holds(attribute))
}

/// An attribute and the texts it must have one of for any user to match `filter`, when the
/// filter says so (an `eq` or `IN` condition, alone or joined with `and`), so that a read can
/// look the candidates up instead of scanning every user. `None` when it cannot tell (including
/// null or blank values, which are not looked up).
pub(crate) fn narrowing(filter: &Filter) -> Option<(&str, Vec<String>)> {
    let texts = |values: &[Value]| -> Option<Vec<String>> {
        values
            .iter()
            .map(|v| scalar_text(v).filter(|t| !t.trim().is_empty()))
            .collect()
    };
    match filter {
        Expr::Leaf(Condition::Eq(f, v)) => Some((f, texts(std::slice::from_ref(v))?)),
        Expr::Leaf(Condition::In(f, list)) => Some((f, texts(&list.values)?)),
        Expr::And(a, b) => narrowing(a).or_else(|| narrowing(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::assert_verdicts;
    use serde_json::json;

    fn fields() -> Vec<String> {
        ["email", "username", "role", "position", "first_name"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn check(filter: &str) -> bool {
        let user =
            json!({"email": "ada@example.com", "username": "ada", "role": "25", "position": null});
        parse(filter, &fields(), false)
            .map(|f| matches(&f, &user))
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
    }

    #[test]
    fn each_operator() {
        assert_verdicts(
            check,
            &[
                "email eq 'ada@example.com'",
                "email eq \"ada@example.com\"",
                "email ne 'bob@example.com'",
                "role eq 25",
                "role IN ['10', '25']",
                "email LIKE '%@example.com'",
                "email like 'a_a@%'",
                "position IS NULL",
                "first_name is null",
                "email IS NOT NULL",
            ],
            &[
                "email eq 'bob@example.com'",
                "role in ['10']",
                "email LIKE 'bob%'",
            ],
        );
    }

    #[test]
    fn and_or_and_parentheses() {
        assert_verdicts(
            check,
            &[
                "email eq 'x' or role eq '25' and username eq 'ada'",
                "email eq 'x' OR (role eq '25' AND position IS NULL)",
            ],
            &["(email eq 'x' or role eq '25') and username eq 'bob'"],
        );
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in [
            "",
            "email",
            "email eq",
            "email = 'x'",
            "nope eq 'x'",
            "email IN 'x'",
            "email IN ['x'",
            "email LIKE x",
            "email IS 'x'",
            "email eq 'x' and",
            "(email eq 'x'",
            "email eq 'x",
            "email eq x",
            "email eq 'x' role eq 'y'",
        ] {
            assert!(
                parse(bad, &fields(), false).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn like_wildcards() {
        assert!(like("", "%"));
        assert!(like("abc", "a%c"));
        assert!(like("abc", "%b%"));
        assert!(!like("abc", "a_"));
        assert!(like("a%c", "a%c"));
        assert!(!like("ab", "abc%"));
    }

    #[test]
    fn absurdly_nested_or_long_filters_are_refused_without_crashing() {
        let nested = format!("{}email eq 'x'{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&nested, &fields(), false).is_err());
        let long = vec!["email eq 'x'"; 5_000].join(" or ");
        assert!(parse(&long, &fields(), false).is_err());
        let flat = vec!["email eq 'x'"; 300].join(" or ");
        assert!(
            parse(&flat, &fields(), false).is_err(),
            "too many conditions"
        );
        let huge = format!("email IN [{}]", vec!["'x'"; 20_000].join(", "));
        assert!(parse(&huge, &fields(), false).is_err(), "too many tokens");
    }

    #[test]
    fn a_long_in_list_is_one_condition_and_narrows_the_read() {
        let values: Vec<String> = (0..500).map(|n| format!("'u{n}@example.com'")).collect();
        let filter = parse(
            &format!("email IN [{}]", values.join(", ")),
            &fields(),
            false,
        )
        .expect("500 values are accepted");
        assert!(matches(&filter, &json!({"email": "u499@example.com"})));
        assert!(!matches(&filter, &json!({"email": "u500@example.com"})));
        let (field, texts) = narrowing(&filter).expect("narrows");
        assert_eq!((field, texts.len()), ("email", 500));
        let and = parse("position IS NULL and role eq 25", &fields(), false).expect("valid");
        assert_eq!(narrowing(&and), Some(("role", vec!["25".to_string()])));
        for wide in [
            "email eq 'a' or role eq '1'",
            "email IN ['a', null]",
            "email eq ''",
        ] {
            let f = parse(wide, &fields(), false).expect("valid");
            assert_eq!(narrowing(&f), None, "{wide}");
        }
    }
}
