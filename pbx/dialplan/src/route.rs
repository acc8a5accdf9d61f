//! Routing one call: pick the context, find the first route that matches (file order within
//! the context, then its includes), and expand its actions with every variable substituted,
//! following goto and call. A pure function of the plan and the request; the request carries
//! the instant, so time conditions are deterministic.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;

use crate::action::{
    Action, Dial, DialTarget, ExtensionValue, Menu, MenuChoice, Target, TrunkDial,
};
use crate::diag::Location;
use crate::pattern::{Captures, NumberMatcher};
use crate::plan::{Condition, Dialplan, ExtensionArg, HeaderTest, RouteDef, Step};
use crate::template::{Scope, Template, Variable};

/// How deep goto/call may nest. Loops are rejected when the plan loads; this bounds a long
/// acyclic chain, which is almost certainly a mistake too.
pub const MAX_DEPTH: usize = 16;

/// One call to route.
#[derive(Clone, Debug)]
pub struct RouteRequest<'a> {
    /// Start in this context (overrides the trunk's and the user's).
    pub context: Option<&'a str>,
    /// The trunk an inbound call arrived on: its context is used.
    pub trunk: Option<&'a str>,
    /// The caller: a user name for internal calls, the calling number for inbound ones.
    pub caller: &'a str,
    pub caller_name: Option<&'a str>,
    /// The called number (Request-URI user part).
    pub called: &'a str,
    /// SIP headers of the INVITE (names compared case-insensitively).
    pub headers: &'a [(String, String)],
    /// When the call arrived.
    pub at: Timestamp,
    /// Attributes of the calling user from the directory (`extension`, `display_name`, …).
    pub caller_attrs: &'a [(String, String)],
}

/// A route's name and where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    pub context: String,
    pub name: String,
    pub description: Option<String>,
    pub file: String,
    pub location: Option<Location>,
}

impl fmt::Display for RouteInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.context, self.name)?;
        match self.location {
            Some(l) => write!(f, " ({}:{})", self.file, l.line),
            None => write!(f, " ({})", self.file),
        }
    }
}

/// A goto or call followed while expanding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub kind: &'static str,
    pub to: RouteInfo,
}

/// The outcome of routing: where the call goes and exactly what will be done.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// The context the search started in.
    pub context: String,
    /// Why that context: "explicit", "trunk carrier", "group sales", "default".
    pub context_reason: String,
    /// The route whose match selected the call (or that was entered by name).
    pub route: RouteInfo,
    /// Goto and call hops, in order.
    pub hops: Vec<Hop>,
    pub actions: Vec<Action>,
}

/// Routing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// No route matches: the engine answers 404.
    #[error("no route in context \"{context}\" (or its includes) matches \"{called}\"")]
    NoRoute { context: String, called: String },
    #[error("context \"{0}\" does not exist")]
    UnknownContext(String),
    #[error("route \"{0}\" does not exist")]
    UnknownRoute(Target),
    #[error("goto/call nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

impl RouteError {
    /// The SIP final response the engine sends for this failure.
    pub fn sip_status(&self) -> u16 {
        match self {
            RouteError::NoRoute { .. } => 404,
            _ => 500,
        }
    }
}

struct CallScope<'r, 'a> {
    request: &'r RouteRequest<'a>,
    context: &'r str,
    route: &'r str,
    captures: &'r Captures,
    variables: &'r BTreeMap<String, String>,
    digits: Option<&'r str>,
}

impl Scope for CallScope<'_, '_> {
    fn get(&self, var: &Variable) -> Option<String> {
        let r = self.request;
        match var {
            Variable::Named(n) => match n.as_str() {
                "CALLER" => Some(r.caller.to_string()),
                "CALLER_NAME" => r.caller_name.map(str::to_string),
                "EXTEN" => Some(r.called.to_string()),
                "CONTEXT" => Some(self.context.to_string()),
                "ROUTE" => Some(self.route.to_string()),
                "TRUNK" => r.trunk.map(str::to_string),
                "DIGITS" => self.digits.map(str::to_string),
                other => self
                    .captures
                    .named
                    .iter()
                    .find(|(k, _)| k == other)
                    .map(|(_, v)| v.clone())
                    .or_else(|| self.variables.get(other).cloned()),
            },
            Variable::Group(i) => self.captures.numbered.get(*i).cloned(),
            Variable::CallerAttribute(a) => r
                .caller_attrs
                .iter()
                .find(|(k, _)| k == a)
                .map(|(_, v)| v.clone()),
            Variable::Header(h) => r
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(h))
                .map(|(_, v)| v.clone()),
        }
    }
}

enum Flow {
    Continue,
    End,
}

struct Expansion<'p> {
    plan: &'p Dialplan,
    variables: BTreeMap<String, String>,
    hops: Vec<Hop>,
    actions: Vec<Action>,
    digits: Option<String>,
}

impl Dialplan {
    /// Routes a call: the context used, the matched route and every action, variables
    /// substituted. This is exactly what `switchboard dialplan trace` prints.
    pub fn route(&self, request: &RouteRequest<'_>) -> Result<Routing, RouteError> {
        let (context, reason) = self.choose_context(request);
        if self.context(&context).is_none() {
            return Err(RouteError::UnknownContext(context));
        }
        for c in self.search_order(&context) {
            for r in &c.routes {
                let Some(captures) = self.selects(r, request) else {
                    continue;
                };
                return self.expand(request, &context, reason, &c.name, r, captures, None);
            }
        }
        Err(RouteError::NoRoute {
            context,
            called: request.called.to_string(),
        })
    }

    /// Continues a call at a route by name — a menu choice or failure target — with the
    /// digits the caller pressed as `${DIGITS}`. The route's match and conditions are not
    /// tested (it was chosen by name); a regex match still fills its groups from `EXTEN`.
    pub fn enter(
        &self,
        request: &RouteRequest<'_>,
        target: &Target,
        digits: Option<&str>,
    ) -> Result<Routing, RouteError> {
        let route = self
            .route_def(target)
            .ok_or_else(|| RouteError::UnknownRoute(target.clone()))?;
        let captures = groups_for(route, request.called);
        self.expand(
            request,
            &target.context,
            "entered by name".to_string(),
            &target.context,
            route,
            captures,
            digits,
        )
    }

    fn choose_context(&self, request: &RouteRequest<'_>) -> (String, String) {
        if let Some(c) = request.context {
            return (c.to_string(), "explicit".into());
        }
        if let Some(t) = request.trunk {
            if let Some(c) = self.context_for_trunk(t) {
                return (c.to_string(), format!("trunk {t}"));
            }
        }
        if let Some(g) = self
            .groups
            .iter()
            .find(|g| g.users.iter().any(|u| u.value == request.caller))
        {
            return (g.context.value.clone(), format!("group {}", g.name));
        }
        (self.default_context().to_string(), "default".into())
    }

    /// The captures when the route takes this call.
    fn selects(&self, route: &RouteDef, request: &RouteRequest<'_>) -> Option<Captures> {
        let captures = route.matcher.as_ref()?.value.captures(request.called)?;
        route
            .conditions
            .iter()
            .all(|c| holds(&c.value, request))
            .then_some(captures)
    }

    fn info(&self, context: &str, route: &RouteDef) -> RouteInfo {
        RouteInfo {
            context: context.to_string(),
            name: route.name.clone(),
            description: route.description.clone(),
            file: self.source_name.clone(),
            location: route.location,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn expand(
        &self,
        request: &RouteRequest<'_>,
        context: &str,
        context_reason: String,
        route_context: &str,
        route: &RouteDef,
        captures: Captures,
        digits: Option<&str>,
    ) -> Result<Routing, RouteError> {
        let mut x = Expansion {
            plan: self,
            variables: self.variables.iter().cloned().collect(),
            hops: Vec::new(),
            actions: Vec::new(),
            digits: digits.map(str::to_string),
        };
        x.run(request, route_context, route, &captures, 0)?;
        Ok(Routing {
            context: context.to_string(),
            context_reason,
            route: self.info(route_context, route),
            hops: x.hops,
            actions: x.actions,
        })
    }
}

fn groups_for(route: &RouteDef, called: &str) -> Captures {
    match route.matcher.as_ref().map(|m| &m.value) {
        Some(NumberMatcher::Regex(r)) => r.captures(called).unwrap_or_default(),
        _ => Captures::default(),
    }
}

fn holds(c: &Condition, r: &RouteRequest<'_>) -> bool {
    match c {
        Condition::Caller(m) => m.matches(r.caller),
        Condition::Header { name, test } => {
            let mut values = r
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim());
            match test {
                HeaderTest::Present => values.next().is_some(),
                HeaderTest::Equals(want) => values.any(|v| v == want),
                HeaderTest::Matches(re) => values.any(|v| re.captures(v).is_some()),
            }
        }
        Condition::CallerAttribute { name, value } => {
            r.caller_attrs.iter().any(|(k, v)| k == name && v == value)
        }
        Condition::Time(t) => t.holds_at(r.at),
    }
}

impl Expansion<'_> {
    fn run(
        &mut self,
        request: &RouteRequest<'_>,
        context: &str,
        route: &RouteDef,
        captures: &Captures,
        depth: usize,
    ) -> Result<Flow, RouteError> {
        if depth > MAX_DEPTH {
            return Err(RouteError::TooDeep);
        }
        for step in &route.steps {
            let variables = self.variables.clone();
            let scope = CallScope {
                request,
                context,
                route: &route.name,
                captures,
                variables: &variables,
                digits: self.digits.as_deref(),
            };
            let render = |t: &Template| t.render(&scope);
            let action = match &step.value {
                Step::Answer => Action::Answer,
                Step::Playback(ps) => Action::Playback {
                    prompts: ps.iter().map(render).collect(),
                },
                Step::Dial {
                    targets,
                    strategy,
                    timeout,
                    auto_answer,
                } => Action::Dial(Dial {
                    targets: targets
                        .iter()
                        .map(|(u, t)| DialTarget {
                            user: render(u),
                            timeout: *t,
                        })
                        .collect(),
                    strategy: *strategy,
                    timeout: *timeout,
                    auto_answer: *auto_answer,
                }),
                Step::DialTrunk {
                    trunk,
                    number,
                    caller_id,
                    caller_name,
                    timeout,
                } => Action::DialTrunk(TrunkDial {
                    trunk: trunk.clone(),
                    number: render(number),
                    caller_id: caller_id.as_ref().map(render),
                    caller_name: caller_name.as_ref().map(render),
                    timeout: *timeout,
                }),
                Step::Menu(name) => {
                    let m = self.plan.menu(name).ok_or_else(|| {
                        RouteError::UnknownRoute(Target {
                            context: String::new(),
                            route: name.clone(),
                        })
                    })?;
                    Action::Menu(Menu {
                        name: m.name.clone(),
                        prompt: render(&m.prompt),
                        invalid_prompt: m.invalid_prompt.as_ref().map(render),
                        timeout: m.timeout,
                        digit_timeout: m.digit_timeout,
                        max_digits: m.max_digits,
                        retries: m.retries,
                        choices: m
                            .choices
                            .iter()
                            .map(|(d, t)| MenuChoice {
                                digits: d.clone(),
                                target: t.target(),
                            })
                            .collect(),
                        on_failure: m.on_failure.as_ref().map(|t| t.target()),
                    })
                }
                Step::Park(slot) => Action::Park {
                    slot: slot.as_ref().map(render),
                },
                Step::Retrieve(slot) => Action::Retrieve { slot: render(slot) },
                Step::SayDigits(t) => Action::SayDigits { digits: render(t) },
                Step::Conference(room) => Action::Conference { room: render(room) },
                Step::Record(on) => Action::Record { on: *on },
                Step::Set(pairs) => {
                    for (name, value) in pairs {
                        let value = render(value);
                        self.variables.insert(name.clone(), value.clone());
                        self.actions.push(Action::Set {
                            name: name.clone(),
                            value,
                        });
                    }
                    continue;
                }
                Step::SetHeader(pairs) => {
                    for (name, value) in pairs {
                        self.actions.push(Action::SetHeader {
                            name: name.clone(),
                            value: render(value),
                        });
                    }
                    continue;
                }
                Step::Wait(s) => Action::Wait { seconds: *s },
                Step::Hangup(cause) => {
                    self.actions.push(Action::Hangup { cause: *cause });
                    return Ok(Flow::End);
                }
                Step::Extension {
                    name,
                    value,
                    options,
                } => Action::Extension {
                    name: name.clone(),
                    value: value.as_ref().map(|v| extension_value(v, &scope)),
                    options: options
                        .iter()
                        .map(|(k, v)| (k.clone(), extension_value(v, &scope)))
                        .collect(),
                },
                Step::Goto(t) | Step::Call(t) => {
                    let target = t.target();
                    let next = self
                        .plan
                        .route_def(&target)
                        .ok_or_else(|| RouteError::UnknownRoute(target.clone()))?;
                    let kind = if matches!(step.value, Step::Goto(_)) {
                        "goto"
                    } else {
                        "call"
                    };
                    self.hops.push(Hop {
                        kind,
                        to: self.plan.info(&target.context, next),
                    });
                    let groups = groups_for(next, request.called);
                    let flow = self.run(request, &target.context, next, &groups, depth + 1)?;
                    if kind == "goto" || matches!(flow, Flow::End) {
                        return Ok(Flow::End);
                    }
                    continue;
                }
            };
            self.actions.push(action);
        }
        Ok(Flow::Continue)
    }
}

fn extension_value(a: &ExtensionArg, scope: &dyn Scope) -> ExtensionValue {
    match a {
        ExtensionArg::String(t) => ExtensionValue::String(t.render(scope)),
        ExtensionArg::Integer(i) => ExtensionValue::Integer(*i),
        ExtensionArg::Boolean(b) => ExtensionValue::Boolean(*b),
        ExtensionArg::List(l) => {
            ExtensionValue::List(l.iter().map(|a| extension_value(a, scope)).collect())
        }
    }
}

/// The trace: context, route, hops and numbered actions.
impl fmt::Display for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "context: {} ({})", self.context, self.context_reason)?;
        write!(f, "route:   {}", self.route)?;
        match &self.route.description {
            Some(d) => writeln!(f, " — {d}")?,
            None => writeln!(f)?,
        }
        for h in &self.hops {
            writeln!(f, "{:<8} {}", format!("{}:", h.kind), h.to)?;
        }
        writeln!(f, "actions:")?;
        for (i, a) in self.actions.iter().enumerate() {
            writeln!(f, "  {:>2}. {a}", i + 1)?;
        }
        Ok(())
    }
}
