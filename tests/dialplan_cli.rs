//! `switchboard dialplan check|trace|test` against the real binary: the shipped plan checks
//! clean, traces as documented and passes its own tests; a broken plan's check output (every
//! file:line:column) matches the snapshot in tests/data/dialplan/broken.expected; and with a
//! user database, check names the users that do not exist.

mod common;

use std::process::{Command, Output};

use common::TempDir;

const SWITCHBOARD: &str = env!("CARGO_BIN_EXE_switchboard");

/// Runs `switchboard` from the repository root (so `dialplans/default.toml` is found) with a
/// data directory of its own (so no database is found unless the test makes one).
fn switchboard(data_dir: &TempDir, args: &[&str]) -> Output {
    Command::new(SWITCHBOARD)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(args)
        .env_remove("SWITCHBOARD_CONFIG")
        .env_remove("SWITCHBOARD_DATABASE_URL")
        .env_remove("SWITCHBOARD_DATA_DIR")
        .output()
        .expect("run switchboard")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_accepts_the_shipped_plan() {
    let dir = TempDir::new("dialplan-check");
    let o = switchboard(&dir, &["dialplan", "check"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("dialplans/default.toml: 0 errors, 2 warnings"),
        "{out}"
    );
    assert!(out.contains("user name(s) could not be checked"), "{out}");
    assert!(out.contains("note: no user database found"), "{out}");
}

#[test]
fn check_reports_every_error_of_a_broken_plan_with_its_position() {
    let dir = TempDir::new("dialplan-broken");
    let o = switchboard(
        &dir,
        &["dialplan", "check", "tests/data/dialplan/broken.toml"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let expected = include_str!("data/dialplan/broken.expected");
    assert_eq!(stdout(&o), expected);
    assert!(
        stderr(&o).contains("tests/data/dialplan/broken.toml: 11 errors, 2 warnings"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_learns_users_from_the_database() {
    let dir = TempDir::new("dialplan-users");
    for user in ["101", "102", "103", "199"] {
        let o = switchboard(&dir, &["user", "add", user, "--password", "secret"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = switchboard(&dir, &["dialplan", "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("warning: user \"104\" does not exist"),
        "{out}"
    );
    assert!(!out.contains("user name(s) could not be checked"), "{out}");
    assert!(!out.contains("note: no user database found"), "{out}");
}

#[test]
fn trace_of_the_shipped_plan() {
    let dir = TempDir::new("dialplan-trace");
    let o = switchboard(
        &dir,
        &[
            "dialplan",
            "trace",
            "--from",
            "101",
            "--to",
            "0039055123456",
            "--at",
            "2026-11-23T09:00",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "\
call:    101 -> 0039055123456 at 2026-11-23T09:00:00+01:00[Europe/Rome]
context: internal (default)
route:   internal/outbound-international (dialplans/default.toml:57) — 00 + country code: sent as +E.164
actions:
   1. set_header X-Switchboard-Caller: 101
   2. dial_trunk carrier number=+39055123456 caller_id=+390551234567 timeout=90s
   3. hangup congestion (Q.850 34, SIP 503)
"
    );
}

#[test]
fn trace_follows_headers_trunks_and_menu_digits() {
    let dir = TempDir::new("dialplan-trace-ivr");
    let o = switchboard(
        &dir,
        &[
            "dialplan",
            "trace",
            "--from",
            "+390550000000",
            "--trunk",
            "carrier",
            "--to",
            "0551234567",
            "--at",
            "2026-11-28T10:00",
            "--header",
            "X-Customer-Tier: gold",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("context: from-carrier (trunk carrier)"),
        "{out}"
    );
    assert!(
        out.contains("route:   from-carrier/gold-customers"),
        "{out}"
    );
    assert!(out.contains("2. set_header X-Priority: gold"), "{out}");

    let o = switchboard(
        &dir,
        &[
            "dialplan",
            "trace",
            "--from",
            "+390550000000",
            "--trunk",
            "carrier",
            "--to",
            "0551234567",
            "--at",
            "2026-11-23T09:00",
            "--digits",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("after digits 2:\ncontext: ivr (entered by name)\nroute:   ivr/support"),
        "{out}"
    );
    assert!(
        out.contains("1. dial 103(15s), 104(15s) sequential"),
        "{out}"
    );
}

#[test]
fn trace_without_a_route_fails() {
    let dir = TempDir::new("dialplan-noroute");
    let o = switchboard(&dir, &["dialplan", "trace", "--from", "101", "--to", "999"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no route in context \"internal\" (or its includes) matches \"999\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn test_runs_the_shipped_table() {
    let dir = TempDir::new("dialplan-test");
    let o = switchboard(&dir, &["dialplan", "test", "dialplans/default.tests.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("testing dialplans/default.tests.toml against dialplans/default.toml\n"),
        "{out}"
    );
    assert!(
        out.contains("ok   menu choice 1 rings sales together, recorded"),
        "{out}"
    );
    assert!(out.ends_with("18 passed, 0 failed\n"), "{out}");
}

#[test]
fn test_fails_on_a_wrong_expectation() {
    let dir = TempDir::new("dialplan-test-fail");
    let tests = dir.path().join("wrong.tests.toml");
    std::fs::write(
        &tests,
        "[[case]]\nname = \"wrong\"\nfrom = \"101\"\nto = \"102\"\nexpect_route = \"operator\"\n",
    )
    .unwrap();
    let o = switchboard(
        &dir,
        &[
            "dialplan",
            "test",
            tests.to_str().unwrap(),
            "--plan",
            "dialplans/default.toml",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("FAIL wrong"), "{out}");
    assert!(out.contains("route: expected operator, got users"), "{out}");
    assert!(out.ends_with("0 passed, 1 failed\n"), "{out}");
}
