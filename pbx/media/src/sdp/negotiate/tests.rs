//! Offer/answer tests: RFC 3264 §10 and RFC 4317 exchanges, and offers as SIPp, baresip,
//! Asterisk and browsers send them.

use super::*;

macro_rules! data {
    ($name:literal) => {
        include_str!(concat!("../../../tests/sdp_data/", $name))
    };
}

fn parse(text: &str) -> SessionDescription {
    SessionDescription::parse(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

fn params(ports: &[u16]) -> AnswerParams {
    AnswerParams {
        address: "198.51.100.1".into(),
        ports: ports.to_vec(),
        username: "switchboard".into(),
        session_id: "4242".into(),
        session_version: 1,
    }
}

fn answer_to(offer: &str, ports: &[u16]) -> AnswerOutcome {
    let offer = parse(offer);
    let outcome = answer(&offer, &Capabilities::default(), &params(ports)).unwrap();
    // What we print, we can read back, and reading it back gives the same streams.
    let reparsed = parse(&outcome.answer.to_string());
    assert_eq!(reparsed, outcome.answer);
    outcome
}

#[test]
fn rfc3264_basic_exchange_rejects_video() {
    // RFC 3264 §10.1: audio PCMU and two video streams; we take audio only.
    let outcome = answer_to(data!("rfc3264_10_1_offer.sdp"), &[20000, 20002, 20004]);
    assert_eq!(
        outcome.answer.to_string(),
        "v=0\r\n\
         o=switchboard 4242 1 IN IP4 198.51.100.1\r\n\
         s=-\r\n\
         c=IN IP4 198.51.100.1\r\n\
         t=0 0\r\n\
         m=audio 20000 RTP/AVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=sendrecv\r\n\
         m=video 0 RTP/AVP 31\r\n\
         m=video 0 RTP/AVP 32\r\n"
    );
    let s = &outcome.streams;
    assert_eq!(s.len(), 3);
    assert!(s[0].accepted && !s[1].accepted && !s[2].accepted);
    assert_eq!(s[0].codec, Some(RtpMap::new(0, "PCMU", 8000, 1)));
    assert_eq!(s[0].telephone_event_pt, None);
    assert_eq!(s[0].direction, Direction::SendRecv);
    assert_eq!(
        s[0].remote_addr,
        Some(("host.anywhere.com".to_string(), 49170))
    );
    assert_eq!(s[1].remote_addr, None);
}

#[test]
fn rfc3264_answer_read_back_by_the_offerer() {
    // RFC 3264 §10.1 from Alice's side: Bob's answer rejects the first video stream.
    let offer = parse(data!("rfc3264_10_1_offer.sdp"));
    let answer = parse(data!("rfc3264_10_1_answer.sdp"));
    let streams = negotiated(&offer, &answer);
    assert_eq!(streams.len(), 3);
    assert!(streams[0].accepted && !streams[1].accepted && streams[2].accepted);
    assert_eq!(streams[0].codec, Some(RtpMap::new(0, "PCMU", 8000, 1)));
    assert_eq!(
        streams[0].remote_addr,
        Some(("host.example.com".to_string(), 49920))
    );
    assert_eq!(streams[2].codec, Some(RtpMap::new(32, "MPV", 90000, 1)));
    assert_eq!(streams[0].direction, Direction::SendRecv);
}

#[test]
fn rfc3264_reoffer_with_recvonly_event_stream() {
    // RFC 3264 §10.1, Bob's second offer: the added stream carries only
    // "telephone-events" (sic, the RFC's spelling), which is no codec we handle.
    let outcome = answer_to(
        data!("rfc3264_10_1_reoffer.sdp"),
        &[20000, 20002, 20004, 20006],
    );
    let accepted: Vec<bool> = outcome.streams.iter().map(|s| s.accepted).collect();
    assert_eq!(accepted, [true, false, false, false]);
    let last = &outcome.answer.media[3];
    assert_eq!(
        (last.port, last.formats.clone()),
        (0, vec!["110".to_string()])
    );
}

#[test]
fn rfc3264_one_of_n_codecs() {
    // RFC 3264 §10.2: PCMU, PCMA, iLBC offered; we keep both G.711s in the offer's order.
    let outcome = answer_to(data!("rfc3264_10_2_offer.sdp"), &[20000, 20002]);
    let audio = &outcome.answer.media[0];
    assert_eq!(audio.formats, ["0", "8"]);
    assert_eq!(
        audio.rtpmaps(),
        [
            RtpMap::new(0, "PCMU", 8000, 1),
            RtpMap::new(8, "PCMA", 8000, 1)
        ]
    );
    assert!(outcome.answer.media[1].is_rejected());
    assert_eq!(outcome.answer.media[1].formats, ["31", "32"]);
}

#[test]
fn rfc4317_audio_and_video_1() {
    let offer = parse(data!("rfc4317_2_1_offer.sdp"));
    // Bob's answer in the RFC picks PCMU and MPV.
    let answer = parse(data!("rfc4317_2_1_answer.sdp"));
    let streams = negotiated(&offer, &answer);
    assert_eq!(streams[0].codec, Some(RtpMap::new(0, "PCMU", 8000, 1)));
    assert_eq!(
        streams[0].remote_addr,
        Some(("host.biloxi.example.com".to_string(), 49174))
    );
    assert_eq!(streams[1].codec, Some(RtpMap::new(32, "MPV", 90000, 1)));
    // Our own answer keeps audio and refuses video.
    let ours = answer_to(data!("rfc4317_2_1_offer.sdp"), &[20000, 20002]);
    assert_eq!(ours.answer.media[0].formats, ["0", "8"]);
    assert!(ours.answer.media[1].is_rejected());
}

#[test]
fn rfc4317_two_audio_streams() {
    // §2.4: the second audio stream is sendonly telephone-event only: nothing to decode.
    let outcome = answer_to(data!("rfc4317_2_4_two_audio_offer.sdp"), &[20000, 20002]);
    assert!(outcome.streams[0].accepted);
    assert!(!outcome.streams[1].accepted);
    assert_eq!(outcome.answer.media[1].formats, ["98"]);
}

#[test]
fn rfc4317_hold_with_sendonly() {
    // §3.1: Alice holds with sendonly; the answer is recvonly.
    let outcome = answer_to(data!("rfc4317_3_1_hold_offer.sdp"), &[20000]);
    assert_eq!(outcome.streams[0].direction, Direction::RecvOnly);
    assert_eq!(
        outcome.answer.media[0].own_direction(),
        Some(Direction::RecvOnly)
    );
    // Inactive stays inactive, recvonly becomes sendonly.
    for (offered, expected) in [
        ("inactive", Direction::Inactive),
        ("recvonly", Direction::SendOnly),
        ("sendrecv", Direction::SendRecv),
    ] {
        let text = data!("rfc4317_3_1_hold_offer.sdp").replace("sendonly", offered);
        let outcome = answer_to(&text, &[20000]);
        assert_eq!(outcome.streams[0].direction, expected, "{offered}");
    }
}

#[test]
fn old_style_hold_with_zero_address() {
    // RFC 3264 §8.4: c=0.0.0.0 means send nothing there.
    let text = data!("sipp_uac_offer.sdp").replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
    let outcome = answer_to(&text, &[20000]);
    assert_eq!(outcome.streams[0].remote_addr, None);
    assert_eq!(outcome.streams[0].direction, Direction::RecvOnly);
}

#[test]
fn sipp_offer_pcmu() {
    let outcome = answer_to(data!("sipp_uac_offer.sdp"), &[20000]);
    let s = &outcome.streams[0];
    assert_eq!(s.codec, Some(RtpMap::new(0, "PCMU", 8000, 1)));
    assert_eq!(s.remote_addr, Some(("127.0.0.1".to_string(), 6000)));
}

#[test]
fn baresip_offer_opus_first_keeps_pts_fmtp_and_events() {
    let outcome = answer_to(data!("baresip_offer.sdp"), &[20000]);
    let m = &outcome.answer.media[0];
    assert_eq!(m.formats, ["96", "0", "8", "101"]);
    assert_eq!(m.fmtp(96), Some("stereo=1;sprop-stereo=1"));
    assert_eq!(m.fmtp(101), Some("0-15"));
    assert_eq!(m.ptime(), Some(20));
    // Nothing of baresip's transport (rtcp-mux, ssrc) leaks into our answer.
    assert_eq!(m.attribute("rtcp-mux"), None);
    assert_eq!(m.attribute("ssrc"), None);
    let s = &outcome.streams[0];
    assert_eq!(s.codec, Some(RtpMap::new(96, "opus", 48000, 2)));
    // Only an 8000 Hz telephone-event was offered; it still goes with the G.711s.
    assert_eq!(s.telephone_event_pt, Some(101));
}

#[test]
fn telephone_event_at_the_codec_rate_is_preferred() {
    let text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 111 0 126 110\na=rtpmap:111 opus/48000/2\na=rtpmap:126 telephone-event/8000\na=rtpmap:110 telephone-event/48000\n";
    let outcome = answer_to(text, &[20000]);
    assert_eq!(outcome.streams[0].telephone_event_pt, Some(110));
    assert_eq!(outcome.answer.media[0].formats, ["111", "0", "110"]);
    assert_eq!(outcome.answer.media[0].fmtp(110), Some("0-16"));
}

#[test]
fn asterisk_offer_drops_gsm() {
    let outcome = answer_to(data!("asterisk_offer.sdp"), &[20000]);
    assert_eq!(outcome.answer.media[0].formats, ["0", "8", "101"]);
    assert_eq!(outcome.streams[0].telephone_event_pt, Some(101));
}

#[test]
fn not_acceptable_offers() {
    let caps = Capabilities::default();
    for text in [
        data!("sdes_srtp_offer.sdp"),
        data!("webrtc_offer.sdp"),
        // G.729 only.
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 18\n",
        // Video only.
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=video 4000 RTP/AVP 31\n",
        // No streams.
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n",
        // The only audio stream is disabled by the offerer.
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 0 RTP/AVP 0\n",
    ] {
        let offer = parse(text);
        assert_eq!(
            answer(&offer, &caps, &params(&[20000])),
            Err(SdpError::NotAcceptable),
            "{text}"
        );
    }
}

#[test]
fn short_port_list_is_an_error() {
    let offer = parse(data!("rfc3264_10_1_offer.sdp"));
    assert_eq!(
        answer(&offer, &Capabilities::default(), &params(&[20000])),
        Err(SdpError::NotEnoughPorts {
            needed: 3,
            given: 1
        })
    );
}

#[test]
fn ipv6_answer() {
    let offer = parse(data!("sipp_uac_offer.sdp"));
    let mut local = params(&[20000]);
    local.address = "2001:db8::1".into();
    let outcome = answer(&offer, &Capabilities::default(), &local).unwrap();
    assert_eq!(outcome.answer.origin.addr_type, "IP6");
    assert_eq!(
        outcome.answer.connection.as_ref().map(|c| c.to_string()),
        Some("IN IP6 2001:db8::1".to_string())
    );
}

#[test]
fn negotiated_reads_a_peers_partial_answer() {
    // We offered opus + G.711 + events (as build_offer does); the peer picks PCMA and
    // events, and puts us on hold (sendonly from its side).
    let offer = parse(data!("baresip_offer.sdp"));
    let answer = parse(
        "v=0\no=peer 5 5 IN IP4 203.0.113.9\ns=-\nc=IN IP4 203.0.113.9\nt=0 0\nm=audio 7078 RTP/AVP 8 101\na=rtpmap:8 PCMA/8000\na=sendonly\n",
    );
    let s = &negotiated(&offer, &answer)[0];
    assert!(s.accepted);
    assert_eq!(s.codec, Some(RtpMap::new(8, "PCMA", 8000, 1)));
    // 101 has no rtpmap in the answer: taken from the offer.
    assert_eq!(s.telephone_event_pt, Some(101));
    assert_eq!(s.direction, Direction::RecvOnly);
    assert_eq!(s.remote_addr, Some(("203.0.113.9".to_string(), 7078)));
    // An answer with fewer m= lines than the offer: the missing ones are rejected.
    let offer = parse(data!("rfc3264_10_1_offer.sdp"));
    let streams = negotiated(&offer, &answer);
    assert_eq!(streams.len(), 3);
    assert!(streams[0].accepted && !streams[1].accepted && !streams[2].accepted);
}

#[test]
fn build_offer_pcmu_only_template_adds_our_codecs() {
    let template = parse(data!("sipp_uac_offer.sdp"));
    let offer = build_offer(
        &template,
        &Capabilities::default(),
        "198.51.100.1",
        &[30000],
    );
    assert_eq!(
        offer.to_string(),
        "v=0\r\n\
         o=user1 53655765 2353687637 IN IP4 198.51.100.1\r\n\
         s=-\r\n\
         c=IN IP4 198.51.100.1\r\n\
         t=0 0\r\n\
         m=audio 30000 RTP/AVP 0 8 96 97 98\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:96 opus/48000/2\r\n\
         a=rtpmap:97 telephone-event/8000\r\n\
         a=fmtp:97 0-16\r\n\
         a=rtpmap:98 telephone-event/48000\r\n\
         a=fmtp:98 0-16\r\n"
    );
    assert_eq!(parse(&offer.to_string()), offer);
}

#[test]
fn build_offer_from_baresip_keeps_its_pts_and_fmtp() {
    let template = parse(data!("baresip_offer.sdp"));
    let offer = build_offer(
        &template,
        &Capabilities::default(),
        "198.51.100.1",
        &[30000],
    );
    let m = &offer.media[0];
    // Template order and numbers first, then the 48 kHz event added at a free PT.
    assert_eq!(m.formats, ["96", "0", "8", "101", "97"]);
    assert_eq!(m.fmtp(96), Some("stereo=1;sprop-stereo=1"));
    assert_eq!(m.fmtp(101), Some("0-15"));
    assert_eq!(
        m.rtpmap(97),
        Some(RtpMap::new(97, "telephone-event", 48000, 1))
    );
    // Anchored: our address and port, baresip's transport details gone, the rest kept.
    assert_eq!(
        m.remote_rtp(&offer),
        Some(("198.51.100.1".to_string(), 30000))
    );
    for gone in ["rtcp-mux", "ssrc"] {
        assert_eq!(m.attribute(gone), None, "{gone}");
    }
    assert_eq!(m.ptime(), Some(20));
    assert_eq!(m.own_direction(), Some(Direction::SendRecv));
    assert_eq!(offer.attribute("tool"), Some("baresip 1.0.0"));
}

#[test]
fn build_offer_keeps_video_disables_srtp_and_propagates_hold() {
    let template = parse(data!("rfc4317_2_1_offer.sdp"));
    let offer = build_offer(
        &template,
        &Capabilities::default(),
        "198.51.100.1",
        &[30000, 30002],
    );
    // iLBC (97) is dropped, and its number is not reused.
    assert_eq!(offer.media[0].formats, ["0", "8", "96", "98", "99"]);
    assert_eq!(offer.media[1].port, 30002);
    assert_eq!(offer.media[1].formats, ["31", "32"]);

    let template = parse(data!("sdes_srtp_offer.sdp"));
    let offer = build_offer(
        &template,
        &Capabilities::default(),
        "198.51.100.1",
        &[30000],
    );
    assert!(offer.media[0].is_rejected());
    assert_eq!(offer.media[0].attribute("crypto"), None);

    let template = parse(data!("rfc4317_3_1_hold_offer.sdp"));
    let offer = build_offer(
        &template,
        &Capabilities::default(),
        "198.51.100.1",
        &[30000],
    );
    assert_eq!(offer.media[0].direction(&offer), Direction::SendOnly);
    // iLBC is dropped: we could not transcode from it.
    assert_eq!(offer.media[0].formats, ["0", "8", "96", "98", "99"]);
}

#[test]
fn b2bua_round_trip_opus_leg_to_pcmu_leg() {
    // Leg A (baresip, opus first) calls leg B (SIPp, PCMU only) through us.
    let caps = Capabilities::default();
    let offer_a = parse(data!("baresip_offer.sdp"));
    let offer_b = build_offer(&offer_a, &caps, "198.51.100.1", &[30000]);
    let answer_b = answer(
        &offer_b,
        &Capabilities {
            codecs: vec![CodecCap::new("PCMU", 8000, 1)],
            telephone_event: true,
        },
        &AnswerParams {
            address: "127.0.0.1".into(),
            ports: vec![6000],
            username: "sipp".into(),
            session_id: "1".into(),
            session_version: 1,
        },
    )
    .unwrap();
    let leg_b = &negotiated(&offer_b, &answer_b.answer)[0];
    assert_eq!(leg_b.codec, Some(RtpMap::new(0, "PCMU", 8000, 1)));
    assert_eq!(leg_b.telephone_event_pt, Some(101));
    assert_eq!(leg_b.remote_addr, Some(("127.0.0.1".to_string(), 6000)));
    let answer_a = answer(&offer_a, &caps, &params(&[20000])).unwrap();
    let leg_a = &answer_a.streams[0];
    assert_eq!(leg_a.codec, Some(RtpMap::new(96, "opus", 48000, 2)));
    // Different codecs on the two legs: the relay transcodes.
    assert_ne!(leg_a.codec, leg_b.codec);
}

#[test]
fn blank_fmtp_is_not_echoed() {
    // Found by the mutation test: `a=fmtp:101 ` (no parameters) echoed as `101 ` would
    // not survive printing. Events get the RFC 4733 default instead, codecs nothing.
    let text = data!("asterisk_offer.sdp").replace("a=fmtp:101 0-16", "a=fmtp:101 \na=fmtp:0");
    let outcome = answer_to(&text, &[20000]);
    assert_eq!(outcome.answer.media[0].fmtp(101), Some("0-16"));
    assert_eq!(outcome.answer.media[0].fmtp(0), None);
    let offer = build_offer(
        &parse(&text),
        &Capabilities::default(),
        "192.0.2.9",
        &[30000],
    );
    assert_eq!(parse(&offer.to_string()), offer);
}

#[test]
fn initial_offer_lists_all_our_codecs() {
    let origin = Origin {
        username: "switchboard".into(),
        session_id: "99".into(),
        session_version: 1,
        net_type: "IN".into(),
        addr_type: "IP4".into(),
        address: "198.51.100.1".into(),
    };
    let offer = initial_offer(&Capabilities::default(), origin, "198.51.100.1", 30000);
    assert_eq!(
        offer.to_string(),
        "v=0\r\n\
         o=switchboard 99 1 IN IP4 198.51.100.1\r\n\
         s=-\r\n\
         c=IN IP4 198.51.100.1\r\n\
         t=0 0\r\n\
         m=audio 30000 RTP/AVP 0 8 96 97 98\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:96 opus/48000/2\r\n\
         a=rtpmap:97 telephone-event/8000\r\n\
         a=fmtp:97 0-16\r\n\
         a=rtpmap:98 telephone-event/48000\r\n\
         a=fmtp:98 0-16\r\n\
         a=sendrecv\r\n"
    );
    // A SIPp-like peer answering it with PCMU is read back correctly.
    let peer = parse(
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0 97\na=rtpmap:0 PCMU/8000\na=rtpmap:97 telephone-event/8000\n",
    );
    let s = &negotiated(&offer, &peer)[0];
    assert_eq!(s.codec, Some(RtpMap::new(0, "PCMU", 8000, 1)));
    assert_eq!(s.telephone_event_pt, Some(97));
}
