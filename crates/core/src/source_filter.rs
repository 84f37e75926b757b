//! Checking an integration's `source_filter` before it is sent to Sage People as `$filter`.
//!
//! The Employees API takes Microsoft REST-guidelines filters (Sage People's API filtering
//! guide): comparisons of a (dotted) field path with a literal, joined by `and` / `or`, negated
//! with `not`, grouped with parentheses. Literals are text in single quotes, numbers, `true`,
//! `false`, `null`, and dates written bare as `YYYY-MM-DD`, as that guide writes them.
//! A typo found here is refused when the integration config is stored (naming
//! `source_filter`) and fails a run at once with the position of the problem, instead of
//! spending an API call on a `400 INVALID_FILTER`. Sage People still has the last word: a
//! filter that passes here but names a field the org does not have is refused by the API,
//! and that refusal is reported as a configuration error too.

/// Longest filter accepted; the filter travels in the URL of every page request.
pub const MAX_FILTER_CHARS: usize = 2_000;

/// Deepest nesting of parentheses accepted. Sage People has a limit (its `GROUPING_TOO_DEEP`)
/// but does not publish it; the simulator refuses deeper filters at the same depth.
pub const MAX_NESTING: usize = 16;

const OPERATORS: [&str; 6] = ["eq", "ne", "gt", "ge", "lt", "le"];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Literal,
    Open,
    Close,
}

/// Checks the syntax of `filter`; the error says what is wrong and where.
pub fn validate(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err(
            "the source filter is empty; remove `source_filter` to read every worker".into(),
        );
    }
    if filter.chars().count() > MAX_FILTER_CHARS {
        return Err(format!(
            "the source filter is longer than {MAX_FILTER_CHARS} characters"
        ));
    }
    let tokens = tokenize(filter)?;
    let mut parser = Parser { tokens, pos: 0 };
    parser.expression(0)?;
    match parser.tokens.get(parser.pos) {
        None => Ok(()),
        Some((token, at)) => Err(format!(
            "unexpected {} at character {at}; join conditions with `and` or `or`",
            describe(token)
        )),
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(word) => format!("`{word}`"),
        Token::Literal => "a value".into(),
        Token::Open => "`(`".into(),
        Token::Close => "`)`".into(),
    }
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            tokens.push((Token::Open, at));
            i += 1;
        } else if c == ')' {
            tokens.push((Token::Close, at));
            i += 1;
        } else if c == '\'' {
            // A quoted string; a quote inside is written twice ('O''Brien').
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(format!(
                            "the string starting at character {at} is not closed with `'`"
                        ));
                    }
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => i += 2,
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            tokens.push((Token::Literal, at));
        } else if c.is_ascii_digit() || c == '-' {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '-' | ':'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if !is_number(&word) && !is_date(&word) {
                return Err(format!(
                    "`{word}` at character {at} cannot stand unquoted in a source_filter: \
                     Sage People's filters take numbers (100, -5, 100.00) and dates written \
                     YYYY-MM-DD (2024-01-31) without quotes; put text in single quotes"
                ));
            }
            tokens.push((Token::Literal, at));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.ends_with('.') || word.contains("..") {
                return Err(format!(
                    "the field path `{word}` at character {at} is malformed; write nested fields as workAddress.country"
                ));
            }
            match word.as_str() {
                "true" | "false" | "null" => tokens.push((Token::Literal, at)),
                _ => tokens.push((Token::Ident(word), at)),
            }
        } else {
            return Err(format!(
                "unexpected `{c}` at character {at}; quote text values with single quotes ('France')"
            ));
        }
    }
    Ok(tokens)
}

/// An integer or a decimal with `.`, optionally negative: `100`, `-5`, `100.00`.
fn is_number(word: &str) -> bool {
    let digits = word.strip_prefix('-').unwrap_or(word);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    [whole, fraction]
        .iter()
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// A calendar date written `YYYY-MM-DD`.
fn is_date(word: &str) -> bool {
    word.len() == 10
        && word.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
        && chrono::NaiveDate::parse_from_str(word, "%Y-%m-%d").is_ok()
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&(Token, usize)> {
        self.tokens.get(self.pos)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some((Token::Ident(w), _)) if w.eq_ignore_ascii_case(word))
    }

    fn end_position(&self) -> usize {
        self.tokens.last().map_or(1, |(_, at)| at + 1)
    }

    /// `or`-joined `and`-joined terms; `depth` bounds nesting.
    fn expression(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_NESTING {
            return Err(format!(
                "the source filter nests parentheses more than {MAX_NESTING} deep"
            ));
        }
        loop {
            self.term(depth)?;
            if self.keyword("and") || self.keyword("or") {
                self.pos += 1;
            } else {
                return Ok(());
            }
        }
    }

    fn term(&mut self, depth: usize) -> Result<(), String> {
        if self.keyword("not") {
            self.pos += 1;
            return self.term(depth);
        }
        match self.peek().cloned() {
            None => Err(format!(
                "the source filter ends where a condition was expected (character {})",
                self.end_position()
            )),
            Some((Token::Open, at)) => {
                self.pos += 1;
                self.expression(depth + 1)?;
                match self.peek() {
                    Some((Token::Close, _)) => {
                        self.pos += 1;
                        Ok(())
                    }
                    _ => Err(format!("the `(` at character {at} is not closed")),
                }
            }
            Some((Token::Ident(field), at)) => {
                if OPERATORS.contains(&field.to_ascii_lowercase().as_str())
                    || ["and", "or"].contains(&field.to_ascii_lowercase().as_str())
                {
                    return Err(format!(
                        "`{field}` at character {at} needs a field before it, e.g. workAddress.country eq 'France'"
                    ));
                }
                self.pos += 1;
                let op = match self.peek().cloned() {
                    Some((Token::Ident(op), _))
                        if OPERATORS.contains(&op.to_ascii_lowercase().as_str()) =>
                    {
                        op
                    }
                    Some((token, op_at)) => {
                        return Err(format!(
                            "expected a comparison (eq, ne, gt, ge, lt, le) after `{field}` at character {op_at}, found {}",
                            describe(&token)
                        ));
                    }
                    None => {
                        return Err(format!(
                            "`{field}` at character {at} needs a comparison, e.g. {field} eq 'value'"
                        ));
                    }
                };
                self.pos += 1;
                match self.peek() {
                    Some((Token::Literal, _)) => {
                        self.pos += 1;
                        Ok(())
                    }
                    Some((token, value_at)) => Err(format!(
                        "`{field} {op}` must be followed by a value ('text', a number, a YYYY-MM-DD date, true, false or null) at character {value_at}, found {}",
                        describe(token)
                    )),
                    None => Err(format!("`{field} {op}` needs a value after it")),
                }
            }
            Some((token, at)) => Err(format!(
                "unexpected {} at character {at}; a condition starts with a field name",
                describe(&token)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_filters_are_accepted() {
        for filter in [
            "workAddress.country eq 'France'",
            "hrDepartment eq 'Engineering' and currentEmployment.active eq true",
            "(workAddress.country eq 'France' or workAddress.country eq 'Côte d''Ivoire') and not hrDepartment eq null",
            "currentEmployment.startDate ge 2024-01-01",
            "currentEmployment.endDate lt 2024-02-29 or currentEmployment.endDate eq null",
            "amount gt 100.00 and amount lt -5",
            "id gt 'a2G7E0000000000' and id lt 'a2G7EZZZZZZZZZZ'",
        ] {
            assert_eq!(validate(filter), Ok(()), "{filter}");
        }
    }

    #[test]
    fn mistakes_are_refused_with_where_they_are() {
        let cases = [
            ("", "empty"),
            (
                "workAddress.country = 'France'",
                "unexpected `=` at character 21",
            ),
            ("workAddress.country eq 'France", "not closed with `'`"),
            (
                "workAddress.country equals 'France'",
                "expected a comparison",
            ),
            ("workAddress.country eq", "needs a value"),
            ("(hrDepartment eq 'x'", "not closed"),
            ("hrDepartment eq 'x' hrDepartment eq 'y'", "join conditions"),
            ("eq 'x'", "needs a field"),
            ("workAddress..country eq 'x'", "malformed"),
            (
                "hrDepartment eq 'x' and",
                "ends where a condition was expected",
            ),
            ("a ge 2024-01-31T10:00:00", "cannot stand unquoted"),
            ("a ge 2024-1-5", "cannot stand unquoted"),
            ("a ge 2023-02-29", "cannot stand unquoted"),
            ("a eq 12abc", "cannot stand unquoted"),
            ("a eq 1.2.3", "cannot stand unquoted"),
            ("a eq 1.", "cannot stand unquoted"),
            ("a eq -", "cannot stand unquoted"),
        ];
        for (filter, expected) in cases {
            let err = validate(filter).expect_err(filter);
            assert!(err.contains(expected), "{filter}: {err}");
        }
    }

    #[test]
    fn the_mapping_page_lists_what_this_parser_says() {
        let page = include_str!("../../../docs/mapping.md");
        assert!(
            !page.contains("balanced quotes and parentheses only"),
            "docs/mapping.md still says the filter is only checked for balance"
        );
        let long = format!("a eq '{}'", "x".repeat(MAX_FILTER_CHARS));
        let deep = format!("{}a eq 1{}", "(".repeat(17), ")".repeat(17));
        let cases = [
            ("  ", "the source filter is empty"),
            (long.as_str(), "is longer than 2000 characters"),
            ("workAddress.country eq 'France", "is not closed with `'`"),
            (
                "workAddress.country equals 'France'",
                "expected a comparison (eq, ne, gt, ge, lt, le) after `workAddress.country`",
            ),
            ("workAddress.country equals 'France'", "found `equals`"),
            ("hrDepartment eq (", "must be followed by a value"),
            ("hrDepartment eq", "needs a value after it"),
            ("eq 'x'", "needs a field before it"),
            ("(hrDepartment eq 'x'", "is not closed"),
            ("country = 'France'", "quote text values with single quotes"),
            ("a eq 1 b eq 2", "join conditions with `and` or `or`"),
            ("a eq 1 and", "ends where a condition was expected"),
            ("a..b eq 1", "is malformed"),
            (deep.as_str(), "nests parentheses more than 16 deep"),
            (
                "a ge 2024-01-31T10:00",
                "cannot stand unquoted in a source_filter",
            ),
        ];
        for (filter, said) in cases {
            let err = validate(filter).expect_err(filter);
            assert!(err.contains(said), "{filter}: {err}");
            assert!(
                page.contains(said),
                "docs/mapping.md does not list {said:?}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |depth: usize| format!("{}a eq 1{}", "(".repeat(depth), ")".repeat(depth));
        assert_eq!(validate(&nested(MAX_NESTING)), Ok(()));
        let too_deep = validate(&nested(MAX_NESTING + 1)).expect_err("too deep");
        assert!(too_deep.contains("16 deep"), "{too_deep}");
    }
}
