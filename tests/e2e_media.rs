//! The media plane end to end (issue 3), against the real binary: RTP from
//! SIPp's G.711 pcap relayed through Switchboard's anchored ports to a UDP
//! socket of the test; RFC 4733 digits from SIPp's DTMF pcap forwarded and
//! reported; two baresip phones, one Opus-only and one PCMU-only, hearing
//! each other's test tone through the transcoder; an SRTP-only offer refused
//! with 488; and a silent call hung up by `--rtp-timeout`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::baresip::{AnswerMode, Baresip, PhoneOptions};
use common::media::{
    measure_tone, pcap_rtp, sdp_audio, sequence_gaps, sipp_received_messages, RtpPacket, RtpSink,
    SdpAudio, Wav,
};
use common::sipp::{register, RunningSipp, Sipp};
use common::{
    alice, bob, free_port, metric_sum, pbx, peer_available, read_lossy, wait_until, wait_until_or,
    Pbx, Server, ServerOptions, LOCALHOST,
};

const G711A_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";
const DTMF_1_PCAP: &str = "/usr/share/sip-tester/dtmf_2833_1.pcap";

/// How long SIP signalling may take to set a call up on a loaded machine.
const SETUP_DEADLINE: Duration = Duration::from_secs(10);

/// A SIPp run whose files the test reads afterwards (the message trace).
struct Party {
    sipp: RunningSipp,
    dir: PathBuf,
}

impl Party {
    /// The SIP messages this SIPp received, oldest first.
    fn received(&self) -> Vec<String> {
        sipp_received_messages(&read_lossy(&self.dir.join("messages.log")))
    }

    /// The first received message whose start line begins with `start`.
    fn first_received(&self, start: &str) -> Option<String> {
        self.received().into_iter().find(|m| m.starts_with(start))
    }
}

/// The SDP audio stream of the first received message starting with
/// `start` (e.g. "SIP/2.0 200" or "INVITE "), or a panic with the trace.
fn received_sdp(party: &Party, start: &str) -> SdpAudio {
    let message = party
        .first_received(start)
        .unwrap_or_else(|| panic!("no {start:?} received; trace:\n{:?}", party.received()));
    sdp_audio(&message).unwrap_or_else(|| panic!("no audio SDP in:\n{message}"))
}

fn assert_points_at_server(server: &Server, sdp: &SdpAudio, what: &str) {
    assert_eq!(
        sdp.address, LOCALHOST,
        "{what}: c= should be the server's media address: {sdp:?}"
    );
    let (first, last) = server.rtp_ports;
    assert!(
        (first..=last).contains(&sdp.port),
        "{what}: m= port {} outside the server's RTP range {first}-{last}: {sdp:?}",
        sdp.port
    );
}

impl Pbx {
    /// Registers bob from a fresh port and starts `media_uas_answer.xml`
    /// there, answering with audio to `rtp_port` in `formats` (m= list) with
    /// the `rtpmaps` lines; returns once SIPp holds its SIP port.
    fn bob_answering(
        &self,
        rtp_port: u16,
        formats: &str,
        rtpmaps: &[&str],
        need_te: bool,
    ) -> Party {
        let port = free_port();
        register(&self.server, &self.bob, port);
        let dir = self.server.run_dir("media_uas_answer");
        let sipp = Sipp::with_dir(dir.clone(), "media_uas_answer.xml", None)
            .port(port)
            .service(&self.bob.name)
            .substitute("@RTP_PORT@", &rtp_port.to_string())
            .substitute("@FORMATS@", formats)
            .substitute("@RTPMAPS@", &rtpmaps.join("\n      "))
            .substitute("@NEED_TE@", if need_te { "true" } else { "false" })
            .spawn();
        wait_until(SETUP_DEADLINE, "bob's SIPp to bind its port", || {
            UdpSocket::bind((LOCALHOST, port)).is_err().then_some(())
        });
        Party { sipp, dir }
    }

    /// alice's UAC for `scenario` calling bob (102), its files in a known dir.
    fn alice_calling(&self, scenario: &str, configure: impl FnOnce(Sipp) -> Sipp) -> Party {
        let dir = self.server.run_dir(scenario.trim_end_matches(".xml"));
        let sipp = configure(
            Sipp::with_dir(dir.clone(), scenario, Some(self.server.sip))
                .port(self.alice_port)
                .caller(&self.alice)
                .service("102"),
        )
        .spawn();
        Party { sipp, dir }
    }

    /// alice calls bob offering `formats`/`rtpmaps` and plays `pcap` after
    /// the ACK, staying `hold` longer in the call.
    fn alice_playing(&self, pcap: &str, formats: &str, rtpmaps: &[&str], hold: Duration) -> Party {
        self.alice_calling("media_uac_play.xml", |s| {
            s.substitute("@FORMATS@", formats)
                .substitute("@RTPMAPS@", &rtpmaps.join("\n      "))
                .substitute("@PCAP@", pcap)
                .pause_ms(hold.as_millis() as u64)
        })
    }

    fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.server.metrics(), name).unwrap_or(0.0)
    }
}

/// The RTP of a pcap and how long it plays (from the RTP timestamps).
fn pcap_stream(path: &str, clock_rate: u32) -> (Vec<RtpPacket>, Duration) {
    let packets = pcap_rtp(Path::new(path));
    assert!(!packets.is_empty(), "{path} holds no RTP");
    let span = packets
        .last()
        .expect("non-empty")
        .timestamp
        .wrapping_sub(packets[0].timestamp);
    (
        packets,
        Duration::from_secs_f64(f64::from(span) / f64::from(clock_rate)),
    )
}

/// Source port, payload types, SSRCs and sequence gaps of what a sink got.
fn summarize(packets: &[(SocketAddr, RtpPacket)]) -> String {
    let mut sources: Vec<SocketAddr> = packets.iter().map(|(a, _)| *a).collect();
    sources.dedup();
    let mut pts: Vec<u8> = packets.iter().map(|(_, p)| p.payload_type).collect();
    pts.sort_unstable();
    pts.dedup();
    let mut ssrcs: Vec<u32> = packets.iter().map(|(_, p)| p.ssrc).collect();
    ssrcs.sort_unstable();
    ssrcs.dedup();
    format!(
        "{} packets from {sources:?}, PTs {pts:?}, SSRCs {ssrcs:x?}, first seq {:?}",
        packets.len(),
        packets.first().map(|(_, p)| p.sequence)
    )
}

#[test]
fn g711_pcap_is_relayed_through_the_servers_rtp_ports() {
    if !peer_available("sipp") {
        return;
    }
    let (pcap, pcap_duration) = pcap_stream(G711A_PCAP, 8000);
    assert!(
        pcap.iter().all(|p| p.payload_type == 8),
        "{G711A_PCAP}: PCMA"
    );
    let pbx = pbx(ServerOptions::default());
    let sink = RtpSink::bind();
    let pcma = ["a=rtpmap:8 PCMA/8000"];
    let mut bob = pbx.bob_answering(sink.port(), "8", &pcma, false);
    let mut alice = pbx.alice_playing(
        G711A_PCAP,
        "8",
        &pcma,
        pcap_duration + Duration::from_millis(1000),
    );
    alice.sipp.wait_for_log("established", SETUP_DEADLINE);
    let started = Instant::now();
    // The SDP each party saw names the server, not the other party.
    let to_alice = received_sdp(&alice, "SIP/2.0 200");
    assert_points_at_server(&pbx.server, &to_alice, "the 200 OK alice received");
    assert_eq!(to_alice.formats, vec!["8"], "answer to alice: {to_alice:?}");
    bob.sipp.wait_for_log("established", SETUP_DEADLINE);
    let to_bob = received_sdp(&bob, "INVITE ");
    assert_points_at_server(&pbx.server, &to_bob, "the INVITE bob received");
    assert!(
        to_bob.formats.contains(&"8".to_string()),
        "offer to bob lacks PCMA: {to_bob:?}"
    );

    // Every packet of the pcap, or the end of the call.
    let all_arrived = sink.wait_for(pcap_duration + Duration::from_secs(5), |got| {
        got.len() >= pcap.len()
    });
    let elapsed = started.elapsed();
    let received = sink.rtp();

    let summary = summarize(&received);
    eprintln!(
        "relay: pcap holds {} RTP packets over {pcap_duration:?}; received {summary} \
         after {elapsed:?}",
        pcap.len()
    );
    assert!(
        all_arrived || received.len() * 100 >= pcap.len() * 98,
        "only {} of the pcap's {} packets arrived: {summary}",
        received.len(),
        pcap.len()
    );
    let (first, last) = pbx.server.rtp_ports;
    for (from, packet) in &received {
        assert_eq!(from.ip().to_string(), LOCALHOST, "{summary}");
        assert!(
            (first..=last).contains(&from.port()),
            "RTP from {from}, outside the server's range {first}-{last}: {summary}"
        );
        assert_eq!(packet.payload_type, 8, "PCMA forwarded as PT 8: {summary}");
        assert_eq!(packet.payload.len(), 240, "30 ms of PCMA per packet");
    }
    let sources: Vec<SocketAddr> = received.iter().map(|(a, _)| *a).collect();
    assert!(
        sources.windows(2).all(|w| w[0] == w[1]),
        "one source port: {summary}"
    );
    let ssrc = received[0].1.ssrc;
    assert!(
        received.iter().all(|(_, p)| p.ssrc == ssrc),
        "one SSRC: {summary}"
    );
    let packets: Vec<&RtpPacket> = received.iter().map(|(_, p)| p).collect();
    assert_eq!(
        sequence_gaps(&packets),
        0,
        "consecutive sequence numbers on loopback: {summary}"
    );
    assert!(
        packets
            .windows(2)
            .all(|w| w[1].timestamp.wrapping_sub(w[0].timestamp) == 240),
        "timestamps advance 240 per 30 ms packet: {summary}"
    );
    // The payload is relayed untouched (same codec: forwarding).
    let sent: Vec<&[u8]> = pcap.iter().map(|p| p.payload.as_slice()).collect();
    let got: Vec<&[u8]> = packets.iter().map(|p| p.payload.as_slice()).collect();
    assert!(
        sent.windows(got.len()).any(|w| w == got.as_slice()),
        "the PCMA payloads arrive as the pcap holds them, in order"
    );

    alice
        .sipp
        .wait()
        .assert_passed("alice calls bob with PCMA, plays the pcap and hangs up");
    bob.sipp
        .wait()
        .assert_passed("bob answers with audio to the test's port and gets the BYE");
    pbx.server
        .wait_metric("switchboard_media_sessions", 0.0, SETUP_DEADLINE);
    let relayed = pbx.metric("switchboard_rtp_packets_sent_total");
    assert!(
        relayed >= received.len() as f64,
        "switchboard_rtp_packets_sent_total {relayed} < {} received",
        received.len()
    );
}

#[test]
fn rfc4733_digits_from_the_dtmf_pcap_are_forwarded_and_reported() {
    if !peer_available("sipp") {
        return;
    }
    // bob answers telephone-event with the number the server offered him.
    dtmf_call(None);
}

#[test]
fn rfc4733_digits_take_the_payload_type_the_callee_answered() {
    if !peer_available("sipp") {
        return;
    }
    // bob answers telephone-event as 96 whatever the offer said (allowed:
    // RFC 3264 6.1 makes keeping the offer's number a SHOULD): the events
    // must reach him as PT 96.
    dtmf_call(Some(96));
}

/// alice plays the DTMF pcap (digit 1) to bob, whose answer gives
/// telephone-event the payload type `bob_te` (or the offer's one); the test
/// checks the events bob's port receives and the server's report.
fn dtmf_call(bob_te: Option<u8>) {
    let (pcap, _) = pcap_stream(DTMF_1_PCAP, 8000);
    let te_pt = pcap[0].payload_type;
    let digits: Vec<u8> = pcap.iter().map(|p| p.payload[0]).collect();
    assert!(
        digits.iter().all(|&d| d == 1),
        "{DTMF_1_PCAP} holds event 1 only"
    );
    let ends = pcap.iter().filter(|p| p.payload[1] & 0x80 != 0).count();
    eprintln!(
        "dtmf pcap: {} packets, PT {te_pt}, event 1, {ends} with the end bit",
        pcap.len()
    );

    let pbx = pbx(ServerOptions::default());
    let sink = RtpSink::bind();
    let bob_te_answer = bob_te.map_or("[$tept]".to_string(), |pt| pt.to_string());
    let mut bob = pbx.bob_answering(
        sink.port(),
        &format!("8 {bob_te_answer}"),
        &[
            "a=rtpmap:8 PCMA/8000",
            &format!("a=rtpmap:{bob_te_answer} telephone-event/8000"),
            &format!("a=fmtp:{bob_te_answer} 0-15"),
        ],
        true,
    );
    let te_map = format!("a=rtpmap:{te_pt} telephone-event/8000");
    let te_fmtp = format!("a=fmtp:{te_pt} 0-15");
    let mut alice = pbx.alice_playing(
        DTMF_1_PCAP,
        &format!("8 {te_pt}"),
        &["a=rtpmap:8 PCMA/8000", &te_map, &te_fmtp],
        Duration::from_millis(1500),
    );
    alice.sipp.wait_for_log("established", SETUP_DEADLINE);
    bob.sipp.wait_for_log("established", SETUP_DEADLINE);

    // The telephone-event PT the server offered bob, which bob's answer kept.
    let to_bob = received_sdp(&bob, "INVITE ");
    assert_points_at_server(&pbx.server, &to_bob, "the INVITE bob received");
    let offered_te_pt: u8 = to_bob
        .rtpmaps
        .iter()
        .find(|(_, encoding)| encoding.starts_with("telephone-event/8000"))
        .and_then(|(pt, _)| pt.parse().ok())
        .unwrap_or_else(|| panic!("the offer to bob lists no telephone-event: {to_bob:?}"));
    let bob_te_pt = bob_te.unwrap_or(offered_te_pt);
    let to_alice = received_sdp(&alice, "SIP/2.0 200");
    assert_points_at_server(&pbx.server, &to_alice, "the 200 OK alice received");

    let ended = sink.wait_for(Duration::from_secs(5), |got| {
        got.iter().any(|(_, p)| {
            p.payload_type == bob_te_pt && p.payload.len() >= 4 && p.payload[1] & 0x80 != 0
        })
    });
    let received = sink.rtp();
    let summary = summarize(&received);
    let events: Vec<&RtpPacket> = received
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.payload_type == bob_te_pt)
        .collect();
    eprintln!(
        "dtmf: offered bob telephone-event PT {offered_te_pt}, he answered {bob_te_pt}; \
         sink got {summary}; {} events: {:?}",
        events.len(),
        events
            .iter()
            .map(|p| (
                p.sequence,
                p.payload[0],
                p.payload[1] & 0x80 != 0,
                u16::from_be_bytes([p.payload[2], p.payload[3]])
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        ended,
        "no telephone-event with the end bit and PT {bob_te_pt} reached bob: {summary}"
    );
    assert!(
        events.iter().all(|p| p.payload[0] == 1),
        "every event is digit 1"
    );
    assert!(
        events[0].marker && events.iter().skip(1).all(|p| !p.marker),
        "the marker bit starts the event and only the event: {summary}"
    );
    assert!(
        events.iter().all(|p| p.timestamp == events[0].timestamp),
        "one event, one RTP timestamp: {summary}"
    );
    // 7 updates and the end (sent three times): at least the distinct ones.
    assert!(
        events.len() >= 8,
        "{} of the pcap's {} events arrived: {summary}",
        events.len(),
        pcap.len()
    );
    let (first, last) = pbx.server.rtp_ports;
    assert!(
        received
            .iter()
            .all(|(from, _)| (first..=last).contains(&from.port())),
        "events come from the server's RTP ports: {summary}"
    );

    // The server's own logic saw the digit too.
    let log_line = wait_until(Duration::from_secs(5), "the server's dtmf log line", || {
        pbx.server
            .log()
            .lines()
            .find(|l| l.contains("dtmf") && l.contains("digit=1"))
            .map(str::to_string)
    });
    eprintln!("server: {log_line}");
    assert!(
        log_line.contains("party=caller") || log_line.contains("party=\"caller\""),
        "the digit is reported from the caller: {log_line}"
    );
    assert!(log_line.contains("rfc4733"), "source rfc4733: {log_line}");
    let dtmf_lines = pbx
        .server
        .log()
        .lines()
        .filter(|l| l.contains(" dtmf ") || l.contains(": dtmf"))
        .count();
    assert_eq!(
        pbx.metric("switchboard_dtmf_digits_total"),
        1.0,
        "one key press, one digit ({dtmf_lines} dtmf log lines):\n{}",
        pbx.server.log()
    );

    alice
        .sipp
        .wait()
        .assert_passed("alice calls bob offering telephone-event, plays the digit, hangs up");
    bob.sipp
        .wait()
        .assert_passed("bob answers keeping the offered telephone-event PT, gets the BYE");
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

#[test]
fn opus_and_pcmu_phones_hear_each_others_tone_through_the_transcoder() {
    if !peer_available("baresip") {
        return;
    }
    const A_TONE: u32 = 440;
    const B_TONE: u32 = 1000;
    let (alice, bob) = (alice(), bob());
    let server = Server::start(
        ServerOptions::default()
            .user(alice.clone())
            .user(bob.clone())
            .env("SWITCHBOARD_LOG", "info,switchboard_core=debug")
            .serve_arg("--record-calls"),
    );
    let a_dumps = server.run_dir("dumps-alice");
    let b_dumps = server.run_dir("dumps-bob");
    let mut phone_a = Baresip::start_with(
        &server,
        &alice,
        AnswerMode::Manual,
        &PhoneOptions {
            audio_codecs: "opus/48000/2".into(),
            tone_hz: A_TONE,
            snd_path: Some(a_dumps.clone()),
        },
    );
    let mut phone_b = Baresip::start_with(
        &server,
        &bob,
        AnswerMode::Auto,
        &PhoneOptions {
            audio_codecs: "pcmu".into(),
            tone_hz: B_TONE,
            snd_path: Some(b_dumps.clone()),
        },
    );
    phone_a.wait_registered();
    phone_b.wait_registered();

    phone_a.dial(&format!("sip:102@{}", server.sip));
    phone_b.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);
    phone_a.wait_event("CALL_ESTABLISHED", SETUP_DEADLINE);

    // Let both dumps grow past four seconds of audio (the decoded dumps
    // are 16-bit: 8 kHz mono for PCMU, 48 kHz stereo for Opus).
    let grown = |dir: &Path, bytes_per_second: u64| {
        decoded_dump(dir)
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() >= 4 * bytes_per_second + 44)
    };
    let audio_flowed = wait_until_or(Duration::from_secs(12), || {
        grown(&b_dumps, 8000 * 2) && grown(&a_dumps, 48000 * 2 * 2)
    });
    phone_a.hangup();
    phone_b.wait_event("CALL_CLOSED", SETUP_DEADLINE);
    phone_a.wait_event("CALL_CLOSED", SETUP_DEADLINE);
    let listing = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| {
                        format!(
                            "{} ({} bytes)",
                            e.file_name().to_string_lossy(),
                            e.metadata().map(|m| m.len()).unwrap_or(0)
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert!(
        audio_flowed,
        "the decoded dumps did not reach 4 s of audio: alice {:?}, bob {:?}; server log:\n{}",
        listing(&a_dumps),
        listing(&b_dumps),
        server.log()
    );

    let check = |who: &str, dir: &Path, tone: u32| {
        let path = decoded_dump(dir).expect("decoded dump");
        let wav = Wav::read(&path);
        let m = measure_tone(&wav, f64::from(tone), Duration::from_millis(800));
        eprintln!(
            "{who} decoded {} ({} Hz, {} ch, {:.2} s): {:.1} Hz at {:.1} dBFS, purity {:.2}, over {:.2} s",
            path.display(),
            wav.sample_rate,
            wav.channels,
            wav.duration().as_secs_f64(),
            m.hz,
            m.level_dbfs,
            m.purity,
            m.seconds
        );
        assert!(
            m.seconds >= 2.0,
            "{who}: under a second of stable audio in {}",
            path.display()
        );
        assert!(
            (m.hz - f64::from(tone)).abs() <= f64::from(tone) * 0.03,
            "{who} should hear {tone} Hz, measured {:.1} Hz ({m:?})",
            m.hz
        );
        assert!(
            m.level_dbfs > -40.0,
            "{who} hears the tone too quietly: {:.1} dBFS",
            m.level_dbfs
        );
        assert!(
            m.purity > 0.5,
            "{who}: the {tone} Hz tone is buried in other sound ({m:?})"
        );
    };
    check("bob (PCMU)", &b_dumps, A_TONE);
    check("alice (Opus)", &a_dumps, B_TONE);

    // The server's own recording of the call: a stereo WAV with the caller (alice, 440 Hz)
    // on the left and the callee (bob, 1000 Hz) on the right, completed once the call
    // ended (its header no longer says "open-ended").
    let recordings = server.dir().join("recordings");
    let recording = wait_until(
        Duration::from_secs(10),
        "the recording to be closed",
        || {
            let day = std::fs::read_dir(&recordings).ok()?.next()?.ok()?.path();
            let file = std::fs::read_dir(day).ok()?.next()?.ok()?.path();
            let data = std::fs::read(&file).ok()?;
            (data.len() > 44 && data[40..44] != [0xff; 4]).then_some(file)
        },
    );
    let wav = Wav::read(&recording);
    assert_eq!(
        (wav.channels, wav.sample_rate),
        (2, 8000),
        "{}",
        recording.display()
    );
    let channel = |ch: usize| Wav {
        sample_rate: wav.sample_rate,
        channels: 1,
        samples: wav.samples.iter().skip(ch).step_by(2).copied().collect(),
    };
    for (name, ch, tone) in [("left (caller)", 0, A_TONE), ("right (callee)", 1, B_TONE)] {
        let m = measure_tone(&channel(ch), f64::from(tone), Duration::from_millis(800));
        eprintln!(
            "recording {name}: {:.1} Hz at {:.1} dBFS, purity {:.2}",
            m.hz, m.level_dbfs, m.purity
        );
        assert!(
            (m.hz - f64::from(tone)).abs() <= f64::from(tone) * 0.03
                && m.level_dbfs > -40.0
                && m.purity > 0.5,
            "recording {name} should hold {tone} Hz: {m:?}"
        );
    }

    // The server said it transcodes (debug event of switchboard_core).
    let log = server.log();
    let transcoding: Vec<&str> = log.lines().filter(|l| l.contains("Transcoding")).collect();
    eprintln!("server:\n{}", transcoding.join("\n"));
    assert!(
        transcoding
            .iter()
            .any(|l| l.to_lowercase().contains("opus"))
            && transcoding
                .iter()
                .any(|l| l.to_lowercase().contains("pcmu")),
        "no Transcoding media event between opus and pcmu in the server log:\n{log}"
    );
    server.wait_metric("switchboard_media_sessions", 0.0, SETUP_DEADLINE);
    // Both directions were re-encoded for the length of the call (50 frames a second
    // each way), and the frames concealed are few: at most the 10 that end each of the
    // two decoded streams, plus a little loss on a busy machine.
    let metrics = server.metrics();
    let encoded = metric_sum(&metrics, "switchboard_rtp_transcoded_frames_total").unwrap_or(0.0);
    let concealed = metric_sum(&metrics, "switchboard_rtp_concealed_frames_total").unwrap_or(-1.0);
    eprintln!("transcoded frames {encoded}, concealed {concealed}");
    assert!(encoded >= 100.0, "frames encoded: {encoded}");
    assert!(
        (0.0..=encoded / 10.0).contains(&concealed),
        "frames concealed: {concealed} of {encoded}"
    );
}

#[test]
fn srtp_only_offer_is_refused_with_488() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default());
    let sink = RtpSink::bind();
    let bob = pbx.bob_answering(sink.port(), "0", &["a=rtpmap:0 PCMU/8000"], false);
    let alice = pbx.alice_calling("media_uac_srtp.xml", |s| s);
    alice
        .sipp
        .wait()
        .assert_passed("RTP/SAVP-only offer: 407, authenticated INVITE, 488, ACK");
    // bob's phone was never rung.
    let bob_messages = bob.received();
    drop(bob.sipp);
    assert!(
        !bob_messages.iter().any(|m| m.starts_with("INVITE ")),
        "the SRTP offer reached bob: {bob_messages:?}"
    );
    pbx.server
        .wait_metric("switchboard_media_sessions", 0.0, SETUP_DEADLINE);
    pbx.server
        .wait_metric("switchboard_active_calls", 0.0, SETUP_DEADLINE);
    let sessions = pbx.metric("switchboard_media_sessions_total");
    eprintln!("srtp: switchboard_media_sessions_total {sessions}");
}

#[test]
fn silent_call_is_hung_up_by_the_rtp_timeout() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default()
        .serve_arg("--rtp-timeout")
        .serve_arg("2"));
    let sink = RtpSink::bind();
    let mut bob = pbx.bob_answering(sink.port(), "0", &["a=rtpmap:0 PCMU/8000"], false);
    let mut alice = pbx.alice_calling("media_uac_silent.xml", |s| s);
    alice.sipp.wait_for_log("established", SETUP_DEADLINE);
    bob.sipp.wait_for_log("established", SETUP_DEADLINE);
    let answered = Instant::now();
    pbx.server
        .wait_metric("switchboard_active_calls", 0.0, Duration::from_secs(8));
    let hung_up = answered.elapsed();
    alice
        .sipp
        .wait()
        .assert_passed("silent alice gets the server's BYE and answers 200");
    bob.sipp
        .wait()
        .assert_passed("silent bob gets the server's BYE and answers 200");
    eprintln!("rtp timeout: call ended {hung_up:?} after the answer");
    assert!(
        hung_up >= Duration::from_millis(1500),
        "hung up {hung_up:?} after the answer, before the 2 s RTP timeout"
    );
    let log = pbx.server.log();
    assert!(
        log.contains("no RTP within the timeout"),
        "the server logs why it hung up:\n{log}"
    );
    pbx.server
        .wait_metric("switchboard_media_sessions", 0.0, SETUP_DEADLINE);
}

/// Hold: alice (sending no audio at all) puts bob on hold with a re-INVITE a=sendonly.
/// The re-INVITE still reaches bob (his phone shows the hold), and while it lasts bob
/// hears music on hold from the server, in his codec, in the same RTP stream; after
/// alice resumes, the music stops.
#[test]
fn a_held_party_hears_music_on_hold_until_resumed() {
    if !peer_available("sipp") {
        return;
    }
    const HOLD_MS: u64 = 2000;
    let pbx = pbx(ServerOptions::default());
    let sink = RtpSink::bind();
    let port = free_port();
    register(&pbx.server, &pbx.bob, port);
    let bob_dir = pbx.server.run_dir("media_uas_hold");
    let bob = Sipp::with_dir(bob_dir, "media_uas_hold.xml", None)
        .port(port)
        .service(&pbx.bob.name)
        .substitute("@RTP_PORT@", &sink.port().to_string())
        .substitute("@FORMATS@", "0")
        .substitute("@RTPMAPS@", "a=rtpmap:0 PCMU/8000")
        .substitute("@NEED_TE@", "false")
        .spawn();
    wait_until(SETUP_DEADLINE, "bob's SIPp to bind its port", || {
        UdpSocket::bind((LOCALHOST, port)).is_err().then_some(())
    });
    let mut alice = pbx.alice_calling("media_uac_hold.xml", |s| s.pause_ms(HOLD_MS));
    alice.sipp.wait_for_log("established", SETUP_DEADLINE);
    alice.sipp.wait_for_log("held", SETUP_DEADLINE);
    let at_hold = sink.rtp().len();
    alice
        .sipp
        .wait_for_log("resumed", SETUP_DEADLINE + Duration::from_millis(HOLD_MS));
    let at_resume = sink.rtp().len();
    alice
        .sipp
        .wait()
        .assert_passed("alice: call, hold, resume, BYE");
    bob.wait()
        .assert_passed("bob: answered, held (recvonly), resumed, BYE");
    let packets = sink.rtp();
    let music: Vec<&RtpPacket> = packets[at_hold..at_resume].iter().map(|(_, p)| p).collect();
    let after = packets.len() - at_resume;
    let pcm: Vec<f64> = music
        .iter()
        .flat_map(|p| {
            p.payload
                .iter()
                .map(|&b| f64::from(common::media::ulaw_to_linear(b)) / 32768.0)
        })
        .collect();
    let level = common::media::rms_dbfs(&pcm);
    eprintln!(
        "hold: {at_hold} packets before, {} during {HOLD_MS} ms of hold at {level:.1} dBFS, {after} after",
        music.len()
    );
    assert!(
        at_hold <= 2,
        "bob heard {at_hold} packets before the hold (alice is silent)"
    );
    assert!(
        music.len() as u64 >= HOLD_MS / 20 * 8 / 10,
        "only {} packets of music in {HOLD_MS} ms of hold",
        music.len()
    );
    assert!(
        music.iter().all(|p| p.payload_type == 0),
        "music in bob's codec (PCMU)"
    );
    assert_eq!(sequence_gaps(&music), 0, "one continuous stream");
    assert!(level > -40.0, "the music is audible: {level:.1} dBFS");
    assert!(
        after <= 3,
        "the music stopped at the resume ({after} packets after)"
    );
}

/// The scheduling policy and real-time priority of the server's threads named `media-N`,
/// from /proc (fields 41 and 40 of a task's stat).
fn media_thread_schedules(pid: u32) -> Vec<(String, u32, u32)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("server's tasks") {
        let task = task.expect("task entry").path();
        let comm = read_lossy(&task.join("comm")).trim().to_string();
        if !comm.starts_with("media-") {
            continue;
        }
        let stat = read_lossy(&task.join("stat"));
        // Fields after the command name (which is in parentheses): field 3 first.
        let rest: Vec<&str> = stat
            .rsplit_once(") ")
            .expect("stat format")
            .1
            .split(' ')
            .collect();
        let field = |n: usize| rest[n - 3].trim().parse::<u32>().expect("numeric field");
        found.push((comm, field(41), field(40)));
    }
    found.sort();
    found
}

/// Whether this test process holds CAP_SYS_NICE (bit 23 of its effective capabilities):
/// then the server it starts may take real-time priority.
fn may_take_realtime_priority() -> bool {
    let status = read_lossy(Path::new("/proc/self/status"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 23) != 0)
}

/// `--media-realtime-priority`: the media threads run under SCHED_RR (policy 2) at the
/// priority asked, where the privileges allow it (root in CI); otherwise the server warns
/// once and runs them at normal priority. Either way it serves.
#[test]
fn media_threads_take_the_realtime_priority_asked() {
    let server = Server::start(
        ServerOptions::default()
            .serve_arg("--media-threads")
            .serve_arg("2")
            .serve_arg("--media-realtime-priority")
            .serve_arg("9"),
    );
    let threads = wait_until(SETUP_DEADLINE, "two media threads", || {
        let t = media_thread_schedules(server.pid());
        (t.len() == 2).then_some(t)
    });
    let log = server.log();
    if may_take_realtime_priority() {
        assert_eq!(
            threads,
            vec![("media-0".to_string(), 2, 9), ("media-1".to_string(), 2, 9)],
            "policy SCHED_RR (2) at priority 9"
        );
        assert!(log.contains("media threads run under SCHED_RR"), "{log}");
    } else {
        assert!(
            threads.iter().all(|t| t.1 == 0 && t.2 == 0),
            "normal scheduling when refused: {threads:?}"
        );
        assert_eq!(
            log.matches("real-time priority refused").count(),
            1,
            "one warning says why:\n{log}"
        );
    }
    // Without the option the threads run under the normal policy.
    let plain = Server::start(
        ServerOptions::default()
            .serve_arg("--media-threads")
            .serve_arg("1"),
    );
    let threads = wait_until(SETUP_DEADLINE, "one media thread", || {
        let t = media_thread_schedules(plain.pid());
        (t.len() == 1).then_some(t)
    });
    assert_eq!(threads, vec![("media-0".to_string(), 0, 0)]);
}
