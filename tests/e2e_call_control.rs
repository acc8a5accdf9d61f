//! Call features through the HTTP API with real SIP peers (issue 4): click-to-dial rings
//! the user's phone with auto-answer headers (checked by the phone, a SIPp UAS) and then
//! the target; park and retrieve through the API (the retrieving phone gets auto-answer
//! headers too); a blind transfer through the API; the call log rows they leave.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::api::Api;
use common::sipp::{register, RunningSipp, Sipp};
use common::{free_port, peer_available, wait_until, Server, ServerOptions, User, LOCALHOST};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(15);
const TOKEN: &str = "call-control-test-token-0123456789";

fn users() -> (User, User, User) {
    (
        User::new("alice", "alice-secret").extension("101"),
        User::new("bob", "bob-secret").extension("102"),
        User::new("carol", "carol-secret").extension("103"),
    )
}

fn start() -> (Server, Api) {
    let (alice, bob, carol) = users();
    let server = Server::start(
        ServerOptions::default()
            .user(alice)
            .user(bob)
            .user(carol)
            .env("SWITCHBOARD_API_TOKEN", TOKEN),
    );
    let api = Api::new(server.http, TOKEN);
    (server, api)
}

/// `user`'s phone: a SIPp UAS running `scenario` from a freshly registered port.
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

fn call_row(api: &Api, call: u64) -> Value {
    wait_until(DEADLINE, "the call log row", || {
        let v = api.expect(200, "GET", "/cdr?limit=20", None);
        v["calls"]
            .as_array()?
            .iter()
            .find(|c| c["call"] == call)
            .cloned()
    })
}

#[test]
fn click_to_dial_rings_the_user_with_auto_answer_then_the_target() {
    if !peer_available("sipp") {
        return;
    }
    let (server, api) = start();
    let (alice, bob, _) = users();
    let mut a = phone(&server, &alice, "uas_answer_autoanswer.xml");
    let b = phone(&server, &bob, "uas_answer.xml");
    let v = api.expect(
        202,
        "POST",
        "/calls",
        Some(r#"{"user":"alice","target":"102","auto_answer":true}"#),
    );
    let call = v["call"].as_u64().expect("the call id");
    a.wait_for_log("auto-answer headers", DEADLINE);
    wait_until(DEADLINE, "the call to be answered by the target", || {
        api.calls()
            .iter()
            .any(|c| c["call"] == call && c["state"] == "answered")
            .then_some(())
    });
    api.expect(202, "DELETE", &format!("/calls/{call}"), None);
    a.wait()
        .assert_passed("alice's phone saw the auto-answer headers, answered, got BYE");
    b.wait()
        .assert_passed("bob was rung after alice answered, got BYE");
    let row = call_row(&api, call);
    assert_eq!(row["outcome"], "answered", "{row}");
    assert_eq!(
        (row["caller"].as_str(), row["callee"].as_str()),
        (Some("alice"), Some("bob"))
    );
}

#[test]
fn park_and_retrieve_and_blind_transfer_through_the_api() {
    if !peer_available("sipp") {
        return;
    }
    let (server, api) = start();
    let (alice, bob, carol) = users();
    // alice calls bob; bob's agent parks alice through the API.
    let b = phone(&server, &bob, "uas_answer.xml");
    let mut a = Sipp::uac(&server, "uac_call_remote_hangup.xml")
        .caller(&alice)
        .service("102")
        .spawn();
    a.wait_for_log("established", DEADLINE);
    let call = wait_until(DEADLINE, "the answered call", || {
        api.calls()
            .iter()
            .find(|c| c["state"] == "answered")
            .and_then(|c| c["call"].as_u64())
    });
    let v = api.expect(
        202,
        "POST",
        &format!("/calls/{call}/park"),
        Some(r#"{"party":"caller"}"#),
    );
    assert_eq!(v["slot"], "701", "{v}");
    b.wait()
        .assert_passed("bob's leg is released when alice is parked");
    let parked = api.expect(200, "GET", "/parked", None);
    assert_eq!(parked["parked"][0]["slot"], "701", "{parked}");
    // carol's phone retrieves it (rung with auto-answer).
    let c = phone(&server, &carol, "uas_answer_autoanswer.xml");
    api.expect(
        202,
        "POST",
        "/parked/701/retrieve",
        Some(r#"{"user":"carol"}"#),
    );
    wait_until(DEADLINE, "the retrieved call", || {
        api.calls()
            .iter()
            .any(|x| x["call"] == call && x["callee"] == "carol" && x["state"] == "answered")
            .then_some(())
    });
    // Now carol blind-transfers alice to bob (the API names who stays: the caller).
    let b2 = phone(&server, &bob, "uas_answer.xml");
    api.expect(
        202,
        "POST",
        &format!("/calls/{call}/transfer"),
        Some(r#"{"party":"caller","target":"bob"}"#),
    );
    c.wait()
        .assert_passed("carol saw auto-answer headers, answered, and was released by the transfer");
    wait_until(DEADLINE, "the transferred call", || {
        api.calls()
            .iter()
            .any(|x| x["call"] == call && x["callee"] == "bob")
            .then_some(())
    });
    api.expect(202, "DELETE", &format!("/calls/{call}"), None);
    a.wait().assert_passed("alice got the BYE at the end");
    b2.wait()
        .assert_passed("bob answered the transfer and got the BYE");
    let row = call_row(&api, call);
    let history = row.to_string();
    assert!(
        history.contains("park") && history.contains("retriev") && history.contains("transfer"),
        "the call log keeps the park, the retrieval and the transfer: {row}"
    );
}
