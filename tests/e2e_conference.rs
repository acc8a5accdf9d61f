//! Conference rooms end to end (issue 4, item 5), against the real binary: three baresip
//! phones with different test tones and codecs dial the same room number; each phone's
//! decoded audio must hold the other two tones and not its own (the server mixes
//! "everyone but yourself", each in their own codec). The room's gauges reach /metrics.
//!
//! Calling out from a room: alice dials the room, the API's `POST /rooms/800/participants`
//! rings bob's phone (which answers by itself), bob joins, and each hears the other.
//!
//! A phone's conference button in "network conference" mode (RFC 4579): alice's phone
//! (SIPp) calls the conference factory, gets the room as its focus, and REFERs its calls
//! with bob and carol (baresip) to the focus URI; each of the three hears the other two
//! and not itself (bob's and carol's audio decoded from RTP captured on `lo`, since a
//! re-INVITE ends baresip's decoded dump).
//!
//! A phone that mixes its three-party call itself (a "local conference") needs two
//! ordinary calls, hold and resume from the server: tested with SIPp as that phone.
//!
//! Mute and kick are covered by the engine scenarios in `pbx/core/tests/conference.rs`
//! and by the mixer's tests.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::api::Api;
use common::baresip::{AnswerMode, Baresip, PhoneOptions};
use common::capture::{phone_rtp_ports, rtp_to, server_to_phones, sip_requests_to, Capture};
use common::media::{
    goertzel_power, pcmu_audio, sdp_audio, sipp_received_messages, unix_now, TonePhone, Wav,
};
use common::sipp::Sipp;
use common::{alice, bob, peer_available, wait_until, wait_until_or, Server, ServerOptions, User};

/// How long SIP signalling may take to set a call up on a loaded machine.
const SETUP_DEADLINE: Duration = Duration::from_secs(10);

fn carol() -> User {
    User::new("carol", "carol-secret").extension("103")
}

/// The decoded-audio dump (`*-dec.wav`) the sndfile module wrote in `dir`.
fn decoded_dump(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("dec.wav"))
        })
}

fn dump_len(dir: &Path) -> u64 {
    decoded_dump(dir)
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}

/// Level of `hz` in dB relative to a full-scale sine.
fn tone_db(samples: &[f64], rate: u32, hz: f64) -> f64 {
    10.0 * (goertzel_power(samples, rate, hz) / 0.5).max(1e-12).log10()
}

struct Member {
    name: &'static str,
    tone: u32,
    /// Bytes per second of its decoded dump (16-bit samples × rate × channels).
    dump_rate: u64,
    dir: PathBuf,
    phone: Baresip,
}

#[test]
fn three_parties_each_hear_the_other_two_tones_and_not_their_own() {
    if !peer_available("baresip") {
        return;
    }
    let users = [alice(), bob(), carol()];
    let mut options = ServerOptions::default()
        .serve_arg("--conference-rooms")
        .serve_arg("800-809")
        .env("SWITCHBOARD_LOG", "info");
    for u in &users {
        options = options.user(u.clone());
    }
    let server = Server::start(options);
    // PCMU at 440 Hz, Opus at 700 Hz, PCMA at 1000 Hz: three codecs in one room.
    let plan = [
        ("alice", "pcmu", 440, 8000 * 2),
        ("bob", "opus/48000/2", 700, 48000 * 2 * 2),
        ("carol", "pcma", 1000, 8000 * 2),
    ];
    let mut members: Vec<Member> = plan
        .iter()
        .zip(&users)
        .map(|((name, codecs, tone, dump_rate), user)| {
            let dir = server.run_dir(&format!("dumps-{name}"));
            let phone = Baresip::start_with(
                &server,
                user,
                AnswerMode::Manual,
                &PhoneOptions {
                    audio_codecs: (*codecs).into(),
                    tone_hz: *tone,
                    snd_path: Some(dir.clone()),
                },
            );
            Member {
                name,
                tone: *tone,
                dump_rate: *dump_rate,
                dir,
                phone,
            }
        })
        .collect();
    for m in &mut members {
        m.phone.wait_registered();
    }
    for m in &mut members {
        m.phone.dial(&format!("sip:800@{}", server.sip));
        m.phone.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    }
    server.wait_metric("switchboard_conference_participants", 3.0, SETUP_DEADLINE);

    // From now on all three are mixed: wait for three seconds more of every dump, and
    // analyse exactly that stretch (the join tones came before it).
    let start: Vec<u64> = members
        .iter()
        .map(|m| {
            let len = dump_len(&m.dir);
            // Skip the first half second: the last join tone and jitter buffers settling.
            len + m.dump_rate / 2
        })
        .collect();
    let grown = wait_until_or(Duration::from_secs(15), || {
        members
            .iter()
            .zip(&start)
            .all(|(m, s)| dump_len(&m.dir) >= s + 3 * m.dump_rate)
    });
    let end: Vec<u64> = members.iter().map(|m| dump_len(&m.dir)).collect();
    let metrics = server.metrics();
    for m in &mut members {
        m.phone.hangup();
        m.phone.wait_event("CALL_CLOSED", SETUP_DEADLINE);
    }
    assert!(
        grown,
        "the decoded dumps did not grow by 3 s; server log:\n{}",
        server.log()
    );
    server.wait_metric("switchboard_conference_participants", 0.0, SETUP_DEADLINE);
    server.wait_metric("switchboard_conference_rooms", 0.0, SETUP_DEADLINE);
    eprintln!(
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("switchboard_conference"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let tones: Vec<u32> = members.iter().map(|m| m.tone).collect();
    for (i, m) in members.iter().enumerate() {
        let path = decoded_dump(&m.dir).expect("decoded dump");
        let wav = Wav::read(&path);
        let frame = 2 * u64::from(wav.channels);
        let first = ((start[i].saturating_sub(44)) / frame) as usize;
        let last = ((end[i].saturating_sub(44)) / frame) as usize;
        let mono = wav.mono();
        let window = &mono[first.min(mono.len())..last.min(mono.len())];
        assert!(
            window.len() as u32 >= 2 * wav.sample_rate,
            "{}: only {} samples to analyse in {}",
            m.name,
            window.len(),
            path.display()
        );
        let levels: Vec<f64> = tones
            .iter()
            .map(|&t| tone_db(window, wav.sample_rate, f64::from(t)))
            .collect();
        eprintln!(
            "{} ({} Hz, {} Hz dump): levels {:?} dB at {:?} Hz",
            m.name, m.tone, wav.sample_rate, levels, tones
        );
        let own = levels[i];
        for (j, level) in levels.iter().enumerate() {
            if j == i {
                continue;
            }
            assert!(
                *level > -40.0,
                "{} does not hear the {} Hz tone: {level:.1} dB (levels {levels:?})",
                m.name,
                tones[j]
            );
            assert!(
                *level - own > 25.0,
                "{} hears its own {} Hz tone at {own:.1} dB, only {:.1} dB under the {} Hz one",
                m.name,
                m.tone,
                level - own,
                tones[j]
            );
        }
    }
}

const TOKEN: &str = "e2e-conference-token-0123456789";

/// Bytes per second of a WAV being written (its header's byte rate), once the header is.
fn dump_byte_rate(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(decoded_dump(dir)?).ok()?;
    let rate = u32::from_le_bytes(bytes.get(28..32)?.try_into().ok()?);
    (rate > 0).then_some(u64::from(rate))
}

/// Levels (dB) of `tones` in the stretch of `dir`'s decoded dump between byte offsets
/// `start` and `end`.
fn levels_in(dir: &Path, start: u64, end: u64, tones: &[u32]) -> Vec<f64> {
    let path = decoded_dump(dir).expect("decoded dump");
    let wav = Wav::read(&path);
    let frame = 2 * u64::from(wav.channels);
    let first = (start.saturating_sub(44) / frame) as usize;
    let last = (end.saturating_sub(44) / frame) as usize;
    let mono = wav.mono();
    let window = &mono[first.min(mono.len())..last.min(mono.len())];
    assert!(
        window.len() as u32 >= 2 * wav.sample_rate,
        "only {} samples to analyse in {}",
        window.len(),
        path.display()
    );
    tones
        .iter()
        .map(|&t| tone_db(window, wav.sample_rate, f64::from(t)))
        .collect()
}

#[test]
fn the_api_calls_bob_out_from_the_room_and_he_hears_alice() {
    if !peer_available("baresip") {
        return;
    }
    let server = Server::start(
        ServerOptions::default()
            .user(alice())
            .user(bob())
            .serve_arg("--conference-rooms")
            .serve_arg("800-809")
            .env("SWITCHBOARD_API_TOKEN", TOKEN)
            .env("SWITCHBOARD_LOG", "info"),
    );
    let api = Api::new(server.http, TOKEN);
    let (alice_dir, bob_dir) = (server.run_dir("dumps-alice"), server.run_dir("dumps-bob"));
    let mut alice_phone = Baresip::start_with(
        &server,
        &alice(),
        AnswerMode::Manual,
        &PhoneOptions {
            audio_codecs: "pcmu".into(),
            tone_hz: 440,
            snd_path: Some(alice_dir.clone()),
        },
    );
    // bob's phone prefers Opus but also has PCMU: the room must mix what it really sends.
    let mut bob_phone = Baresip::start_with(
        &server,
        &bob(),
        AnswerMode::Auto,
        &PhoneOptions {
            audio_codecs: "opus/48000/2,pcmu".into(),
            tone_hz: 1000,
            snd_path: Some(bob_dir.clone()),
        },
    );
    alice_phone.wait_registered();
    bob_phone.wait_registered();
    alice_phone.dial(&format!("sip:800@{}", server.sip));
    alice_phone.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    server.wait_metric("switchboard_conference_participants", 1.0, SETUP_DEADLINE);

    let mut events = api.events();
    let reply = api.expect(
        202,
        "POST",
        "/rooms/800/participants",
        Some(r#"{"target":"bob","auto_answer":true}"#),
    );
    assert_eq!(reply["room"], "800", "{reply}");
    let participant = reply["participant"]
        .as_u64()
        .unwrap_or_else(|| panic!("no participant id in {reply}"));
    bob_phone.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    let joined = events.wait_for(SETUP_DEADLINE, "room_call_out", |v| {
        v["type"] == "room_call_out" && v["participant"] == participant
    });
    assert_eq!(joined["joined"], true, "{joined}");
    assert_eq!(joined["user"], "bob", "{joined}");
    server.wait_metric("switchboard_conference_participants", 2.0, SETUP_DEADLINE);
    let rooms = api.expect(200, "GET", "/rooms", None);
    let listed: Vec<(u64, String)> = rooms["rooms"][0]["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("no participants in {rooms}"))
        .iter()
        .map(|p| {
            (
                p["participant"].as_u64().unwrap_or(0),
                p["user"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(rooms["rooms"][0]["room"], "800", "{rooms}");
    assert_eq!(listed.len(), 2, "{rooms}");
    assert_eq!(listed[0].1, "alice", "{rooms}");
    assert_eq!(listed[1], (participant, "bob".to_string()), "{rooms}");

    // Both are mixed now: analyse three seconds of each dump from half a second on.
    let dirs = [&alice_dir, &bob_dir];
    let rates: Vec<u64> = dirs
        .iter()
        .map(|d| wait_until(SETUP_DEADLINE, "a decoded dump", || dump_byte_rate(d)))
        .collect();
    let start: Vec<u64> = dirs
        .iter()
        .zip(&rates)
        .map(|(d, r)| dump_len(d) + r / 2)
        .collect();
    let grown = wait_until_or(Duration::from_secs(15), || {
        dirs.iter()
            .zip(&start)
            .zip(&rates)
            .all(|((d, s), r)| dump_len(d) >= s + 3 * r)
    });
    let end: Vec<u64> = dirs.iter().map(|d| dump_len(d)).collect();
    bob_phone.hangup();
    bob_phone.wait_event("CALL_CLOSED", SETUP_DEADLINE);
    // bob hanging up leaves alice alone in the room.
    server.wait_metric("switchboard_conference_participants", 1.0, SETUP_DEADLINE);
    alice_phone.hangup();
    alice_phone.wait_event("CALL_CLOSED", SETUP_DEADLINE);
    server.wait_metric("switchboard_conference_rooms", 0.0, SETUP_DEADLINE);
    assert!(
        grown,
        "the decoded dumps did not grow by 3 s; server log:\n{}",
        server.log()
    );
    let tones = [440, 1000];
    for (i, (name, dir)) in [("alice", &alice_dir), ("bob", &bob_dir)]
        .iter()
        .enumerate()
    {
        let levels = levels_in(dir, start[i], end[i], &tones);
        eprintln!("{name}: levels {levels:?} dB at {tones:?} Hz");
        let (own, other) = (levels[i], levels[1 - i]);
        assert!(
            other > -40.0,
            "{name} does not hear the {} Hz tone: {other:.1} dB (levels {levels:?})",
            tones[1 - i]
        );
        assert!(
            other - own > 25.0,
            "{name} hears its own {} Hz tone at {own:.1} dB (levels {levels:?})",
            tones[i]
        );
    }
}

/// An ad hoc conference from a live call (the API's `POST /calls/{id}/conference`): alice
/// and bob talk, the call is moved into a room (each phone is re-INVITEd toward the room's
/// ports), carol dials the room and hears both of them. (baresip's decoded dump stops at
/// the first re-INVITE, so what alice and bob hear is judged by carol, who joined fresh.)
#[test]
fn a_live_call_becomes_a_conference_that_a_third_party_joins() {
    if !peer_available("baresip") {
        return;
    }
    let server = Server::start(
        ServerOptions::default()
            .user(alice())
            .user(bob())
            .user(carol())
            .serve_arg("--conference-rooms")
            .serve_arg("800-809")
            .env("SWITCHBOARD_API_TOKEN", TOKEN)
            .env("SWITCHBOARD_LOG", "info"),
    );
    let api = Api::new(server.http, TOKEN);
    let carol_dir = server.run_dir("dumps-carol");
    let phone = |user: &User, mode, tone, dir: Option<PathBuf>| {
        let mut p = Baresip::start_with(
            &server,
            user,
            mode,
            &PhoneOptions {
                audio_codecs: "pcmu".into(),
                tone_hz: tone,
                snd_path: dir,
            },
        );
        p.wait_registered();
        p
    };
    let mut a = phone(&alice(), AnswerMode::Manual, 440, None);
    let mut b = phone(&bob(), AnswerMode::Auto, 1000, None);
    let mut c = phone(&carol(), AnswerMode::Manual, 700, Some(carol_dir.clone()));
    a.dial(&format!("sip:102@{}", server.sip));
    b.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    a.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    let call = wait_until(SETUP_DEADLINE, "the answered call", || {
        let v = api.expect(200, "GET", "/calls", None);
        v["calls"].as_array()?.first()?["call"].as_u64()
    });
    let reply = api.expect(202, "POST", &format!("/calls/{call}/conference"), None);
    assert_eq!(reply["room"], "800", "{reply}");
    server.wait_metric("switchboard_conference_participants", 2.0, SETUP_DEADLINE);
    server.wait_metric("switchboard_active_calls", 0.0, SETUP_DEADLINE);
    c.dial(&format!("sip:800@{}", server.sip));
    c.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    server.wait_metric("switchboard_conference_participants", 3.0, SETUP_DEADLINE);
    let rate = wait_until(SETUP_DEADLINE, "carol's decoded dump", || {
        dump_byte_rate(&carol_dir)
    });
    let start = dump_len(&carol_dir) + rate / 2;
    let grown = wait_until_or(Duration::from_secs(15), || {
        dump_len(&carol_dir) >= start + 3 * rate
    });
    let end = dump_len(&carol_dir);
    c.hangup();
    c.wait_event("CALL_CLOSED", SETUP_DEADLINE);
    a.hangup();
    a.wait_event("CALL_CLOSED", SETUP_DEADLINE);
    b.hangup();
    b.wait_event("CALL_CLOSED", SETUP_DEADLINE);
    server.wait_metric("switchboard_conference_rooms", 0.0, SETUP_DEADLINE);
    assert!(
        grown,
        "carol's dump did not grow; server log:\n{}",
        server.log()
    );
    let tones = [440, 1000, 700];
    let levels = levels_in(&carol_dir, start, end, &tones);
    eprintln!("carol: levels {levels:?} dB at {tones:?} Hz");
    assert!(
        levels[0] > -40.0 && levels[1] > -40.0,
        "carol should hear alice (440 Hz) and bob (1000 Hz), moved from their call: {levels:?}"
    );
    assert!(
        levels[0].min(levels[1]) - levels[2] > 25.0,
        "carol hears her own tone: {levels:?}"
    );
}

/// What a phone's conference button does when the phone is set up for a network
/// conference (Yealink "Network Conference", Polycom `voIpProt.SIP.conference.address`):
/// alice's phone (SIPp for signalling, a test-owned socket for its 440 Hz audio) INVITEs
/// the conference factory `conf`; the 200 names room 800 as the focus (`Contact:
/// <sip:800@...>;isfocus`). Her calls to bob and carol (two SIPp instances, started
/// together once the focus URI is known, so both REFERs arrive at about the same time)
/// each hold the callee and REFER it to the focus URI. Bob (700 Hz) and carol (1000 Hz)
/// are baresip phones: each is re-INVITEd into the room, and alice gets NOTIFY 200 and
/// BYE for both calls. Then each of the three hears the other two and not itself; the
/// call log says both calls moved to the room.
#[test]
fn a_phone_conference_button_moves_its_two_calls_into_a_room_from_the_factory() {
    if !peer_available("baresip") || !peer_available("sipp") {
        return;
    }
    let server = Server::start(
        ServerOptions::default()
            .user(alice())
            .user(bob())
            .user(carol())
            .serve_arg("--conference-rooms")
            .serve_arg("800-809")
            .serve_arg("--conference-factory")
            .serve_arg("conf")
            .env("SWITCHBOARD_API_TOKEN", TOKEN)
            .env("SWITCHBOARD_LOG", "info"),
    );
    let api = Api::new(server.http, TOKEN);
    let tones = [440u32, 700, 1000];
    let phone = |user: &User, tone| {
        let mut p = Baresip::start_with(
            &server,
            user,
            AnswerMode::Auto,
            &PhoneOptions {
                audio_codecs: "pcmu".into(),
                tone_hz: tone,
                snd_path: None,
            },
        );
        p.wait_registered();
        p
    };
    let mut b = phone(&bob(), tones[1]);
    let mut c = phone(&carol(), tones[2]);
    let Some(capture) = Capture::start(
        &server.run_dir("capture"),
        &server_to_phones(&server, &[&b, &c]),
    ) else {
        return;
    };
    let alice_audio = TonePhone::bind(f64::from(tones[0]));

    // The conference button: the factory opens a room, alice is its first participant.
    let mut focus_call = Sipp::uac(&server, "uac_factory.xml")
        .caller(&alice())
        .service("conf")
        .substitute("@MEDIA_PORT@", &alice_audio.port().to_string())
        .spawn();
    focus_call.wait_for_log("focus ", SETUP_DEADLINE);
    let logs = focus_call.logs();
    let contact = logs
        .lines()
        .find_map(|l| l.split_once("focus ").map(|(_, c)| c.trim().to_string()))
        .unwrap();
    let focus_uri = contact
        .strip_prefix('<')
        .and_then(|c| c.strip_suffix(">;isfocus"))
        .unwrap_or_else(|| panic!("not a focus Contact: {contact}"))
        .to_string();
    assert!(
        focus_uri.starts_with("sip:800@"),
        "the factory's room is the first free one, 800: {focus_uri}"
    );
    let room_media = wait_until(SETUP_DEADLINE, "the room's SDP answer", || {
        sipp_received_messages(&focus_call.messages())
            .iter()
            .filter(|m| m.starts_with("SIP/2.0 200"))
            .find_map(|m| sdp_audio(m))
    });
    alice_audio.send_to(
        format!("{}:{}", room_media.address, room_media.port)
            .parse()
            .unwrap(),
    );

    // Her two calls, each held and then REFERred to the focus URI.
    let calls: Vec<_> = ["102", "103"]
        .iter()
        .map(|callee| {
            Sipp::uac(&server, "uac_hold_refer.xml")
                .caller(&alice())
                .service(callee)
                .key("refer_to", &format!("<{focus_uri}>"))
                .pause_ms(500)
                .spawn()
        })
        .collect();
    b.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    c.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    for call in calls {
        call.wait().assert_passed(
            "alice: call, hold, REFER to the focus, NOTIFY 200, BYE from the server",
        );
    }
    server.wait_metric("switchboard_conference_participants", 3.0, SETUP_DEADLINE);
    server.wait_metric("switchboard_active_calls", 0.0, SETUP_DEADLINE);

    // Three seconds of the mix, from half a second on (the last join tone).
    let start = unix_now() + 0.5;
    let mixed = wait_until_or(Duration::from_secs(15), || {
        alice_audio
            .received()
            .last()
            .is_some_and(|(at, _)| *at >= start + 3.0)
    });
    let end = unix_now();
    let packets = capture.stop();
    assert!(
        mixed,
        "alice got no 3 s of the room's audio; server log:\n{}",
        server.log()
    );
    let window = |rtp: Vec<(f64, common::media::RtpPacket)>| {
        pcmu_audio(
            rtp.iter()
                .filter(|(at, _)| (start..end).contains(at))
                .map(|(_, p)| p),
        )
    };
    let heard = [
        ("alice", window(alice_audio.received())),
        (
            "bob",
            window(rtp_to(&packets, phone_rtp_ports(&packets, &b))),
        ),
        (
            "carol",
            window(rtp_to(&packets, phone_rtp_ports(&packets, &c))),
        ),
    ];
    for (i, (name, wav)) in heard.iter().enumerate() {
        let samples = wav.mono();
        assert!(
            samples.len() >= 2 * 8000,
            "{name}: only {} samples of the room's audio",
            samples.len()
        );
        let levels: Vec<f64> = tones
            .iter()
            .map(|&t| tone_db(&samples, wav.sample_rate, f64::from(t)))
            .collect();
        eprintln!("{name} hears {levels:?} dB at {tones:?} Hz");
        for (j, level) in levels.iter().enumerate() {
            if j == i {
                continue;
            }
            assert!(
                *level > -40.0,
                "{name} does not hear the {} Hz tone: {level:.1} dB ({levels:?})",
                tones[j]
            );
            assert!(
                level - levels[i] > 25.0,
                "{name} hears its own {} Hz tone at {:.1} dB ({levels:?})",
                tones[i],
                levels[i]
            );
        }
    }

    // The call log: both calls ended with their callee moved to room 800.
    let rows = wait_until(SETUP_DEADLINE, "two call log rows", || {
        let v = api.expect(200, "GET", "/cdr", None);
        let rows = v["calls"].as_array().cloned().unwrap_or_default();
        (rows.len() >= 2).then_some(rows)
    });
    for callee in ["bob", "carol"] {
        let row = rows
            .iter()
            .find(|r| r["callee"] == callee)
            .unwrap_or_else(|| panic!("no call log row to {callee}: {rows:?}"));
        let moved = row["history"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["kind"] == "moved_to_room")
            .unwrap_or_else(|| panic!("{callee}'s call did not move to a room: {row}"));
        assert_eq!(moved["detail"]["room"], "800", "{row}");
        assert_eq!(moved["detail"]["party"], "callee", "{row}");
    }

    // Bob and carol hang up; alice, alone, is sent BYE at shutdown.
    for p in [&mut b, &mut c] {
        p.hangup();
        p.wait_event("CALL_CLOSED", SETUP_DEADLINE);
    }
    server.wait_metric("switchboard_conference_participants", 1.0, SETUP_DEADLINE);
    let mut server = server;
    server.terminate(Duration::from_secs(10));
    focus_call
        .wait()
        .assert_passed("alice's leg in the room, ended by the server's BYE");
}

/// The server's SDP answer in a SIPp instance's trace (the 200 to its INVITE), as an
/// address to send RTP to.
fn answer_address(sipp: &common::sipp::RunningSipp) -> std::net::SocketAddr {
    let audio = wait_until(SETUP_DEADLINE, "the server's SDP answer", || {
        sipp_received_messages(&sipp.messages())
            .iter()
            .filter(|m| m.starts_with("SIP/2.0 200"))
            .find_map(|m| sdp_audio(m))
    });
    format!("{}:{}", audio.address, audio.port).parse().unwrap()
}

/// A phone's conference button in its default, "local conference" mode: alice's phone
/// talks to carol, calls bob, holds bob a while, and resumes him, then mixes the two
/// calls itself. From the server that is two ordinary calls, a hold and a resume. Alice is
/// SIPp for signalling with a test-owned RTP socket per call sending her 440 Hz voice on
/// each (the mixing of the others' voices is her phone's own business); bob (700 Hz) and
/// carol (1000 Hz) are baresip phones. Bob hears music on hold while held and alice after
/// the resume (decoded from RTP captured on `lo`: the hold's re-INVITE ends his dump);
/// carol hears alice all along (her dump); alice hears each of them on its own call.
#[test]
fn a_phone_mixing_its_own_conference_only_needs_two_calls_hold_and_resume() {
    if !peer_available("baresip") || !peer_available("sipp") {
        return;
    }
    const HOLD_MS: u64 = 2000;
    let server = Server::start(
        ServerOptions::default()
            .user(alice())
            .user(bob())
            .user(carol())
            .env("SWITCHBOARD_LOG", "info"),
    );
    let carol_dir = server.run_dir("dumps-carol");
    let phone = |user: &User, tone, dir: Option<PathBuf>| {
        let mut p = Baresip::start_with(
            &server,
            user,
            AnswerMode::Auto,
            &PhoneOptions {
                audio_codecs: "pcmu".into(),
                tone_hz: tone,
                snd_path: dir,
            },
        );
        p.wait_registered();
        p
    };
    let mut b = phone(&bob(), 700, None);
    let mut c = phone(&carol(), 1000, Some(carol_dir.clone()));
    // Bob's RTP, and the SIP requests he gets (their times mark the hold and the resume).
    let Some(capture) = Capture::start(
        &server.run_dir("capture"),
        &server_to_phones(&server, &[&b]),
    ) else {
        return;
    };
    let (to_carol, to_bob) = (TonePhone::bind(440.0), TonePhone::bind(440.0));
    let carol_call = Sipp::uac(&server, "uac_media_call.xml")
        .caller(&alice())
        .service("103")
        .substitute("@MEDIA_PORT@", &to_carol.port().to_string())
        .spawn();
    c.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    to_carol.send_to(answer_address(&carol_call));

    let mut bob_call = Sipp::uac(&server, "uac_media_hold_resume.xml")
        .caller(&alice())
        .service("102")
        .substitute("@MEDIA_PORT@", &to_bob.port().to_string())
        .pause_ms(HOLD_MS)
        .spawn();
    b.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    let bob_address = answer_address(&bob_call);
    to_bob.send_to(bob_address);
    bob_call.wait_for_log("held", SETUP_DEADLINE);
    // A phone holding a call stops sending on it.
    to_bob.stop_sending();
    bob_call.wait_for_log("resumed", SETUP_DEADLINE);
    to_bob.send_to(bob_address);
    let resumed_at = unix_now();
    // Three seconds of the three-party call.
    let talked = wait_until_or(Duration::from_secs(15), || {
        to_bob
            .received()
            .last()
            .is_some_and(|(at, _)| *at >= resumed_at + 3.5)
    });
    let end = unix_now();
    let packets = capture.stop();
    assert!(talked, "alice hears nothing from bob after the resume");
    assert_eq!(
        common::metric_sum(&server.metrics(), "switchboard_active_calls"),
        Some(2.0)
    );
    for p in [&mut b, &mut c] {
        p.hangup();
        p.wait_event("CALL_CLOSED", SETUP_DEADLINE);
    }
    bob_call
        .wait()
        .assert_passed("alice's call to bob: hold, resume, bob's BYE");
    carol_call
        .wait()
        .assert_passed("alice's call to carol: carol's BYE");

    let hears = |name: &str, wav: &Wav, hz: u32| {
        let m = common::media::measure_tone(wav, f64::from(hz), Duration::ZERO);
        eprintln!("{name}: {m:?}");
        assert!(
            m.seconds >= 1.5
                && (m.hz - f64::from(hz)).abs() <= f64::from(hz) * 0.03
                && m.level_dbfs > -40.0
                && m.purity > 0.5,
            "{name} should hear {hz} Hz: {m:?}"
        );
    };
    let window = |rtp: Vec<(f64, common::media::RtpPacket)>, from: f64, to: f64| {
        pcmu_audio(
            rtp.iter()
                .filter(|(at, _)| (from..to).contains(at))
                .map(|(_, p)| p),
        )
    };
    // Bob's three INVITEs: the call, the hold and the resume (relayed from alice).
    let invites = sip_requests_to(&packets, b.sip_port, "INVITE");
    assert_eq!(invites.len(), 3, "INVITEs to bob at {invites:?}");
    let (held_at, resumed_at) = (invites[1], invites[2]);
    let bob_rtp = rtp_to(&packets, phone_rtp_ports(&packets, &b));
    let music = window(bob_rtp.clone(), held_at + 0.3, resumed_at - 0.05);
    let m = common::media::measure_tone(&music, 440.0, Duration::ZERO);
    eprintln!("bob while held: {m:?}");
    assert!(
        m.seconds >= 1.0 && m.level_dbfs > -40.0 && m.purity < 0.5,
        "bob should hear music on hold, not alice, while held: {m:?}"
    );
    hears(
        "bob after the resume",
        &window(bob_rtp, resumed_at + 0.5, end),
        440,
    );
    hears(
        "alice on bob's call after the resume",
        &window(to_bob.received(), resumed_at + 0.5, end),
        700,
    );
    hears(
        "alice on carol's call",
        &window(to_carol.received(), resumed_at + 0.5, end),
        1000,
    );
    let carol_hears = Wav::read(&decoded_dump(&carol_dir).expect("carol's decoded dump"));
    let keep = 2 * carol_hears.sample_rate as usize * usize::from(carol_hears.channels);
    let last = Wav {
        samples: carol_hears.samples[carol_hears.samples.len().saturating_sub(keep)..].to_vec(),
        ..carol_hears
    };
    hears("carol, last 2 s", &last, 440);
}
