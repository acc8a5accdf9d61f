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
