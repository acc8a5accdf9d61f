//! Checks across the whole plan, after parsing: references resolve, variables exist,
//! goto/call never loop, every route can be reached, and targets exist in the directory.
//!
//! Precedence is file order, first match wins (within a context, then its includes
//! depth-first), so "route B is shadowed by route A" means: A comes first in some search
//! order, every condition of A is also a condition of B (written the same way), and A's
//! match covers B's (see `NumberMatcher::covers` for what is decided exactly).

use std::collections::{BTreeMap, BTreeSet};

use crate::action::Target;
use crate::diag::{suggest, Diagnostics, Location, Problem, Severity, TargetKind};
use crate::pattern::NumberMatcher;
use crate::plan::{Dialplan, Known, RouteDef, RouteRef, Step, VariableUse};
use crate::template::{Template, Variable, BUILTIN_VARIABLES};

pub(crate) fn check(plan: &Dialplan, known: &Known, diags: &mut Diagnostics) {
    let mut c = Checker {
        plan,
        known,
        diags,
        unchecked: BTreeMap::new(),
        missing: BTreeMap::new(),
    };
    c.contexts();
    c.references();
    c.variables();
    c.loops();
    c.shadowing();
    c.reachability();
    c.targets();
}

/// Goto/call edges: from a route, the reference followed, where it is written, its field.
type Edges<'e> = BTreeMap<Target, Vec<(&'e RouteRef, Option<Location>, &'e str)>>;

struct Checker<'a> {
    plan: &'a Dialplan,
    known: &'a Known,
    diags: &'a mut Diagnostics,
    /// Per kind: how many constant names could not be checked, and where the first is.
    unchecked: BTreeMap<TargetKind, (usize, Option<Location>, String)>,
    /// Per missing target: how many times it is named, and where first.
    missing: BTreeMap<(TargetKind, String), (usize, Option<Location>, String)>,
}

impl Checker<'_> {
    fn error(&mut self, loc: Option<Location>, field: &str, p: Problem) {
        self.diags.push(Severity::Error, loc, field, p);
    }

    fn warning(&mut self, loc: Option<Location>, field: &str, p: Problem) {
        self.diags.push(Severity::Warning, loc, field, p);
    }

    fn context_exists(&mut self, name: &str, loc: Option<Location>, field: &str) -> bool {
        // Empty: the key is missing, which is reported already.
        if name.is_empty() || self.plan.context(name).is_some() {
            return true;
        }
        let suggestion = suggest(name, self.plan.context_names());
        self.error(
            loc,
            field,
            Problem::UnknownContext {
                name: name.to_string(),
                suggestion,
            },
        );
        false
    }

    fn contexts(&mut self) {
        let plan = self.plan;
        let d = &plan.default_context;
        self.context_exists(&d.value, d.location, &d.field);
        for t in &plan.trunks {
            self.context_exists(&t.context.value, t.context.location, &t.context.field);
        }
        let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
        for g in &plan.groups {
            self.context_exists(&g.context.value, g.context.location, &g.context.field);
            for u in &g.users {
                match member_of.get(u.value.as_str()) {
                    Some(first) => self.error(
                        u.location,
                        &u.field,
                        Problem::UserInTwoGroups {
                            user: u.value.clone(),
                            first_group: first.to_string(),
                        },
                    ),
                    None => {
                        member_of.insert(&u.value, &g.name);
                    }
                }
            }
        }
        for c in &plan.contexts {
            for inc in &c.include {
                self.context_exists(&inc.value, inc.location, &inc.field);
            }
        }
    }

    fn route_exists(&mut self, r: &RouteRef) -> bool {
        if !self.context_exists(&r.context, r.location, &r.field) {
            return false;
        }
        if self.plan.route_def(&r.target()).is_some() {
            return true;
        }
        let names: Vec<&str> = self
            .plan
            .context(&r.context)
            .map(|c| c.routes.iter().map(|r| r.name.as_str()).collect())
            .unwrap_or_default();
        self.error(
            r.location,
            &r.field,
            Problem::UnknownRoute {
                context: r.context.clone(),
                route: r.route.clone(),
                suggestion: suggest(&r.route, names),
            },
        );
        false
    }

    fn references(&mut self) {
        let plan = self.plan;
        for c in &plan.contexts {
            for r in &c.routes {
                let mut ended: Option<&'static str> = None;
                let mut warned = false;
                for s in &r.steps {
                    if let (Some(after), false) = (ended, warned) {
                        // One warning per list is enough.
                        self.warning(s.location, &s.field, Problem::UnreachableAction { after });
                        warned = true;
                    }
                    match &s.value {
                        Step::Goto(t) | Step::Call(t) => {
                            self.route_exists(t);
                        }
                        Step::Menu(m) if plan.menu(m).is_none() => {
                            let names: Vec<&str> =
                                plan.menus.iter().map(|m| m.name.as_str()).collect();
                            self.error(
                                s.location,
                                &s.field,
                                Problem::UnknownMenu {
                                    name: m.clone(),
                                    suggestion: suggest(m, names),
                                },
                            );
                        }
                        _ => {}
                    }
                    ended = ended.or(s.value.ends_list());
                }
            }
        }
        for m in &plan.menus {
            for (_, t) in &m.choices {
                self.route_exists(t);
            }
            if let Some(t) = &m.on_failure {
                self.route_exists(t);
            }
        }
    }

    /// Names a `${…}` may use anywhere: built-ins, plan variables, and every `set`.
    fn global_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
        names.extend(self.plan.variables.iter().map(|(n, _)| n.clone()));
        for c in &self.plan.contexts {
            for r in &c.routes {
                for s in &r.steps {
                    if let Step::Set(pairs) = &s.value {
                        names.extend(pairs.iter().map(|(n, _)| n.clone()));
                    }
                }
            }
        }
        names
    }

    fn variables(&mut self) {
        let globals = self.global_names();
        let plan = self.plan;
        for c in &plan.contexts {
            for r in &c.routes {
                let (groups, named): (usize, Vec<String>) =
                    match r.matcher.as_ref().map(|m| &m.value) {
                        Some(NumberMatcher::Regex(re)) => (
                            re.group_count(),
                            re.group_names().map(str::to_string).collect(),
                        ),
                        _ => (0, Vec::new()),
                    };
                if let Some(m) = &r.matcher {
                    for n in &named {
                        if globals.contains(n) {
                            self.error(
                                m.location,
                                &m.field,
                                Problem::GroupNameTaken { name: n.clone() },
                            );
                        }
                    }
                }
                let has_regex = matches!(
                    r.matcher.as_ref().map(|m| &m.value),
                    Some(NumberMatcher::Regex(_))
                );
                for u in &r.variables {
                    self.variable(u, &globals, &named, has_regex.then_some(groups));
                }
            }
        }
        for m in &plan.menus {
            for u in &m.variables {
                self.variable(u, &globals, &[], None);
            }
        }
    }

    fn variable(
        &mut self,
        u: &VariableUse,
        globals: &BTreeSet<String>,
        named: &[String],
        groups: Option<usize>,
    ) {
        match &u.variable {
            Variable::Named(n) if globals.contains(n) || named.contains(n) => {}
            Variable::Named(n) => {
                let candidates: Vec<&str> = globals
                    .iter()
                    .map(String::as_str)
                    .chain(named.iter().map(String::as_str))
                    .collect();
                self.error(
                    u.location,
                    &u.field,
                    Problem::UnknownVariable {
                        name: n.clone(),
                        suggestion: suggest(n, candidates),
                        hint: None,
                    },
                );
            }
            Variable::Group(i) => match groups {
                Some(g) if *i <= g => {}
                Some(g) => self.error(u.location, &u.field, Problem::NoSuchGroup { index: *i, groups: g }),
                None => self.error(
                    u.location,
                    &u.field,
                    Problem::UnknownVariable {
                        name: i.to_string(),
                        suggestion: None,
                        hint: Some("numbered groups exist only in routes with match_regex (use ${EXTEN:offset} with patterns)"),
                    },
                ),
            },
            Variable::CallerAttribute(_) | Variable::Header(_) => {}
        }
    }

    /// Goto/call edges; a cycle is an error because actions are unconditional, so a call
    /// entering it would never leave. (Menus may loop: the caller's digits break them.)
    fn loops(&mut self) {
        let plan = self.plan;
        let mut edges: Edges<'_> = BTreeMap::new();
        for c in &plan.contexts {
            for r in &c.routes {
                let from = Target {
                    context: c.name.clone(),
                    route: r.name.clone(),
                };
                let list = edges.entry(from).or_default();
                for s in &r.steps {
                    if let Step::Goto(t) | Step::Call(t) = &s.value {
                        if plan.route_def(&t.target()).is_some() {
                            list.push((t, s.location, &s.field));
                        }
                    }
                }
            }
        }
        // Depth-first search with colours; each back edge closes one cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Colour {
            Grey,
            Black,
        }
        let mut colour: BTreeMap<Target, Colour> = BTreeMap::new();
        let mut found = Vec::new();
        fn visit<'e>(
            node: &Target,
            edges: &Edges<'e>,
            colour: &mut BTreeMap<Target, Colour>,
            stack: &mut Vec<Target>,
            found: &mut Vec<(Vec<String>, Option<Location>, String)>,
        ) {
            colour.insert(node.clone(), Colour::Grey);
            stack.push(node.clone());
            for (r, loc, field) in edges.get(node).map(Vec::as_slice).unwrap_or_default() {
                let next = r.target();
                match colour.get(&next) {
                    Some(Colour::Grey) => {
                        let start = stack.iter().position(|t| *t == next).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[start..].iter().map(|t| t.to_string()).collect();
                        cycle.push(next.to_string());
                        found.push((cycle, *loc, field.to_string()));
                    }
                    Some(Colour::Black) => {}
                    None => visit(&next, edges, colour, stack, found),
                }
            }
            stack.pop();
            colour.insert(node.clone(), Colour::Black);
        }
        let nodes: Vec<Target> = edges.keys().cloned().collect();
        for n in nodes {
            if !colour.contains_key(&n) {
                visit(&n, &edges, &mut colour, &mut Vec::new(), &mut found);
            }
        }
        for (cycle, loc, field) in found {
            self.error(loc, &field, Problem::Loop { cycle });
        }
    }

    /// Routes reached by name (goto, call, menu choices and failure).
    fn referenced(&self) -> BTreeSet<Target> {
        let mut out = BTreeSet::new();
        for c in &self.plan.contexts {
            for r in &c.routes {
                for s in &r.steps {
                    if let Step::Goto(t) | Step::Call(t) = &s.value {
                        out.insert(t.target());
                    }
                }
            }
        }
        for m in &self.plan.menus {
            out.extend(m.choices.iter().map(|(_, t)| t.target()));
            out.extend(m.on_failure.iter().map(RouteRef::target));
        }
        out
    }

    fn shadowing(&mut self) {
        let plan = self.plan;
        let referenced = self.referenced();
        // (context, route) of the shadowed route -> (shadowing route, via context)
        let mut found: BTreeMap<(String, String), (&RouteDef, Option<String>)> = BTreeMap::new();
        // Own contexts first, so a route shadowed inside its own context is reported
        // without "when … includes it".
        for pass_own in [true, false] {
            for entry in &plan.contexts {
                let order = plan.search_order(&entry.name);
                let routes: Vec<(&str, &RouteDef)> = order
                    .iter()
                    .filter(|c| !pass_own || c.name == entry.name)
                    .flat_map(|c| c.routes.iter().map(move |r| (c.name.as_str(), r)))
                    .collect();
                for (j, (cj, rj)) in routes.iter().enumerate() {
                    let key = (cj.to_string(), rj.name.clone());
                    if found.contains_key(&key) {
                        continue;
                    }
                    let Some(mj) = rj.matcher.as_ref().filter(|_| !rj.selection_incomplete) else {
                        continue;
                    };
                    for (ci, ri) in &routes[..j] {
                        let Some(mi) = ri.matcher.as_ref().filter(|_| !ri.selection_incomplete)
                        else {
                            continue;
                        };
                        let conditions_implied = ri
                            .conditions
                            .iter()
                            .all(|a| rj.conditions.iter().any(|b| a.value == b.value));
                        if conditions_implied && mi.value.covers(&mj.value) == Some(true) {
                            let via = (*ci != *cj || entry.name != *cj).then(|| entry.name.clone());
                            found.insert(key, (ri, via));
                            break;
                        }
                    }
                }
            }
        }
        for c in &plan.contexts {
            for r in &c.routes {
                let key = (c.name.clone(), r.name.clone());
                let Some((by, via)) = found.get(&key) else {
                    continue;
                };
                let reachable_by_name = referenced.contains(&Target {
                    context: key.0.clone(),
                    route: key.1.clone(),
                });
                let m = r.matcher.as_ref();
                let problem = Problem::Shadowed {
                    route: r.name.clone(),
                    by: by.name.clone(),
                    by_location: by.location.unwrap_or(Location { line: 0, column: 0 }),
                    via: via.clone(),
                    reachable_by_name,
                };
                let (loc, field) = (
                    m.and_then(|m| m.location),
                    m.map_or(r.field.clone(), |m| m.field.clone()),
                );
                if reachable_by_name {
                    self.warning(loc, &field, problem);
                } else {
                    self.error(loc, &field, problem);
                }
            }
        }
    }

    fn reachability(&mut self) {
        let plan = self.plan;
        let referenced = self.referenced();
        for c in &plan.contexts {
            for r in &c.routes {
                let target = Target {
                    context: c.name.clone(),
                    route: r.name.clone(),
                };
                if r.matcher.is_none() && !r.selection_incomplete && !referenced.contains(&target) {
                    self.warning(
                        r.location,
                        &r.field,
                        Problem::UnreachableRoute {
                            route: r.name.clone(),
                        },
                    );
                }
            }
        }
        let mut used: BTreeSet<&str> = BTreeSet::new();
        used.insert(&plan.default_context.value);
        used.extend(plan.trunks.iter().map(|t| t.context.value.as_str()));
        used.extend(plan.groups.iter().map(|g| g.context.value.as_str()));
        for c in &plan.contexts {
            used.extend(c.include.iter().map(|i| i.value.as_str()));
        }
        for m in &plan.menus {
            let used = plan
                .contexts
                .iter()
                .flat_map(|c| &c.routes)
                .flat_map(|r| &r.steps)
                .any(|s| matches!(&s.value, Step::Menu(n) if *n == m.name));
            if !used {
                self.warning(
                    m.location,
                    &m.field,
                    Problem::UnusedMenu {
                        menu: m.name.clone(),
                    },
                );
            }
        }
        let referenced_contexts: BTreeSet<String> =
            referenced.into_iter().map(|t| t.context).collect();
        for c in &plan.contexts {
            if !used.contains(c.name.as_str()) && !referenced_contexts.contains(&c.name) {
                self.warning(
                    c.location,
                    &c.field,
                    Problem::UnusedContext {
                        context: c.name.clone(),
                    },
                );
            }
        }
    }

    fn target(&mut self, kind: TargetKind, name: &Template, loc: Option<Location>, field: &str) {
        // Names with variables depend on the call; they cannot be checked when loading.
        let Some(name) = name.constant() else { return };
        self.target_name(kind, &name, loc, field);
    }

    fn target_name(&mut self, kind: TargetKind, name: &str, loc: Option<Location>, field: &str) {
        let list = match kind {
            TargetKind::User => &self.known.users,
            TargetKind::Trunk => &self.known.trunks,
            TargetKind::ConferenceRoom => &self.known.rooms,
            TargetKind::ParkSlot => &self.known.park_slots,
        };
        match list {
            Some(names) if names.contains(name) => {}
            Some(_) => {
                let e = self.missing.entry((kind, name.to_string())).or_insert((
                    0,
                    loc,
                    field.to_string(),
                ));
                e.0 += 1;
            }
            None => {
                let e = self
                    .unchecked
                    .entry(kind)
                    .or_insert((0, loc, field.to_string()));
                e.0 += 1;
            }
        }
    }

    fn targets(&mut self) {
        let plan = self.plan;
        for t in &plan.trunks {
            self.target_name(
                TargetKind::Trunk,
                &t.name,
                t.context.location,
                &t.context.field,
            );
        }
        for g in &plan.groups {
            for u in &g.users {
                self.target_name(TargetKind::User, &u.value, u.location, &u.field);
            }
        }
        for c in &plan.contexts {
            for r in &c.routes {
                for s in &r.steps {
                    match &s.value {
                        Step::Dial { targets, .. } => {
                            for (t, _) in targets {
                                self.target(TargetKind::User, t, s.location, &s.field);
                            }
                        }
                        Step::DialTrunk { trunk, .. } => {
                            self.target_name(TargetKind::Trunk, trunk, s.location, &s.field)
                        }
                        Step::Conference(room) => {
                            self.target(TargetKind::ConferenceRoom, room, s.location, &s.field)
                        }
                        Step::Park(Some(slot)) | Step::Retrieve(slot) => {
                            self.target(TargetKind::ParkSlot, slot, s.location, &s.field)
                        }
                        _ => {}
                    }
                }
            }
        }
        for ((kind, name), (uses, loc, field)) in std::mem::take(&mut self.missing) {
            self.warning(loc, &field, Problem::UnknownTarget { kind, name, uses });
        }
        for (kind, (count, loc, field)) in std::mem::take(&mut self.unchecked) {
            self.warning(loc, &field, Problem::TargetsNotChecked { kind, count });
        }
    }
}
