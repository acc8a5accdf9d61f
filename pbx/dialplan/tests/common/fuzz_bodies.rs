//! The body of the `dialplan` fuzz target in `fuzz/fuzz_targets/`, shared with the
//! deterministic mutation test `tests/dialplan_fuzz.rs` so both check the same properties
//! on stable Rust. A plan is admin input, but `switchboard dialplan check` and a reload
//! must answer a typo with a diagnostic, never a crash.

use std::collections::BTreeSet;

use switchboard_dialplan::{route_with_digits, Action, Dialplan, Known, RouteRequest, MAX_DEPTH};

/// One request to route: (context, trunk, caller, called, menu digits).
type Call = (
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    &'static str,
    Option<&'static str>,
);

/// Requests routed through every plan that loads.
const REQUESTS: &[Call] = &[
    (None, None, "101", "102", None),
    (None, None, "101", "0", None),
    (None, None, "101", "0039055123456", None),
    (None, None, "101", "*9102", None),
    (None, None, "199", "800", None),
    (None, None, "101", "alice", None),
    (None, None, "101", "", None),
    (
        None,
        Some("carrier"),
        "+390550000000",
        "0551234567",
        Some("2"),
    ),
    (
        None,
        Some("carrier"),
        "+390550000000",
        "0551234567",
        Some("9"),
    ),
    (Some("a"), None, "101", "90551234", Some("1")),
    (Some("nowhere"), Some("nobody"), "", "\u{1F4DE}", Some("")),
];

/// `Dialplan::parse` on any text, with and without a directory to check against: never
/// panics; a refusal carries at least one error diagnostic and prints; a plan that loads
/// has only warnings, and routing a few calls (following menus) never panics and never
/// nests goto/call deeper than [`MAX_DEPTH`]. Returns how many of the two checks loaded it
/// (the stable test makes sure routing is really exercised).
pub fn dialplan(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    let set = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    let directory = Known {
        users: set(&["101", "102", "103", "104", "199", "alice"]),
        trunks: set(&["carrier", "t"]),
        rooms: set(&["800", "801"]),
        park_slots: set(&["701", "702"]),
        ..Known::default()
    };
    let mut loaded = 0;
    for known in [Known::default(), directory] {
        let plan = match Dialplan::parse("fuzz.toml", &text, &known) {
            Ok(plan) => plan,
            Err(diagnostics) => {
                assert!(
                    diagnostics.has_errors(),
                    "refused without an error:\n{diagnostics}"
                );
                let _ = diagnostics.to_string();
                continue;
            }
        };
        assert!(!plan.warnings().has_errors(), "{}", plan.warnings());
        let _ = plan.warnings().to_string();
        let _ = (
            plan.default_context(),
            plan.timezone(),
            plan.context_names().count(),
        );
        route_all(&plan);
        loaded += 1;
    }
    loaded
}

fn route_all(plan: &Dialplan) {
    let headers = [
        ("X-Customer".to_string(), "gold".to_string()),
        ("X-A".to_string(), "h".to_string()),
    ];
    let attrs = [("department".to_string(), "sales".to_string())];
    // A Monday morning and a Sunday night, in UTC.
    let times = ["2026-11-23T08:00:00Z", "2026-11-22T23:30:00Z"];
    for (i, (context, trunk, caller, called, digits)) in REQUESTS.iter().enumerate() {
        let request = RouteRequest {
            context: *context,
            trunk: *trunk,
            caller,
            caller_name: Some("Fuzz"),
            called,
            headers: &headers,
            at: times[i % 2].parse().expect("a valid timestamp"),
            caller_attrs: &attrs,
        };
        let _ = plan.context_for_user(caller);
        if let Some(t) = trunk {
            let _ = plan.context_for_trunk(t);
        }
        match route_with_digits(plan, &request, *digits) {
            Ok((first, next)) => {
                for routing in std::iter::once(&first).chain(next.as_ref()) {
                    assert!(routing.hops.len() <= MAX_DEPTH, "{:?}", routing.hops);
                    let _ = routing.route.to_string();
                    for action in &routing.actions {
                        let _ = action.to_string();
                        if let Action::Menu(menu) = action {
                            let _ = menu.choose("1");
                        }
                    }
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        match plan.route(&request) {
            Ok(_) => {}
            Err(e) => assert!(matches!(e.sip_status(), 404 | 500), "{e}"),
        }
    }
}
