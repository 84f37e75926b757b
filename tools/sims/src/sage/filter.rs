//! The `$filter` expressions the Employees API accepts (Microsoft REST guidelines syntax, as
//! Sage People's API filtering guide describes it): `path op literal` with `eq`, `ne`, `gt`,
//! `lt`, `ge`, `le`, joined with `and` / `or`, negated with `not`, grouped with parentheses.
//! Paths are the employee's fields, nested with dots (`workAddress.country eq 'France'`);
//! literals are text in single quotes, numbers, `true`, `false`, `null` and dates written bare
//! (`2020-01-01`). Anything else is an `INVALID_FILTER` error.

use serde_json::Value;

use crate::expr::{self, Cursor, Expr, Lexicon, Limits, Token};

/// A parsed filter.
pub(crate) type Filter = Expr<Compare>;

/// One condition: `path op value`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Compare {
    path: Vec<String>,
    op: Op,
    value: Value,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

/// The fields a filter may name.
const PATHS: &[&str] = &[
    "id",
    "fullName",
    "firstName",
    "lastName",
    "emailAddress",
    "hrDepartment",
    "currentEmployment.name",
    "currentEmployment.jobTitle",
    "currentEmployment.startDate",
    "currentEmployment.endDate",
    "currentEmployment.active",
    "workAddress.name",
    "workAddress.line1",
    "workAddress.line2",
    "workAddress.line3",
    "workAddress.city",
    "workAddress.region",
    "workAddress.postalCode",
    "workAddress.country",
];

/// Longest accepted filter, in tokens, and deepest parenthesis nesting: filters are parsed
/// and evaluated recursively, so request data must not be able to exhaust the stack. Sage
/// People does not publish its nesting limit; 16 is the depth peoplesync's own check allows
/// (`peoplesync_core::source_filter::MAX_NESTING`), so the two refuse the same filters.
const LIMITS: Limits = Limits {
    max_tokens: 400,
    max_conditions: 400,
    max_depth: 16,
};

/// The published inner code, nested under `INVALID_FILTER`, that best names a parse problem.
pub(crate) fn inner_code(problem: &str) -> &'static str {
    if problem.contains("unterminated") {
        "UNTERMINATED_LITERAL"
    } else if problem.contains("nest deeper") {
        "GROUPING_TOO_DEEP"
    } else if problem.contains("is not a field") {
        "UNKNOWN_IDENTIFIER"
    } else if problem.contains("operator") {
        "INVALID_OPERATION"
    } else if problem.contains("unexpected") {
        "UNEXPECTED_TOKEN"
    } else {
        "SYNTAX_ERROR"
    }
}

/// Parses a `$filter` value; the error says what is wrong with it. With `id_allowed` false, a
/// condition on `id` is refused as an unknown field (Sage People does not publish whether its
/// filters accept `id`; the simulator accepts it unless told otherwise).
pub(crate) fn parse(input: &str, id_allowed: bool) -> Result<Filter, String> {
    expr::parse(input, Lexicon::PLAIN, LIMITS, |cursor| {
        comparison(cursor, id_allowed)
    })
}

/// `path op literal`.
fn comparison(cursor: &mut Cursor, id_allowed: bool) -> Result<Compare, String> {
    let Some(Token::Word(path)) = cursor.next() else {
        return Err("a condition must start with a field".into());
    };
    if !PATHS.contains(&path.as_str()) || (path == "id" && !id_allowed) {
        return Err(format!("'{path}' is not a field of the employee"));
    }
    let op = match cursor.next() {
        Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "lt" => Op::Lt,
            "ge" => Op::Ge,
            "le" => Op::Le,
            _ => return Err(format!("'{w}' is not a supported operator")),
        },
        _ => return Err(format!("an operator must follow '{path}'")),
    };
    let value = match cursor.next() {
        Some(Token::Str(s)) => Value::String(s),
        Some(Token::Word(w)) => literal(&w)?,
        _ => return Err(format!("a value must follow the operator after '{path}'")),
    };
    Ok(Compare {
        path: path.split('.').map(str::to_string).collect(),
        op,
        value,
    })
}

fn literal(word: &str) -> Result<Value, String> {
    match word {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        "null" => Ok(Value::Null),
        // A date as the filtering guide writes it: compared with a date field's
        // `YYYY-MM-DD` text, which sorts as the dates do.
        _ if word.len() == 10 && chrono::NaiveDate::parse_from_str(word, "%Y-%m-%d").is_ok() => {
            Ok(Value::String(word.to_owned()))
        }
        _ => match word.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(serde_json::json!(n)),
            _ => Err(format!(
                "'{word}' is not a value (strings go in single quotes, dates as 2020-01-01)"
            )),
        },
    }
}

impl Compare {
    /// True if the employee record satisfies the condition.
    fn holds(&self, record: &Value) -> bool {
        let field = self
            .path
            .iter()
            .try_fold(record, |v, key| v.get(key))
            .unwrap_or(&Value::Null);
        compare(field, self.op, &self.value)
    }
}

/// True if the employee record satisfies `filter`.
pub(crate) fn matches(filter: &Filter, record: &Value) -> bool {
    filter.eval(&|condition: &Compare| condition.holds(record))
}

fn compare(field: &Value, op: Op, value: &Value) -> bool {
    let equal = match (field, value) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => field == value,
    };
    let order = match (field, value) {
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        _ => None,
    };
    use std::cmp::Ordering::{Greater, Less};
    match op {
        Op::Eq => equal,
        Op::Ne => !equal,
        Op::Gt => order == Some(Greater),
        Op::Lt => order == Some(Less),
        Op::Ge => order.is_some_and(|o| o != Less),
        Op::Le => order.is_some_and(|o| o != Greater),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::assert_verdicts;
    use crate::generate;
    use serde_json::json;

    fn employee() -> Value {
        json!({
            "id": generate::worker_id(1), "lastName": "O'Brien", "hrDepartment": "R&D",
            "currentEmployment": {"active": true, "startDate": "2019-02-04"},
            "workAddress": {"country": "France", "city": "Paris"},
        })
    }

    fn check(filter: &str) -> bool {
        parse(filter, true)
            .map(|f| matches(&f, &employee()))
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
    }

    #[test]
    fn equality_on_nested_fields_booleans_and_escaped_quotes() {
        assert_verdicts(
            check,
            &[
                "workAddress.country eq 'France'",
                "currentEmployment.active eq true",
                "lastName eq 'O''Brien'",
                "hrDepartment eq 'R&D'",
                "firstName eq null",
                "workAddress.region eq null",
            ],
            &[
                "workAddress.country eq 'Germany'",
                "currentEmployment.active eq false",
            ],
        );
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        assert_verdicts(
            check,
            &[
                "workAddress.country eq 'Spain' or workAddress.city eq 'Paris' and currentEmployment.active eq true",
                "workAddress.country ne 'Spain' AND currentEmployment.startDate gt '2019-01-01'",
                "currentEmployment.startDate le '2019-02-04'",
            ],
            &[
                "(workAddress.country eq 'Spain' or workAddress.city eq 'Paris') and currentEmployment.active eq false",
                "currentEmployment.startDate lt '2019-02-04'",
            ],
        );
    }

    #[test]
    fn not_and_bare_dates_are_taken_as_the_filtering_guide_writes_them() {
        assert_verdicts(
            check,
            &[
                "not workAddress.country eq 'Spain'",
                "currentEmployment.startDate gt 2019-01-01",
                "currentEmployment.startDate eq 2019-02-04",
                "currentEmployment.endDate eq null and not currentEmployment.startDate ge 2020-01-01",
            ],
            &[
                "not (workAddress.country eq 'France' and currentEmployment.active eq true)",
                "currentEmployment.startDate lt 2019-02-04",
            ],
        );
        for bad in [
            "currentEmployment.startDate gt 2019-02-30",
            "currentEmployment.startDate gt 2019-2-4",
            "not",
        ] {
            assert!(parse(bad, true).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn id_is_a_field_unless_the_org_is_set_to_refuse_it() {
        let (one, two) = (generate::worker_id(1), generate::worker_id(2));
        assert!(check(&format!(
            "id eq '{one}' and workAddress.country eq 'France'"
        )));
        assert!(!check(&format!("id eq '{two}'")));
        let refused = parse(&format!("id eq '{one}'"), false).expect_err("id refused");
        assert_eq!(inner_code(&refused), "UNKNOWN_IDENTIFIER");
        assert!(parse("workAddress.country eq 'France'", false).is_ok());
    }

    #[test]
    fn malformed_filters_are_refused() {
        for bad in [
            "",
            "   ",
            "workAddress.country",
            "workAddress.country eq",
            "workAddress.country eq France",
            "workAddress.country like 'F%'",
            "nope eq 'x'",
            "workAddress.country eq 'France",
            "(workAddress.country eq 'France'",
            "workAddress.country eq 'France' and",
            "workAddress.country eq 'France' 'x'",
            "id eq 'a' ; drop",
            "workAddress.country eq 'F' xor id eq 'a'",
        ] {
            assert!(parse(bad, true).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn absurdly_nested_or_long_filters_are_refused_without_crashing() {
        let nested = format!("{}id eq 'x'{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&nested, true).is_err());
        let long = vec!["id eq 'x'"; 5_000].join(" and ");
        assert!(parse(&long, true).is_err());
        let fine = format!("{}id eq 'x'{}", "(".repeat(16), ")".repeat(16));
        assert!(parse(&fine, true).is_ok());
    }
}
