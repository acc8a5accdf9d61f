//! Routing tests admins keep next to a plan (`dialplans/default.tests.toml`): a table of
//! calls and the routing each must get, run dry by `switchboard dialplan test` and by CI.
//!
//! ```toml
//! [[case]]
//! name = "office hours go to the IVR"
//! from = "+390550000000"
//! trunk = "carrier"
//! to = "0551234567"
//! at = "2026-11-23T09:00"           # plan time zone unless an offset is given
//! expect_route = "did-main"         # or "context/route"
//! expect_actions = ["answer", "menu main …"]   # the trace's action lines, exactly
//! ```

use std::fmt;

use jiff::Timestamp;
use toml_edit::{ImDocument, TableLike, Value};

use crate::diag::{suggest, Diagnostics, LineIndex, Location, Problem, Severity};
use crate::route::{RouteError, RouteRequest, Routing};
use crate::Dialplan;

const CASE_KEYS: &[&str] = &[
    "name",
    "from",
    "caller_name",
    "to",
    "trunk",
    "context",
    "at",
    "headers",
    "caller_attrs",
    "digits",
    "expect_context",
    "expect_route",
    "expect_actions",
    "expect_no_route",
];

/// One call and what it must get.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub location: Option<Location>,
    pub from: String,
    pub caller_name: Option<String>,
    pub to: String,
    pub trunk: Option<String>,
    pub context: Option<String>,
    /// `None`: the `now` given to [`Suite::run`].
    pub at: Option<Timestamp>,
    pub headers: Vec<(String, String)>,
    pub caller_attrs: Vec<(String, String)>,
    /// Digits pressed at the menu the routing ends with; the expectations then apply to
    /// the route the menu leads to.
    pub digits: Option<String>,
    pub expect_context: Option<String>,
    pub expect_route: Option<String>,
    pub expect_actions: Option<Vec<String>>,
    pub expect_no_route: bool,
}

/// A parsed test file.
#[derive(Clone, Debug)]
pub struct Suite {
    pub source_name: String,
    pub cases: Vec<Case>,
}

/// The outcome of one case: empty `failures` means it passed.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub name: String,
    pub location: Option<Location>,
    pub failures: Vec<String>,
    /// The trace of what the call got (or the routing error), for the report.
    pub got: String,
}

/// The outcome of a suite.
#[derive(Clone, Debug)]
pub struct SuiteReport {
    pub source_name: String,
    pub results: Vec<CaseResult>,
}

impl SuiteReport {
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.failures.is_empty())
            .count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

/// `ok`/`FAIL` per case, what differed and the trace of a failing case, then
/// `N passed, M failed`.
impl fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            let line = r.location.map_or(String::new(), |l| format!(":{}", l.line));
            if r.failures.is_empty() {
                writeln!(f, "ok   {} ({}{line})", r.name, self.source_name)?;
            } else {
                writeln!(f, "FAIL {} ({}{line})", r.name, self.source_name)?;
                for fail in &r.failures {
                    writeln!(f, "     {fail}")?;
                }
                writeln!(f, "     got:")?;
                for l in r.got.lines() {
                    writeln!(f, "       {l}")?;
                }
            }
        }
        writeln!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

impl Suite {
    /// Parses a test file; times without an offset are read in `plan`'s time zone.
    pub fn parse(source_name: &str, text: &str, plan: &Dialplan) -> Result<Suite, Diagnostics> {
        let index = LineIndex::new(text);
        let mut diags = Diagnostics::new(source_name, text);
        let loc = |s: Option<std::ops::Range<usize>>| s.map(|s| index.location(s.start));
        let doc = match ImDocument::parse(text) {
            Ok(d) => d,
            Err(e) => {
                diags.push(
                    Severity::Error,
                    loc(e.span()),
                    "",
                    Problem::Syntax {
                        message: e.message().trim().to_string(),
                    },
                );
                return Err(diags);
            }
        };
        let root = doc.as_table();
        for (k, _) in root.iter() {
            if k != "case" {
                diags.push(
                    Severity::Error,
                    loc(root.key(k).and_then(|k| k.span())),
                    k,
                    Problem::UnknownKey {
                        key: k.to_string(),
                        place: "a test file",
                        suggestion: suggest(k, ["case"]),
                    },
                );
            }
        }
        let mut cases = Vec::new();
        let tables = root.get("case").and_then(|c| c.as_array_of_tables());
        for (i, t) in tables.into_iter().flat_map(|a| a.iter()).enumerate() {
            let field = format!("case[{i}]");
            let location = loc(t.span());
            let mut bad =
                |span: Option<std::ops::Range<usize>>, field: String, problem: Problem| {
                    diags.push(Severity::Error, loc(span), field, problem);
                };
            for (k, _) in t.iter() {
                if !CASE_KEYS.contains(&k) {
                    bad(
                        t.key(k).and_then(|k| k.span()),
                        format!("{field}.{k}"),
                        Problem::UnknownKey {
                            key: k.to_string(),
                            place: "a test case",
                            suggestion: suggest(k, CASE_KEYS.iter().copied()),
                        },
                    );
                }
            }
            let mut string = |key: &str| -> Option<String> {
                let item = t.get(key)?;
                match item.as_str() {
                    Some(s) => Some(s.to_string()),
                    None => {
                        bad(
                            item.span(),
                            format!("{field}.{key}"),
                            Problem::WrongType {
                                expected: "a string",
                                found: "another type",
                            },
                        );
                        None
                    }
                }
            };
            let name = string("name").unwrap_or_else(|| format!("case {}", i + 1));
            let from = string("from");
            let to = string("to");
            let caller_name = string("caller_name");
            let trunk = string("trunk");
            let context = string("context");
            let digits = string("digits");
            let expect_context = string("expect_context");
            let expect_route = string("expect_route");
            let at_text = string("at");
            let (Some(from), Some(to)) = (from, to) else {
                diags.push(
                    Severity::Error,
                    location,
                    field.clone(),
                    Problem::MissingKey {
                        key: "from and to",
                        place: "a test case",
                    },
                );
                continue;
            };
            let at = match at_text {
                Some(s) => match plan.parse_time(&s) {
                    Ok(ts) => Some(ts),
                    Err(error) => {
                        diags.push(
                            Severity::Error,
                            loc(t.get("at").and_then(|i| i.span())),
                            format!("{field}.at"),
                            Problem::BadTime { error },
                        );
                        continue;
                    }
                },
                None => None,
            };
            let pairs = |key: &str, diags: &mut Diagnostics| -> Vec<(String, String)> {
                let Some(item) = t.get(key) else {
                    return Vec::new();
                };
                let Some(table) = item.as_table_like() else {
                    diags.push(
                        Severity::Error,
                        loc(item.span()),
                        format!("{field}.{key}"),
                        Problem::WrongType {
                            expected: "a table of strings",
                            found: "another type",
                        },
                    );
                    return Vec::new();
                };
                string_pairs(table)
            };
            let headers = pairs("headers", &mut diags);
            let caller_attrs = pairs("caller_attrs", &mut diags);
            let expect_actions = t.get("expect_actions").and_then(|i| match i.as_array() {
                Some(a) => Some(
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                ),
                None => {
                    diags.push(
                        Severity::Error,
                        loc(i.span()),
                        format!("{field}.expect_actions"),
                        Problem::WrongType {
                            expected: "an array of strings",
                            found: "another type",
                        },
                    );
                    None
                }
            });
            let expect_no_route = t
                .get("expect_no_route")
                .and_then(|i| i.as_bool())
                .unwrap_or(false);
            cases.push(Case {
                name,
                location,
                from,
                caller_name,
                to,
                trunk,
                context,
                at,
                headers,
                caller_attrs,
                digits,
                expect_context,
                expect_route,
                expect_actions,
                expect_no_route,
            });
        }
        if cases.is_empty() && !diags.has_errors() {
            diags.push(
                Severity::Error,
                Some(Location { line: 1, column: 1 }),
                "case",
                Problem::MissingKey {
                    key: "[[case]]",
                    place: "a test file",
                },
            );
        }
        if diags.has_errors() {
            diags.sort();
            return Err(diags);
        }
        Ok(Suite {
            source_name: source_name.to_string(),
            cases,
        })
    }

    /// Runs every case against `plan`; `now` is the time of cases without `at`.
    pub fn run(&self, plan: &Dialplan, now: Timestamp) -> SuiteReport {
        let results = self.cases.iter().map(|c| run_case(c, plan, now)).collect();
        SuiteReport {
            source_name: self.source_name.clone(),
            results,
        }
    }
}

fn string_pairs(t: &dyn TableLike) -> Vec<(String, String)> {
    t.iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.to_string(), s.to_string())))
        .collect()
}

/// Following a menu with digits failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("digits \"{digits}\" given, but the routing does not end with a menu")]
    NoMenu { digits: String },
    #[error("digits \"{digits}\" match no choice of menu \"{menu}\" and it has no on_failure: the call is hung up")]
    NoChoice { digits: String, menu: String },
}

/// Routes a call and, with `digits`, follows the menu the routing ends with (as the engine
/// does when the caller presses them; retries are not simulated: digits no choice takes go
/// to the menu's `on_failure`).
pub fn route_with_digits(
    plan: &Dialplan,
    request: &RouteRequest<'_>,
    digits: Option<&str>,
) -> Result<(Routing, Option<Routing>), FollowError> {
    let first = plan.route(request)?;
    let Some(digits) = digits else {
        return Ok((first, None));
    };
    let Some(crate::Action::Menu(menu)) = first.actions.last() else {
        return Err(FollowError::NoMenu {
            digits: digits.to_string(),
        });
    };
    let target = match (menu.choose(digits), &menu.on_failure) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => f.clone(),
        (None, None) => {
            return Err(FollowError::NoChoice {
                digits: digits.to_string(),
                menu: menu.name.clone(),
            })
        }
    };
    let second = plan.enter(request, &target, Some(digits))?;
    Ok((first, Some(second)))
}

fn run_case(c: &Case, plan: &Dialplan, now: Timestamp) -> CaseResult {
    let request = RouteRequest {
        context: c.context.as_deref(),
        trunk: c.trunk.as_deref(),
        caller: &c.from,
        caller_name: c.caller_name.as_deref(),
        called: &c.to,
        headers: &c.headers,
        at: c.at.unwrap_or(now),
        caller_attrs: &c.caller_attrs,
    };
    let mut failures = Vec::new();
    let outcome = route_with_digits(plan, &request, c.digits.as_deref());
    let got = match &outcome {
        Ok((first, Some(second))) => format!(
            "{first}after digits {}:\n{second}",
            c.digits.as_deref().unwrap_or("")
        ),
        Ok((first, None)) => first.to_string(),
        Err(e) => format!("error: {e}"),
    };
    match (&outcome, c.expect_no_route) {
        (Err(_), true) => {}
        (Ok(_), true) => failures.push("expected no route, but the call is routed".to_string()),
        (Err(e), false) => failures.push(format!("routing failed: {e}")),
        (Ok((first, second)), false) => {
            let r = second.as_ref().unwrap_or(first);
            if let Some(want) = &c.expect_context {
                if *want != first.context {
                    failures.push(format!("context: expected {want}, got {}", first.context));
                }
            }
            if let Some(want) = &c.expect_route {
                let got = if want.contains('/') {
                    format!("{}/{}", r.route.context, r.route.name)
                } else {
                    r.route.name.clone()
                };
                if *want != got {
                    failures.push(format!("route: expected {want}, got {got}"));
                }
            }
            if let Some(want) = &c.expect_actions {
                let got: Vec<String> = r.actions.iter().map(|a| a.to_string()).collect();
                if *want != got {
                    failures.push(format!(
                        "actions differ:\n       expected: {}\n       got:      {}",
                        want.join(" | "),
                        got.join(" | ")
                    ));
                }
            }
        }
    }
    CaseResult {
        name: c.name.clone(),
        location: c.location,
        failures,
        got,
    }
}
