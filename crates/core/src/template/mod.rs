//! Templates and filter conditions, in minijinja (the Jinja dialect of Oomnitza's custom API
//! fields). Everything is compiled once per config revision into two environments: one that
//! renders text, and one whose formatter writes JSON so that a template made of a single
//! `{{ expression }}` keeps its value's type. A missing value is null, never "none".

mod filters;

pub use filters::CUSTOM as CUSTOM_FILTERS;

use std::collections::{BTreeSet, HashSet};

use minijinja::value::Value as JinjaValue;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use crate::names::did_you_mean;
use crate::worker::{FieldRef, IntegrationField, Tracking, Worker};

/// Longest template accepted, in characters (Oomnitza refuses longer paths).
pub const MAX_TEMPLATE_CHARS: usize = 256;
/// Longest filter condition accepted, in characters.
pub const MAX_CONDITION_CHARS: usize = 4096;
/// Instructions one template or condition may execute per record.
const FUEL: u64 = 20_000;
/// Starts a typed template's output when the value is a string (JSON never starts so).
const STRING_MARKER: &str = "\u{1}";
/// The roots templates see.
pub const ROOTS: [&str; 3] = ["response", "worker", "connect"];

/// How much of one root the templates read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Need {
    /// Not read at all.
    #[default]
    Nothing,
    /// Only these top-level keys (`worker.city` needs `city`).
    Keys(BTreeSet<String>),
    /// The whole root (used as a value, subscripted, iterated…).
    Everything,
}

impl Need {
    fn add(&mut self, key: Option<&str>) {
        match (key, &mut *self) {
            (_, Need::Everything) => {}
            (None, _) => *self = Need::Everything,
            (Some(k), Need::Keys(keys)) => {
                keys.insert(k.to_owned());
            }
            (Some(k), Need::Nothing) => *self = Need::Keys(BTreeSet::from([k.to_owned()])),
        }
    }

    fn union(&mut self, other: &Need) {
        match other {
            Need::Nothing => {}
            Need::Everything => *self = Need::Everything,
            Need::Keys(keys) => keys.iter().for_each(|k| self.add(Some(k))),
        }
    }

    fn wants(&self, key: &str) -> bool {
        match self {
            Need::Nothing => false,
            Need::Keys(keys) => keys.contains(key),
            Need::Everything => true,
        }
    }

    fn any(&self) -> bool {
        *self != Need::Nothing
    }
}

/// Which parts of the roots the templates read, so a record's context builds only those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Roots {
    pub(crate) response: Need,
    pub(crate) worker: Need,
    pub(crate) connect: bool,
}

impl Roots {
    /// Everything, for the compile-time dry run.
    fn all() -> Roots {
        Roots {
            response: Need::Everything,
            worker: Need::Everything,
            connect: true,
        }
    }

    pub(crate) fn union(&mut self, other: &Roots) {
        self.response.union(&other.response);
        self.worker.union(&other.worker);
        self.connect |= other.connect;
    }

    #[cfg(test)]
    pub(crate) fn any(&self) -> bool {
        self.response.any() || self.worker.any() || self.connect
    }
}

/// One kind of source (template or condition): its name and its size limit, for the checks
/// both kinds make before compiling.
struct Kind {
    /// Names the source in messages.
    name: &'static str,
    /// Longest source accepted, in characters.
    max_chars: usize,
    /// Why the limit, in the too-long message (followed by the limit).
    over: &'static str,
    /// Ends the empty message: what to write instead, if anything.
    empty_hint: &'static str,
}

const TEMPLATE: Kind = Kind {
    name: "template",
    max_chars: MAX_TEMPLATE_CHARS,
    over: "Oomnitza refuses paths over",
    empty_hint: "; write e.g. {{ response.emailAddress }}",
};

const CONDITION: Kind = Kind {
    name: "condition",
    max_chars: MAX_CONDITION_CHARS,
    over: "use at most",
    empty_hint: "",
};

impl Kind {
    /// Refuses a source longer than the limit, or blank.
    fn check_size(&self, source: &str) -> Result<(), String> {
        let chars = source.chars().count();
        if chars > self.max_chars {
            return Err(format!(
                "{} is {chars} characters long; {} {}",
                self.name, self.over, self.max_chars
            ));
        }
        if source.trim().is_empty() {
            return Err(format!("{} is empty{}", self.name, self.empty_hint));
        }
        Ok(())
    }
}

/// A compiled template or condition: its name in one of the two environments.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    name: String,
    typed: bool,
}

/// The two environments holding one config revision's templates.
pub(crate) struct Engine {
    text: Environment<'static>,
    typed: Environment<'static>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

impl Engine {
    pub(crate) fn new() -> Engine {
        let mut text = base_environment();
        // Text output: a missing value renders as nothing, never "none".
        text.set_formatter(|out, state, value| {
            if value.is_none() || value.is_undefined() {
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        let mut typed = base_environment();
        // Typed output: the emitted value, as JSON, parsed back by `render`.
        typed.set_formatter(|out, _state, value| {
            // Strings, the common case, skip JSON: a marker no JSON text starts with, then
            // the text as is.
            if let Some(text) = value.as_str() {
                return out
                    .write_str(STRING_MARKER)
                    .and_then(|()| out.write_str(text))
                    .map_err(|_| Error::from(ErrorKind::WriteFailure));
            }
            let json = serde_json::to_string(value).map_err(|err| {
                Error::new(
                    ErrorKind::BadSerialization,
                    format!("value cannot be written as JSON: {err}"),
                )
            })?;
            out.write_str(&json)
                .map_err(|_| Error::from(ErrorKind::WriteFailure))
        });
        Engine { text, typed }
    }

    /// Compiles a mapping template. The error names the position and the problem.
    pub(crate) fn add_template(
        &mut self,
        name: &str,
        source: &str,
    ) -> Result<(Compiled, Roots), String> {
        TEMPLATE.check_size(source)?;
        let typed = single_expression(source).is_some_and(|inner| {
            stray_variable_end(inner).is_none()
                && guard(|| {
                    self.text
                        .compile_expression_owned(inner.to_owned())
                        .map(drop)
                })
                .is_ok()
        });
        let env = if typed {
            &mut self.typed
        } else {
            &mut self.text
        };
        guard(|| env.add_template_owned(name.to_owned(), source.to_owned()))
            .map_err(|err| syntax_message("template", source, &err))?;
        let compiled = Compiled {
            name: name.to_owned(),
            typed,
        };
        let roots = self.check_names(&compiled)?;
        Ok((compiled, roots))
    }

    /// Compiles a filter condition (an expression; true loads the worker).
    pub(crate) fn add_condition(
        &mut self,
        name: &str,
        source: &str,
    ) -> Result<(Compiled, Roots), String> {
        CONDITION.check_size(source)?;
        if let Some(at) = stray_variable_end(source) {
            return Err(format!(
                "condition syntax error{}: `}}}}` cannot appear in a condition",
                position(source, at)
            ));
        }
        // Compiled on its own first, so the wrapper below cannot change its meaning.
        if let Err(err) = guard(|| {
            self.text
                .compile_expression_owned(source.to_owned())
                .map(drop)
        }) {
            return Err(syntax_message("condition", source, &err));
        }
        let wrapped = format!("{{% if ({source}) %}}true{{% endif %}}");
        guard(|| self.text.add_template_owned(name.to_owned(), wrapped))
            .map_err(|err| syntax_message("condition", source, &err))?;
        let compiled = Compiled {
            name: name.to_owned(),
            typed: false,
        };
        let roots = self.check_names(&compiled)?;
        Ok((compiled, roots))
    }

    /// Refuses unknown root variables and, by a dry run on a sample record, unknown filters,
    /// tests and functions. Returns the roots the template reads.
    fn check_names(&self, compiled: &Compiled) -> Result<Roots, String> {
        let env = self.env(compiled);
        let template = env
            .get_template(&compiled.name)
            .map_err(|e| e.to_string())?;
        let globals: HashSet<&str> = env.globals().map(|(name, _)| name).collect();
        let mut roots = Roots::default();
        // Nested names ("worker.city") say which keys of a root are read; a bare name means
        // the root is used whole.
        let mut undeclared: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        undeclared.sort();
        for path in undeclared {
            let mut parts = path.splitn(3, '.');
            let name = parts.next().unwrap_or_default();
            let key = parts.next();
            match name {
                "response" => roots.response.add(key),
                "worker" => roots.worker.add(key),
                "connect" => roots.connect = true,
                other if globals.contains(other) => {}
                other => {
                    let hint = did_you_mean(other, ROOTS);
                    let stop = if hint.is_empty() { "." } else { "" };
                    return Err(format!(
                        "unknown variable `{other}`{hint}{stop} Templates see response, worker and connect"
                    ));
                }
            }
        }
        let sample = sample_context();
        if let Err(err) = guard(|| template.render(&sample)) {
            match err.kind() {
                ErrorKind::UnknownFilter => {
                    // The detail reads "filter lowr is unknown".
                    let name = err
                        .detail()
                        .and_then(|d| {
                            d.split_whitespace()
                                .find(|w| !["filter", "is", "unknown"].contains(w))
                        })
                        .unwrap_or("");
                    return Err(format!(
                        "{}{}",
                        error_text(&err),
                        did_you_mean(name, filters::CUSTOM.into_iter().chain(filters::BUILTIN))
                    ));
                }
                ErrorKind::UnknownTest
                | ErrorKind::UnknownFunction
                | ErrorKind::UnknownMethod
                | ErrorKind::TemplateNotFound => return Err(error_text(&err)),
                _ => {}
            }
        }
        Ok(roots)
    }

    fn env(&self, compiled: &Compiled) -> &Environment<'static> {
        if compiled.typed {
            &self.typed
        } else {
            &self.text
        }
    }

    /// Evaluates a mapping template: a JSON value, null when missing or blank.
    pub(crate) fn render(&self, compiled: &Compiled, ctx: &JinjaValue) -> Result<Value, String> {
        let env = self.env(compiled);
        let template = env
            .get_template(&compiled.name)
            .map_err(|e| error_text(&e))?;
        let out = guard(|| template.render(ctx)).map_err(|e| error_text(&e))?;
        if compiled.typed {
            if let Some(text) = out.trim().strip_prefix(STRING_MARKER) {
                return Ok(normalise_output(Value::String(text.to_owned())));
            }
            let value: Value = serde_json::from_str(&out)
                .map_err(|e| format!("template value could not be read back: {e}"))?;
            Ok(normalise_output(value))
        } else {
            Ok(normalise_output(Value::String(out)))
        }
    }

    /// Evaluates a filter condition.
    pub(crate) fn condition(&self, compiled: &Compiled, ctx: &JinjaValue) -> Result<bool, String> {
        let template = self
            .text
            .get_template(&compiled.name)
            .map_err(|e| error_text(&e))?;
        let out = guard(|| template.render(ctx)).map_err(|e| error_text(&e))?;
        Ok(out == "true")
    }
}

fn base_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    env.set_debug(false);
    filters::register(&mut env);
    env
}

/// The inside of a template that is exactly one `{{ … }}`, else `None`.
fn single_expression(source: &str) -> Option<&str> {
    let s = source.trim();
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    (!inner.contains("{{")
        && !inner.contains("}}")
        && !inner.contains("{%")
        && !inner.contains("{#"))
    .then_some(inner)
}

/// Runs `f`, turning a panic inside the template engine into an error. minijinja 2.24's
/// expression lexer panics on a `}}` it takes for the end of the expression ("empty lexer
/// stack"; `stray_variable_end` keeps known inputs away from it): one operator's template
/// must never take the loader or the control plane down.
fn guard<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            "the template engine failed on this input",
        ))
    })
}

/// Byte offset of a `}}` that minijinja's expression lexer would take for the end of the
/// expression: outside string literals, with brackets balanced.
fn stray_variable_end(expr: &str) -> Option<usize> {
    let bytes = expr.as_bytes();
    let mut depth: isize = 0;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b'}' if depth == 0 && bytes.get(i + 1) == Some(&b'}') => return Some(i),
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// A minijinja error as one line, without the internal template name.
fn error_text(err: &Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

/// A syntax error with its line and column in `source`.
fn syntax_message(what: &str, source: &str, err: &Error) -> String {
    let position = match err.range() {
        Some(range) => position(source, range.start),
        None => err
            .line()
            .map_or_else(String::new, |l| format!(" at line {l}")),
    };
    let detail = err
        .detail()
        .map_or_else(|| err.kind().to_string(), str::to_owned);
    format!("{what} syntax error{position}: {detail}")
}

/// " at line L, column C" of byte offset `at` in `source`.
fn position(source: &str, at: usize) -> String {
    let before = source.get(..at.min(source.len())).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" at line {line}, column {column}")
}

/// A value as it goes into a record: strings trimmed, blank strings null, lists and maps
/// as compact JSON text (Oomnitza user fields hold scalars).
pub(crate) fn normalise_output(value: Value) -> Value {
    match value {
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                Value::Null
            } else if t.len() == s.len() {
                Value::String(s)
            } else {
                Value::String(t.to_owned())
            }
        }
        Value::Array(_) | Value::Object(_) => Value::String(value.to_string()),
        other => other,
    }
}

/// What a record's template context holds, decided once per config revision from the
/// roots the templates read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ContextPlan {
    response: Need,
    /// The worker fields to include; `None` leaves the `worker` root out.
    worker: Option<Vec<IntegrationField>>,
    connect: bool,
}

impl ContextPlan {
    pub(crate) fn new(roots: &Roots) -> ContextPlan {
        let worker = roots.worker.any().then(|| {
            IntegrationField::ALL
                .into_iter()
                .filter(|f| roots.worker.wants(f.key()))
                .collect()
        });
        ContextPlan {
            response: roots.response.clone(),
            worker,
            connect: roots.connect,
        }
    }

    /// Whether the context needs anything of the raw record (`response`).
    pub(crate) fn reads_response(&self) -> bool {
        self.response.any()
    }

    /// True when no template reads anything from the record.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        !self.response.any() && self.worker.is_none() && !self.connect
    }
}

/// The template context of one record, as `plan` says.
pub(crate) fn context(
    plan: &ContextPlan,
    raw: &Value,
    worker: &Worker,
    tracking: &Tracking,
) -> JinjaValue {
    let mut entries: Vec<(&str, JinjaValue)> = Vec::with_capacity(3);
    match &plan.response {
        Need::Nothing => {}
        Need::Everything => entries.push(("response", JinjaValue::from_serialize(raw))),
        Need::Keys(keys) => {
            let object = raw.as_object();
            let present = keys.iter().filter_map(|k| {
                object
                    .and_then(|o| o.get(k))
                    .map(|v| (k.as_str(), JinjaValue::from_serialize(v)))
            });
            entries.push(("response", JinjaValue::from_iter(present)));
        }
    }
    if let Some(fields) = &plan.worker {
        let values = fields.iter().map(|f| (f.key(), worker_value(*f, worker)));
        entries.push(("worker", JinjaValue::from_iter(values)));
    }
    if plan.connect {
        let text = |s: &str| {
            let s = s.trim();
            if s.is_empty() {
                JinjaValue::from(())
            } else {
                JinjaValue::from(s)
            }
        };
        entries.push((
            "connect",
            JinjaValue::from_iter([
                ("credentials", text(&tracking.credentials)),
                ("hostname", text(&tracking.hostname)),
            ]),
        ));
    }
    JinjaValue::from_iter(entries)
}

/// One worker field as a template value, without going through JSON.
fn worker_value(field: IntegrationField, worker: &Worker) -> JinjaValue {
    match field.borrowed(worker) {
        FieldRef::Text(text) => text.map_or_else(|| JinjaValue::from(()), JinjaValue::from),
        FieldRef::Flag(flag) => flag.map_or_else(|| JinjaValue::from(()), JinjaValue::from),
    }
}

/// A complete record, for the dry run that finds unknown filters at compile time.
fn sample_context() -> JinjaValue {
    let raw = serde_json::json!({
        "id": "a2G7E000000LlIDUA0", "fullName": "Ada Lovelace", "firstName": "Ada",
        "lastName": "Lovelace", "emailAddress": "ada.lovelace@example.com",
        "hrDepartment": "Engineering",
        "currentEmployment": {"name": "2019.02 #35", "jobTitle": "Principal Engineer",
            "startDate": "2019-02-04", "endDate": "2030-01-31", "active": true},
        "workAddress": {"name": "London HQ", "line1": "1 Example Street", "line2": "Floor 2",
            "line3": "Desk 3", "city": "London", "region": "Greater London",
            "postalCode": "EC1A 1AA", "country": "United Kingdom"},
        "additionalFields": [{"name": "Cost Centre", "value": "CC-104", "source": "fHCM2__Cost_Centre__c"}]
    });
    let worker = Worker::from_raw(&raw).unwrap_or_default();
    let tracking = Tracking {
        credentials: "default".into(),
        hostname: "example.my.salesforce.com".into(),
    };
    context(&ContextPlan::new(&Roots::all()), &raw, &worker, &tracking)
}

#[cfg(test)]
mod tests;
