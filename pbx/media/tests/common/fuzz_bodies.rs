//! The bodies of the media fuzz targets in `fuzz/fuzz_targets/`, shared with the
//! deterministic mutation tests in this directory's parent (`tests/sdp_fuzz_corpus.rs`, ...)
//! so both exercise the same properties on stable Rust. Each must never panic on any input;
//! the asserts are the properties. Append one function per target.

use switchboard_media::sdp::{
    answer, build_offer, negotiated, AnswerParams, Capabilities, SdpError, SessionDescription,
};

/// `SessionDescription::parse`; what parses prints and parses back equal (and prints the
/// same again), the helpers and offer/answer never panic on it, and what they produce is
/// itself valid SDP.
pub fn sdp(data: &[u8]) {
    let sdp = match SessionDescription::parse(data) {
        Ok(sdp) => sdp,
        Err(e) => {
            assert!(e.line().is_some() || e == SdpError::Empty, "{e:?}");
            let _ = e.to_string();
            return;
        }
    };
    let printed = sdp.to_string();
    let again = SessionDescription::parse(&printed)
        .unwrap_or_else(|e| panic!("printed SDP does not re-parse ({e}):\n{printed}"));
    assert_eq!(sdp, again, "printed:\n{printed}");
    assert_eq!(again.to_string(), printed);

    for m in &sdp.media {
        for rtpmap in m.rtpmaps() {
            let _ = m.fmtp(rtpmap.payload_type);
        }
        let _ = (m.direction(&sdp), m.ptime(), m.rtcp(), m.remote_rtp(&sdp));
    }
    let _ = sdp.offers_only_srtp();

    let caps = Capabilities::default();
    let ports: Vec<u16> = (0..sdp.media.len())
        .map(|i| 20000 + (i % 5000) as u16 * 2)
        .collect();
    let local = AnswerParams {
        address: "198.51.100.1".into(),
        ports: ports.clone(),
        username: "switchboard".into(),
        session_id: "1".into(),
        session_version: 1,
    };
    match answer(&sdp, &caps, &local) {
        Ok(outcome) => {
            let text = outcome.answer.to_string();
            let parsed = SessionDescription::parse(&text)
                .unwrap_or_else(|e| panic!("answer does not parse ({e}):\n{text}"));
            assert_eq!(parsed, outcome.answer);
            assert_eq!(outcome.streams.len(), sdp.media.len());
            // Reading our own answer back as the offerer would gives the same streams.
            let read_back = negotiated(&sdp, &outcome.answer);
            for (ours, theirs) in outcome.streams.iter().zip(&read_back) {
                assert_eq!(ours.accepted, theirs.accepted, "answer:\n{text}");
                if ours.accepted {
                    assert_eq!(ours.codec, theirs.codec, "answer:\n{text}");
                    assert_eq!(ours.telephone_event_pt, theirs.telephone_event_pt);
                    assert_eq!(ours.direction.reverse(), theirs.direction);
                }
            }
        }
        Err(SdpError::NotAcceptable) => {}
        Err(e) => panic!("answer failed with {e:?}"),
    }

    let offer = build_offer(&sdp, &caps, "2001:db8::1", &ports);
    let text = offer.to_string();
    let parsed = SessionDescription::parse(&text)
        .unwrap_or_else(|e| panic!("built offer does not parse ({e}):\n{text}"));
    assert_eq!(parsed, offer);
    let _ = negotiated(&sdp, &sdp);
}

/// `RtpPacket::parse`; what parses has consistent lengths, rebuilds from its header and
/// payload into a packet that parses to the same fields, and survives the in-place
/// setters, the stream rewriter, receiver statistics and the telephone-event receiver.
pub fn rtp(data: &[u8]) {
    use switchboard_media::dtmf::DtmfEventReceiver;
    use switchboard_media::rtp::{self, ReceiverStats, RtpPacket, StreamRewriter};

    let _ = rtp::is_rtcp(data);
    let packet = match RtpPacket::parse(data) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(
        packet.header_len() + packet.payload().len() + packet.padding_len(),
        data.len()
    );
    let header = packet.header();
    let rebuilt = header.to_bytes(packet.payload());
    let again = RtpPacket::parse(&rebuilt).expect("rebuilt packet parses");
    assert_eq!(again.header(), header);
    assert_eq!(again.payload(), packet.payload());

    let mut copy = data.to_vec();
    rtp::set_ssrc(&mut copy, 1).unwrap();
    rtp::set_sequence(&mut copy, 2).unwrap();
    rtp::set_timestamp(&mut copy, 3).unwrap();
    rtp::set_payload_type(&mut copy, 0xFF).unwrap();
    rtp::set_marker(&mut copy, true).unwrap();
    let p = RtpPacket::parse(&copy).expect("setters keep the packet valid");
    assert_eq!(
        (
            p.ssrc(),
            p.sequence(),
            p.timestamp(),
            p.payload_type(),
            p.marker()
        ),
        (1, 2, 3, 0x7F, true)
    );
    assert_eq!(p.payload(), packet.payload());

    let now = std::time::Instant::now();
    let mut rewriter = StreamRewriter::new(9, 100, 1000, 8000);
    let mut copy = data.to_vec();
    let out = rewriter.rewrite_packet(now, &mut copy).unwrap();
    assert_eq!((out.sequence, out.timestamp), (100, 1000));

    let mut stats = ReceiverStats::new(packet.ssrc(), 8000);
    for i in 0..3u16 {
        stats.handle_packet(now, packet.sequence().wrapping_add(i), packet.timestamp());
    }
    let _ = stats.report_block(now);

    let mut dtmf = DtmfEventReceiver::new(8000);
    let _ = dtmf.handle_packet(
        now,
        packet.timestamp(),
        packet.sequence(),
        packet.marker(),
        packet.payload(),
    );
    dtmf.handle_timeout(now + std::time::Duration::from_secs(1));
    while dtmf.poll_digit().is_some() {}
}

/// `RtcpPacket::parse_compound`; what parses prints to a compound that parses and prints
/// identically (one normalisation: padding dropped, item lengths canonical).
pub fn rtcp(data: &[u8]) {
    use switchboard_media::rtp::RtcpPacket;

    let packets = match RtcpPacket::parse_compound(data) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(!packets.is_empty());
    let printed = RtcpPacket::compound_to_bytes(&packets);
    assert_eq!(printed.len() % 4, 0);
    let again = RtcpPacket::parse_compound(&printed).expect("printed compound parses");
    assert_eq!(again.len(), packets.len());
    assert_eq!(RtcpPacket::compound_to_bytes(&again), printed);
    for (a, b) in packets.iter().zip(&again) {
        if let (RtcpPacket::SenderReport(_) | RtcpPacket::ReceiverReport(_), _) = (a, b) {
            assert_eq!(a, b);
        }
    }
}

/// SIP INFO DTMF bodies (the first byte picks the content type) and telephone-event
/// payloads; whatever parses rebuilds into a body that parses to the same digit.
pub fn dtmf_info(data: &[u8]) {
    use switchboard_media::dtmf::{
        build_dtmf_relay, parse_dtmf, parse_dtmf_relay, parse_info_body, TelephoneEvent,
    };

    if let Ok(ev) = TelephoneEvent::parse(data) {
        let bytes = ev.to_bytes();
        assert_eq!(TelephoneEvent::parse(&bytes), Ok(ev));
    }
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = match selector % 4 {
        0 => "application/dtmf-relay",
        1 => "application/dtmf",
        2 => "Application/DTMF-Relay; charset=utf-8",
        _ => "text/plain",
    };
    let _ = parse_dtmf(body);
    let _ = parse_dtmf_relay(body);
    match parse_info_body(content_type, body) {
        Ok(digit) => {
            let built = build_dtmf_relay(digit.digit, digit.duration_ms).expect("valid digit");
            let back = parse_dtmf_relay(built.as_bytes()).expect("built body parses");
            assert_eq!(back, digit);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// `wav::read_wav` on anything: never panics, never returns more samples than the input
/// has bytes (no allocation from a header's claims), and a clip it returns survives our
/// own writer and reader unchanged.
pub fn wav(data: &[u8]) {
    use switchboard_media::wav::{read_wav, write_wav, Channels, MAX_RATE};
    match read_wav(data) {
        Ok(clip) => {
            assert!(clip.samples.len() <= data.len());
            assert!((1..=MAX_RATE).contains(&clip.rate), "rate {}", clip.rate);
            let written = write_wav(clip.rate, Channels::Mono, &clip.samples);
            assert_eq!(read_wav(&written).as_ref(), Ok(&clip));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The codecs of the `mixer_packet` room, one participant each (ids 1, 2, 3).
pub fn mixer_codecs() -> [switchboard_media::codec::CodecSpec; 3] {
    use switchboard_media::codec::CodecSpec;
    [
        CodecSpec::from_static_payload_type(0).expect("PCMU"),
        CodecSpec::from_static_payload_type(8).expect("PCMA"),
        CodecSpec::from_rtpmap("opus", 48000, 2, 111, None).expect("opus"),
    ]
}

/// A conference room fed arbitrary bytes as its participants' RTP, interleaved with ticks
/// and membership changes: never panics, and everything it sends is RTP in the payload
/// type of a participant who is in the room at that moment.
///
/// Input: one byte of room settings (bit 0 moderated, bit 1 no join/leave tones, bits 2-4
/// PCMU/PCMA/Opus participant is a speaker, bits 5-7 is muted), then records of
/// `[control, length, length bytes of packet]`. Control bits 0-1 pick the participant
/// (3: an id not in the room); bit 2 rewrites the first 12 bytes into a plain RTP header
/// with the participant's payload type (so arbitrary payloads reach the decoders); bits
/// 3-4: ticks after the packet; bit 5 toggles the participant's mute; bit 6 makes them
/// leave and join again; bit 7 lets a second pass before the packet (jitter buffer gaps,
/// RTP timeouts).
pub fn mixer_packet(data: &[u8]) {
    use std::time::{Duration, Instant};
    use switchboard_media::mixer::{Mixer, MixerConfig, ParticipantConfig, TICK};
    use switchboard_media::rtp::RtpPacket;

    let Some((&room, mut rest)) = data.split_first() else {
        return;
    };
    let mut config = MixerConfig {
        moderated: room & 1 != 0,
        rtp_timeout: Some(Duration::from_millis(500)),
        ..MixerConfig::default()
    };
    if room & 2 != 0 {
        config.join_tone = None;
        config.leave_tone = None;
    }
    let codecs = mixer_codecs();
    let participant = |i: usize| ParticipantConfig {
        codec: codecs[i].clone(),
        ssrc: 0x5000 + i as u32,
        speaker: room & (4 << i) != 0,
        muted: room & (0x20 << i) != 0,
        send: true,
    };
    let mut mixer = Mixer::new(config);
    let mut now = Instant::now();
    let mut present = [true; 3];
    for i in 0..3 {
        mixer
            .add_participant(i as u64 + 1, participant(i), now)
            .expect("a fresh room takes each codec");
    }
    let drain = |mixer: &mut Mixer, present: &[bool; 3]| {
        while let Some(t) = mixer.poll_transmit() {
            let i = (t.participant as usize)
                .checked_sub(1)
                .filter(|i| *i < 3 && present[*i])
                .unwrap_or_else(|| {
                    panic!("a packet for participant {} not in the room", t.participant)
                });
            let packet = RtpPacket::parse(&t.data)
                .unwrap_or_else(|e| panic!("the mixer sent unparsable RTP ({e:?})"));
            assert_eq!(packet.payload_type(), codecs[i].payload_type);
            assert!(!packet.payload().is_empty());
        }
        while mixer.poll_event().is_some() {}
    };
    while let [control, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        let target = usize::from(control & 3);
        let id = target as u64 + 1;
        if control & 0x80 != 0 {
            now += Duration::from_secs(1);
        }
        if target < 3 {
            if control & 0x20 != 0 && present[target] {
                let muted = mixer.is_muted(id).expect("present");
                mixer.set_muted(id, !muted).expect("present");
            }
            if control & 0x40 != 0 {
                if present[target] {
                    mixer.remove_participant(id).expect("present");
                    present[target] = false;
                } else {
                    mixer
                        .add_participant(id, participant(target), now)
                        .expect("absent");
                    present[target] = true;
                }
            }
        }
        let mut packet = packet.to_vec();
        if control & 4 != 0 && packet.len() >= 12 {
            packet[0] = 0x80;
            packet[1] = (packet[1] & 0x80) | codecs[target.min(2)].payload_type;
        }
        mixer.handle_packet(id, &packet, now);
        drain(&mut mixer, &present);
        for _ in 0..(control >> 3) & 3 {
            now += TICK;
            mixer.tick(now);
            drain(&mut mixer, &present);
        }
    }
    // One more step mixes whatever the last packets left in the jitter buffers.
    now += TICK;
    mixer.tick(now);
    drain(&mut mixer, &present);
    let stats = mixer.stats();
    assert!(stats.packets_ignored <= stats.packets_in, "{stats:?}");
}
