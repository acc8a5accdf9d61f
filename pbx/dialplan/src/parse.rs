//! TOML text to a `Dialplan`, reporting every problem with the span of the offending key or
//! value. It walks `toml_edit`'s span-preserving document by hand instead of deriving serde
//! types: that is what lets an unknown key, a bad value inside an array or a typo inside a
//! `${…}` each point at their own column, and lets parsing go on after the first problem.
//! Cross-references (does that route exist, is that route shadowed) are `check`'s job.

use std::collections::BTreeMap;
use std::ops::Range;

use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::action::{HangupCause, Strategy};
use crate::diag::{suggest, Diagnostics, LineIndex, Location, Problem, Severity};
use crate::pattern::{NumberMatcher, NumberRegex};
use crate::plan::{
    Condition, ContextDef, Dialplan, ExtensionArg, GroupDef, HeaderTest, Known, MenuDef, RouteDef,
    RouteRef, SourceContext, Spanned, Step, VariableUse,
};
use crate::template::{Template, BUILTIN_VARIABLES};
use crate::time::{DateRange, Days, TimeCondition, TimeRange};

/// The actions the plan language itself defines.
pub(crate) const BUILTIN_ACTIONS: &[&str] = &[
    "answer",
    "playback",
    "say_digits",
    "dial",
    "dial_trunk",
    "menu",
    "park",
    "retrieve",
    "conference",
    "record",
    "set",
    "set_header",
    "wait",
    "goto",
    "call",
    "hangup",
];

const ROOT_KEYS: &[&str] = &["plan", "variables", "trunks", "groups", "menus", "contexts"];
const PLAN_KEYS: &[&str] = &["default_context", "timezone"];
const CONTEXT_KEYS: &[&str] = &["description", "include", "routes"];
const ROUTE_KEYS: &[&str] = &[
    "name",
    "description",
    "match",
    "match_regex",
    "caller",
    "caller_regex",
    "headers",
    "caller_attrs",
    "time",
    "days",
    "dates",
    "timezone",
    "actions",
];
const MENU_KEYS: &[&str] = &[
    "context",
    "prompt",
    "invalid_prompt",
    "timeout",
    "digit_timeout",
    "max_digits",
    "retries",
    "choices",
    "on_failure",
];

/// Names of contexts, routes, menus, trunks and groups: `/` separates context and route in
/// references, so names keep to a small, unambiguous alphabet.
pub(crate) fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_variable_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.!%*+`'~".contains(c))
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => value_type_name(v),
    }
}

fn value_type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "an inline table",
    }
}

struct Walker<'t> {
    text: &'t str,
    index: LineIndex<'t>,
    diags: Diagnostics,
    known: &'t Known,
    /// Variable uses of the route or menu being read.
    uses: Vec<VariableUse>,
}

/// Parses and checks nothing across references: `check` runs after.
pub(crate) fn parse(
    source_name: &str,
    text: &str,
    known: &Known,
) -> (Option<Dialplan>, Diagnostics) {
    let mut w = Walker {
        text,
        index: LineIndex::new(text),
        diags: Diagnostics::new(source_name, text),
        known,
        uses: Vec::new(),
    };
    let doc = match ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let loc = w.loc(e.span());
            let message = e.message().trim().to_string();
            w.diags
                .push(Severity::Error, loc, "", Problem::Syntax { message });
            return (None, w.diags);
        }
    };
    let plan = w.root(doc.as_table(), source_name);
    (plan, w.diags)
}

impl<'t> Walker<'t> {
    fn loc(&self, span: Option<Range<usize>>) -> Option<Location> {
        span.map(|s| self.index.location(s.start))
    }

    fn error(&mut self, span: Option<Range<usize>>, field: &str, problem: Problem) {
        let loc = self.loc(span);
        self.diags.push(Severity::Error, loc, field, problem);
    }

    fn error_at(&mut self, loc: Option<Location>, field: &str, problem: Problem) {
        self.diags.push(Severity::Error, loc, field, problem);
    }

    /// The location of byte `offset` inside a string value's content: exact when the string
    /// is written without escapes (the usual case), the value's start otherwise.
    fn loc_in_string(&self, v: &Value, offset: usize) -> Option<Location> {
        let span = v.span()?;
        let raw = self.text.get(span.clone())?;
        if let Some(s) = v.as_str() {
            let q = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
                3
            } else {
                1
            };
            if raw.len() >= 2 * q && raw.get(q..raw.len() - q) == Some(s) {
                return Some(self.index.location(span.start + q + offset));
            }
        }
        Some(self.index.location(span.start))
    }

    fn key_span(t: &dyn TableLike, key: &str) -> Option<Range<usize>> {
        t.key(key).and_then(|k| k.span())
    }

    /// Reports keys outside `allowed`, with a suggestion.
    fn only_keys(&mut self, t: &dyn TableLike, field: &str, place: &'static str, allowed: &[&str]) {
        for (key, _) in t.iter() {
            if !allowed.contains(&key) {
                let span = Self::key_span(t, key);
                self.error(
                    span,
                    &join(field, key),
                    Problem::UnknownKey {
                        key: key.to_string(),
                        place,
                        suggestion: suggest(key, allowed.iter().copied()),
                    },
                );
            }
        }
    }

    fn wrong_type(
        &mut self,
        item: &Item,
        fallback: Option<Range<usize>>,
        field: &str,
        expected: &'static str,
    ) {
        let span = item.span().or(fallback);
        self.error(
            span,
            field,
            Problem::WrongType {
                expected,
                found: type_name(item),
            },
        );
    }

    fn table<'d>(
        &mut self,
        parent: &'d dyn TableLike,
        key: &str,
        field: &str,
    ) -> Option<&'d dyn TableLike> {
        let item = parent.get(key)?;
        match item.as_table_like() {
            Some(t) => Some(t),
            None => {
                let span = Self::key_span(parent, key);
                self.wrong_type(item, span, field, "a table");
                None
            }
        }
    }

    fn string<'d>(
        &mut self,
        t: &'d dyn TableLike,
        key: &str,
        field: &str,
    ) -> Option<(String, &'d Value)> {
        let item = t.get(key)?;
        match item.as_value() {
            Some(v @ Value::String(s)) => Some((s.value().clone(), v)),
            _ => {
                let span = Self::key_span(t, key);
                self.wrong_type(item, span, field, "a string");
                None
            }
        }
    }

    fn seconds(&mut self, t: &dyn TableLike, key: &str, field: &str, max: i64) -> Option<u32> {
        let item = t.get(key)?;
        match item.as_integer() {
            Some(i) if (0..=max).contains(&i) => Some(i as u32),
            Some(i) => {
                self.error(
                    item.span(),
                    field,
                    Problem::InvalidValue {
                        value: i.to_string(),
                        expected: format!("a whole number from 0 to {max}"),
                    },
                );
                None
            }
            None => {
                let span = Self::key_span(t, key);
                self.wrong_type(item, span, field, "an integer");
                None
            }
        }
    }

    fn boolean(&mut self, t: &dyn TableLike, key: &str, field: &str) -> Option<bool> {
        let item = t.get(key)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                let span = Self::key_span(t, key);
                self.wrong_type(item, span, field, "true or false");
                None
            }
        }
    }

    /// A string, or an array of strings.
    fn strings<'d>(
        &mut self,
        t: &'d dyn TableLike,
        key: &str,
        field: &str,
    ) -> Option<Vec<(String, &'d Value)>> {
        let item = t.get(key)?;
        match item.as_value() {
            Some(v @ Value::String(s)) => Some(vec![(s.value().clone(), v)]),
            Some(Value::Array(a)) => {
                let mut out = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v {
                        Value::String(s) => out.push((s.value().clone(), v)),
                        other => self.error(
                            other.span(),
                            &format!("{field}[{i}]"),
                            Problem::WrongType {
                                expected: "a string",
                                found: value_type_name(other),
                            },
                        ),
                    }
                }
                Some(out)
            }
            _ => {
                let span = Self::key_span(t, key);
                self.wrong_type(item, span, field, "a string or an array of strings");
                None
            }
        }
    }

    fn name(
        &mut self,
        name: &str,
        v: Option<&Value>,
        span: Option<Range<usize>>,
        field: &str,
        what: &'static str,
    ) -> bool {
        if is_plain_name(name) {
            return true;
        }
        self.error(
            v.and_then(|v| v.span()).or(span),
            field,
            Problem::InvalidName {
                what,
                name: name.to_string(),
            },
        );
        false
    }

    /// A template from a string value; variable uses are recorded for the check.
    fn template(&mut self, text: &str, v: &Value, field: &str) -> Option<Template> {
        match Template::parse(text) {
            Ok(t) => {
                for (var, offset) in t.variables() {
                    let location = self.loc_in_string(v, offset);
                    self.uses.push(VariableUse {
                        variable: var.clone(),
                        location,
                        field: field.to_string(),
                    });
                }
                Some(t)
            }
            Err(error) => {
                let loc = self.loc_in_string(v, error.offset());
                self.error_at(loc, field, Problem::BadTemplate { error });
                None
            }
        }
    }

    fn number_matcher(&mut self, text: &str, v: &Value, field: &str) -> Option<NumberMatcher> {
        match NumberMatcher::parse_number_or_pattern(text) {
            Ok(m) => Some(m),
            Err(error) => {
                let loc = self.loc_in_string(v, error.offset());
                self.error_at(
                    loc,
                    field,
                    Problem::BadPattern {
                        pattern: text.to_string(),
                        error,
                    },
                );
                None
            }
        }
    }

    fn regex(&mut self, text: &str, v: &Value, field: &str) -> Option<NumberRegex> {
        match NumberRegex::new(text) {
            Ok(r) => Some(r),
            Err(e) => {
                // The regex crate's message spans several lines with its own caret; the
                // last line is the reason.
                let message = e
                    .to_string()
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid")
                    .trim()
                    .trim_start_matches("error: ")
                    .to_string();
                self.error(
                    v.span(),
                    field,
                    Problem::BadRegex {
                        regex: text.to_string(),
                        message,
                    },
                );
                None
            }
        }
    }

    fn time_zone(&mut self, name: &str, v: &Value, field: &str) -> Option<jiff::tz::TimeZone> {
        match self.known.time_zones.get(name) {
            Ok(z) => Some(z),
            Err(_) => {
                self.error(
                    v.span(),
                    field,
                    Problem::UnknownTimeZone {
                        name: name.to_string(),
                        suggestion: {
                            let names: Vec<String> = self
                                .known
                                .time_zones
                                .available()
                                .map(|n| n.as_str().to_string())
                                .collect();
                            suggest(name, names.iter().map(String::as_str))
                        },
                    },
                );
                None
            }
        }
    }

    fn route_ref(
        &self,
        text: &str,
        v: &Value,
        context: &str,
        field: &str,
    ) -> Result<RouteRef, Problem> {
        let (ctx, route) = match text.split_once('/') {
            Some((c, r)) => (c, r),
            None => (context, text),
        };
        for (n, what) in [(ctx, "context"), (route, "route")] {
            if !is_plain_name(n) {
                return Err(Problem::InvalidName {
                    what,
                    name: n.to_string(),
                });
            }
        }
        Ok(RouteRef {
            context: ctx.to_string(),
            route: route.to_string(),
            location: self.loc(v.span()),
            field: field.to_string(),
        })
    }

    fn root(&mut self, root: &toml_edit::Table, source_name: &str) -> Option<Dialplan> {
        self.only_keys(root, "", "the plan file", ROOT_KEYS);

        // [plan]
        let mut default_context = None;
        let mut timezone = ("UTC".to_string(), jiff::tz::TimeZone::UTC);
        if let Some(plan) = self.table(root, "plan", "plan") {
            self.only_keys(plan, "plan", "[plan]", PLAN_KEYS);
            if let Some((name, v)) = self.string(plan, "default_context", "plan.default_context") {
                default_context = Some(Spanned {
                    value: name,
                    location: self.loc(v.span()),
                    field: "plan.default_context".into(),
                });
            }
            if let Some((name, v)) = self.string(plan, "timezone", "plan.timezone") {
                if let Some(z) = self.time_zone(&name, v, "plan.timezone") {
                    timezone = (name, z);
                }
            }
        }
        let default_context = match default_context {
            Some(d) => d,
            None => {
                let span = Self::key_span(root, "plan").or(Some(0..0));
                self.error(
                    span,
                    "plan",
                    Problem::MissingKey {
                        key: "default_context",
                        place: "[plan]",
                    },
                );
                Spanned {
                    value: String::new(),
                    location: None,
                    field: "plan.default_context".into(),
                }
            }
        };

        // [variables]
        let mut variables = Vec::new();
        if let Some(vars) = self.table(root, "variables", "variables") {
            for (key, item) in vars.iter() {
                let field = join("variables", key);
                let span = Self::key_span(vars, key);
                if !is_variable_name(key) || BUILTIN_VARIABLES.contains(&key) {
                    self.error(
                        span,
                        &field,
                        Problem::InvalidName {
                            what: "variable (not a built-in one)",
                            name: key.to_string(),
                        },
                    );
                    continue;
                }
                match item.as_str() {
                    Some(s) => variables.push((key.to_string(), s.to_string())),
                    None => self.wrong_type(item, span, &field, "a string"),
                }
            }
        }

        // [trunks.NAME] and [groups.NAME]
        let mut trunks = Vec::new();
        if let Some(t) = self.table(root, "trunks", "trunks") {
            for (name, item) in t.iter() {
                let field = join("trunks", name);
                let span = Self::key_span(t, name);
                if !self.name(name, None, span.clone(), &field, "trunk") {
                    continue;
                }
                let Some(entry) = item.as_table_like() else {
                    self.wrong_type(item, span, &field, "a table");
                    continue;
                };
                self.only_keys(entry, &field, "a trunk", &["context"]);
                match self.string(entry, "context", &join(&field, "context")) {
                    Some((ctx, v)) => trunks.push(SourceContext {
                        name: name.to_string(),
                        context: Spanned {
                            value: ctx,
                            location: self.loc(v.span()),
                            field: join(&field, "context"),
                        },
                    }),
                    None if entry.get("context").is_none() => self.error(
                        span,
                        &field,
                        Problem::MissingKey {
                            key: "context",
                            place: "a trunk",
                        },
                    ),
                    None => {}
                }
            }
        }
        let mut groups = Vec::new();
        if let Some(t) = self.table(root, "groups", "groups") {
            for (name, item) in t.iter() {
                let field = join("groups", name);
                let span = Self::key_span(t, name);
                if !self.name(name, None, span.clone(), &field, "group") {
                    continue;
                }
                let Some(entry) = item.as_table_like() else {
                    self.wrong_type(item, span, &field, "a table");
                    continue;
                };
                self.only_keys(entry, &field, "a group", &["users", "context"]);
                let users = self
                    .strings(entry, "users", &join(&field, "users"))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(u, v)| Spanned {
                        value: u,
                        location: self.loc(v.span()),
                        field: join(&field, "users"),
                    })
                    .collect();
                let Some((ctx, v)) = self.string(entry, "context", &join(&field, "context")) else {
                    if entry.get("context").is_none() {
                        self.error(
                            span,
                            &field,
                            Problem::MissingKey {
                                key: "context",
                                place: "a group",
                            },
                        );
                    }
                    continue;
                };
                groups.push(GroupDef {
                    name: name.to_string(),
                    users,
                    context: Spanned {
                        value: ctx,
                        location: self.loc(v.span()),
                        field: join(&field, "context"),
                    },
                });
            }
        }

        // [contexts.NAME]
        let mut contexts: Vec<ContextDef> = Vec::new();
        if let Some(t) = self.table(root, "contexts", "contexts") {
            for (name, item) in t.iter() {
                let field = join("contexts", name);
                let span = Self::key_span(t, name);
                if !self.name(name, None, span.clone(), &field, "context") {
                    continue;
                }
                let Some(ctx) = item.as_table_like() else {
                    self.wrong_type(item, span, &field, "a table");
                    continue;
                };
                let c = self.context(name, ctx, item.span().or(span), &field, &timezone);
                contexts.push(c);
            }
        }
        if contexts.is_empty() {
            self.error(
                Some(0..0),
                "contexts",
                Problem::MissingKey {
                    key: "contexts",
                    place: "the plan file",
                },
            );
        }

        // [menus.NAME]
        let mut menus = Vec::new();
        if let Some(t) = self.table(root, "menus", "menus") {
            for (name, item) in t.iter() {
                let field = join("menus", name);
                let span = Self::key_span(t, name);
                if !self.name(name, None, span.clone(), &field, "menu") {
                    continue;
                }
                let Some(m) = item.as_table_like() else {
                    self.wrong_type(item, span, &field, "a table");
                    continue;
                };
                if let Some(menu) = self.menu(name, m, span, &field, &default_context.value) {
                    menus.push(menu);
                }
            }
        }

        // Returned even with errors, so `check` can report cross-reference problems in the
        // same run; `Dialplan::parse` never hands out a plan with errors.
        Some(Dialplan {
            source_name: source_name.to_string(),
            default_context,
            timezone: timezone.0,
            variables,
            trunks,
            groups,
            menus,
            contexts,
            zone: timezone.1,
            warnings: Diagnostics::default(),
        })
    }

    fn context(
        &mut self,
        name: &str,
        t: &dyn TableLike,
        span: Option<Range<usize>>,
        field: &str,
        timezone: &(String, jiff::tz::TimeZone),
    ) -> ContextDef {
        self.only_keys(t, field, "a context", CONTEXT_KEYS);
        // Documentation for admins only; read to report a wrong type.
        let _ = self.string(t, "description", &join(field, "description"));
        let include = self
            .strings(t, "include", &join(field, "include"))
            .unwrap_or_default()
            .into_iter()
            .map(|(c, v)| Spanned {
                value: c,
                location: self.loc(v.span()),
                field: join(field, "include"),
            })
            .collect();
        let mut routes: Vec<RouteDef> = Vec::new();
        let routes_field = join(field, "routes");
        let mut seen: BTreeMap<String, Option<Location>> = BTreeMap::new();
        if let Some(item) = t.get("routes") {
            let tables: Vec<(&dyn TableLike, Option<Range<usize>>)> = match item {
                Item::ArrayOfTables(a) => {
                    a.iter().map(|t| (t as &dyn TableLike, t.span())).collect()
                }
                Item::Value(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| match v.as_inline_table() {
                        Some(t) => Some((t as &dyn TableLike, v.span())),
                        None => {
                            self.error(
                                v.span(),
                                &format!("{routes_field}[{i}]"),
                                Problem::WrongType {
                                    expected: "a table",
                                    found: value_type_name(v),
                                },
                            );
                            None
                        }
                    })
                    .collect(),
                other => {
                    let span = Self::key_span(t, "routes");
                    self.wrong_type(
                        other,
                        span,
                        &routes_field,
                        "an array of tables ([[…routes]])",
                    );
                    Vec::new()
                }
            };
            for (i, (rt, rspan)) in tables.into_iter().enumerate() {
                let rfield = format!("{routes_field}[{i}]");
                if let Some(r) = self.route(name, rt, rspan, &rfield, timezone) {
                    if let Some(first) = seen.get(&r.name) {
                        let first = first.unwrap_or(Location { line: 0, column: 0 });
                        let loc = r.location;
                        self.error_at(
                            loc,
                            &join(&rfield, "name"),
                            Problem::Duplicate {
                                what: "route",
                                name: r.name.clone(),
                                first,
                            },
                        );
                        continue;
                    }
                    seen.insert(r.name.clone(), r.location);
                    routes.push(r);
                }
            }
        }
        ContextDef {
            name: name.to_string(),
            location: self.loc(span),
            field: field.to_string(),
            include,
            routes,
        }
    }

    fn route(
        &mut self,
        context: &str,
        t: &dyn TableLike,
        span: Option<Range<usize>>,
        field: &str,
        timezone: &(String, jiff::tz::TimeZone),
    ) -> Option<RouteDef> {
        self.uses.clear();
        self.only_keys(t, field, "a route", ROUTE_KEYS);
        let (name, name_value) = match self.string(t, "name", &join(field, "name")) {
            Some(n) => n,
            None => {
                if t.get("name").is_none() {
                    self.error(
                        span,
                        field,
                        Problem::MissingKey {
                            key: "name",
                            place: "a route",
                        },
                    );
                }
                return None;
            }
        };
        let name_ok = self.name(&name, Some(name_value), None, &join(field, "name"), "route");
        let location = self.loc(name_value.span());
        let description = self
            .string(t, "description", &join(field, "description"))
            .map(|(d, _)| d);

        // Which numbers the route is for. A route whose match or conditions did not parse
        // is left out of the shadowing and reachability checks (they would mislead).
        let errors_before = self.diags.errors().count();
        let mut matcher = None;
        if t.contains_key("match") && t.contains_key("match_regex") {
            self.error(
                Self::key_span(t, "match_regex"),
                &join(field, "match_regex"),
                Problem::Conflicting {
                    a: "match",
                    b: "match_regex",
                },
            );
        } else if let Some((m, v)) = self.string(t, "match", &join(field, "match")) {
            let f = join(field, "match");
            matcher = self.number_matcher(&m, v, &f).map(|value| Spanned {
                value,
                location: self.loc(v.span()),
                field: f,
            });
        } else if let Some((m, v)) = self.string(t, "match_regex", &join(field, "match_regex")) {
            let f = join(field, "match_regex");
            matcher = self.regex(&m, v, &f).map(|r| Spanned {
                value: NumberMatcher::Regex(r),
                location: self.loc(v.span()),
                field: f,
            });
        }

        // Conditions, each kept with where it is written.
        let mut conditions = Vec::new();
        if t.contains_key("caller") && t.contains_key("caller_regex") {
            self.error(
                Self::key_span(t, "caller_regex"),
                &join(field, "caller_regex"),
                Problem::Conflicting {
                    a: "caller",
                    b: "caller_regex",
                },
            );
        } else if let Some((m, v)) = self.string(t, "caller", &join(field, "caller")) {
            let f = join(field, "caller");
            if let Some(m) = self.number_matcher(&m, v, &f) {
                conditions.push(Spanned {
                    value: Condition::Caller(m),
                    location: self.loc(v.span()),
                    field: f,
                });
            }
        } else if let Some((m, v)) = self.string(t, "caller_regex", &join(field, "caller_regex")) {
            let f = join(field, "caller_regex");
            if let Some(r) = self.regex(&m, v, &f) {
                conditions.push(Spanned {
                    value: Condition::Caller(NumberMatcher::Regex(r)),
                    location: self.loc(v.span()),
                    field: f,
                });
            }
        }
        if let Some(item) = t.get("headers") {
            let f = join(field, "headers");
            match item.as_array() {
                Some(a) => {
                    for (i, v) in a.iter().enumerate() {
                        let hf = format!("{f}[{i}]");
                        if let Some(c) = self.header_condition(v, &hf) {
                            conditions.push(Spanned {
                                value: c,
                                location: self.loc(v.span()),
                                field: hf,
                            });
                        }
                    }
                }
                None => {
                    let span = Self::key_span(t, "headers");
                    self.wrong_type(
                        item,
                        span,
                        &f,
                        "an array of { name = …, equals/regex/present = … }",
                    );
                }
            }
        }
        if let Some(attrs) = self.table(t, "caller_attrs", &join(field, "caller_attrs")) {
            for (key, item) in attrs.iter() {
                let f = join(&join(field, "caller_attrs"), key);
                match item.as_str() {
                    Some(value) => conditions.push(Spanned {
                        value: Condition::CallerAttribute {
                            name: key.to_string(),
                            value: value.to_string(),
                        },
                        location: self.loc(item.span()),
                        field: f,
                    }),
                    None => {
                        let span = Self::key_span(attrs, key);
                        self.wrong_type(item, span, &f, "a string");
                    }
                }
            }
        }
        if let Some(c) = self.time_condition(t, field, timezone) {
            conditions.push(c);
        }

        let selection_incomplete = self.diags.errors().count() > errors_before;

        // Actions.
        let mut steps = Vec::new();
        let af = join(field, "actions");
        match t.get("actions") {
            None => self.error(
                span.clone(),
                field,
                Problem::MissingKey {
                    key: "actions",
                    place: "a route",
                },
            ),
            Some(item) => match item.as_array() {
                Some(a) if a.is_empty() => self.error(item.span(), &af, Problem::NoActions),
                Some(a) => {
                    for (i, v) in a.iter().enumerate() {
                        let f = format!("{af}[{i}]");
                        if let Some(step) = self.action(v, context, &f) {
                            steps.push(Spanned {
                                value: step,
                                location: self.loc(v.span()),
                                field: f,
                            });
                        }
                    }
                }
                None => {
                    let span = Self::key_span(t, "actions");
                    self.wrong_type(item, span, &af, "an array of actions");
                }
            },
        }
        let variables = std::mem::take(&mut self.uses);
        name_ok.then_some(RouteDef {
            name,
            description,
            location,
            field: field.to_string(),
            matcher,
            conditions,
            steps,
            variables,
            selection_incomplete,
        })
    }

    fn header_condition(&mut self, v: &Value, field: &str) -> Option<Condition> {
        let Some(t) = v.as_inline_table() else {
            self.error(
                v.span(),
                field,
                Problem::WrongType {
                    expected: "an inline table { name = …, equals/regex/present = … }",
                    found: value_type_name(v),
                },
            );
            return None;
        };
        self.only_keys(
            t,
            field,
            "a header condition",
            &["name", "equals", "regex", "present"],
        );
        let Some((name, nv)) = self.string(t, "name", &join(field, "name")) else {
            if !t.contains_key("name") {
                self.error(
                    v.span(),
                    field,
                    Problem::MissingKey {
                        key: "name",
                        place: "a header condition",
                    },
                );
            }
            return None;
        };
        if !is_header_name(&name) {
            self.error(
                nv.span(),
                &join(field, "name"),
                Problem::InvalidValue {
                    value: name,
                    expected: "a SIP header name".into(),
                },
            );
            return None;
        }
        let tests = ["equals", "regex", "present"]
            .iter()
            .filter(|k| t.contains_key(k))
            .count();
        if tests != 1 {
            self.error(
                v.span(),
                field,
                Problem::InvalidValue {
                    value: format!("{tests} tests"),
                    expected: "exactly one of equals, regex or present".into(),
                },
            );
            return None;
        }
        let test = if let Some((s, _)) = self.string(t, "equals", &join(field, "equals")) {
            HeaderTest::Equals(s)
        } else if let Some((s, rv)) = self.string(t, "regex", &join(field, "regex")) {
            // Header values are matched whole, like numbers.
            HeaderTest::Matches(self.regex(&s, rv, &join(field, "regex"))?)
        } else {
            match self.boolean(t, "present", &join(field, "present"))? {
                true => HeaderTest::Present,
                false => {
                    self.error(
                        t.get("present").and_then(|i| i.span()),
                        &join(field, "present"),
                        Problem::InvalidValue {
                            value: "false".into(),
                            expected: "true (to require a header to be absent, put a route with `present = true` first)".into(),
                        },
                    );
                    return None;
                }
            }
        };
        Some(Condition::Header { name, test })
    }

    fn time_condition(
        &mut self,
        t: &dyn TableLike,
        field: &str,
        timezone: &(String, jiff::tz::TimeZone),
    ) -> Option<Spanned<Condition>> {
        if !["time", "days", "dates"].iter().any(|k| t.contains_key(k)) {
            if t.contains_key("timezone") {
                self.error(
                    Self::key_span(t, "timezone"),
                    &join(field, "timezone"),
                    Problem::InvalidValue {
                        value: "timezone".into(),
                        expected: "used with time, days or dates (alone it has no effect)".into(),
                    },
                );
            }
            return None;
        }
        let (zone_name, zone) = match self.string(t, "timezone", &join(field, "timezone")) {
            Some((name, v)) => {
                let z = self.time_zone(&name, v, &join(field, "timezone"))?;
                (name, z)
            }
            None => timezone.clone(),
        };
        let mut cond = TimeCondition {
            zone_name,
            zone,
            times: Vec::new(),
            days: None,
            dates: Vec::new(),
        };
        let mut ok = true;
        let first_span = ["time", "days", "dates"]
            .iter()
            .find_map(|k| Self::key_span(t, k));
        for (s, v) in self
            .strings(t, "time", &join(field, "time"))
            .unwrap_or_default()
        {
            for part in s.split(',') {
                match TimeRange::parse(part) {
                    Ok(r) => cond.times.push(r),
                    Err(error) => {
                        ok = false;
                        self.error(v.span(), &join(field, "time"), Problem::BadTime { error });
                    }
                }
            }
        }
        for (s, v) in self
            .strings(t, "days", &join(field, "days"))
            .unwrap_or_default()
        {
            match Days::parse(&s) {
                Ok(d) => cond.add_days(d),
                Err(error) => {
                    ok = false;
                    self.error(v.span(), &join(field, "days"), Problem::BadTime { error });
                }
            }
        }
        for (s, v) in self
            .strings(t, "dates", &join(field, "dates"))
            .unwrap_or_default()
        {
            match DateRange::parse(&s) {
                Ok(d) => cond.dates.push(d),
                Err(error) => {
                    ok = false;
                    self.error(v.span(), &join(field, "dates"), Problem::BadTime { error });
                }
            }
        }
        ok.then(|| Spanned {
            value: Condition::Time(cond),
            location: self.loc(first_span),
            field: field.to_string(),
        })
    }

    fn menu(
        &mut self,
        name: &str,
        t: &dyn TableLike,
        span: Option<Range<usize>>,
        field: &str,
        default_context: &str,
    ) -> Option<MenuDef> {
        self.uses.clear();
        let menu_location = self.loc(span.clone());
        self.only_keys(t, field, "a menu", MENU_KEYS);
        let context = self
            .string(t, "context", &join(field, "context"))
            .map_or(default_context.to_string(), |(c, _)| c);
        let prompt = match self.string(t, "prompt", &join(field, "prompt")) {
            Some((p, v)) => self.template(&p, v, &join(field, "prompt")),
            None => {
                if !t.contains_key("prompt") {
                    self.error(
                        span.clone(),
                        field,
                        Problem::MissingKey {
                            key: "prompt",
                            place: "a menu",
                        },
                    );
                }
                None
            }
        };
        let invalid_prompt = self
            .string(t, "invalid_prompt", &join(field, "invalid_prompt"))
            .and_then(|(p, v)| self.template(&p, v, &join(field, "invalid_prompt")));
        let timeout = self
            .seconds(t, "timeout", &join(field, "timeout"), 600)
            .unwrap_or(5);
        let digit_timeout = self
            .seconds(t, "digit_timeout", &join(field, "digit_timeout"), 60)
            .unwrap_or(3);
        let max_digits = self
            .seconds(t, "max_digits", &join(field, "max_digits"), 32)
            .unwrap_or(1)
            .max(1);
        let retries = self
            .seconds(t, "retries", &join(field, "retries"), 10)
            .unwrap_or(2);
        let mut choices = Vec::new();
        let cf = join(field, "choices");
        match self.table(t, "choices", &cf) {
            Some(c) => {
                for (digits, item) in c.iter() {
                    let f = join(&cf, digits);
                    let kspan = Self::key_span(c, digits);
                    let matcher = match NumberMatcher::parse_number_or_pattern(digits) {
                        Ok(m) => m,
                        Err(error) => {
                            self.error(
                                kspan,
                                &f,
                                Problem::BadPattern {
                                    pattern: digits.to_string(),
                                    error,
                                },
                            );
                            continue;
                        }
                    };
                    let Some(v) = item.as_value().filter(|v| v.is_str()) else {
                        self.wrong_type(item, kspan, &f, "a route name");
                        continue;
                    };
                    match self.route_ref(v.as_str().unwrap_or_default(), v, &context, &f) {
                        Ok(r) => choices.push((matcher, r)),
                        Err(p) => self.error(v.span(), &f, p),
                    }
                }
            }
            None if !t.contains_key("choices") => self.error(
                span,
                field,
                Problem::MissingKey {
                    key: "choices",
                    place: "a menu",
                },
            ),
            None => {}
        }
        let on_failure = match self.string(t, "on_failure", &join(field, "on_failure")) {
            Some((s, v)) => match self.route_ref(&s, v, &context, &join(field, "on_failure")) {
                Ok(r) => Some(r),
                Err(p) => {
                    self.error(v.span(), &join(field, "on_failure"), p);
                    None
                }
            },
            None => None,
        };
        let variables = std::mem::take(&mut self.uses);
        Some(MenuDef {
            name: name.to_string(),
            location: menu_location,
            field: field.to_string(),
            // A missing or bad prompt is already an error; the menu stays so that routes
            // using it are not also reported as naming an unknown menu.
            prompt: prompt.unwrap_or_else(|| Template::literal("")),
            invalid_prompt,
            timeout,
            digit_timeout,
            max_digits,
            retries,
            choices,
            on_failure,
            variables,
        })
    }

    /// One action: `"answer"`, or `{ dial = "${EXTEN}", timeout = 30 }` where the first key
    /// names the action and the others are its options.
    fn action(&mut self, v: &Value, context: &str, field: &str) -> Option<Step> {
        let all_actions = || {
            BUILTIN_ACTIONS
                .iter()
                .copied()
                .chain(self.known.extensions.names())
                .collect::<Vec<_>>()
        };
        let (name, name_span, t) = match v {
            Value::String(s) => (s.value().clone(), v.span(), None),
            Value::InlineTable(t) => match t.iter().next() {
                Some((k, _)) => (
                    k.to_string(),
                    Self::key_span(t, k),
                    Some(t as &dyn TableLike),
                ),
                None => {
                    self.error(
                        v.span(),
                        field,
                        Problem::WrongType {
                            expected: "an action",
                            found: "an empty table",
                        },
                    );
                    return None;
                }
            },
            other => {
                self.error(
                    other.span(),
                    field,
                    Problem::WrongType {
                        expected: "an action (a string or { action = … })",
                        found: value_type_name(other),
                    },
                );
                return None;
            }
        };
        let is_builtin = BUILTIN_ACTIONS.contains(&name.as_str());
        let extension = self.known.extensions.get(&name).cloned();
        if !is_builtin && extension.is_none() {
            let suggestion = suggest(&name, all_actions());
            self.error(
                name_span,
                field,
                Problem::UnknownAction { name, suggestion },
            );
            return None;
        }
        let value: Option<&Item> = t.and_then(|t| t.get(&name));
        let options: Vec<&str> = t
            .map(|t| t.iter().skip(1).map(|(k, _)| k).collect())
            .unwrap_or_default();
        let allowed: Vec<String> = match name.as_str() {
            "dial" => vec!["timeout".into(), "strategy".into(), "auto_answer".into()],
            "dial_trunk" => vec![
                "number".into(),
                "caller_id".into(),
                "caller_name".into(),
                "timeout".into(),
            ],
            _ => extension
                .as_ref()
                .map(|e| e.options.clone())
                .unwrap_or_default(),
        };
        if let Some(t) = t {
            for o in &options {
                if !allowed.iter().any(|a| a == o) {
                    self.error(
                        Self::key_span(t, o),
                        &join(field, o),
                        Problem::UnknownOption {
                            action: name.clone(),
                            option: o.to_string(),
                            suggestion: suggest(o, allowed.iter().map(String::as_str)),
                        },
                    );
                }
            }
        }
        let takes_no_value = name == "answer";
        let value_optional = matches!(name.as_str(), "park" | "hangup") || extension.is_some();
        match value {
            Some(_) if takes_no_value => {
                self.error(name_span, field, Problem::TakesNoValue { action: name });
                return None;
            }
            None if !takes_no_value && !value_optional => {
                self.error(name_span, field, Problem::NeedsValue { action: name });
                return None;
            }
            _ => {}
        }
        let vf = join(field, &name);
        let opt = |k: &str| join(field, k);
        // `value` is `Some` here for every action that needs one.
        let val = value.and_then(Item::as_value);
        let want_string = |w: &mut Walker<'t>| -> Option<(String, &Value)> {
            match val {
                Some(v @ Value::String(s)) => Some((s.value().clone(), v)),
                _ => {
                    w.error(
                        val.and_then(|v| v.span()).or(name_span.clone()),
                        &vf,
                        Problem::WrongType {
                            expected: "a string",
                            found: val.map_or("nothing", value_type_name),
                        },
                    );
                    None
                }
            }
        };
        let step = match name.as_str() {
            "answer" => Step::Answer,
            "playback" => {
                let items: Vec<&Value> = match val {
                    Some(Value::Array(a)) => a.iter().collect(),
                    Some(v) => vec![v],
                    None => Vec::new(),
                };
                let mut prompts = Vec::new();
                for p in items {
                    match p.as_str() {
                        Some(s) => prompts.push(self.template(s, p, &vf)?),
                        None => {
                            self.error(
                                p.span(),
                                &vf,
                                Problem::WrongType {
                                    expected: "a prompt name",
                                    found: value_type_name(p),
                                },
                            );
                            return None;
                        }
                    }
                }
                Step::Playback(prompts)
            }
            "dial" => {
                let t = t?;
                let items: Vec<&Value> = match val {
                    Some(Value::Array(a)) => a.iter().collect(),
                    Some(v) => vec![v],
                    None => Vec::new(),
                };
                let mut targets = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    let f = format!("{vf}[{i}]");
                    match item {
                        Value::String(s) => {
                            targets.push((self.template(s.value(), item, &f)?, None))
                        }
                        Value::InlineTable(it) => {
                            self.only_keys(it, &f, "a dial target", &["user", "timeout"]);
                            let (u, uv) = self.string(it, "user", &join(&f, "user"))?;
                            let timeout = self.seconds(it, "timeout", &join(&f, "timeout"), 3600);
                            targets.push((self.template(&u, uv, &join(&f, "user"))?, timeout));
                        }
                        other => {
                            self.error(
                                other.span(),
                                &f,
                                Problem::WrongType {
                                    expected: "a user or { user = …, timeout = … }",
                                    found: value_type_name(other),
                                },
                            );
                            return None;
                        }
                    }
                }
                if targets.is_empty() {
                    self.error(
                        val.and_then(|v| v.span()),
                        &vf,
                        Problem::InvalidValue {
                            value: "[]".into(),
                            expected: "at least one user".into(),
                        },
                    );
                    return None;
                }
                let strategy = match self.string(t, "strategy", &opt("strategy")) {
                    None => Strategy::Simultaneous,
                    Some((s, _)) if s == "simultaneous" => Strategy::Simultaneous,
                    Some((s, _)) if s == "sequential" => Strategy::Sequential,
                    Some((s, sv)) => {
                        self.error(
                            sv.span(),
                            &opt("strategy"),
                            Problem::InvalidValue {
                                value: s,
                                expected: "\"simultaneous\" or \"sequential\"".into(),
                            },
                        );
                        return None;
                    }
                };
                Step::Dial {
                    targets,
                    strategy,
                    timeout: self.seconds(t, "timeout", &opt("timeout"), 3600),
                    auto_answer: self
                        .boolean(t, "auto_answer", &opt("auto_answer"))
                        .unwrap_or(false),
                }
            }
            "dial_trunk" => {
                let t = t?;
                let (trunk, tv) = want_string(self)?;
                if !self.name(&trunk, Some(tv), None, &vf, "trunk") {
                    return None;
                }
                let number = match self.string(t, "number", &opt("number")) {
                    Some((n, nv)) => self.template(&n, nv, &opt("number"))?,
                    None => {
                        if !t.contains_key("number") {
                            self.error(
                                name_span,
                                field,
                                Problem::MissingKey {
                                    key: "number",
                                    place: "dial_trunk",
                                },
                            );
                        }
                        return None;
                    }
                };
                let caller_id = match self.string(t, "caller_id", &opt("caller_id")) {
                    Some((c, cv)) => Some(self.template(&c, cv, &opt("caller_id"))?),
                    None => None,
                };
                let caller_name = match self.string(t, "caller_name", &opt("caller_name")) {
                    Some((c, cv)) => Some(self.template(&c, cv, &opt("caller_name"))?),
                    None => None,
                };
                Step::DialTrunk {
                    trunk,
                    number,
                    caller_id,
                    caller_name,
                    timeout: self.seconds(t, "timeout", &opt("timeout"), 3600),
                }
            }
            "menu" => {
                let (m, mv) = want_string(self)?;
                if !self.name(&m, Some(mv), None, &vf, "menu") {
                    return None;
                }
                Step::Menu(m)
            }
            "park" => match val {
                None => Step::Park(None),
                Some(_) => {
                    let (s, sv) = want_string(self)?;
                    Step::Park(Some(self.template(&s, sv, &vf)?))
                }
            },
            "retrieve" => {
                let (s, sv) = want_string(self)?;
                Step::Retrieve(self.template(&s, sv, &vf)?)
            }
            "say_digits" => {
                let (s, sv) = want_string(self)?;
                Step::SayDigits(self.template(&s, sv, &vf)?)
            }
            "conference" => {
                let (s, sv) = want_string(self)?;
                Step::Conference(self.template(&s, sv, &vf)?)
            }
            "record" => match val.and_then(Value::as_bool) {
                Some(b) => Step::Record(b),
                None => {
                    self.error(
                        val.and_then(|v| v.span()),
                        &vf,
                        Problem::WrongType {
                            expected: "true or false",
                            found: val.map_or("nothing", value_type_name),
                        },
                    );
                    return None;
                }
            },
            "set" | "set_header" => {
                let Some(table) = val.and_then(Value::as_inline_table) else {
                    self.error(
                        val.and_then(|v| v.span()),
                        &vf,
                        Problem::WrongType {
                            expected: "an inline table { NAME = \"value\" }",
                            found: val.map_or("nothing", value_type_name),
                        },
                    );
                    return None;
                };
                let mut pairs = Vec::new();
                for (k, item) in table.iter() {
                    let f = join(&vf, k);
                    let kspan = Self::key_span(table, k);
                    let valid = if name == "set" {
                        is_variable_name(k) && !BUILTIN_VARIABLES.contains(&k)
                    } else {
                        is_header_name(k)
                    };
                    if !valid {
                        self.error(
                            kspan,
                            &f,
                            Problem::InvalidName {
                                what: if name == "set" {
                                    "variable (not a built-in one)"
                                } else {
                                    "SIP header"
                                },
                                name: k.to_string(),
                            },
                        );
                        return None;
                    }
                    let sv = item;
                    if !sv.is_str() {
                        self.error(
                            sv.span().or(kspan),
                            &f,
                            Problem::WrongType {
                                expected: "a string",
                                found: value_type_name(sv),
                            },
                        );
                        return None;
                    }
                    pairs.push((
                        k.to_string(),
                        self.template(sv.as_str().unwrap_or_default(), sv, &f)?,
                    ));
                }
                if name == "set" {
                    Step::Set(pairs)
                } else {
                    Step::SetHeader(pairs)
                }
            }
            "wait" => match val.and_then(Value::as_integer) {
                Some(s) if (0..=3600).contains(&s) => Step::Wait(s as u32),
                _ => {
                    self.error(
                        val.and_then(|v| v.span()),
                        &vf,
                        Problem::InvalidValue {
                            value: val
                                .and_then(|v| v.span())
                                .and_then(|s| self.text.get(s))
                                .unwrap_or_default()
                                .to_string(),
                            expected: "a whole number of seconds from 0 to 3600".into(),
                        },
                    );
                    return None;
                }
            },
            "goto" | "call" => {
                let (s, sv) = want_string(self)?;
                match self.route_ref(&s, sv, context, &vf) {
                    Ok(r) if name == "goto" => Step::Goto(r),
                    Ok(r) => Step::Call(r),
                    Err(p) => {
                        self.error(sv.span(), &vf, p);
                        return None;
                    }
                }
            }
            "hangup" => match val {
                None => Step::Hangup(HangupCause::Normal),
                Some(_) => {
                    let (s, sv) = want_string(self)?;
                    match HangupCause::from_name(&s) {
                        Some(c) => Step::Hangup(c),
                        None => {
                            let names: Vec<&str> =
                                HangupCause::ALL.iter().map(|c| c.name()).collect();
                            self.error(
                                sv.span(),
                                &vf,
                                Problem::InvalidValue {
                                    value: s,
                                    expected: format!("a hangup cause ({})", names.join(", ")),
                                },
                            );
                            return None;
                        }
                    }
                }
            },
            _ => {
                let ext = extension?;
                let value = match val {
                    Some(v) => Some(self.extension_arg(v, &vf)?),
                    None => None,
                };
                let mut opts = Vec::new();
                if let Some(t) = t {
                    for (k, item) in t.iter().skip(1) {
                        if let Some(v) = item.as_value() {
                            if let Some(a) = self.extension_arg(v, &join(field, k)) {
                                opts.push((k.to_string(), a));
                            }
                        }
                    }
                }
                for r in &ext.required {
                    if !options.contains(&r.as_str()) {
                        self.error(
                            name_span.clone(),
                            field,
                            Problem::MissingOption {
                                action: name.clone(),
                                option: r.clone(),
                            },
                        );
                        return None;
                    }
                }
                Step::Extension {
                    name,
                    value,
                    options: opts,
                }
            }
        };
        Some(step)
    }

    fn extension_arg(&mut self, v: &Value, field: &str) -> Option<ExtensionArg> {
        match v {
            Value::String(s) => Some(ExtensionArg::String(self.template(s.value(), v, field)?)),
            Value::Integer(i) => Some(ExtensionArg::Integer(*i.value())),
            Value::Boolean(b) => Some(ExtensionArg::Boolean(*b.value())),
            Value::Array(a) => a
                .iter()
                .map(|v| self.extension_arg(v, field))
                .collect::<Option<Vec<_>>>()
                .map(ExtensionArg::List),
            other => {
                self.error(
                    other.span(),
                    field,
                    Problem::WrongType {
                        expected: "a string, integer, boolean or array",
                        found: value_type_name(other),
                    },
                );
                None
            }
        }
    }
}

/// `a.b`, or `b` when `a` is empty; keys that are not bare words are quoted.
pub(crate) fn join(a: &str, b: &str) -> String {
    let b = if is_plain_name(b) {
        b.to_string()
    } else {
        format!("\"{b}\"")
    };
    if a.is_empty() {
        b
    } else {
        format!("{a}.{b}")
    }
}
