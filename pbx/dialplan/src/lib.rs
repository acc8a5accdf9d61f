//! The dialplan language: the file format admins write (`dialplans/*.toml`, documented in
//! `docs/dialplan.md`), its checker, and dry-run routing. Pure: no sockets, no tokio, no
//! clock; the only I/O is [`Dialplan::load`], which reads one file and calls
//! [`Dialplan::parse`]. Time comes in with each [`RouteRequest`].
//!
//! # Contract for the call engine
//!
//! 1. **Load** at start and on reload: `Dialplan::load(path, &known)` (or `parse(name, text,
//!    &known)`) returns a complete, checked plan or the [`Diagnostics`] that say why not
//!    (print them with `Display`: `file:line:column: error: …`). A plan with errors never
//!    loads, so a reload is: build the new `Dialplan`, and only if that succeeds swap the
//!    `Arc<Dialplan>` the engine reads. Calls in progress keep the `Routing` they already
//!    got. Warnings of a loaded plan are in [`Dialplan::warnings`]. [`Known`] tells which
//!    users, trunks, rooms and park slots exist (any list may be `None`: not checked), the
//!    extension actions ([`ExtensionRegistry`]) and the time-zone database.
//! 2. **Route** each new INVITE: `plan.route(&RouteRequest { context, trunk, caller,
//!    caller_name, called, headers, at, caller_attrs })`. The context is the explicit one,
//!    else the inbound trunk's (`[trunks.NAME] context`), else the calling user's group's,
//!    else `plan.default_context`. The result, [`Routing`], names the context, the matched
//!    route (name, file:line), the goto/call hops, and the [`Action`]s in order with every
//!    variable substituted; goto and call are already resolved (depth ≤ [`MAX_DEPTH`]; loops
//!    are rejected at load). [`RouteError::NoRoute`] means 404
//!    ([`RouteError::sip_status`]).
//! 3. **Execute** the actions in order. A dial that fails (busy, no answer) goes on to the
//!    next action; a connected call ends the list. A [`Menu`] action: play, collect digits,
//!    [`Menu::choose`] a [`Target`] (or `on_failure` after the retries), then
//!    `plan.enter(&request, &target, Some(digits))` gives the next `Routing`.
//!    [`Action::Extension`] carries actions registered by later issues and plugins (queues).
//!
//! Precedence: within a context, routes are tried in file order and the first whose match
//! and conditions all hold wins; then the context's `include`s, depth-first in the order
//! written. The checker reports a route that an earlier one shadows (see `check`).

#![forbid(unsafe_code)]

mod action;
mod check;
mod diag;
mod parse;
mod pattern;
mod plan;
mod route;
mod suite;
mod template;
mod time;

use std::path::Path;

pub use action::{
    Action, Dial, DialTarget, ExtensionAction, ExtensionRegistry, ExtensionValue, HangupCause,
    Menu, MenuChoice, RegistryError, Strategy, Target, TrunkDial,
};
pub use diag::{Diagnostic, Diagnostics, Location, Problem, Severity, TargetKind};
pub use jiff;
pub use pattern::{Captures, CharClass, NumberMatcher, NumberRegex, Pattern, PatternError, Tail};
pub use plan::{Dialplan, Known};
pub use route::{Hop, RouteError, RouteInfo, RouteRequest, Routing, MAX_DEPTH};
pub use suite::{route_with_digits, Case, CaseResult, FollowError, Suite, SuiteReport};
pub use template::{Template, TemplateError, Variable, BUILTIN_VARIABLES};
pub use time::TimeError;

/// Where a plan is looked for when none is named.
pub const DEFAULT_PLAN_PATH: &str = "dialplans/default.toml";

impl Dialplan {
    /// Parses and checks a plan. `source_name` is used in diagnostics and traces (usually
    /// the path as the admin wrote it).
    pub fn parse(source_name: &str, text: &str, known: &Known) -> Result<Dialplan, Diagnostics> {
        let (plan, mut diags) = parse::parse(source_name, text, known);
        let Some(mut plan) = plan else {
            diags.sort();
            return Err(diags);
        };
        check::check(&plan, known, &mut diags);
        diags.sort();
        if diags.has_errors() {
            return Err(diags);
        }
        plan.warnings = diags;
        Ok(plan)
    }

    /// Reads `path` and parses it: the one function here that touches the file system.
    pub fn load(path: &Path, known: &Known) -> Result<Dialplan, Diagnostics> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Dialplan::parse(&name, &text, known),
            Err(e) => {
                let mut d = Diagnostics::new(&name, "");
                d.push(
                    Severity::Error,
                    None,
                    "",
                    Problem::Unreadable {
                        reason: e.to_string(),
                    },
                );
                Err(d)
            }
        }
    }

    /// Reads a time as admins write it: with an offset or `Z` (`2026-11-23T08:00Z`), with a
    /// zone (`2026-11-23T09:00[Europe/Rome]`), or without either (`2026-11-23T09:00`), which
    /// is read in the plan's time zone.
    pub fn parse_time(&self, text: &str) -> Result<jiff::Timestamp, TimeError> {
        let text = text.trim();
        if let Ok(ts) = text.parse::<jiff::Timestamp>() {
            return Ok(ts);
        }
        if let Ok(z) = text.parse::<jiff::Zoned>() {
            return Ok(z.timestamp());
        }
        let civil = text
            .parse::<jiff::civil::DateTime>()
            .map_err(|_| TimeError::BadInstant(text.to_string()))?;
        civil
            .to_zoned(self.zone.clone())
            .map(|z| z.timestamp())
            .map_err(|_| TimeError::BadInstant(text.to_string()))
    }
}

#[cfg(test)]
mod tests;
