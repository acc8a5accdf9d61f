//! The call-control API and the call log end to end (issue 4, items 8 and 9), against the
//! real binary with SIPp peers: the admin token (disabled 503, missing or wrong 401), bad
//! requests (400 with a reason), unknown and ended calls (404), commands the engine does
//! not implement yet (501), listing and hanging up a live call, muting a party (the relay
//! stops forwarding its RTP), starting and stopping a recording (a valid WAV), the
//! WebSocket event stream, and the call log rows answered, busy, cancelled and unanswered
//! calls leave, on SQLite and on PostgreSQL.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use common::api::{request, Api};
use common::media::{pcap_rtp, RtpSink, Wav};
use common::sipp::{register, RunningSipp, Sipp};
use common::{
    free_port, metric_sum, pbx, peer_available, postgres_database, wait_until, Pbx, Server,
    ServerOptions, User, LOCALHOST,
};
use serde_json::Value;

const TOKEN: &str = "e2e-admin-token-0123456789";
const G711A_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";
/// Signalling, a SIPp start, a database write: each well within this on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(20);

fn with_api(options: ServerOptions) -> ServerOptions {
    options.env("SWITCHBOARD_API_TOKEN", TOKEN)
}

fn api(server: &Server) -> Api {
    Api::new(server.http, TOKEN)
}

impl Pbx {
    /// Registers `user` from a fresh port and starts the UAS `scenario` there.
    fn callee(
        &self,
        user: &User,
        scenario: &str,
        configure: impl FnOnce(Sipp) -> Sipp,
    ) -> RunningSipp {
        let port = free_port();
        register(&self.server, user, port);
        let uas = configure(
            Sipp::uas(&self.server, scenario)
                .port(port)
                .service(&user.name),
        )
        .spawn();
        wait_until(DEADLINE, "the UAS SIPp to bind its port", || {
            UdpSocket::bind((LOCALHOST, port)).is_err().then_some(())
        });
        uas
    }

    fn caller(&self, scenario: &str, target: &str) -> Sipp {
        Sipp::uac(&self.server, scenario)
            .port(self.alice_port)
            .caller(&self.alice)
            .service(target)
    }

    /// bob answering with RTP sent to `sink`, alice playing the G.711 pcap at him and
    /// hanging up a second after it ends (SIPp plays it while the scenario pauses).
    fn media_call(&self, sink: &RtpSink) -> (RunningSipp, RunningSipp) {
        let hold = pcap_duration() + Duration::from_secs(1);
        let pcma = "a=rtpmap:8 PCMA/8000";
        let port = free_port();
        register(&self.server, &self.bob, port);
        let bob = Sipp::uas(&self.server, "media_uas_answer.xml")
            .port(port)
            .service(&self.bob.name)
            .substitute("@RTP_PORT@", &sink.port().to_string())
            .substitute("@FORMATS@", "8")
            .substitute("@RTPMAPS@", pcma)
            .substitute("@NEED_TE@", "false")
            .spawn();
        wait_until(DEADLINE, "bob's SIPp to bind its port", || {
            UdpSocket::bind((LOCALHOST, port)).is_err().then_some(())
        });
        let alice = self
            .caller("media_uac_play.xml", "102")
            .substitute("@FORMATS@", "8")
            .substitute("@RTPMAPS@", pcma)
            .substitute("@PCAP@", G711A_PCAP)
            .pause_ms(hold.as_millis() as u64)
            .spawn();
        (alice, bob)
    }
}

/// How long the G.711 pcap plays (from its RTP timestamps, 8 kHz).
fn pcap_duration() -> Duration {
    let packets = pcap_rtp(Path::new(G711A_PCAP));
    let (first, last) = (packets.first().unwrap(), packets.last().unwrap());
    Duration::from_secs_f64(f64::from(last.timestamp.wrapping_sub(first.timestamp)) / 8000.0)
}

/// The one live call's id, once it is answered.
fn answered_call(api: &Api) -> u64 {
    wait_until(DEADLINE, "an answered call in GET /calls", || {
        api.calls()
            .into_iter()
            .find(|c| c["state"] == "answered")
            .and_then(|c| c["call"].as_u64())
    })
}

/// The call log rows of `user`, once there are `n`.
fn call_log(api: &Api, user: &str, n: usize) -> Vec<Value> {
    let mut last = Value::Null;
    let found = common::poll_until(DEADLINE, || {
        let v = api.expect(200, "GET", &format!("/cdr?user={user}"), None);
        let rows = v["calls"].as_array().cloned().unwrap_or_default();
        last = v;
        (rows.len() >= n).then_some(rows)
    });
    found.unwrap_or_else(|| panic!("{n} call log rows of {user} not there; last answer {last}"))
}

#[test]
fn api_is_disabled_without_a_token_and_needs_the_right_one() {
    let server = Server::start(ServerOptions::default());
    let r = request(server.http, "GET", "/api/v1/calls", Some(TOKEN), None);
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["error"], "api_disabled");
    assert!(r.reason().contains("admin_token"), "says how: {}", r.text);
    assert_eq!(
        server
            .log()
            .matches("call-control API (/api/v1) is disabled")
            .count(),
        1,
        "the log says so once at start:\n{}",
        server.log()
    );
    drop(server);

    let server = Server::start(with_api(ServerOptions::default()));
    let none = request(server.http, "GET", "/api/v1/calls", None, None);
    assert_eq!(none.status, 401, "{}", none.text);
    assert!(none.reason().contains("Authorization"), "{}", none.text);
    let wrong = request(
        server.http,
        "GET",
        "/api/v1/calls",
        Some("not-the-admin-token!"),
        None,
    );
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert_eq!(wrong.reason(), "wrong admin token");
    // Even an event stream needs the token.
    let ws = request(server.http, "GET", "/api/v1/events", None, None);
    assert_eq!(ws.status, 401, "{}", ws.text);
    let api = api(&server);
    assert_eq!(api.calls(), Vec::<Value>::new());
    let nowhere = api.get("/nowhere");
    assert_eq!(
        (nowhere.status, nowhere.json["error"].as_str()),
        (404, Some("no_such_route"))
    );
    assert!(!server.log().contains(TOKEN), "the token is never logged");
}

#[test]
fn bad_requests_get_400_and_unknown_calls_404_with_a_reason() {
    let server = Server::start(with_api(ServerOptions::default()));
    let api = api(&server);
    for (method, path, body, why) in [
        (
            "POST",
            "/calls/1/mute",
            Some("{\"party\": "),
            "invalid JSON body",
        ),
        ("POST", "/calls/1/mute", Some("[1,2]"), "invalid JSON body"),
        ("POST", "/calls/1/mute", None, "missing field `party`"),
        (
            "POST",
            "/calls/1/mute",
            Some(r#"{"party":"boss"}"#),
            "party must be",
        ),
        (
            "POST",
            "/calls/1/mute",
            Some(r#"{"party":"caller","mute":true}"#),
            "unknown field `mute`",
        ),
        (
            "DELETE",
            "/calls/abc",
            None,
            "call id must be a positive integer",
        ),
        (
            "DELETE",
            "/calls/0",
            None,
            "call id must be a positive integer",
        ),
        (
            "POST",
            "/calls/1/transfer",
            Some(r#"{"party":"caller"}"#),
            "either \"target\"",
        ),
        (
            "POST",
            "/calls",
            Some(r#"{"user":"alice","target":""}"#),
            "target must not be empty",
        ),
        ("GET", "/cdr?limit=0", None, "limit must be"),
        ("GET", "/cdr?from=yesterday", None, "from:"),
        ("GET", "/cdr?colour=blue", None, "unknown parameter"),
        ("GET", "/cdr?from=2000&to=1000", None, "from is after to"),
    ] {
        let r = api.call(method, path, body);
        assert_eq!(r.status, 400, "{method} {path} {body:?}: {}", r.text);
        assert_eq!(r.json["error"], "bad_request", "{}", r.text);
        assert!(
            r.reason().contains(why),
            "{method} {path} {body:?}: reason {:?} lacks {why:?}",
            r.reason()
        );
    }
    for (method, path, body) in [
        ("DELETE", "/calls/4242", None),
        (
            "POST",
            "/calls/4242/mute",
            Some(r#"{"party":"callee","muted":true}"#),
        ),
        ("POST", "/calls/4242/recording", None),
        ("DELETE", "/calls/4242/recording", None),
    ] {
        let r = api.call(method, path, body);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        assert_eq!(r.json["error"], "no_such_call");
        assert_eq!(r.reason(), "no such call: 4242");
    }
    let _ = api.expect(
        200,
        "GET",
        "/cdr?from=2026-01-01T00:00:00Z&to=1900000000&limit=5",
        None,
    );
}

/// Rooms through the API: listing works (no room is live); muting, kicking or calling
/// someone out in a room that is not one (no rooms are configured here) is 404, with the
/// body's `target` checked first; a room from a live call needs rooms (503 here). (Calling
/// out and a call becoming a conference for real: `tests/e2e_conference.rs`.)
#[test]
fn conference_room_commands_answer_for_what_does_not_exist() {
    let server = Server::start(with_api(ServerOptions::default()));
    let api = api(&server);
    let r = api.call("GET", "/rooms", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("[]"), "{}", r.text);
    for (method, path, body) in [
        (
            "POST",
            "/rooms/sales/participants/1/mute",
            Some(r#"{"muted":true}"#),
        ),
        ("DELETE", "/rooms/sales/participants/1", None),
        (
            "POST",
            "/rooms/sales/participants",
            Some(r#"{"target":"102"}"#),
        ),
        (
            "POST",
            "/rooms/800/participants",
            Some(r#"{"target":"102","auto_answer":true}"#),
        ),
    ] {
        let r = api.call(method, path, body);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        assert_eq!(r.json["error"], "no_such_room");
    }
    for body in [r#"{"target":""}"#, r#"{"target":"102","ring":true}"#, "{}"] {
        let r = api.call("POST", "/rooms/800/participants", Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
    // A conference from a call needs rooms; this server has none.
    let r = api.call("POST", "/calls/1/conference", None);
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.reason().contains("no conference rooms"), "{}", r.text);
}

/// The call features the engine carries out answer for what does not exist with 404.
#[test]
fn call_features_on_unknown_calls_slots_and_users_answer_404() {
    let server = Server::start(with_api(
        ServerOptions::default()
            .user(common::alice())
            .user(common::bob()),
    ));
    let api = api(&server);
    for (method, path, body, error) in [
        (
            "POST",
            "/calls/4242/hold",
            Some(r#"{"party":"caller"}"#),
            "no_such_call",
        ),
        (
            "POST",
            "/calls/4242/resume",
            Some(r#"{"party":"caller"}"#),
            "no_such_call",
        ),
        (
            "POST",
            "/calls/4242/transfer",
            Some(r#"{"party":"caller","target":"103"}"#),
            "no_such_call",
        ),
        (
            "POST",
            "/calls/4242/park",
            Some(r#"{"party":"caller"}"#),
            "no_such_call",
        ),
        (
            "POST",
            "/parked/701/retrieve",
            Some(r#"{"user":"alice"}"#),
            "no_such_slot",
        ),
        (
            "POST",
            "/calls",
            Some(r#"{"user":"nobody","target":"102"}"#),
            "no_such_user",
        ),
    ] {
        let r = api.call(method, path, body);
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (404, Some(error)),
            "{method} {path}: {}",
            r.text
        );
    }
    // alice and bob (102) exist, but alice has no phone registered.
    let r = api.call("POST", "/calls", Some(r#"{"user":"alice","target":"102"}"#));
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (409, Some("not_registered")),
        "{}",
        r.text
    );
    assert_eq!(
        api.expect(200, "GET", "/parked", None),
        serde_json::json!({"parked": []})
    );
}

#[test]
fn a_live_call_is_listed_streamed_hung_up_and_logged() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(with_api(ServerOptions::default()));
    let api = api(&pbx.server);
    let mut events = api.events();
    let bob = pbx.callee(&pbx.bob, "uas_answer.xml", |s| s);
    let mut alice = pbx.caller("uac_call_remote_hangup.xml", "102").spawn();
    alice.wait_for_log("established", DEADLINE);

    let call = answered_call(&api);
    let listed = api.calls();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let c = &listed[0];
    assert_eq!(
        (c["caller"].as_str(), c["callee"].as_str()),
        (Some("alice"), Some("bob"))
    );
    assert_eq!(c["muted"], serde_json::json!([]));
    assert_eq!(c["recording"], false);

    let v = api.expect(202, "DELETE", &format!("/calls/{call}"), None);
    assert_eq!(v["result"], "accepted");
    alice
        .wait()
        .assert_passed("alice gets the BYE of the API's hang-up");
    bob.wait()
        .assert_passed("bob gets the BYE of the API's hang-up");

    let is = |kind: &'static str| move |v: &Value| v["type"] == kind && v["call"] == call;
    let started = events.wait_for(DEADLINE, "call_started", is("call_started"));
    assert_eq!(
        (started["caller"].as_str(), started["callee"].as_str()),
        (Some("alice"), Some("bob"))
    );
    assert!(started["sip_call_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    events.wait_for(DEADLINE, "call_answered", is("call_answered"));
    let ended = events.wait_for(DEADLINE, "call_ended", is("call_ended"));
    assert_eq!(
        (ended["outcome"].as_str(), ended["status"].as_u64()),
        (Some("answered"), Some(200))
    );
    let order: Vec<&str> = events
        .seen
        .iter()
        .filter(|v| v["call"] == call)
        .filter_map(|v| v["type"].as_str())
        .collect();
    assert_eq!(order, ["call_started", "call_answered", "call_ended"]);

    // The call is over: acting on it is a 404, never a crash.
    let gone = api.call("DELETE", &format!("/calls/{call}"), None);
    assert_eq!(gone.status, 404, "{}", gone.text);
    let rows = call_log(&api, "alice", 1);
    let row = &rows[0];
    assert_eq!(row["call"], call);
    assert_eq!(row["sip_call_id"], started["sip_call_id"]);
    assert_eq!(
        (row["direction"].as_str(), row["outcome"].as_str()),
        (Some("internal"), Some("answered"))
    );
    assert_eq!(row["status"], 200);
    assert!(row["answered_at_ms"].as_i64() >= row["started_at_ms"].as_i64());
    assert!(row["ended_at_ms"].as_i64() >= row["answered_at_ms"].as_i64());
    let legs: Vec<(&str, &str)> = row["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["party"].as_str().unwrap(), l["name"].as_str().unwrap()))
        .collect();
    assert_eq!(legs, [("caller", "alice"), ("callee", "bob")]);
    assert_eq!(
        call_log(&api, "bob", 1)[0]["id"],
        row["id"],
        "found by the callee too"
    );
    pbx.server
        .wait_metric("switchboard_call_records_written_total", 1.0, DEADLINE);
}

#[test]
fn muting_the_caller_stops_the_relay_forwarding_its_rtp() {
    if !peer_available("sipp") {
        return;
    }
    let pcap = pcap_rtp(Path::new(G711A_PCAP));
    let pbx = pbx(with_api(ServerOptions::default()));
    let api = api(&pbx.server);
    let sink = RtpSink::bind();
    let (mut alice, bob) = pbx.media_call(&sink);
    alice.wait_for_log("established", DEADLINE);
    let call = answered_call(&api);
    api.expect(
        202,
        "POST",
        &format!("/calls/{call}/mute"),
        Some(r#"{"party":"caller","muted":true}"#),
    );
    let listed = api.calls();
    assert_eq!(listed[0]["muted"], serde_json::json!(["caller"]));
    alice
        .wait()
        .assert_passed("alice plays the pcap and hangs up");
    bob.wait().assert_passed("bob gets the BYE");

    // The relay's count of muted drops arrives when the media session ends.
    let dropped = wait_until(DEADLINE, "the muted-drop counter", || {
        metric_sum(&pbx.server.metrics(), "switchboard_rtp_muted_dropped_total")
            .filter(|n| *n > 0.0)
    });
    let forwarded = sink.rtp().len();
    assert!(
        dropped as usize >= pcap.len() / 2 && forwarded <= pcap.len() / 2,
        "muted from the start of a {}-packet stream: {dropped} dropped, {forwarded} reached bob",
        pcap.len()
    );
    let rows = call_log(&api, "alice", 1);
    let history = rows[0]["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["kind"], "muted");
    assert_eq!(
        history[0]["detail"],
        serde_json::json!({"party": "caller", "muted": true})
    );
}

#[test]
fn recording_is_started_and_stopped_through_the_api() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(with_api(ServerOptions::default()));
    let api = api(&pbx.server);
    let sink = RtpSink::bind();
    let (mut alice, bob) = pbx.media_call(&sink);
    alice.wait_for_log("established", DEADLINE);
    let call = answered_call(&api);
    api.expect(202, "POST", &format!("/calls/{call}/recording"), None);
    let again = api.call("POST", &format!("/calls/{call}/recording"), None);
    assert_eq!(
        (again.status, again.json["error"].as_str()),
        (409, Some("conflict")),
        "{}",
        again.text
    );
    assert_eq!(api.calls()[0]["recording"], true);
    // Record while audio flows: until bob has had a second of it.
    let before = sink.rtp().len();
    assert!(
        sink.wait_for(DEADLINE, |got| got.len() >= before + 50),
        "RTP keeps flowing while recording"
    );
    api.expect(202, "DELETE", &format!("/calls/{call}/recording"), None);
    assert_eq!(api.calls()[0]["recording"], false);
    alice
        .wait()
        .assert_passed("alice plays the pcap and hangs up");
    bob.wait().assert_passed("bob gets the BYE");

    let rows = call_log(&api, "alice", 1);
    let path = rows[0]["recording_path"]
        .as_str()
        .unwrap_or_else(|| panic!("no recording path in {}", rows[0]))
        .to_string();
    let wav = Wav::read(Path::new(&path));
    assert_eq!(wav.channels, 2, "caller left, callee right");
    assert!(
        wav.duration() >= Duration::from_millis(500),
        "{path}: {:?} of audio for a second of recording",
        wav.duration()
    );
    let kinds: Vec<&str> = rows[0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["recording_started", "recording_stopped"]);
}

/// Busy (486), cancelled (487) and unanswered (408 after the ring timeout) calls, each
/// with its row in the call log, queried by caller, callee and time range.
fn unanswered_calls_are_logged(options: ServerOptions) {
    let pbx = pbx(with_api(options.ring_timeout(2)));
    let api = api(&pbx.server);

    let bob = pbx.callee(&pbx.bob, "uas_reject.xml", |s| {
        s.substitute("@CODE@", "486")
            .substitute("@REASON@", "Busy Here")
    });
    pbx.caller("uac_rejected.xml", "102")
        .substitute("@FINAL@", "486")
        .run()
        .assert_passed("busy");
    bob.wait().assert_passed("bob is busy");
    call_log(&api, "alice", 1);

    let bob = pbx.callee(&pbx.bob, "uas_ring_cancel.xml", |s| s);
    pbx.caller("uac_cancel.xml", "102")
        .run()
        .assert_passed("alice cancels");
    bob.wait().assert_passed("bob's ringing is cancelled");
    call_log(&api, "alice", 2);

    let bob = pbx.callee(&pbx.bob, "uas_ring_cancel.xml", |s| s);
    pbx.caller("uac_rejected.xml", "102")
        .substitute("@FINAL@", "408")
        .run()
        .assert_passed("nobody answers");
    bob.wait()
        .assert_passed("bob's ringing is cancelled at the timeout");

    let rows = call_log(&api, "alice", 3);
    let summary: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_string(),
                r["status"].as_i64().unwrap(),
            )
        })
        .collect();
    // Newest first.
    assert_eq!(
        summary,
        [
            ("no_answer".to_string(), 408),
            ("cancelled".into(), 487),
            ("busy".into(), 486)
        ],
        "{rows:?}"
    );
    for r in &rows {
        assert_eq!(r["answered_at"], Value::Null, "{r}");
        assert_eq!(r["duration_seconds"], 0, "{r}");
        assert_eq!(
            (r["caller"].as_str(), r["callee"].as_str()),
            (Some("alice"), Some("bob"))
        );
        assert!(r["ended_at_ms"].as_i64() >= r["started_at_ms"].as_i64());
        assert_eq!(r["legs"].as_array().map(Vec::len), Some(2), "{r}");
    }
    let no_answer = &rows[0];
    let rang_ms =
        no_answer["ended_at_ms"].as_i64().unwrap() - no_answer["started_at_ms"].as_i64().unwrap();
    assert!(
        rang_ms >= 2000,
        "rang for the 2 s ring timeout: {rang_ms} ms"
    );
    assert_eq!(call_log(&api, "bob", 3).len(), 3, "by callee");
    // Time ranges: the oldest call alone, then none at all in the future.
    let busy_ms = rows[2]["started_at_ms"].as_i64().unwrap();
    let cancel_ms = rows[1]["started_at_ms"].as_i64().unwrap();
    if cancel_ms / 1000 > busy_ms / 1000 {
        let v = api.expect(
            200,
            "GET",
            &format!("/cdr?user=alice&to={}", cancel_ms / 1000),
            None,
        );
        let ids: Vec<&Value> = v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["id"])
            .collect();
        assert_eq!(ids, [&rows[2]["id"]], "to= is exclusive, in unix seconds");
    }
    let future = api.expect(200, "GET", "/cdr?from=4102444800", None);
    assert_eq!(future["calls"], serde_json::json!([]));
    let limited = api.expect(200, "GET", "/cdr?limit=1", None);
    assert_eq!(limited["calls"].as_array().map(Vec::len), Some(1));
}

#[test]
fn call_log_rows_of_unanswered_calls_on_sqlite() {
    if !peer_available("sipp") {
        return;
    }
    unanswered_calls_are_logged(ServerOptions::default());
}

#[test]
fn call_log_rows_of_unanswered_calls_on_postgres() {
    if !peer_available("sipp") {
        return;
    }
    let Some(url) = postgres_database("api_cdr") else {
        return;
    };
    unanswered_calls_are_logged(ServerOptions {
        database_url: Some(url),
        ..ServerOptions::default()
    });
}
