//! Dialplans in the running server (issue 5), with SIPp: calls routed by pattern and by a
//! time condition (a fixed test clock), a sequential dial whose first step times out, a
//! reload with an invalid plan that keeps serving calls, a reload during an active call,
//! and an outbound call through a trunk (a SIPp provider checking our credentials).

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::api::Api;
use common::sipp::{register, RunningSipp, Sipp};
use common::{
    free_port, metric_sum, peer_available, wait_until, Server, ServerOptions, TempDir, User,
    LOCALHOST,
};

const DEADLINE: Duration = Duration::from_secs(15);
const TOKEN: &str = "dialplan-test-token-0123456789";

const PLAN: &str = r#"
[plan]
default_context = "internal"
timezone = "Europe/Rome"

[trunks.provider]
context = "from-provider"

[contexts.internal]

[[contexts.internal.routes]]
name = "office-open"
match = "500"
time = "09:00-17:00"
days = "mon-fri"
actions = [{ dial = "bob", timeout = 20 }]

[[contexts.internal.routes]]
name = "office-closed"
match = "500"
actions = [{ hangup = "busy" }]

[[contexts.internal.routes]]
name = "hunt"
match = "600"
actions = [
  { dial = [{ user = "carol", timeout = 2 }, { user = "bob", timeout = 20 }], strategy = "sequential" },
  { hangup = "no_answer" },
]

[[contexts.internal.routes]]
name = "users"
match = "_1XX"
actions = [{ dial = "${EXTEN}", timeout = 20 }, { hangup = "no_answer" }]

[[contexts.internal.routes]]
name = "outbound"
match = "_00."
actions = [{ dial_trunk = "provider", number = "${EXTEN}", caller_id = "+390551234567" }]

[contexts.from-provider]

[[contexts.from-provider.routes]]
name = "did"
match = "0551234567"
actions = [{ dial = "bob" }]
"#;

fn users() -> (User, User, User) {
    (
        User::new("alice", "alice-secret").extension("101"),
        User::new("bob", "bob-secret").extension("102"),
        User::new("carol", "carol-secret").extension("103"),
    )
}

/// A server with alice, bob, carol, the plan in `dir`, the API, and `extra` options.
fn start_server(
    dir: &TempDir,
    plan: &str,
    extra: impl FnOnce(ServerOptions) -> ServerOptions,
) -> (Server, PathBuf) {
    let path = dir.path().join("plan.toml");
    std::fs::write(&path, plan).unwrap();
    let (alice, bob, carol) = users();
    let options = ServerOptions::default()
        .user(alice)
        .user(bob)
        .user(carol)
        .serve_arg("--dialplan")
        .serve_arg(path.to_str().unwrap())
        .env("SWITCHBOARD_API_TOKEN", TOKEN);
    (Server::start(extra(options)), path)
}

/// `user`'s phone: a SIPp UAS running `scenario`, registered from its port.
fn phone(server: &Server, user: &User, scenario: &str) -> RunningSipp {
    let port = free_port();
    register(server, user, port);
    let uas = Sipp::uas(server, scenario)
        .port(port)
        .service(&user.name)
        .spawn();
    wait_until(DEADLINE, "the UAS SIPp to bind its port", || {
        UdpSocket::bind((LOCALHOST, port)).is_err().then_some(())
    });
    uas
}

/// alice calls `number`; the call is answered and she hangs up after `pause_ms`.
fn alice_calls(server: &Server, number: &str, pause_ms: u64) -> Sipp {
    let (alice, _, _) = users();
    Sipp::uac(server, "uac_call.xml")
        .caller(&alice)
        .service(number)
        .pause_ms(pause_ms)
}

/// alice calls `number` and must get `status`.
fn alice_refused(server: &Server, number: &str, status: u16) {
    let (alice, _, _) = users();
    Sipp::uac(server, "uac_rejected.xml")
        .substitute("@FINAL@", &status.to_string())
        .caller(&alice)
        .service(number)
        .run()
        .assert_passed(&format!("a call to {number} ends with {status}"));
}

#[test]
fn calls_are_routed_by_pattern_and_by_time_of_day() {
    if !peer_available("sipp") {
        return;
    }
    let dir = TempDir::new("dialplan");
    // Monday 2026-11-23, 09:30 in Rome: the office is open.
    let (server, _) = start_server(&dir, PLAN, |o| {
        o.env("SWITCHBOARD_DIALPLAN_TEST_CLOCK", "2026-11-23T08:30:00Z")
    });
    let (_, bob, _) = users();
    let b = phone(&server, &bob, "uas_answer.xml");
    alice_calls(&server, "500", 200)
        .run()
        .assert_passed("500 in office hours reaches bob");
    b.wait().assert_passed("bob answered 500");
    // _1XX reaches the user by extension.
    let b = phone(&server, &bob, "uas_answer.xml");
    alice_calls(&server, "102", 200)
        .run()
        .assert_passed("102 matches _1XX and rings bob");
    b.wait().assert_passed("bob answered 102");
    // No route: 404.
    alice_refused(&server, "999", 404);

    // Sunday: the same number is closed (hangup busy → 486).
    let dir2 = TempDir::new("dialplan-sunday");
    let (sunday, _) = start_server(&dir2, PLAN, |o| {
        o.env("SWITCHBOARD_DIALPLAN_TEST_CLOCK", "2026-11-22T10:00:00Z")
    });
    alice_refused(&sunday, "500", 486);
}

#[test]
fn a_sequential_dial_moves_on_after_the_step_timeout() {
    if !peer_available("sipp") {
        return;
    }
    let dir = TempDir::new("dialplan-hunt");
    let (server, _) = start_server(&dir, PLAN, |o| o);
    let (_, bob, carol) = users();
    // Carol's phone rings and never answers; after 2 s the plan moves on to bob.
    let c = phone(&server, &carol, "uas_ring_cancel.xml");
    let b = phone(&server, &bob, "uas_answer.xml");
    alice_calls(&server, "600", 200)
        .run()
        .assert_passed("600 hunts carol (2 s) then bob, who answers");
    c.wait()
        .assert_passed("carol's phone rang and was cancelled");
    b.wait()
        .assert_passed("bob answered after carol's step timed out");
}

#[test]
fn an_invalid_plan_is_refused_and_the_running_one_keeps_serving() {
    if !peer_available("sipp") {
        return;
    }
    let dir = TempDir::new("dialplan-reload");
    let (server, path) = start_server(&dir, PLAN, |o| o);
    let api = Api::new(server.http, TOKEN);
    std::fs::write(
        &path,
        PLAN.replace(
            "{ dial = \"${EXTEN}\", timeout = 20 }",
            "{ dail = \"${EXTEN}\" }",
        ),
    )
    .unwrap();
    let r = api.call("POST", "/dialplan/reload", None);
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.reason().contains("plan.toml:") && r.reason().contains("dail"),
        "the errors name the file, line and the unknown action: {}",
        r.text
    );
    // The running plan still routes.
    let (_, bob, _) = users();
    let b = phone(&server, &bob, "uas_answer.xml");
    alice_calls(&server, "102", 200)
        .run()
        .assert_passed("after a refused reload, 102 still reaches bob");
    b.wait().assert_passed("bob answered");
    let metrics = server.metrics();
    assert_eq!(
        metric_sum(&metrics, "switchboard_dialplan_reload_failures_total"),
        Some(1.0),
        "{metrics}"
    );
    let status = api.expect(200, "GET", "/dialplan", None);
    assert!(
        status["last_error"].as_str().unwrap_or("").contains("dail"),
        "{status}"
    );
    // A broken plan also stops a fresh start, with its errors.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[plan]\ndefault_context = \"nowhere\"\n").unwrap();
    let out = server
        .command()
        .args([
            "serve",
            "--sip-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--dialplan")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the dialplan has errors") && stderr.contains("bad.toml"),
        "{stderr}"
    );
}

#[test]
fn a_reload_during_a_call_leaves_the_call_alone() {
    if !peer_available("sipp") {
        return;
    }
    let dir = TempDir::new("dialplan-live");
    let (server, path) = start_server(&dir, PLAN, |o| o);
    let (_, bob, _) = users();
    let b = phone(&server, &bob, "uas_answer.xml");
    let mut call = alice_calls(&server, "102", 3000).spawn();
    call.wait_for_log("established", DEADLINE);
    // New plan: users are now refused. SIGHUP reloads it while the call is up.
    std::fs::write(
        &path,
        PLAN.replace(
            "actions = [{ dial = \"${EXTEN}\", timeout = 20 }, { hangup = \"no_answer\" }]",
            "actions = [{ hangup = \"busy\" }]",
        ),
    )
    .unwrap();
    server.sighup();
    wait_until(DEADLINE, "the reload", || {
        let m = server.metrics();
        (metric_sum(&m, "switchboard_dialplan_reloads_total") >= Some(1.0)).then_some(())
    });
    // The call in progress goes on and ends normally (alice's BYE reaches bob).
    call.wait()
        .assert_passed("the call routed by the old plan lasts until alice hangs up");
    b.wait().assert_passed("bob got the BYE");
    // New calls use the new plan.
    alice_refused(&server, "102", 486);
}

#[test]
fn an_outbound_call_goes_through_the_trunk_with_the_providers_credentials() {
    if !peer_available("sipp") {
        return;
    }
    let dir = TempDir::new("dialplan-trunk");
    std::fs::create_dir_all(dir.path().join("provider")).unwrap();
    // The provider: registrar and gateway, two transactions (REGISTER, the call).
    let provider_port = free_port();
    let mut provider = Sipp::with_dir(dir.path().join("provider"), "provider.xml", None)
        .port(provider_port)
        .arg("-m")
        .arg("2")
        .spawn();
    wait_until(DEADLINE, "the provider SIPp to bind", || {
        UdpSocket::bind((LOCALHOST, provider_port))
            .is_err()
            .then_some(())
    });
    let config = config_file(dir.path(), provider_port);
    let (server, _) = start_server(&dir, PLAN, |o| {
        o.env("SWITCHBOARD_CONFIG", config.to_str().unwrap())
    });
    provider.wait_for_log("registered", DEADLINE);
    alice_calls(&server, "0039055999888", 500)
        .run()
        .assert_passed("alice's international call is answered by the provider");
    provider.wait_for_log("outbound to 0039055999888", DEADLINE);
    provider
        .wait()
        .assert_passed("the provider checked our REGISTER and INVITE credentials");
}

fn config_file(dir: &Path, provider_port: u16) -> PathBuf {
    let path = dir.join("switchboard.toml");
    std::fs::write(
        &path,
        format!(
            "[[trunks]]\nname = \"provider\"\ndomain = \"voip.example.net\"\n\
             gateways = [\"127.0.0.1:{provider_port}\"]\nusername = \"acct42\"\n\
             password = \"trunk-secret\"\nexpires = 60\n"
        ),
    )
    .unwrap();
    path
}
