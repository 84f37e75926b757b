//! What the two simulators' filter languages share: tokens, `and`/`or` with `and` binding
//! tighter, parentheses, and limits on length and nesting (filters come from requests, are parsed
//! and evaluated recursively, and must not exhaust the stack). Each simulator parses its own
//! conditions (the leaves) — Sage People's `path op literal`, Oomnitza's `field eq/ne/IN/LIKE/IS`.

use std::fmt::Debug;

/// One token of a filter.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    LBracket,
    RBracket,
    Comma,
}

/// What a language's tokens look like beyond words, strings in single quotes (`''` escapes a
/// quote) and parentheses, and whether it has `not` besides `and` and `or`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lexicon {
    /// Strings may also be in double quotes, inside which `\` escapes the next character.
    pub double_quotes: bool,
    /// `\` escapes the next character inside single quotes too (SQL keeps it as it is).
    pub backslash_in_single_quotes: bool,
    /// `[`, `]` and `,` are tokens (lists).
    pub lists: bool,
    /// `not` before a condition or a parenthesised group negates it.
    pub negation: bool,
}

impl Lexicon {
    /// Strings in single quotes only; no lists; `not` negates.
    pub(crate) const PLAIN: Lexicon = Lexicon {
        double_quotes: false,
        backslash_in_single_quotes: false,
        lists: false,
        negation: true,
    };
    /// Strings in single quotes (as in SQL, `\` is itself) or double quotes (`\` escapes), and
    /// `[a, b]` lists; no `not`.
    pub(crate) const WITH_LISTS: Lexicon = Lexicon {
        double_quotes: true,
        backslash_in_single_quotes: false,
        lists: true,
        negation: false,
    };
}

/// How much of a filter is accepted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Tokens at most.
    pub max_tokens: usize,
    /// Conditions at most.
    pub max_conditions: usize,
    /// Parenthesis nesting at most.
    pub max_depth: usize,
}

/// A parsed filter whose conditions are `L`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr<L> {
    Or(Box<Expr<L>>, Box<Expr<L>>),
    And(Box<Expr<L>>, Box<Expr<L>>),
    Not(Box<Expr<L>>),
    Leaf(L),
}

impl<L> Expr<L> {
    /// Whether the filter holds, `leaf` telling whether each condition does.
    pub(crate) fn eval(&self, leaf: &impl Fn(&L) -> bool) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(leaf) || b.eval(leaf),
            Expr::And(a, b) => a.eval(leaf) && b.eval(leaf),
            Expr::Not(a) => !a.eval(leaf),
            Expr::Leaf(condition) => leaf(condition),
        }
    }
}

fn tokenize(input: &str, lexicon: Lexicon) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        let single = match c {
            '(' => Some(Token::Open),
            ')' => Some(Token::Close),
            '[' if lexicon.lists => Some(Token::LBracket),
            ']' if lexicon.lists => Some(Token::RBracket),
            ',' if lexicon.lists => Some(Token::Comma),
            _ => None,
        };
        if let Some(token) = single {
            chars.next();
            tokens.push(token);
        } else if c.is_whitespace() {
            chars.next();
        } else if c == '\'' || (c == '"' && lexicon.double_quotes) {
            let escapes = c == '"' || lexicon.backslash_in_single_quotes;
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    // A doubled quote is the quote itself: 'O''Brien'.
                    Some(q) if q == c && chars.peek() == Some(&c) => {
                        chars.next();
                        text.push(c);
                    }
                    Some(q) if q == c => break,
                    Some('\\') if escapes => match chars.next() {
                        Some(escaped) => text.push(escaped),
                        None => return Err("unterminated string literal".into()),
                    },
                    Some(ch) => text.push(ch),
                    None => return Err("unterminated string literal".into()),
                }
            }
            tokens.push(Token::Str(text));
        } else {
            let mut word = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_alphanumeric() || matches!(ch, '.' | '_' | '-' | '+') {
                    word.push(ch);
                    chars.next();
                } else {
                    break;
                }
            }
            if word.is_empty() {
                return Err(format!("unexpected character '{c}'"));
            }
            tokens.push(Token::Word(word));
        }
    }
    Ok(tokens)
}

/// Where a condition parser reads from.
pub(crate) struct Cursor {
    tokens: Vec<Token>,
    pos: usize,
}

impl Cursor {
    /// The next token, consumed.
    pub(crate) fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    /// Consumes the next token if it is the keyword `kw` (any case).
    pub(crate) fn keyword(&mut self, kw: &str) -> bool {
        match self.tokens.get(self.pos) {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }
}

/// Parses `input`: conditions (read by `condition` from the cursor, starting at the token
/// after which a condition must begin) joined with `and`/`or` and grouped with parentheses.
pub(crate) fn parse<L>(
    input: &str,
    lexicon: Lexicon,
    limits: Limits,
    condition: impl FnMut(&mut Cursor) -> Result<L, String>,
) -> Result<Expr<L>, String> {
    let tokens = tokenize(input, lexicon)?;
    if tokens.is_empty() {
        return Err("the filter is empty".into());
    }
    if tokens.len() > limits.max_tokens {
        return Err(format!(
            "the filter is too long (more than {} tokens)",
            limits.max_tokens
        ));
    }
    let mut parser = Parser {
        cursor: Cursor { tokens, pos: 0 },
        negation: lexicon.negation,
        limits,
        depth: 0,
        conditions: 0,
        condition,
    };
    let expr = parser.or()?;
    match parser.cursor.tokens.get(parser.cursor.pos) {
        None => Ok(expr),
        Some(t) => Err(format!("unexpected {t:?} after a complete expression")),
    }
}

struct Parser<F> {
    cursor: Cursor,
    negation: bool,
    limits: Limits,
    depth: usize,
    conditions: usize,
    condition: F,
}

impl<L, F: FnMut(&mut Cursor) -> Result<L, String>> Parser<F> {
    fn or(&mut self) -> Result<Expr<L>, String> {
        let mut left = self.and()?;
        while self.cursor.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr<L>, String> {
        let mut left = self.primary()?;
        while self.cursor.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr<L>, String> {
        // Each `not` is a token, so the token limit bounds how deep negations recurse.
        if self.negation && self.cursor.keyword("not") {
            return Ok(Expr::Not(Box::new(self.primary()?)));
        }
        match self.cursor.tokens.get(self.cursor.pos) {
            Some(Token::Open) => {
                self.cursor.pos += 1;
                self.depth += 1;
                if self.depth > self.limits.max_depth {
                    return Err(format!(
                        "parentheses nest deeper than {}",
                        self.limits.max_depth
                    ));
                }
                let inner = self.or()?;
                self.depth -= 1;
                match self.cursor.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err("missing ')'".into()),
                }
            }
            Some(Token::Word(_)) => {
                self.conditions += 1;
                if self.conditions > self.limits.max_conditions {
                    return Err(format!(
                        "the filter has more than {} conditions",
                        self.limits.max_conditions
                    ));
                }
                (self.condition)(&mut self.cursor).map(Expr::Leaf)
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("the filter ends too early".into()),
        }
    }
}

/// Asserts that `check` (does a filter match a test record?) is true for every filter of
/// `holds` and false for every filter of `fails`, naming the filter that is not.
#[cfg(test)]
pub(crate) fn assert_verdicts(check: impl Fn(&str) -> bool, holds: &[&str], fails: &[&str]) {
    for filter in holds {
        assert!(check(filter), "{filter} should match");
    }
    for filter in fails {
        assert!(!check(filter), "{filter} should not match");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Lexicon = Lexicon::PLAIN;
    const LIMITS: Limits = Limits {
        max_tokens: 100,
        max_conditions: 10,
        max_depth: 3,
    };

    /// Conditions `name` alone, true when the name starts with `t`.
    fn parse_names(input: &str) -> Result<Expr<String>, String> {
        parse_names_in(input, PLAIN)
    }

    fn parse_names_in(input: &str, lexicon: Lexicon) -> Result<Expr<String>, String> {
        parse(input, lexicon, LIMITS, |cursor| match cursor.next() {
            Some(Token::Word(w)) => Ok(w),
            other => Err(format!("expected a name, found {other:?}")),
        })
    }

    fn holds(input: &str) -> bool {
        parse_names(input)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .eval(&|name: &String| name.starts_with('t'))
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        assert_verdicts(
            holds,
            &["t1 or f1 and f2", "t1 AND (f1 OR t2)"],
            &["(t1 or f1) and f2"],
        );
    }

    #[test]
    fn not_negates_the_condition_or_group_after_it_where_the_language_has_it() {
        assert_verdicts(
            holds,
            &["not f1", "not (t1 and f1)", "NOT not t1"],
            &["not t1 or f1"],
        );
        assert!(parse_names("not").is_err());
        // Without negation, `not` is just a name.
        let lists = parse_names_in("not", Lexicon::WITH_LISTS);
        assert_eq!(lists, Ok(Expr::Leaf("not".to_owned())));
    }

    #[test]
    fn limits_and_stray_tokens_are_refused() {
        assert!(parse_names("").is_err());
        assert!(parse_names("((((t1))))").is_err(), "too deep");
        assert!(parse_names(&["t1"; 11].join(" or ")).is_err(), "too many");
        assert!(parse_names("t1 t2").is_err());
        assert!(parse_names("(t1").is_err());
        assert!(parse_names("'t1'").is_err());
    }

    #[test]
    fn strings_follow_the_lexicon() {
        let lists = Lexicon::WITH_LISTS;
        assert_eq!(
            tokenize(r#"'O''Brien' "a\"b" [x, y]"#, lists).unwrap(),
            [
                Token::Str("O'Brien".into()),
                Token::Str("a\"b".into()),
                Token::LBracket,
                Token::Word("x".into()),
                Token::Comma,
                Token::Word("y".into()),
                Token::RBracket
            ]
        );
        assert!(tokenize("\"x\"", PLAIN).is_err());
        // As in SQL, a backslash in single quotes is itself, unless the lexicon says otherwise.
        assert_eq!(
            tokenize(r"'ACME\ada' 'end\'", lists).unwrap(),
            [Token::Str(r"ACME\ada".into()), Token::Str(r"end\".into())]
        );
        let escaping = Lexicon {
            backslash_in_single_quotes: true,
            ..lists
        };
        assert_eq!(
            tokenize(r"'ACME\ada'", escaping).unwrap(),
            [Token::Str("ACMEada".into())]
        );
        assert!(tokenize(r"'end\'", escaping).is_err());
        assert!(tokenize("[x]", PLAIN).is_err());
        assert!(tokenize("'open", PLAIN).is_err());
    }
}
