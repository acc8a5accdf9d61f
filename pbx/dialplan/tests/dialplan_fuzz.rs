//! Deterministic stand-in for the `dialplan` cargo-fuzz target (which needs nightly or
//! `--sanitizer none`): the shared body runs over seeded mutations of the shipped default
//! plan and of smaller plans covering regex captures, templates, time and header
//! conditions, menus, goto and call. The mutations are byte-level (quotes, brackets,
//! braces, `$`, `=`, newlines, overlong numbers), the typos an admin makes. A failure
//! prints the seed, seed plan and iteration. `DIALPLAN_FUZZ_ITERS=n` runs n mutations per
//! seed plan (and `DIALPLAN_FUZZ_SEED` another seed).

#[allow(dead_code)]
#[path = "common/fuzz_bodies.rs"]
mod fuzz_bodies;

use rand::rngs::StdRng;
use rand::SeedableRng;

const SEED: u64 = 0xd1a1_9a4e;
/// Three plans × 1,000 = 3,000 mutated plans per run.
const PER_PLAN: usize = 1000;

const DEFAULT_PLAN: &str = include_str!("../../../dialplans/default.toml");

const SMALL_PLAN: &str = r#"[plan]
default_context = "a"
timezone = "UTC"

[variables]
PREFIX = "+39"

[contexts.a]
include = ["b"]

[[contexts.a.routes]]
name = "out"
match_regex = '9(?<rest>0[0-9]+)'
actions = [
  { set = { DEPT = "${CALLER.department}" } },
  { dial_trunk = "t", number = "${PREFIX}${rest}", caller_id = "${EXTEN:1:3}-${DEPT}-${HEADER.X-A}" },
]

[[contexts.a.routes]]
name = "menu"
match = "_8X."
actions = ["answer", { menu = "m" }]

[[contexts.a.routes]]
name = "office"
match = "102"
time = "08:00-18:00"
days = "mon-fri"
headers = [{ name = "X-Customer", equals = "gold" }]
actions = [{ call = "b/desk" }, { dial = "102", timeout = 20 }, { hangup = "busy" }]

[contexts.b]

[[contexts.b.routes]]
name = "desk"
match = "_1XX"
actions = [{ playback = "hello" }]

[[contexts.b.routes]]
name = "back"
match = "_2XX"
actions = [{ goto = "a/office" }]

[menus.m]
prompt = "welcome"
on_failure = "b/desk"
retries = 2

[menus.m.choices]
"1" = "b/desk"
"_2X" = "a/office"
"#;

/// Short enough that many of its mutations still load, so routing meets odd plans.
const TINY_PLAN: &str = r#"[plan]
default_context = "a"
[contexts.a]
[[contexts.a.routes]]
name = "all"
match = "_X."
actions = [{ dial = "${EXTEN}", timeout = 5 }]
"#;

#[test]
fn mutated_plans_never_panic_and_route_within_bounds() {
    let seed = std::env::var("DIALPLAN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEED);
    let per_plan = std::env::var("DIALPLAN_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PER_PLAN);
    let plans = [
        DEFAULT_PLAN.to_string(),
        SMALL_PLAN.to_string(),
        TINY_PLAN.to_string(),
    ];
    let interesting = b"\"'[]{}=$.,:#\n-_X.0123456789\\";
    let mut rng = StdRng::seed_from_u64(seed);
    let mut loaded = 0;
    for (s, plan) in plans.iter().enumerate() {
        assert_eq!(
            fuzz_bodies::dialplan(plan.as_bytes()),
            2,
            "seed plan #{s} loads"
        );
        let other = plans[(s + 1) % plans.len()].as_bytes();
        for n in 0..per_plan {
            let mutated =
                switchboard_testkit::mutate_text(&mut rng, plan.as_bytes(), other, interesting);
            match std::panic::catch_unwind(|| fuzz_bodies::dialplan(&mutated)) {
                Ok(n) => loaded += n,
                Err(_) => panic!(
                    "panic on seed plan #{s} mutation #{n} (seed {seed}):\n{}",
                    String::from_utf8_lossy(&mutated)
                ),
            }
        }
    }
    // Mutations that still load are where routing meets odd plans; most typos are
    // refused, but not all of them.
    let total = 2 * plans.len() * per_plan;
    eprintln!("{loaded} of {total} checks of mutated plans loaded and routed");
    assert!(loaded * 50 >= total, "only {loaded} of {total} loaded");
}

/// The seeds load and route (otherwise the mutations would only test refusals).
#[test]
fn seed_plans_load_and_route() {
    use switchboard_dialplan::{Dialplan, Known, RouteRequest};
    for text in [DEFAULT_PLAN, SMALL_PLAN, TINY_PLAN] {
        let plan = Dialplan::parse("seed.toml", text, &Known::default())
            .unwrap_or_else(|d| panic!("seed plan does not load:\n{d}"));
        let request = RouteRequest {
            context: None,
            trunk: None,
            caller: "101",
            caller_name: None,
            called: "102",
            headers: &[("X-Customer".into(), "gold".into())],
            at: "2026-11-23T08:00:00Z".parse().unwrap(),
            caller_attrs: &[],
        };
        let routing = plan.route(&request).unwrap();
        assert!(!routing.actions.is_empty());
    }
}
