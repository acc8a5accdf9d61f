//! The loaded plan: contexts of ordered routes, menus, trunk and group contexts, with every
//! pattern, regex, template and time condition already compiled. Built by `parse`, verified
//! by `check`, read by `route`. Nothing here is mutable after loading: a reload builds a new
//! `Dialplan` and swaps it whole.

use std::collections::BTreeSet;

use crate::action::{ExtensionRegistry, HangupCause, Strategy, Target};
use crate::diag::{Diagnostics, Location};
use crate::pattern::{NumberMatcher, NumberRegex};
use crate::template::{Template, Variable};
use crate::time::TimeCondition;

/// What exists outside the plan, for the checker's "does this target exist" warnings, plus
/// the extension actions and the time-zone database the plan may use.
///
/// A `None` list means "not known here" (e.g. `dialplan check` without a database): names of
/// that kind are then reported once as not checked instead of as unknown.
#[derive(Clone)]
pub struct Known {
    /// User names and extensions.
    pub users: Option<BTreeSet<String>>,
    pub trunks: Option<BTreeSet<String>>,
    pub rooms: Option<BTreeSet<String>>,
    pub park_slots: Option<BTreeSet<String>>,
    pub extensions: ExtensionRegistry,
    /// Where `timezone = "…"` names are looked up. The engine passes
    /// `jiff::tz::db().clone()` (the system's zoneinfo, with the bundled copy as fallback);
    /// the default is the bundled copy, so tests do not depend on the host.
    pub time_zones: jiff::tz::TimeZoneDatabase,
}

impl Default for Known {
    fn default() -> Known {
        Known {
            users: None,
            trunks: None,
            rooms: None,
            park_slots: None,
            extensions: ExtensionRegistry::default(),
            time_zones: jiff::tz::TimeZoneDatabase::bundled(),
        }
    }
}

/// A reference to a route as written: `name` (same context) or `context/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RouteRef {
    pub context: String,
    pub route: String,
    pub location: Option<Location>,
    pub field: String,
}

impl RouteRef {
    pub fn target(&self) -> Target {
        Target {
            context: self.context.clone(),
            route: self.route.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum HeaderTest {
    Present,
    Equals(String),
    Matches(NumberRegex),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Condition {
    Caller(NumberMatcher),
    Header { name: String, test: HeaderTest },
    CallerAttribute { name: String, value: String },
    Time(TimeCondition),
}

#[derive(Clone, Debug)]
pub(crate) struct Spanned<T> {
    pub value: T,
    pub location: Option<Location>,
    pub field: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ExtensionArg {
    String(Template),
    Integer(i64),
    Boolean(bool),
    List(Vec<ExtensionArg>),
}

#[derive(Clone, Debug)]
pub(crate) enum Step {
    Answer,
    Playback(Vec<Template>),
    SayDigits(Template),
    Dial {
        targets: Vec<(Template, Option<u32>)>,
        strategy: Strategy,
        timeout: Option<u32>,
        auto_answer: bool,
    },
    DialTrunk {
        trunk: String,
        number: Template,
        caller_id: Option<Template>,
        caller_name: Option<Template>,
        timeout: Option<u32>,
    },
    Menu(String),
    Park(Option<Template>),
    Retrieve(Template),
    Conference(Template),
    Record(bool),
    Set(Vec<(String, Template)>),
    SetHeader(Vec<(String, Template)>),
    Wait(u32),
    Goto(RouteRef),
    Call(RouteRef),
    Hangup(HangupCause),
    Extension {
        name: String,
        value: Option<ExtensionArg>,
        options: Vec<(String, ExtensionArg)>,
    },
}

impl Step {
    /// Steps after which nothing in the same list runs.
    pub fn ends_list(&self) -> Option<&'static str> {
        match self {
            Step::Goto(_) => Some("goto"),
            Step::Hangup(_) => Some("hangup"),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RouteDef {
    pub name: String,
    pub description: Option<String>,
    pub location: Option<Location>,
    pub field: String,
    pub matcher: Option<Spanned<NumberMatcher>>,
    pub conditions: Vec<Spanned<Condition>>,
    pub steps: Vec<Spanned<Step>>,
    pub variables: Vec<VariableUse>,
    /// The match or a condition had an error (only in plans that do not load).
    pub selection_incomplete: bool,
}

/// A `${…}` in a route or menu, with where it is written, for the variable check.
#[derive(Clone, Debug)]
pub(crate) struct VariableUse {
    pub variable: Variable,
    pub location: Option<Location>,
    pub field: String,
}

#[derive(Clone, Debug)]
pub(crate) struct ContextDef {
    pub name: String,
    pub location: Option<Location>,
    pub field: String,
    pub include: Vec<Spanned<String>>,
    pub routes: Vec<RouteDef>,
}

#[derive(Clone, Debug)]
pub(crate) struct MenuDef {
    pub name: String,
    pub location: Option<Location>,
    pub field: String,
    pub prompt: Template,
    pub invalid_prompt: Option<Template>,
    pub timeout: u32,
    pub digit_timeout: u32,
    pub max_digits: u32,
    pub retries: u32,
    pub choices: Vec<(NumberMatcher, RouteRef)>,
    pub on_failure: Option<RouteRef>,
    pub variables: Vec<VariableUse>,
}

#[derive(Clone, Debug)]
pub(crate) struct SourceContext {
    pub name: String,
    pub context: Spanned<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct GroupDef {
    pub name: String,
    pub users: Vec<Spanned<String>>,
    pub context: Spanned<String>,
}

/// A loaded, checked dialplan. Cheap to share (`Arc<Dialplan>`) and immutable.
#[derive(Clone, Debug)]
pub struct Dialplan {
    pub(crate) source_name: String,
    pub(crate) default_context: Spanned<String>,
    /// IANA name; routes without their own `timezone` use it.
    pub(crate) timezone: String,
    pub(crate) variables: Vec<(String, String)>,
    pub(crate) trunks: Vec<SourceContext>,
    pub(crate) groups: Vec<GroupDef>,
    pub(crate) menus: Vec<MenuDef>,
    pub(crate) contexts: Vec<ContextDef>,
    pub(crate) zone: jiff::tz::TimeZone,
    pub(crate) warnings: Diagnostics,
}

impl Dialplan {
    /// The file name the plan was loaded from (as given to `parse`).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The context for calls that no trunk or group places elsewhere.
    pub fn default_context(&self) -> &str {
        &self.default_context.value
    }

    /// Warnings found when the plan was loaded (a plan with errors does not load).
    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    /// The plan's default time zone (IANA name).
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// The context inbound calls from `trunk` start in, if the plan names one.
    pub fn context_for_trunk(&self, trunk: &str) -> Option<&str> {
        self.trunks
            .iter()
            .find(|t| t.name == trunk)
            .map(|t| t.context.value.as_str())
    }

    /// The context calls from `user` start in: their group's, or the default.
    pub fn context_for_user(&self, user: &str) -> &str {
        self.groups
            .iter()
            .find(|g| g.users.iter().any(|u| u.value == user))
            .map_or(self.default_context(), |g| g.context.value.as_str())
    }

    /// Context names in file order.
    pub fn context_names(&self) -> impl Iterator<Item = &str> {
        self.contexts.iter().map(|c| c.name.as_str())
    }

    pub(crate) fn context(&self, name: &str) -> Option<&ContextDef> {
        self.contexts.iter().find(|c| c.name == name)
    }

    pub(crate) fn menu(&self, name: &str) -> Option<&MenuDef> {
        self.menus.iter().find(|m| m.name == name)
    }

    pub(crate) fn route_def(&self, target: &Target) -> Option<&RouteDef> {
        self.context(&target.context)?
            .routes
            .iter()
            .find(|r| r.name == target.route)
    }

    /// The contexts searched for a call entering `context`: itself, then its includes
    /// depth-first in the order written, each context once.
    pub(crate) fn search_order<'a>(&'a self, context: &'a str) -> Vec<&'a ContextDef> {
        fn walk<'a>(plan: &'a Dialplan, name: &str, out: &mut Vec<&'a ContextDef>) {
            let Some(c) = plan.context(name) else { return };
            if out.iter().any(|o| o.name == c.name) {
                return;
            }
            out.push(c);
            for inc in &c.include {
                walk(plan, &inc.value, out);
            }
        }
        let mut out = Vec::new();
        walk(self, context, &mut out);
        out
    }
}
