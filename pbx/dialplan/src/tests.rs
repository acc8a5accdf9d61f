//! Whole-plan tests: parse, check and route real plan text, including the shipped default
//! plan. Pattern, template and time details are tested beside their modules.

use std::collections::BTreeSet;

use crate::*;

const DEFAULT_PLAN: &str = include_str!("../../../dialplans/default.toml");

fn known() -> Known {
    Known::default()
}

fn plan(text: &str) -> Dialplan {
    match Dialplan::parse("test.toml", text, &known()) {
        Ok(p) => p,
        Err(d) => panic!("plan does not load:\n{d}"),
    }
}

fn errors(text: &str) -> String {
    match Dialplan::parse("test.toml", text, &known()) {
        Ok(p) => panic!("plan loads, warnings:\n{}", p.warnings()),
        Err(d) => d.to_string(),
    }
}

fn request<'a>(caller: &'a str, called: &'a str, at: &str) -> RouteRequest<'a> {
    RouteRequest {
        context: None,
        trunk: None,
        caller,
        caller_name: None,
        called,
        headers: &[],
        at: at.parse().unwrap(),
        caller_attrs: &[],
    }
}

fn lines(r: &Routing) -> Vec<String> {
    r.actions.iter().map(|a| a.to_string()).collect()
}

const MONDAY_9_ROME: &str = "2026-11-23T08:00:00Z";

#[test]
fn default_plan_loads_with_only_unchecked_target_warnings() {
    let p = plan(DEFAULT_PLAN);
    let w: Vec<&Problem> = p.warnings().items.iter().map(|d| &d.problem).collect();
    assert!(
        w.iter()
            .all(|p| matches!(p, Problem::TargetsNotChecked { .. })),
        "{}",
        p.warnings()
    );
}

#[test]
fn default_plan_with_a_directory_warns_about_missing_users_only() {
    let mut k = known();
    k.users = Some(["101", "102", "103", "199"].map(String::from).into());
    k.trunks = Some(BTreeSet::from(["carrier".to_string()]));
    let p = Dialplan::parse("default.toml", DEFAULT_PLAN, &k).unwrap();
    let text = p.warnings().to_string();
    assert!(text.contains("user \"104\" does not exist"), "{text}");
    assert_eq!(p.warnings().items.len(), 1, "{text}");
}

#[test]
fn trace_of_an_international_call_from_the_default_plan() {
    let p = plan(DEFAULT_PLAN);
    let r = p
        .route(&request("101", "0039055123456", MONDAY_9_ROME))
        .unwrap();
    let expected = "\
context: internal (default)
route:   internal/outbound-international (test.toml:57) — 00 + country code: sent as +E.164
actions:
   1. set_header X-Switchboard-Caller: 101
   2. dial_trunk carrier number=+39055123456 caller_id=+390551234567 timeout=90s
   3. hangup congestion (Q.850 34, SIP 503)
";
    assert_eq!(r.to_string(), expected);
}

#[test]
fn default_plan_routes_by_context_time_and_header() {
    let p = plan(DEFAULT_PLAN);
    // The lobby group's context refuses outside numbers.
    let r = p
        .route(&request("199", "0039055123456", MONDAY_9_ROME))
        .unwrap();
    assert_eq!(
        (r.context.as_str(), r.route.name.as_str()),
        ("lobby", "blocked")
    );
    // Lobby "0" jumps to the internal operator route.
    let r = p.route(&request("199", "0", MONDAY_9_ROME)).unwrap();
    assert_eq!(r.hops.len(), 1);
    assert_eq!(
        lines(&r),
        [
            "dial 101 timeout=30s",
            "hangup no_answer (Q.850 19, SIP 480)"
        ]
    );

    let inbound = |at: &str, headers: &'static [(String, String)]| {
        let mut rq = request("+390550000000", "0551234567", at);
        rq.trunk = Some("carrier");
        rq.headers = headers;
        p.route(&rq).unwrap()
    };
    assert_eq!(inbound(MONDAY_9_ROME, &[]).route.name, "main-office-hours");
    // 18:00 in Rome is closed (ranges are half-open).
    assert_eq!(
        inbound("2026-11-23T17:00:00Z", &[]).route.name,
        "main-closed"
    );
    // Saturday.
    assert_eq!(
        inbound("2026-11-28T09:00:00Z", &[]).route.name,
        "main-closed"
    );
    // Christmas is a Friday in 2026.
    assert_eq!(inbound("2026-12-25T09:00:00Z", &[]).route.name, "holiday");
    let gold: &'static [(String, String)] = Box::leak(Box::new([(
        "x-customer-tier".to_string(),
        "gold".to_string(),
    )]));
    let r = inbound("2026-11-28T09:00:00Z", gold);
    assert_eq!(r.route.name, "gold-customers");
    assert_eq!(
        lines(&r)[..3],
        [
            "set PRIORITY=gold",
            "set_header X-Priority: gold",
            "dial 101 timeout=20s"
        ]
    );
    // After the goto, the menu.
    assert!(lines(&r)[5].starts_with("menu main"), "{r}");
}

#[test]
fn menu_digits_lead_to_routes() {
    let p = plan(DEFAULT_PLAN);
    let mut rq = request("+390550000000", "0551234567", MONDAY_9_ROME);
    rq.trunk = Some("carrier");
    let (first, second) = route_with_digits(&p, &rq, Some("2")).unwrap();
    assert_eq!(first.route.name, "main-office-hours");
    let second = second.unwrap();
    assert_eq!(second.route.name, "support");
    assert_eq!(
        lines(&second),
        [
            "dial 103(15s), 104(15s) sequential",
            "dial 101 timeout=30s",
            "hangup no_answer (Q.850 19, SIP 480)"
        ]
    );
    let (_, direct) = route_with_digits(&p, &rq, Some("102")).unwrap();
    assert_eq!(lines(&direct.unwrap())[0], "dial 102 timeout=30s");
    let (_, failed) = route_with_digits(&p, &rq, Some("9")).unwrap();
    assert_eq!(failed.unwrap().route.name, "operator");
}

#[test]
fn call_returns_and_goto_does_not() {
    let p = plan(DEFAULT_PLAN);
    let r = p.route(&request("101", "*9102", MONDAY_9_ROME)).unwrap();
    assert_eq!(
        lines(&r),
        [
            "answer",
            "playback this-call-is-recorded",
            "record on",
            "dial 102 timeout=30s",
            "hangup no_answer (Q.850 19, SIP 480)"
        ]
    );
    assert_eq!(r.hops[0].kind, "call");
    assert_eq!(r.hops[0].to.name, "recording-notice");
}

#[test]
fn no_route_is_an_error_with_404() {
    let p = plan(DEFAULT_PLAN);
    let e = p.route(&request("101", "999", MONDAY_9_ROME)).unwrap_err();
    assert_eq!(e.sip_status(), 404);
}

const HEADER: &str = "[plan]\ndefault_context = \"a\"\n";

#[test]
fn first_match_wins_in_file_order_then_includes() {
    let p = plan(&format!(
        "{HEADER}
[contexts.a]
include = [\"b\"]
[[contexts.a.routes]]
name = \"specific\"
match = \"_10X\"
caller = \"_2XX\"
actions = [\"answer\"]
[[contexts.a.routes]]
name = \"general\"
match = \"_1XX\"
actions = [{{ hangup = \"busy\" }}]
[contexts.b]
[[contexts.b.routes]]
name = \"fallback\"
match = \"_X.\"
actions = [{{ hangup = \"not_found\" }}]
"
    ));
    let route_of = |caller: &str, called: &str| {
        p.route(&request(caller, called, MONDAY_9_ROME))
            .unwrap()
            .route
            .name
    };
    assert_eq!(route_of("200", "101"), "specific");
    assert_eq!(route_of("300", "101"), "general");
    assert_eq!(route_of("300", "5555"), "fallback");
}

#[test]
fn variables_substring_captures_and_attributes() {
    let p = plan(&format!(
        "{HEADER}
[variables]
PREFIX = \"+39\"
[contexts.a]
[[contexts.a.routes]]
name = \"out\"
match_regex = '9(?<rest>0[0-9]+)'
actions = [
  {{ set = {{ DEPT = \"${{CALLER.department}}\" }} }},
  {{ dial_trunk = \"t\", number = \"${{PREFIX}}${{rest}}\", caller_id = \"${{EXTEN:1:3}}-${{DEPT}}-${{HEADER.X-A}}\" }},
]
"
    ));
    let attrs = [("department".to_string(), "sales".to_string())];
    let headers = [("X-A".to_string(), "h".to_string())];
    let mut rq = request("101", "90551234", MONDAY_9_ROME);
    rq.caller_attrs = &attrs;
    rq.headers = &headers;
    let r = p.route(&rq).unwrap();
    assert_eq!(
        lines(&r),
        [
            "set DEPT=sales",
            "dial_trunk t number=+390551234 caller_id=055-sales-h"
        ]
    );
}

#[test]
fn extension_actions_come_from_the_registry() {
    let text = format!(
        "{HEADER}
[contexts.a]
[[contexts.a.routes]]
name = \"q\"
match = \"500\"
actions = [{{ queue = \"support\", timeout = 300, skills = [\"it\", \"${{CALLER}}\"] }}]
"
    );
    let e = Dialplan::parse("t.toml", &text, &known()).unwrap_err();
    assert!(e.to_string().contains("unknown action \"queue\""), "{e}");
    let mut k = known();
    k.extensions
        .register(ExtensionAction {
            name: "queue".into(),
            options: vec!["timeout".into(), "skills".into()],
            required: vec!["timeout".into()],
        })
        .unwrap();
    let p = Dialplan::parse("t.toml", &text, &k).unwrap();
    let r = p.route(&request("101", "500", MONDAY_9_ROME)).unwrap();
    assert_eq!(lines(&r), ["queue support timeout=300 skills=[it,101]"]);
}

#[test]
fn parse_time_reads_the_plan_zone() {
    let p = plan(DEFAULT_PLAN);
    let want: jiff::Timestamp = "2026-11-23T08:00:00Z".parse().unwrap();
    assert_eq!(p.parse_time("2026-11-23T09:00").unwrap(), want);
    assert_eq!(p.parse_time("2026-11-23T08:00Z").unwrap(), want);
    assert_eq!(p.parse_time("2026-11-23T09:00+01:00").unwrap(), want);
    assert!(p.parse_time("monday").is_err());
}

/// Every kind of error the checker reports, each at its file:line:column. Compared whole,
/// so a change in any position or wording shows up here.
#[test]
fn check_errors_snapshot() {
    let text = r#"[plan]
default_context = "internl"
timezone = "Mars/Olympus"

[contexts.internal]
[[contexts.internal.routes]]
name = "all"
match = "_X."
actions = [{ dail = "${EXTEN}" }]

[[contexts.internal.routes]]
name = "users"
match = "_1XX"
actions = [{ dial = "${EXTN}", timout = 3 }]

[[contexts.internal.routes]]
name = "bad-pattern"
match = "_12[3"
actions = ["answer"]

[[contexts.internal.routes]]
name = "bad-regex"
match_regex = '(0+'
actions = [{ goto = "nowhere" }]

[[contexts.internal.routes]]
name = "ping"
actions = [{ call = "pong" }]

[[contexts.internal.routes]]
name = "pong"
actions = [{ goto = "ping" }, "answer"]
"#;
    let expected = r#"test.toml:2:19: error: unknown context "internl" (did you mean "internal"?)
    in plan.default_context
    2 | default_context = "internl"
      |                   ^
test.toml:3:12: error: unknown time zone "Mars/Olympus"; time zones are IANA names such as "Europe/Rome" or "UTC"
    in plan.timezone
    3 | timezone = "Mars/Olympus"
      |            ^
test.toml:9:14: error: unknown action "dail" (did you mean "dial"?)
    in contexts.internal.routes[0].actions[0]
    9 | actions = [{ dail = "${EXTEN}" }]
      |              ^
test.toml:13:9: error: route "users" is shadowed by route "all" (line 7): every call it matches goes to the earlier route, so it is unreachable
    in contexts.internal.routes[1].match
   13 | match = "_1XX"
      |         ^
test.toml:14:22: error: unknown variable "${EXTN}" (did you mean "EXTEN"?)
    in contexts.internal.routes[1].actions[0].dial[0]
   14 | actions = [{ dial = "${EXTN}", timout = 3 }]
      |                      ^
test.toml:14:32: error: unknown option "timout" for action "dial" (did you mean "timeout"?)
    in contexts.internal.routes[1].actions[0].timout
   14 | actions = [{ dial = "${EXTN}", timout = 3 }]
      |                                ^
test.toml:18:13: error: bad pattern "_12[3": `[` at offset 3 is never closed by `]`
    in contexts.internal.routes[2].match
   18 | match = "_12[3"
      |             ^
test.toml:23:15: error: bad regex "(0+": unclosed group
    in contexts.internal.routes[3].match_regex
   23 | match_regex = '(0+'
      |               ^
test.toml:24:21: error: unknown route "nowhere" in context "internal"
    in contexts.internal.routes[3].actions[0].goto
   24 | actions = [{ goto = "nowhere" }]
      |                     ^
test.toml:32:12: error: goto/call loop: internal/ping -> internal/pong -> internal/ping
    in contexts.internal.routes[5].actions[0]
   32 | actions = [{ goto = "ping" }, "answer"]
      |            ^
test.toml:32:31: warning: unreachable action: it follows a "goto", which never returns
    in contexts.internal.routes[5].actions[1]
   32 | actions = [{ goto = "ping" }, "answer"]
      |                               ^
"#;
    assert_eq!(errors(text), expected);

    // Once its pattern parses, "bad-pattern" takes part in the shadowing check too.
    let fixed = text.replace("_12[3", "_123");
    let e = errors(&fixed);
    assert!(
        e.contains(
            "test.toml:18:9: error: route \"bad-pattern\" is shadowed by route \"all\" (line 7)"
        ),
        "{e}"
    );
}

#[test]
fn regex_shadowing_is_detected_where_decidable() {
    let text = format!(
        "{HEADER}
[contexts.a]
[[contexts.a.routes]]
name = \"any-3\"
match_regex = '[0-9]{{3}}'
actions = [\"answer\"]
[[contexts.a.routes]]
name = \"three\"
match = \"_1XX\"
actions = [\"answer\"]
[[contexts.a.routes]]
name = \"four\"
match = \"_1XX.\"
actions = [\"answer\"]
"
    );
    let e = errors(&text);
    assert!(
        e.contains("route \"three\" is shadowed by route \"any-3\""),
        "{e}"
    );
    assert!(!e.contains("\"four\""), "{e}");
}

#[test]
fn shadowing_respects_conditions_and_includes() {
    // A conditional route shadows nothing; an unconditional one shadows a conditional one.
    let text = format!(
        "{HEADER}
[contexts.a]
include = [\"b\"]
[[contexts.a.routes]]
name = \"office\"
match = \"_1XX\"
time = \"09:00-18:00\"
actions = [\"answer\"]
[[contexts.a.routes]]
name = \"always\"
match = \"_1XX\"
actions = [\"answer\"]
[contexts.b]
[[contexts.b.routes]]
name = \"in-b\"
match = \"101\"
time = \"09:00-18:00\"
actions = [\"answer\"]
"
    );
    let e = errors(&text);
    assert!(e.contains("route \"in-b\" is shadowed by route \"office\" (line 7) when context \"a\" includes it"), "{e}");
    assert!(!e.contains("route \"always\""), "{e}");
}

#[test]
fn warnings_do_not_stop_loading() {
    let p = plan(&format!(
        "{HEADER}
[contexts.a]
[[contexts.a.routes]]
name = \"x\"
match = \"1\"
actions = [{{ dial = \"nobody\" }}, {{ conference = \"9\" }}]
[[contexts.a.routes]]
name = \"orphan\"
actions = [\"answer\"]
[contexts.unused]
[[contexts.unused.routes]]
name = \"y\"
match = \"1\"
actions = [\"answer\"]
"
    ));
    let w = p.warnings().to_string();
    assert!(w.contains("route \"orphan\" is unreachable"), "{w}");
    assert!(w.contains("context \"unused\" is never used"), "{w}");
    assert!(w.contains("1 user name(s) could not be checked"), "{w}");
    assert!(
        w.contains("1 conference room name(s) could not be checked"),
        "{w}"
    );
}

#[test]
fn unknown_keys_types_and_missing_values() {
    let e = errors(&format!(
        "{HEADER}
[contexts.a]
[[contexts.a.routes]]
name = \"x\"
mach = \"1\"
days = \"mon-fry\"
actions = [\"dial\", {{ answer = 1 }}, 5, {{ hangup = \"later\" }}, {{ wait = -1 }}]
"
    ));
    for want in [
        "test.toml:7:1: error: unknown key \"mach\" in a route (did you mean \"match\"?)",
        "test.toml:8:8: error: `mon-fry` is not a day",
        "test.toml:9:12: error: action \"dial\" needs a value",
        "test.toml:9:22: error: action \"answer\" takes no value",
        "test.toml:9:36: error: expected an action (a string or { action = … }), found an integer",
        "test.toml:9:50: error: \"later\" is not a hangup cause",
        "test.toml:9:70: error: \"-1\" is not a whole number of seconds",
    ] {
        assert!(e.contains(want), "missing {want:?} in\n{e}");
    }
}

#[test]
fn toml_syntax_errors_have_a_position() {
    let e = errors("[plan\ndefault_context = 1\n");
    assert!(e.starts_with("test.toml:1:6: error: TOML syntax:"), "{e}");
}

#[test]
fn numbered_groups_need_a_regex() {
    let e = errors(&format!(
        "{HEADER}
[contexts.a]
[[contexts.a.routes]]
name = \"x\"
match = \"_1XX\"
actions = [{{ dial = \"${{1}}\" }}]
[[contexts.a.routes]]
name = \"y\"
match_regex = '2(.)'
actions = [{{ dial = \"${{2}}\" }}]
"
    ));
    assert!(e.contains("test.toml:8:22: error: unknown variable \"${1}\": numbered groups exist only in routes with match_regex"), "{e}");
    assert!(
        e.contains("test.toml:12:22: error: ${2} does not exist: the route's regex has 1 group(s)"),
        "{e}"
    );
}

#[test]
fn groups_and_trunks_choose_the_context() {
    let p = plan(&format!(
        "{HEADER}
[trunks.t]
context = \"in\"
[groups.g]
users = [\"7\"]
context = \"b\"
[contexts.a]
[[contexts.a.routes]]
name = \"ra\"
match = \"_X!\"
actions = [\"answer\"]
[contexts.b]
[[contexts.b.routes]]
name = \"rb\"
match = \"_X!\"
actions = [\"answer\"]
[contexts.in]
[[contexts.in.routes]]
name = \"rin\"
match = \"_X!\"
actions = [\"answer\"]
"
    ));
    let name = |caller: &str, trunk: Option<&str>, ctx: Option<&str>| {
        let mut rq = request(caller, "1", MONDAY_9_ROME);
        rq.trunk = trunk;
        rq.context = ctx;
        let r = p.route(&rq).unwrap();
        (r.route.name, r.context_reason)
    };
    assert_eq!(name("1", None, None), ("ra".into(), "default".into()));
    assert_eq!(name("7", None, None), ("rb".into(), "group g".into()));
    assert_eq!(name("x", Some("t"), None), ("rin".into(), "trunk t".into()));
    assert_eq!(
        name("7", Some("t"), Some("a")),
        ("ra".into(), "explicit".into())
    );
}

#[test]
fn suite_runs_and_reports() {
    let p = plan(DEFAULT_PLAN);
    let suite = Suite::parse(
        "t.tests.toml",
        r#"
[[case]]
name = "user"
from = "101"
to = "102"
expect_route = "internal/users"
expect_actions = ["dial 102 timeout=30s", "hangup no_answer (Q.850 19, SIP 480)"]

[[case]]
name = "wrong on purpose"
from = "101"
to = "102"
at = "2026-11-23T09:00"
expect_route = "extensions"

[[case]]
name = "unknown"
from = "101"
to = "555"
expect_no_route = true
"#,
        &p,
    )
    .unwrap();
    let report = suite.run(&p, "2026-01-01T00:00:00Z".parse().unwrap());
    assert_eq!((report.passed(), report.failed()), (2, 1));
    let text = report.to_string();
    assert!(
        text.contains("FAIL wrong on purpose (t.tests.toml:9)"),
        "{text}"
    );
    assert!(
        text.contains("route: expected extensions, got users"),
        "{text}"
    );
    assert!(text.ends_with("2 passed, 1 failed\n"), "{text}");
}

#[test]
fn shipped_tests_pass_on_the_shipped_plan() {
    let p = plan(DEFAULT_PLAN);
    let suite = Suite::parse(
        "default.tests.toml",
        include_str!("../../../dialplans/default.tests.toml"),
        &p,
    )
    .unwrap();
    let report = suite.run(&p, "2026-11-23T08:00:00Z".parse().unwrap());
    assert_eq!(report.failed(), 0, "{report}");
}

#[test]
fn say_digits_reads_a_number_with_variables_and_must_be_a_string() {
    let p = plan(&format!(
        "{HEADER}
[contexts.a]
[[contexts.a.routes]]
name = \"echo\"
match = \"_*7X.\"
actions = [\"answer\", {{ say_digits = \"${{EXTEN:2}}\" }}, \"hangup\"]
"
    ));
    let r = p.route(&request("101", "*7701", MONDAY_9_ROME)).unwrap();
    assert_eq!(
        lines(&r),
        [
            "answer",
            "say_digits 701",
            "hangup normal (Q.850 16, SIP 480)"
        ]
    );
    let e = errors(&format!(
        "{HEADER}
[contexts.a]
[[contexts.a.routes]]
name = \"echo\"
match = \"1\"
actions = [{{ say_digits = 7 }}]
"
    ));
    assert!(e.contains("say_digits"), "{e}");
    let e = errors(&format!(
        "{HEADER}
[contexts.a]
[[contexts.a.routes]]
name = \"echo\"
match = \"1\"
actions = [{{ say_digits = \"${{NOPE}}\" }}]
"
    ));
    assert!(e.contains("NOPE"), "{e}");
}
