//! IVR digit collection (RFC 4733) end to end, against the real binary: a dialplan with a
//! menu (written to a temporary file, `--dialplan FILE`); a SIPp caller dials the menu,
//! is answered by Switchboard, and after the 200 sends the RFC 4733 digit of SIPp's
//! `dtmf_2833_1.pcap` ("1") over RTP; the menu chooses "sales", which dials bob, and a
//! SIPp UAS registered as bob answers. The call must reach bob only through the digit:
//! without it the menu times out into its failure route, which hangs up.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::media::{pcap_rtp, sdp_audio, sipp_received_messages, RtpSink};
use common::sipp::{register, RunningSipp, Sipp};
use common::{
    free_port, pbx, peer_available, read_lossy, wait_until, Pbx, ServerOptions, TempDir, LOCALHOST,
};

const DTMF_1_PCAP: &str = "/usr/share/sip-tester/dtmf_2833_1.pcap";
const SETUP_DEADLINE: Duration = Duration::from_secs(10);

/// The plan: 500 answers and runs the menu; "1" rings bob, "2" or a failure hangs up.
const PLAN: &str = r#"
[plan]
default_context = "internal"

[contexts.internal]

[[contexts.internal.routes]]
name = "menu"
match = "500"
actions = ["answer", { menu = "main" }]

[[contexts.internal.routes]]
name = "sales"
actions = [{ dial = "bob", timeout = 20 }, { hangup = "no_answer" }]

[[contexts.internal.routes]]
name = "closed"
actions = [{ hangup = "busy" }]

[menus.main]
context = "internal"
prompt = "ivr/main-menu"
invalid_prompt = "ivr/invalid"
timeout = 8
digit_timeout = 2
max_digits = 1
retries = 1
on_failure = "closed"

[menus.main.choices]
"1" = "sales"
"2" = "closed"
"#;

/// The server with alice and bob, routing with `plan` (kept in the returned directory).
fn start(plan: &str) -> (Pbx, TempDir) {
    let plan_dir = TempDir::new("ivr-plan");
    let path = plan_dir.path().join("ivr.toml");
    std::fs::write(&path, plan).expect("write the plan");
    // The engine's debug lines (menu digits, prompts) explain a failure.
    let pbx = pbx(ServerOptions::default()
        .serve_arg("--dialplan")
        .serve_arg(path.to_str().expect("utf-8 temp path"))
        .env("SWITCHBOARD_LOG", "info,switchboard_core=debug"));
    (pbx, plan_dir)
}

/// bob: a SIPp UAS registered from its own port, answering with audio to a sink.
fn bob_answering(pbx: &Pbx) -> (RunningSipp, PathBuf, RtpSink) {
    let sink = RtpSink::bind();
    let bob_port = free_port();
    register(&pbx.server, &pbx.bob, bob_port);
    let bob_dir = pbx.server.run_dir("ivr_bob");
    let bob = Sipp::with_dir(bob_dir.clone(), "media_uas_answer.xml", None)
        .port(bob_port)
        .service(&pbx.bob.name)
        .substitute("@RTP_PORT@", &sink.port().to_string())
        .substitute("@FORMATS@", "8")
        .substitute("@RTPMAPS@", "a=rtpmap:8 PCMA/8000")
        .substitute("@NEED_TE@", "false")
        .spawn();
    wait_until(SETUP_DEADLINE, "bob's SIPp to bind its port", || {
        UdpSocket::bind((LOCALHOST, bob_port))
            .is_err()
            .then_some(())
    });
    (bob, bob_dir, sink)
}

/// The SIP messages a SIPp run in `dir` received, oldest first.
fn received(dir: &Path) -> Vec<String> {
    sipp_received_messages(&read_lossy(&dir.join("messages.log")))
}

#[test]
fn ivr_digit_collection_rfc4733() {
    if !peer_available("sipp") {
        return;
    }
    let pcap = pcap_rtp(Path::new(DTMF_1_PCAP));
    assert!(!pcap.is_empty(), "{DTMF_1_PCAP} holds no RTP");
    assert!(
        pcap.iter().all(|p| p.payload.first() == Some(&1)),
        "{DTMF_1_PCAP} holds event 1 only"
    );
    let te_pt = pcap[0].payload_type;

    let (pbx, _plan_dir) = start(PLAN);
    let (mut bob, bob_dir, _sink) = bob_answering(&pbx);

    // alice dials the menu, and after the 200 plays the digit; she stays long enough for
    // the prompt, the choice and bob's answer, then hangs up.
    let alice_dir = pbx.server.run_dir("ivr_alice");
    let te_map = format!("a=rtpmap:{te_pt} telephone-event/8000");
    let te_fmtp = format!("a=fmtp:{te_pt} 0-15");
    let mut alice = Sipp::with_dir(
        alice_dir.clone(),
        "media_uac_play.xml",
        Some(pbx.server.sip),
    )
    .port(pbx.alice_port)
    .caller(&pbx.alice)
    .service("500")
    .substitute("@FORMATS@", &format!("8 {te_pt}"))
    .substitute(
        "@RTPMAPS@",
        &["a=rtpmap:8 PCMA/8000", &te_map, &te_fmtp].join("\n      "),
    )
    .substitute("@PCAP@", DTMF_1_PCAP)
    .pause_ms(5000)
    .spawn();
    alice.wait_for_log("established", SETUP_DEADLINE);

    // The server answered alice itself, offering the events she sends.
    let alice_got = received(&alice_dir);
    let ok = alice_got
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("INVITE"))
        .unwrap_or_else(|| panic!("alice got no 200 to her INVITE: {alice_got:?}"));
    let answer = sdp_audio(ok).unwrap_or_else(|| panic!("no audio SDP in:\n{ok}"));
    assert!(
        answer
            .rtpmaps
            .iter()
            .any(|(_, e)| e.starts_with("telephone-event/8000")),
        "the menu's answer must accept RFC 4733 events: {answer:?}"
    );

    // The digit chose "sales": bob is rung and answers, well before the menu's timeout.
    bob.wait_for_log("established", Duration::from_secs(7));
    let bob_got = received(&bob_dir);
    let invite = bob_got
        .iter()
        .find(|m| m.starts_with("INVITE "))
        .unwrap_or_else(|| panic!("bob got no INVITE: {bob_got:?}"));
    assert!(
        invite
            .lines()
            .any(|l| l.starts_with("From:") && l.contains("alice")),
        "bob's call comes from alice:\n{invite}"
    );

    let alice_run = alice.wait();
    alice_run.assert_passed("alice's call through the menu");
    let bob_run = bob.wait();
    bob_run.assert_passed("bob answering the menu's choice");
    let alice_got = received(&alice_dir);
    assert!(
        !alice_got.iter().any(|m| m.starts_with("INVITE ")),
        "alice is connected to bob without a re-INVITE: {alice_got:?}"
    );
    let log = pbx.server.log();
    assert!(
        log.contains("menu choice") && log.contains("digits=1"),
        "the server logs the choice:\n{log}"
    );
}

/// Prompts at runtime: a name with no file and none shipped is skipped (logged), the
/// shipped speech plays to its end, and only then does the route go on to dial bob.
const PLAYBACK_PLAN: &str = r#"
[plan]
default_context = "internal"

[contexts.internal]

[[contexts.internal.routes]]
name = "announce"
match = "501"
actions = [
  "answer",
  { playback = ["no-such-prompt", "this-call-is-recorded"] },
  { dial = "bob", timeout = 20 },
]
"#;

#[test]
fn playback_plays_its_prompts_then_the_route_dials() {
    if !peer_available("sipp") {
        return;
    }
    let (pbx, _plan_dir) = start(PLAYBACK_PLAN);
    let (mut bob, bob_dir, _sink) = bob_answering(&pbx);
    let alice_dir = pbx.server.run_dir("ivr_alice");
    let mut alice = Sipp::with_dir(
        alice_dir.clone(),
        "media_uac_play.xml",
        Some(pbx.server.sip),
    )
    .port(pbx.alice_port)
    .caller(&pbx.alice)
    .service("501")
    .substitute("@FORMATS@", "8")
    .substitute("@RTPMAPS@", "a=rtpmap:8 PCMA/8000")
    .substitute("@PCAP@", "/usr/share/sip-tester/g711a.pcap")
    .pause_ms(4000)
    .spawn();
    alice.wait_for_log("established", SETUP_DEADLINE);
    bob.wait_for_log("established", Duration::from_secs(7));
    let log = pbx.server.log();
    let line = |needle: &str| {
        log.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the server log:\n{log}"))
    };
    // The missing prompt was reported, the shipped prompt played to its end, then bob rang.
    let missing = line("prompt not found");
    assert!(log.lines().nth(missing).unwrap().contains("no-such-prompt"));
    let finished = line("playback finished");
    assert!(missing < finished, "{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("playback finished"))
            .count()
            >= 2,
        "the skipped prompt and the shipped prompt each end:\n{log}"
    );
    assert!(received(&bob_dir).iter().any(|m| m.starts_with("INVITE ")));
    alice.wait().assert_passed("alice's announced call");
    bob.wait().assert_passed("bob answering after the prompt");
}
