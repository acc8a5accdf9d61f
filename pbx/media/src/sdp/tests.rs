//! Parse and print tests for the SDP model and its helpers, with RFC example text and
//! descriptions as Asterisk, SIPp, baresip and browsers send them
//! (`pbx/media/tests/sdp_data/`, LF-terminated there; CRLF is tested by conversion).

use super::*;

macro_rules! data {
    ($name:literal) => {
        include_str!(concat!("../../tests/sdp_data/", $name))
    };
}

const ALL: &[&str] = &[
    data!("rfc4566_5.sdp"),
    data!("rfc3264_10_1_offer.sdp"),
    data!("rfc3264_10_1_answer.sdp"),
    data!("rfc3264_10_1_reoffer.sdp"),
    data!("rfc3264_10_2_offer.sdp"),
    data!("rfc4317_2_1_offer.sdp"),
    data!("rfc4317_2_1_answer.sdp"),
    data!("rfc4317_2_4_two_audio_offer.sdp"),
    data!("rfc4317_3_1_hold_offer.sdp"),
    data!("sipp_uac_offer.sdp"),
    data!("baresip_offer.sdp"),
    data!("asterisk_offer.sdp"),
    data!("webrtc_offer.sdp"),
    data!("sdes_srtp_offer.sdp"),
];

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

fn parse(text: &str) -> SessionDescription {
    SessionDescription::parse(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

#[test]
fn rfc4566_section5_example() {
    let sdp = parse(data!("rfc4566_5.sdp"));
    assert_eq!(sdp.version, 0);
    assert_eq!(
        sdp.origin,
        Origin {
            username: "jdoe".into(),
            session_id: "2890844526".into(),
            session_version: 2890842807,
            net_type: "IN".into(),
            addr_type: "IP4".into(),
            address: "10.47.16.5".into(),
        }
    );
    assert_eq!(sdp.session_name, "SDP Seminar");
    assert_eq!(
        sdp.information.as_deref(),
        Some("A Seminar on the session description protocol")
    );
    assert_eq!(
        sdp.uri.as_deref(),
        Some("http://www.example.com/seminars/sdp.pdf")
    );
    assert_eq!(sdp.emails, ["j.doe@example.com (Jane Doe)"]);
    assert_eq!(sdp.connection, Some(Connection::new("224.2.17.12/127")));
    assert_eq!(
        sdp.times,
        [Timing {
            start: 2873397496,
            stop: 2873404696,
            repeats: vec![]
        }]
    );
    assert_eq!(sdp.attributes, [Attribute::flag("recvonly")]);
    assert_eq!(sdp.media.len(), 2);
    let audio = &sdp.media[0];
    assert_eq!(
        (audio.media.as_str(), audio.port, audio.proto.as_str()),
        ("audio", 49170, "RTP/AVP")
    );
    assert_eq!(audio.formats, ["0"]);
    assert_eq!(audio.rtpmaps(), [RtpMap::new(0, "PCMU", 8000, 1)]);
    // Session-level recvonly applies to both streams.
    assert_eq!(audio.direction(&sdp), Direction::RecvOnly);
    let video = &sdp.media[1];
    assert_eq!(video.rtpmaps(), [RtpMap::new(99, "h263-1998", 90000, 1)]);
    // Printing gives the RFC text back, with CRLF.
    assert_eq!(sdp.to_string(), crlf(data!("rfc4566_5.sdp")));
}

#[test]
fn every_example_prints_byte_exact_and_reparses() {
    for text in ALL {
        let sdp = parse(text);
        assert_eq!(sdp.to_string(), crlf(text), "printing changed:\n{text}");
        assert_eq!(parse(&sdp.to_string()), sdp);
        // CRLF input parses to the same model as LF input.
        assert_eq!(parse(&crlf(text)), sdp);
    }
}

#[test]
fn out_of_order_and_unknown_lines_are_kept() {
    // a= before c= and b= after a= (seen from real phones), an unknown type letter at both
    // levels, trailing blanks after an attribute, a blank line at the end.
    let text = "v=0\no=- 1 2 IN IP4 192.0.2.1\ns=-\nt=0 0\na=tool:x\nc=IN IP4 192.0.2.1\nx=vendor thing\nm=audio 4000/2 RTP/AVP 0\na=sendonly  \nb=AS:64\ny=media thing\n\n";
    let sdp = parse(text);
    assert_eq!(sdp.other, ["x=vendor thing"]);
    let m = &sdp.media[0];
    assert_eq!(m.port_count, Some(2));
    assert_eq!(m.attributes, [Attribute::flag("sendonly")]);
    assert_eq!(
        m.bandwidths,
        [Bandwidth {
            bwtype: "AS".into(),
            bandwidth: 64
        }]
    );
    assert_eq!(m.other, ["y=media thing"]);
    assert_eq!(
        sdp.to_string(),
        "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\na=tool:x\r\nx=vendor thing\r\nm=audio 4000/2 RTP/AVP 0\r\nb=AS:64\r\na=sendonly\r\ny=media thing\r\n"
    );
    assert_eq!(parse(&sdp.to_string()), sdp);
}

#[test]
fn repeat_times_and_zones_round_trip() {
    // RFC 4566 §5.10 and §5.11.
    let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns= \r\nc=IN IP4 192.0.2.1\r\nt=3034423619 3042462419\r\nr=604800 3600 0 90000\r\nr=7d 1h 0 25h\r\nz=2882844526 -1h 2898848070 0\r\nk=prompt\r\n";
    let sdp = parse(text);
    assert_eq!(sdp.session_name, " ");
    assert_eq!(sdp.times[0].repeats.len(), 2);
    assert_eq!(
        sdp.time_zones.as_deref(),
        Some("2882844526 -1h 2898848070 0")
    );
    assert_eq!(sdp.encryption_key.as_deref(), Some("prompt"));
    assert_eq!(sdp.to_string(), text);
}

fn error_of(text: &str) -> SdpError {
    SessionDescription::parse(text).expect_err(text)
}

#[test]
fn structural_errors_name_the_line() {
    let good =
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n";
    assert!(SessionDescription::parse(good).is_ok());
    let cases: &[(&str, SdpError)] = &[
        ("", SdpError::Empty),
        ("\r\n\r\n", SdpError::Empty),
        (
            "o=- 1 1 IN IP4 192.0.2.1\nv=0\n",
            SdpError::MissingVersionLine { line: 1 },
        ),
        (
            "v=1\n",
            SdpError::UnsupportedVersion {
                line: 1,
                value: "1".into(),
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nthis is not sdp\n",
            SdpError::MalformedLine { line: 4 },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nA=foo\n",
            SdpError::MalformedLine { line: 4 },
        ),
        (
            "v=0\no=- 1 IN IP4 192.0.2.1\ns=-\n",
            SdpError::InvalidLine {
                line: 2,
                letter: 'o',
                reason: "expected <username> <sess-id> <sess-version> <nettype> <addrtype> <address>",
            },
        ),
        (
            "v=0\no=- 1 x IN IP4 192.0.2.1\ns=-\n",
            SdpError::InvalidLine {
                line: 2,
                letter: 'o',
                reason: "session version is not a number",
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4\n",
            SdpError::InvalidLine {
                line: 4,
                letter: 'c',
                reason: "expected <nettype> <addrtype> <connection-address>",
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 70000 RTP/AVP 0\n",
            SdpError::InvalidLine {
                line: 6,
                letter: 'm',
                reason: "port is not a number from 0 to 65535",
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio\n",
            SdpError::InvalidLine {
                line: 6,
                letter: 'm',
                reason: "expected <media> <port>[/<count>] <proto> <fmt> ...",
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nb=AS\n",
            SdpError::InvalidLine {
                line: 4,
                letter: 'b',
                reason: "expected <bwtype>:<bandwidth>",
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=now later\n",
            SdpError::InvalidLine {
                line: 4,
                letter: 't',
                reason: "time is not a number",
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\na=:x\n",
            SdpError::InvalidLine {
                line: 4,
                letter: 'a',
                reason: "attribute name is empty or contains blanks",
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\no=- 1 1 IN IP4 192.0.2.1\ns=-\n",
            SdpError::Duplicate {
                line: 3,
                letter: 'o',
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nv=0\n",
            SdpError::Duplicate {
                line: 4,
                letter: 'v',
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nr=7d 1h 0 25h\n",
            SdpError::Misplaced {
                line: 4,
                letter: 'r',
                reason: "r= must follow a t= line",
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 0\nt=0 0\n",
            SdpError::Misplaced {
                line: 7,
                letter: 't',
                reason: "session-level line inside a media section",
            },
        ),
        (
            "v=0\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n",
            SdpError::Missing {
                line: 5,
                letter: 'o',
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\nt=0 0\n",
            SdpError::Missing {
                line: 3,
                letter: 's',
            },
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 0 RTP/AVP 0\nm=audio 4000 RTP/AVP 0\n",
            SdpError::MissingConnection { line: 6 },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(&error_of(text), expected, "input:\n{text}");
        let crlf_error = error_of(&crlf(text));
        assert_eq!(&crlf_error, expected, "CRLF input:\n{text}");
    }
    // Non-UTF-8 bytes on line 3.
    let bytes = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=\xff\r\n";
    assert_eq!(
        SessionDescription::parse(bytes),
        Err(SdpError::NotUtf8 { line: 3 })
    );
    // The message names the line.
    let message = error_of("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=now later\n").to_string();
    assert_eq!(message, "line 4: t= line: time is not a number");
}

#[test]
fn rtpmaps_fall_back_to_rfc3551_static_types() {
    let sdp = parse(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 0 8 9 18 3 96 97 13\na=rtpmap:97 telephone-event/8000\na=fmtp:97 0-16\na=fmtp:18 annexb=no\n",
    );
    let m = &sdp.media[0];
    assert_eq!(
        m.rtpmaps(),
        [
            RtpMap::new(0, "PCMU", 8000, 1),
            RtpMap::new(8, "PCMA", 8000, 1),
            RtpMap::new(9, "G722", 8000, 1),
            RtpMap::new(18, "G729", 8000, 1),
            RtpMap::new(3, "GSM", 8000, 1),
            // 96 has no rtpmap: unknown, left out.
            RtpMap::new(97, "telephone-event", 8000, 1),
            RtpMap::new(13, "CN", 8000, 1),
        ]
    );
    assert_eq!(m.fmtp(97), Some("0-16"));
    assert_eq!(m.fmtp(18), Some("annexb=no"));
    assert_eq!(m.fmtp(0), None);
}

#[test]
fn rtpmap_print_and_parse() {
    for (text, rtpmap) in [
        ("0 PCMU/8000", RtpMap::new(0, "PCMU", 8000, 1)),
        ("96 opus/48000/2", RtpMap::new(96, "opus", 48000, 2)),
        (
            "101 telephone-event/8000",
            RtpMap::new(101, "telephone-event", 8000, 1),
        ),
    ] {
        assert_eq!(RtpMap::parse(text), Some(rtpmap.clone()));
        assert_eq!(rtpmap.to_string(), text);
    }
    for bad in [
        "",
        "0",
        "x PCMU/8000",
        "128 PCMU/8000",
        "0 PCMU",
        "0 /8000",
        "0 a/1/2/3",
    ] {
        assert_eq!(RtpMap::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn baresip_offer_helpers() {
    let sdp = parse(data!("baresip_offer.sdp"));
    let m = &sdp.media[0];
    assert_eq!(m.rtpmaps()[0], RtpMap::new(96, "opus", 48000, 2));
    assert_eq!(m.fmtp(96), Some("stereo=1;sprop-stereo=1"));
    assert_eq!(m.fmtp(101), Some("0-15"));
    assert_eq!(m.ptime(), Some(20));
    assert_eq!(m.direction(&sdp), Direction::SendRecv);
    assert_eq!(m.rtcp(), None);
    assert!(!m.is_srtp() && !m.is_rejected());
    assert!(!sdp.offers_only_srtp());
    assert_eq!(
        m.effective_connection(&sdp),
        Some(&Connection::new("192.168.1.23"))
    );
    assert_eq!(m.remote_rtp(&sdp), Some(("192.168.1.23".into(), 10206)));
}

#[test]
fn direction_media_level_overrides_session_level() {
    let sdp = parse(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\na=sendonly\nm=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 0\na=inactive\nm=audio 4004 RTP/AVP 0\na=recvonly\n",
    );
    let dirs: Vec<_> = sdp.media.iter().map(|m| m.direction(&sdp)).collect();
    assert_eq!(
        dirs,
        [
            Direction::SendOnly,
            Direction::Inactive,
            Direction::RecvOnly
        ]
    );
    let plain = parse(data!("sipp_uac_offer.sdp"));
    assert_eq!(plain.media[0].direction(&plain), Direction::SendRecv);

    let mut sdp = sdp;
    sdp.set_direction(Direction::SendRecv);
    assert_eq!(sdp.direction(), None);
    for m in &sdp.media {
        assert_eq!(m.own_direction(), Some(Direction::SendRecv));
        assert_eq!(m.attributes.len(), 1);
    }
}

#[test]
fn direction_reverse_and_print() {
    use Direction::*;
    for (d, r, s) in [
        (SendRecv, SendRecv, "sendrecv"),
        (SendOnly, RecvOnly, "sendonly"),
        (RecvOnly, SendOnly, "recvonly"),
        (Inactive, Inactive, "inactive"),
    ] {
        assert_eq!(d.reverse(), r);
        assert_eq!(d.to_string(), s);
        assert_eq!(Direction::from_attribute(s), Some(d));
    }
    assert_eq!(SendRecv.intersect(RecvOnly), RecvOnly);
    assert_eq!(SendOnly.intersect(RecvOnly), Inactive);
}

#[test]
fn set_direction_replaces_in_place() {
    let mut m = MediaDescription::new("audio", 4000, "RTP/AVP", vec!["0".into()]);
    m.attributes = vec![
        Attribute::new("rtpmap", "0 PCMU/8000"),
        Attribute::flag("sendrecv"),
        Attribute::new("ptime", "20"),
        Attribute::flag("sendonly"),
    ];
    m.set_direction(Direction::Inactive);
    assert_eq!(
        m.attributes,
        [
            Attribute::new("rtpmap", "0 PCMU/8000"),
            Attribute::flag("inactive"),
            Attribute::new("ptime", "20"),
        ]
    );
}

#[test]
fn rfc3605_rtcp_attribute() {
    // RFC 3605 §2.1 example.
    let sdp = parse(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 49170 RTP/AVP 0\na=rtcp:53020 IN IP4 126.16.64.4\n",
    );
    let rtcp = sdp.media[0].rtcp().unwrap();
    assert_eq!(rtcp.port, 53020);
    assert_eq!(rtcp.connection, Some(Connection::new("126.16.64.4")));
    assert_eq!(rtcp.to_string(), "53020 IN IP4 126.16.64.4");
    assert_eq!(Rtcp::parse("53020").unwrap().connection, None);
    assert_eq!(Rtcp::parse("53020 IN IP4"), None);
}

#[test]
fn srtp_only_detection() {
    assert!(parse(data!("sdes_srtp_offer.sdp")).offers_only_srtp());
    assert!(parse(data!("webrtc_offer.sdp")).offers_only_srtp());
    for plain in [
        data!("sipp_uac_offer.sdp"),
        data!("baresip_offer.sdp"),
        data!("asterisk_offer.sdp"),
    ] {
        assert!(!parse(plain).offers_only_srtp());
    }
    // Best-effort SRTP: an SAVP stream plus a plain one is not SRTP-only.
    let mixed = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/SAVP 0\nm=audio 4002 RTP/AVP 0\n");
    assert!(!mixed.offers_only_srtp());
    // No active RTP stream at all is not "SRTP only" either.
    let none = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 0 RTP/SAVP 0\n");
    assert!(!none.offers_only_srtp());
}

#[test]
fn anchoring_rewrites_addresses_ports_and_strips_transport() {
    let mut sdp = parse(data!("webrtc_offer.sdp"));
    sdp.anchor("198.51.100.10", &[30000]);
    assert_eq!(sdp.origin.address, "198.51.100.10");
    assert_eq!(sdp.connection, Some(Connection::new("198.51.100.10")));
    assert!(sdp.attributes.iter().all(|a| a.name != "group"));
    assert!(sdp.attributes.iter().all(|a| a.name != "msid-semantic"));
    let m = &sdp.media[0];
    assert_eq!(m.port, 30000);
    assert_eq!(m.connection, Some(Connection::new("198.51.100.10")));
    assert_eq!(m.attribute("rtcp"), Some("30001 IN IP4 198.51.100.10"));
    let names: Vec<&str> = m.attributes.iter().map(|a| a.name.as_str()).collect();
    for gone in [
        "candidate",
        "ice-ufrag",
        "ice-pwd",
        "ice-options",
        "fingerprint",
        "setup",
        "rtcp-mux",
        "ssrc",
    ] {
        assert!(!names.contains(&gone), "{gone} kept: {names:?}");
    }
    for kept in ["mid", "sendrecv", "rtpmap", "fmtp", "rtcp-fb"] {
        assert!(names.contains(&kept), "{kept} dropped: {names:?}");
    }
    assert_eq!(parse(&sdp.to_string()), sdp);
}

#[test]
fn anchoring_ipv6_and_rejected_streams() {
    let mut sdp = parse(data!("rfc3264_10_1_answer.sdp"));
    sdp.anchor("2001:db8::1", &[20000, 20002]);
    assert_eq!(sdp.origin.addr_type, "IP6");
    assert_eq!(
        sdp.connection.as_ref().unwrap().to_string(),
        "IN IP6 2001:db8::1"
    );
    // Stream 1 was rejected and stays so; stream 2 has no port given, so it is disabled.
    let ports: Vec<u16> = sdp.media.iter().map(|m| m.port).collect();
    assert_eq!(ports, [20000, 0, 0]);
}

#[test]
fn set_port_moves_rtcp_along() {
    let mut sdp = parse(data!("sdes_srtp_offer.sdp"));
    sdp.media[0].set_port(40000);
    assert_eq!(sdp.media[0].rtcp().unwrap().port, 40001);
    assert_eq!(sdp.media[0].rtcp().unwrap().connection, None);
}

#[test]
fn bump_version_wraps() {
    let mut sdp = parse(data!("sipp_uac_offer.sdp"));
    sdp.origin.bump_version();
    assert_eq!(sdp.origin.session_version, 2353687638);
    sdp.origin.session_version = u64::MAX;
    sdp.origin.bump_version();
    assert_eq!(sdp.origin.session_version, 0);
}

#[test]
fn unspecified_connection_means_no_remote() {
    let sdp = parse(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 4000 RTP/AVP 0\n",
    );
    assert!(sdp.connection.as_ref().unwrap().is_unspecified());
    assert_eq!(sdp.media[0].remote_rtp(&sdp), None);
}
