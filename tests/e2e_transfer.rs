//! Call features with real phones (issue 4): a blind transfer made from a baresip phone's
//! own transfer command (REFER), park by transferring to the park extension and retrieve
//! by dialling the slot, and a parked call whose timeout rings the parker back. Audio is
//! checked where it matters: the party that ends up with the caller hears the caller's
//! tone (its decoded-audio dump), and the server's recording of the call holds the new
//! party's tone on the callee channel after the transfer.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::baresip::{AnswerMode, Baresip, PhoneOptions};
use common::media::{measure_tone, Wav};
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

/// The last `seconds` of one channel of a stereo recording.
fn tail(wav: &Wav, channel: usize, seconds: u32) -> Wav {
    let samples: Vec<i16> = wav
        .samples
        .iter()
        .skip(channel)
        .step_by(2)
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
