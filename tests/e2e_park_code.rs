//! Park by in-call feature code with the real binary and real SIP peers (issue 4): alice
//! (a SIPp caller) talks to bob (a SIPp callee, the agent); bob presses `#72` as RFC 4733
//! events (the payloads of SIPp's own `dtmf_2833_*.pcap` files, sent from bob's media
//! port); alice is parked in 701, bob hears "call parked at slot seven zero one" and then
//! gets our BYE; carol dials 701 and talks to alice.
//!
//! Both SIPp peers point their SDP at UDP ports the test owns, so the test sees exactly
//! what the server sends each of them: bob's announcement (decoded and measured against
//! the shipped prompts' length) and, after the retrieve, carol's audio reaching alice
//! byte for byte (both legs PCMA: forwarded untouched).

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::api::Api;
use common::media::{
    pcap_rtp, rms_dbfs, sdp_audio, sipp_received_messages, RtpPacket, RtpSink, Wav,
};
use common::sipp::{register, Sipp};
use common::{
    free_port, peer_available, read_lossy, wait_until, Server, ServerOptions, User, LOCALHOST,
};

const DEADLINE: Duration = Duration::from_secs(15);
const TOKEN: &str = "park-code-test-token-0123456789abc";
const PCAP_DIR: &str = "/usr/share/sip-tester";

/// G.711 μ-law to linear (ITU-T G.711), for what bob hears.
fn ulaw(byte: u8) -> f64 {
    let b = !byte;
    let exponent = (b >> 4) & 0x07;
    let mantissa = i32::from(b & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    let v = if b & 0x80 != 0 { -magnitude } else { magnitude };
    f64::from(v) / 32768.0
}

/// Seconds of the shipped prompts bob should hear: "call parked at", "slot", 7, 0, 1.
fn announcement_seconds() -> f64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    ["call-parked-at", "slot", "digits/7", "digits/0", "digits/1"]
        .iter()
        .map(|name| {
            Wav::read(&dir.join(format!("{name}.wav")))
                .duration()
                .as_secs_f64()
        })
        .sum()
}

/// Sends `keys` as RFC 4733 events from `sink` to `to` with payload type `pt`: each
/// key's event packets are those of SIPp's `dtmf_2833_<key>.pcap` (start, updates, the
/// three end packets), paced 20 ms apart as recorded, in one stream of ours (one SSRC,
/// consecutive sequence numbers, a new timestamp per key as RFC 4733 §2.5.1.2 wants).
fn press(sink: &RtpSink, to: SocketAddr, pt: u8, keys: &[&str]) {
    let mut seq: u16 = 1000;
    for (i, key) in keys.iter().enumerate() {
        let path = format!("{PCAP_DIR}/dtmf_2833_{key}.pcap");
        let packets = pcap_rtp(Path::new(&path));
        assert!(!packets.is_empty(), "{path} holds no RTP");
        let timestamp = 8000 * (i as u32 + 1);
        let first_seq = packets[0].sequence;
        for (j, p) in packets.iter().enumerate() {
            let mut data = vec![0x80, pt | if j == 0 { 0x80 } else { 0 }];
            // The pcap's own retransmitted end packets keep their (repeated) number.
            let s = seq.wrapping_add(p.sequence.wrapping_sub(first_seq));
            data.extend_from_slice(&s.to_be_bytes());
            data.extend_from_slice(&timestamp.to_be_bytes());
            data.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
            data.extend_from_slice(&p.payload);
            sink.send_to(&data, to);
            std::thread::sleep(Duration::from_millis(20)); // real-time pacing, not a wait
        }
        seq = seq.wrapping_add(
            packets
                .last()
                .map_or(0, |p| p.sequence.wrapping_sub(first_seq).wrapping_add(1)),
        );
        std::thread::sleep(Duration::from_millis(200)); // between keys, well under 1 s
    }
}

#[test]
fn park_by_feature_code_then_retrieve_by_dialling_the_slot() {
    if !peer_available("sipp") {
        return;
    }
    let alice = User::new("alice", "alice-secret").extension("101");
    let bob = User::new("bob", "bob-secret").extension("102");
    let carol = User::new("carol", "carol-secret").extension("103");
    let server = Server::start(
        ServerOptions::default()
            .user(alice.clone())
            .user(bob.clone())
            .user(carol.clone())
            .env("SWITCHBOARD_API_TOKEN", TOKEN)
            .env("SWITCHBOARD_LOG", "info,switchboard_core=debug"),
    );
    let api = Api::new(server.http, TOKEN);

    // bob answers with PCMU and the telephone-event type our offer named, audio to a
    // port of the test's.
    let bob_sink = RtpSink::bind();
    let bob_port = free_port();
    register(&server, &bob, bob_port);
    let bob_dir = server.run_dir("park_code_bob");
    let mut bob_uas = Sipp::with_dir(bob_dir.clone(), "media_uas_answer.xml", None)
        .port(bob_port)
        .service(&bob.name)
        .substitute("@RTP_PORT@", &bob_sink.port().to_string())
        .substitute("@FORMATS@", "0 [$tept]")
        .substitute(
            "@RTPMAPS@",
            "a=rtpmap:0 PCMU/8000\n      a=rtpmap:[$tept] telephone-event/8000",
        )
        .substitute("@NEED_TE@", "true")
        .spawn();
    wait_until(DEADLINE, "bob's SIPp to bind its port", || {
        UdpSocket::bind((LOCALHOST, bob_port))
            .is_err()
            .then_some(())
    });

    // alice calls bob, offering PCMA, her audio to another port of the test's.
    let alice_sink = RtpSink::bind();
    let alice_dir = server.run_dir("park_code_alice");
    let mut alice_uac =
        Sipp::with_dir(alice_dir.clone(), "media_uac_to_sink.xml", Some(server.sip))
            .caller(&alice)
            .service("102")
            .substitute("@RTP_PORT@", &alice_sink.port().to_string())
            .substitute("@FORMATS@", "8 101")
            .substitute(
                "@RTPMAPS@",
                "a=rtpmap:8 PCMA/8000\n      a=rtpmap:101 telephone-event/8000",
            )
            .spawn();
    alice_uac.wait_for_log("established", DEADLINE);
    bob_uas.wait_for_log("established", DEADLINE);

    // Where the server listens for bob's audio, and the event type it offered him.
    let bob_got = sipp_received_messages(&read_lossy(&bob_dir.join("messages.log")));
    let invite = bob_got
        .iter()
        .find(|m| m.starts_with("INVITE "))
        .unwrap_or_else(|| panic!("bob got no INVITE: {bob_got:?}"));
    let offer = sdp_audio(invite).unwrap_or_else(|| panic!("no audio SDP in:\n{invite}"));
    let te: u8 = offer
        .rtpmaps
        .iter()
        .find(|(_, e)| e.starts_with("telephone-event/8000"))
        .and_then(|(pt, _)| pt.parse().ok())
        .unwrap_or_else(|| panic!("our offer to bob names no telephone-event: {offer:?}"));
    let server_media: SocketAddr = format!("{}:{}", offer.address, offer.port)
        .parse()
        .unwrap_or_else(|e| panic!("media address {}:{}: {e}", offer.address, offer.port));
    assert!(
        bob_sink.rtp().iter().all(|(_, p)| p.payload_type != 0),
        "alice sends nothing, so bob hears nothing before the code"
    );

    // bob presses #72.
    let mut events = api.events();
    let pressed = Instant::now();
    press(&bob_sink, server_media, te, &["pound", "7", "2"]);
    let parked_event = events.wait_for(DEADLINE, "the parked event", |v| {
        v.to_string().contains("\"parked\"") && v.to_string().contains("701")
    });
    eprintln!("event: {parked_event}");
    let parked = wait_until(DEADLINE, "slot 701 in GET /parked", || {
        let v = api.expect(200, "GET", "/parked", None);
        let list = v["parked"].as_array()?.clone();
        (list.len() == 1 && list[0]["slot"] == "701").then_some(list[0].clone())
    });
    assert_eq!(parked["parked"], "alice", "{parked}");
    assert_eq!(parked["parker"], "bob", "{parked}");

    // bob hears the announcement, then gets BYE from the server.
    bob_uas.wait_for_log("bye", DEADLINE);
    let bye_seen = Instant::now();
    let heard: Vec<(Instant, RtpPacket)> = bob_sink
        .datagrams()
        .into_iter()
        .filter_map(|d| RtpPacket::parse(&d.data).map(|p| (d.at, p)))
        .filter(|(_, p)| p.payload_type == 0)
        .collect();
    bob_uas
        .wait()
        .assert_passed("bob is released with BYE after the announcement");
    let expected = announcement_seconds();
    let seconds = heard.len() as f64 * 0.020;
    eprintln!(
        "bob heard {seconds:.2} s of PCMU ({} packets); the prompts last {expected:.2} s; BYE {:.2} s after the first key",
        heard.len(),
        (bye_seen - pressed).as_secs_f64()
    );
    assert!(
        seconds >= expected * 0.9 && seconds <= expected + 0.5,
        "bob should hear the whole announcement ({expected:.2} s) before the BYE, heard {seconds:.2} s\n{}",
        server.log()
    );
    assert!(
        heard.iter().all(|(at, _)| *at > pressed),
        "nothing played to bob before the code"
    );
    let samples: Vec<f64> = heard
        .iter()
        .flat_map(|(_, p)| p.payload.iter().map(|&b| ulaw(b)))
        .collect();
    let frames_with_speech = samples.chunks(160).filter(|f| rms_dbfs(f) > -45.0).count();
    let level = rms_dbfs(&samples);
    eprintln!(
        "announcement level {level:.1} dBFS, {frames_with_speech} of {} frames above -45 dBFS",
        heard.len()
    );
    assert!(
        level > -30.0,
        "the announcement is audible: {level:.1} dBFS"
    );
    assert!(
        frames_with_speech * 2 >= heard.len(),
        "speech, not silence: {frames_with_speech} of {} frames",
        heard.len()
    );

    // carol dials the slot and talks to alice: carol's PCMA reaches alice untouched.
    let carol_pcap = format!("{PCAP_DIR}/g711a.pcap");
    let carol_payloads: HashSet<Vec<u8>> = pcap_rtp(Path::new(&carol_pcap))
        .into_iter()
        .map(|p| p.payload)
        .collect();
    let before = alice_sink.rtp().len();
    let mut carol_uac = Sipp::uac(&server, "media_uac_play.xml")
        .caller(&carol)
        .service("701")
        .substitute("@FORMATS@", "8")
        .substitute("@RTPMAPS@", "a=rtpmap:8 PCMA/8000")
        .substitute("@PCAP@", &carol_pcap)
        .pause_ms(3000)
        .spawn();
    carol_uac.wait_for_log("established", DEADLINE);
    let got_carol = alice_sink.wait_for(DEADLINE, |rtp| {
        rtp[before.min(rtp.len())..]
            .iter()
            .filter(|(_, p)| p.payload_type == 8 && carol_payloads.contains(&p.payload))
            .count()
            >= 50
    });
    assert!(
        got_carol,
        "alice should hear carol's audio after the retrieve\n{}",
        server.log()
    );
    assert_eq!(
        api.expect(200, "GET", "/parked", None),
        serde_json::json!({"parked": []})
    );
    carol_uac
        .wait()
        .assert_passed("carol retrieves alice and hangs up");
    alice_uac
        .wait()
        .assert_passed("alice waits parked, talks to carol, gets BYE when carol hangs up");

    // The call log has the park and the retrieve.
    let row = wait_until(DEADLINE, "the call log row", || {
        let v = api.expect(200, "GET", "/cdr?limit=5", None);
        v["calls"].as_array()?.first().cloned()
    });
    let history = row["history"].to_string();
    assert!(
        history.contains("parked") && history.contains("701") && history.contains("retrieved"),
        "{row}"
    );
    let log = server.log();
    assert!(log.contains("parked by feature code"), "{log}");
}
