//! Call features with real phones (issue 4): a blind transfer made from a baresip phone's
//! own transfer command (REFER), park by transferring to the park extension and retrieve
//! by dialling the slot, a parked call whose timeout rings the parker back, an INVITE with
//! Replaces, and an attended transfer by REFER with Replaces from a transferor phone
//! played by coordinated SIPp instances. Audio is checked where it matters: the party
//! that ends up with the caller hears the caller's tone (its decoded-audio dump), the
//! server's recording of the call holds the new party's tone on the callee channel after
//! the transfer, and what a re-INVITEd phone hears (its dump stops at a re-INVITE) is
//! decoded from the RTP captured on `lo`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::api::Api;
use common::baresip::{AnswerMode, Baresip, PhoneOptions};
use common::capture::{
    phone_rtp_ports, rtp_to, server_to_phones, sip_requests_to, timeline, Capture,
};
use common::media::{measure_tone, pcmu_audio, unix_now, Wav};
use common::sipp::{register, Sipp};
use common::{peer_available, wait_until, wait_until_or, Server, ServerOptions, User};

const DEADLINE: Duration = Duration::from_secs(15);
const ALICE_TONE: u32 = 440;
const BOB_TONE: u32 = 700;
const CAROL_TONE: u32 = 1000;

fn users() -> (User, User, User) {
    (
        User::new("alice", "alice-secret").extension("101"),
        User::new("bob", "bob-secret").extension("102"),
        User::new("carol", "carol-secret").extension("103"),
    )
}

fn phone(
    server: &Server,
    user: &User,
    answer: AnswerMode,
    tone: u32,
    dumps: Option<PathBuf>,
) -> Baresip {
    let mut p = Baresip::start_with(
        server,
        user,
        answer,
        &PhoneOptions {
            audio_codecs: "pcmu".into(),
            tone_hz: tone,
            snd_path: dumps,
        },
    );
    p.wait_registered();
    p
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

/// Waits until the decoded dump in `dir` holds `seconds` of 8 kHz audio.
fn wait_dump(dir: &Path, seconds: u64, server: &Server) {
    let grown = wait_until_or(Duration::from_secs(seconds + 10), || {
        decoded_dump(dir)
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() >= seconds * 8000 * 2 + 44)
    });
    assert!(
        grown,
        "no {seconds} s of audio in {}; server log:\n{}",
        dir.display(),
        server.log()
    );
}

fn assert_hears(who: &str, dir: &Path, tone: u32) {
    let path = decoded_dump(dir).expect("decoded dump");
    let wav = Wav::read(&path);
    let m = measure_tone(&wav, f64::from(tone), Duration::from_millis(800));
    eprintln!(
        "{who} hears {:.1} Hz at {:.1} dBFS, purity {:.2} over {:.1} s",
        m.hz, m.level_dbfs, m.purity, m.seconds
    );
    assert!(
        (m.hz - f64::from(tone)).abs() <= f64::from(tone) * 0.03
            && m.level_dbfs > -40.0
            && m.purity > 0.5,
        "{who} should hear {tone} Hz: {m:?}"
    );
}

/// The server's recording of the first call, once it is closed.
fn closed_recording(server: &Server) -> Wav {
    let recordings = server.dir().join("recordings");
    let path = wait_until(
        Duration::from_secs(10),
        "the recording to be closed",
        || {
            let day = std::fs::read_dir(&recordings).ok()?.next()?.ok()?.path();
            let file = std::fs::read_dir(day).ok()?.next()?.ok()?.path();
            let data = std::fs::read(&file).ok()?;
            (data.len() > 44 && data[40..44] != [0xff; 4]).then_some(file)
        },
    );
    Wav::read(&path)
}

/// The last `seconds` of one channel of a recording.
fn tail(wav: &Wav, channel: usize, seconds: u32) -> Wav {
    let samples: Vec<i16> = wav
        .samples
        .iter()
        .skip(channel)
        .step_by(usize::from(wav.channels))
        .copied()
        .collect();
    let keep = (seconds * wav.sample_rate) as usize;
    Wav {
        sample_rate: wav.sample_rate,
        channels: 1,
        samples: samples[samples.len().saturating_sub(keep)..].to_vec(),
    }
}

#[test]
fn blind_transfer_from_a_baresip_phone() {
    if !peer_available("baresip") {
        return;
    }
    let (alice, bob, carol) = users();
    let server = Server::start(
        ServerOptions::default()
            .user(alice.clone())
            .user(bob.clone())
            .user(carol.clone())
            .serve_arg("--record-calls")
            .env("SWITCHBOARD_LOG", "info,switchboard_core=debug"),
    );
    let carol_dumps = server.run_dir("dumps-carol");
    let mut a = phone(&server, &alice, AnswerMode::Manual, ALICE_TONE, None);
    let mut b = phone(&server, &bob, AnswerMode::Auto, BOB_TONE, None);
    let mut c = phone(
        &server,
        &carol,
        AnswerMode::Auto,
        CAROL_TONE,
        Some(carol_dumps.clone()),
    );

    a.dial(&format!("sip:102@{}", server.sip));
    b.wait_event("CALL_ESTABLISHED", DEADLINE);
    a.wait_event("CALL_ESTABLISHED", DEADLINE);

    // Bob presses transfer and dials 103: his phone sends REFER.
    let r = b.ctrl.command(
        "transfer",
        &format!("sip:103@{}", server.sip),
        Duration::from_secs(5),
    );
    assert_eq!(r["ok"], true, "transfer: {r}");
    c.wait_event("CALL_ESTABLISHED", DEADLINE);
    // Bob's phone is released (by our BYE or its own after NOTIFY 200).
    b.wait_event("CALL_CLOSED", DEADLINE);
    wait_dump(&carol_dumps, 3, &server);
    a.hangup();
    c.wait_event("CALL_CLOSED", DEADLINE);
    a.wait_event("CALL_CLOSED", DEADLINE);
    // Carol talked to alice: she heard alice's tone (the dump is complete once closed).
    assert_hears("carol", &carol_dumps, ALICE_TONE);

    // The recording of the call: after the transfer the callee channel is carol.
    let wav = closed_recording(&server);
    let m = measure_tone(
        &tail(&wav, 1, 3),
        f64::from(CAROL_TONE),
        Duration::from_millis(300),
    );
    eprintln!("recording callee channel, last 3 s: {m:?}");
    assert!(
        (m.hz - f64::from(CAROL_TONE)).abs() <= f64::from(CAROL_TONE) * 0.03 && m.purity > 0.5,
        "the callee channel should end with carol's {CAROL_TONE} Hz: {m:?}"
    );
    let log = server.log();
    assert!(
        log.contains("Transferred"),
        "no transfer in the log:\n{log}"
    );
}

#[test]
fn park_by_transfer_and_retrieve_by_dialling_the_slot() {
    if !peer_available("baresip") {
        return;
    }
    let (alice, bob, carol) = users();
    let server = Server::start(
        ServerOptions::default()
            .user(alice.clone())
            .user(bob.clone())
            .user(carol.clone())
            .env("SWITCHBOARD_LOG", "info,switchboard_core=debug"),
    );
    let carol_dumps = server.run_dir("dumps-carol");
    let mut a = phone(&server, &alice, AnswerMode::Manual, ALICE_TONE, None);
    let mut b = phone(&server, &bob, AnswerMode::Auto, BOB_TONE, None);
    let mut c = phone(
        &server,
        &carol,
        AnswerMode::Manual,
        CAROL_TONE,
        Some(carol_dumps.clone()),
    );

    a.dial(&format!("sip:102@{}", server.sip));
    b.wait_event("CALL_ESTABLISHED", DEADLINE);
    a.wait_event("CALL_ESTABLISHED", DEADLINE);
    // "Park hangs up my leg so I can take new calls, the customer waits."
    let r = b.ctrl.command(
        "transfer",
        &format!("sip:700@{}", server.sip),
        Duration::from_secs(5),
    );
    assert_eq!(r["ok"], true, "transfer to park: {r}");
    b.wait_event("CALL_CLOSED", DEADLINE);
    let log = wait_until(DEADLINE, "the call to be parked", || {
        let log = server.log();
        log.contains("parked").then_some(log)
    });
    assert!(
        log.contains("slot=701") || log.contains("slot: \"701\""),
        "{log}"
    );

    // Carol dials the slot and gets alice.
    c.dial(&format!("sip:701@{}", server.sip));
    c.wait_event("CALL_ESTABLISHED", DEADLINE);
    wait_dump(&carol_dumps, 3, &server);
    c.hangup();
    a.wait_event("CALL_CLOSED", DEADLINE);
    c.wait_event("CALL_CLOSED", DEADLINE);
    assert_hears("carol", &carol_dumps, ALICE_TONE);
    server.wait_metric("switchboard_active_calls", 0.0, DEADLINE);
}

#[test]
fn a_parked_call_rings_the_parker_back_at_the_timeout() {
    if !peer_available("baresip") {
        return;
    }
    let (alice, bob, _) = users();
    let server = Server::start(
        ServerOptions::default()
            .user(alice.clone())
            .user(bob.clone())
            .serve_arg("--park-timeout")
            .serve_arg("2"),
    );
    let bob_dumps = server.run_dir("dumps-bob");
    let mut a = phone(&server, &alice, AnswerMode::Manual, ALICE_TONE, None);
    let mut b = phone(
        &server,
        &bob,
        AnswerMode::Auto,
        BOB_TONE,
        Some(bob_dumps.clone()),
    );
    a.dial(&format!("sip:102@{}", server.sip));
    b.wait_event("CALL_ESTABLISHED", DEADLINE);
    a.wait_event("CALL_ESTABLISHED", DEADLINE);
    let r = b.ctrl.command(
        "transfer",
        &format!("sip:700@{}", server.sip),
        Duration::from_secs(5),
    );
    assert_eq!(r["ok"], true, "transfer to park: {r}");
    b.wait_event("CALL_CLOSED", DEADLINE);
    // Two seconds later bob's phone rings again (auto-answer here) with alice on it.
    let again = b.wait_event("CALL_ESTABLISHED", DEADLINE);
    assert_eq!(again["direction"], "incoming", "{again}");
    a.hangup();
    b.wait_event("CALL_CLOSED", DEADLINE);
    server.wait_metric("switchboard_active_calls", 0.0, DEADLINE);
}

#[test]
fn an_invite_with_replaces_takes_the_place_of_a_party() {
    if !peer_available("baresip") || !peer_available("sipp") {
        return;
    }
    let (alice, bob, carol) = users();
    let server = Server::start(
        ServerOptions::default()
            .user(alice.clone())
            .user(bob.clone())
            .user(carol.clone())
            .env("SWITCHBOARD_LOG", "info,switchboard_core=debug"),
    );
    let alice_dumps = server.run_dir("dumps-alice");
    let mut a = phone(
        &server,
        &alice,
        AnswerMode::Manual,
        ALICE_TONE,
        Some(alice_dumps.clone()),
    );
    // Bob is a SIPp UAS that logs its dialog so carol can name it.
    let bob_port = common::free_port();
    register(&server, &bob, bob_port);
    let mut bob_uas = Sipp::uas(&server, "uas_answer_replaced.xml")
        .port(bob_port)
        .service("bob")
        .spawn();
    a.dial(&format!("sip:102@{}", server.sip));
    a.wait_event("CALL_ESTABLISHED", DEADLINE);
    bob_uas.wait_for_log("dialog ", DEADLINE);
    let logs = bob_uas.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("dialog "))
        .unwrap()
        .to_string();
    let mut words = line
        .split_whitespace()
        .skip_while(|w| *w != "dialog")
        .skip(1);
    let (call_id, from_tag) = (words.next().unwrap(), words.next().unwrap());
    // Carol replaces bob's dialog (named as bob saw it: his tag is the to-tag... from
    // the server's side it is the remote tag; either order is accepted).
    let replaces = format!("{call_id};to-tag={from_tag};from-tag=replaceme");
    let mut carol_uac = Sipp::uac(&server, "uac_replaces.xml")
        .caller(&carol)
        .service("102")
        .key("replaces", &replaces)
        .arg("-rtp_echo")
        .spawn();
    carol_uac.wait_for_log("replacing", DEADLINE);
    bob_uas
        .wait()
        .assert_passed("bob is released with BYE once carol replaced him");
    // Alice stays in the call, now with carol (who echoes alice's own audio back).
    wait_dump(&alice_dumps, 4, &server);
    a.hangup();
    a.wait_event("CALL_CLOSED", DEADLINE);
    carol_uac
        .wait()
        .assert_passed("carol took bob's place and got alice's BYE");
    assert_hears("alice (echoed by carol)", &alice_dumps, ALICE_TONE);
    let log = server.log();
    assert!(
        log.contains("Attended"),
        "no attended-transfer history in the log:\n{log}"
    );
}

const TOKEN: &str = "e2e-transfer-token-0123456789";

/// The audio of the RTP captured toward `ports` between the Unix times `from` and `to`.
fn heard(packets: &[common::media::UdpPacket], ports: (u16, u16), from: f64, to: f64) -> Wav {
    let rtp = rtp_to(packets, ports);
    pcmu_audio(
        rtp.iter()
            .filter(|(at, _)| (from..to).contains(at))
            .map(|(_, p)| p),
    )
}

/// The call log rows once there are `n`.
fn call_log(api: &Api, n: usize) -> Vec<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    let rows = common::poll_until(DEADLINE, || {
        let v = api.expect(200, "GET", "/cdr", None);
        let rows = v["calls"].as_array().cloned().unwrap_or_default();
        last = v;
        (rows.len() >= n).then_some(rows)
    });
    rows.unwrap_or_else(|| panic!("{n} call log rows not there; last answer {last}"))
}

/// Attended transfer from a phone, end to end (RFC 3891 REFER with Replaces). The
/// transferor alice is SIPp: one instance places the consultation call to carol and logs
/// its dialog (Call-ID, tags); a second one is then started with that dialog in its
/// Refer-To: it calls bob, holds him (bob hears music on hold), and REFERs him to carol
/// with `Replaces` naming the consultation dialog. (A phone would call bob first and
/// consult carol while bob holds; the server sees the same two established calls and
/// the same REFER, and the values can only be handed to a SIPp instance when it starts.)
/// Bob and carol are baresip phones with their own tones: bob is re-INVITEd into the
/// consultation call, alice gets NOTIFY 200 and BYE on both of her dialogs, and then bob
/// hears carol and carol hears bob. Carol's decoded dump keeps going (she was not
/// re-INVITEd); what bob hears after his re-INVITE is decoded from the RTP captured on
/// `lo`. The call log rows carry the attended transfer.
#[test]
fn attended_transfer_by_refer_with_replaces_connects_the_held_party_to_the_consulted_one() {
    if !peer_available("baresip") || !peer_available("sipp") {
        return;
    }
    const HOLD_MS: u64 = 2000;
    let (alice, bob, carol) = users();
    let server = Server::start(
        ServerOptions::default()
            .user(alice.clone())
            .user(bob.clone())
            .user(carol.clone())
            .env("SWITCHBOARD_API_TOKEN", TOKEN)
            .env("SWITCHBOARD_LOG", "info,switchboard_core=debug"),
    );
    let api = Api::new(server.http, TOKEN);
    let carol_dumps = server.run_dir("dumps-carol");
    let mut b = phone(&server, &bob, AnswerMode::Auto, BOB_TONE, None);
    let mut c = phone(
        &server,
        &carol,
        AnswerMode::Auto,
        CAROL_TONE,
        Some(carol_dumps.clone()),
    );
    // Bob's RTP, and the SIP requests he gets (their times mark the hold and the move).
    let Some(capture) = Capture::start(
        &server.run_dir("capture"),
        &server_to_phones(&server, &[&b]),
    ) else {
        return;
    };

    // The consultation call, and the dialog alice's phone would name in Replaces.
    let mut consult = Sipp::uac(&server, "uac_consult.xml")
        .caller(&alice)
        .service("103")
        .spawn();
    consult.wait_for_log("consult ", DEADLINE);
    c.wait_event("CALL_ESTABLISHED", DEADLINE);
    let logs = consult.logs();
    let line = logs.lines().find(|l| l.contains("consult ")).unwrap();
    let words: Vec<&str> = line
        .split_whitespace()
        .skip_while(|w| *w != "consult")
        .skip(1)
        .collect();
    let (call_id, from_tag, to_tag) = (words[0], words[1], words[2]);
    // RFC 3891 §3 from the transferor's side: to-tag is the peer's (the server's) tag.
    let replaces = format!(
        "{}%3Bto-tag%3D{to_tag}%3Bfrom-tag%3D{from_tag}",
        call_id.replace('%', "%25").replace('@', "%40")
    );

    let original = Sipp::uac(&server, "uac_hold_refer.xml")
        .caller(&alice)
        .service("102")
        .key(
            "refer_to",
            &format!("<sip:103@{}?Replaces={replaces}>", server.sip),
        )
        .pause_ms(HOLD_MS)
        .spawn();
    b.wait_event("CALL_ESTABLISHED", DEADLINE);
    original
        .wait()
        .assert_passed("alice: call bob, hold, REFER with Replaces, NOTIFY 200, BYE");
    consult
        .wait()
        .assert_passed("alice's consultation leg is released with BYE");

    // Bob and carol talk now: three seconds of carol's dump (8 kHz, 16-bit mono).
    let start = decoded_dump(&carol_dumps)
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    let grown = wait_until_or(Duration::from_secs(15), || {
        decoded_dump(&carol_dumps)
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() >= start + 3 * 16_000)
    });
    let stopped_at = unix_now();
    let packets = capture.stop();
    assert!(
        grown,
        "carol's dump stopped growing; server log:\n{}",
        server.log()
    );
    c.hangup();
    c.wait_event("CALL_CLOSED", DEADLINE);
    b.wait_event("CALL_CLOSED", DEADLINE);
    server.wait_metric("switchboard_active_calls", 0.0, DEADLINE);

    // Carol hears bob: the end of her dump.
    let wav = Wav::read(&decoded_dump(&carol_dumps).expect("carol's decoded dump"));
    let m = measure_tone(&tail(&wav, 0, 2), f64::from(BOB_TONE), Duration::ZERO);
    eprintln!("carol hears, last 2 s: {m:?}");
    assert!(
        (m.hz - f64::from(BOB_TONE)).abs() <= f64::from(BOB_TONE) * 0.03
            && m.level_dbfs > -40.0
            && m.purity > 0.5,
        "carol should hear bob's {BOB_TONE} Hz after the transfer: {m:?}"
    );
    // Bob, from the capture: music on hold while held, then carol. His three INVITEs:
    // the call, alice's hold (relayed), and ours moving him into the consultation call.
    let invites = sip_requests_to(&packets, b.sip_port, "INVITE");
    assert_eq!(invites.len(), 3, "INVITEs to bob at {invites:?}");
    let (held_at, moved_at) = (invites[1], invites[2]);
    let on_hold = heard(
        &packets,
        phone_rtp_ports(&packets, &b),
        held_at + 0.3,
        moved_at - 0.05,
    );
    let moh = measure_tone(&on_hold, f64::from(CAROL_TONE), Duration::ZERO);
    eprintln!("bob hears while held: {moh:?}");
    assert!(
        moh.seconds >= 1.0 && moh.level_dbfs > -40.0 && moh.purity < 0.5,
        "bob should hear music on hold (not carol) while held: {moh:?}; INVITEs to bob at {invites:?}, RTP to him at {:?}",
        timeline(&rtp_to(&packets, phone_rtp_ports(&packets, &b)))
    );
    let after = heard(
        &packets,
        phone_rtp_ports(&packets, &b),
        moved_at + 0.5,
        stopped_at,
    );
    let m = measure_tone(&after, f64::from(CAROL_TONE), Duration::ZERO);
    eprintln!("bob hears after the transfer: {m:?}");
    assert!(
        m.seconds >= 1.5
            && (m.hz - f64::from(CAROL_TONE)).abs() <= f64::from(CAROL_TONE) * 0.03
            && m.level_dbfs > -40.0
            && m.purity > 0.5,
        "bob should hear carol's {CAROL_TONE} Hz after the transfer: {m:?}"
    );

    // The call log: both calls carry the attended transfer.
    let rows = call_log(&api, 2);
    let transfer_of = |callee: &str| {
        let row = rows
            .iter()
            .find(|r| r["callee"] == callee)
            .unwrap_or_else(|| panic!("no call log row to {callee}: {rows:?}"));
        row["history"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["kind"] == "transferred")
            .cloned()
            .unwrap_or_else(|| panic!("no transfer in the row to {callee}: {row}"))
    };
    let consult_row = transfer_of("carol");
    assert_eq!(
        consult_row["detail"]["transfer"], "attended",
        "{consult_row}"
    );
    assert_eq!(consult_row["detail"]["from"], "alice", "{consult_row}");
    assert_eq!(consult_row["detail"]["to"], "bob", "{consult_row}");
    let original_row = transfer_of("bob");
    assert_eq!(
        original_row["detail"]["transfer"], "attended",
        "{original_row}"
    );
    assert_eq!(original_row["detail"]["to"], "carol", "{original_row}");
}
