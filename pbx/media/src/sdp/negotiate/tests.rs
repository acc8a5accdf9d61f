//! Offer/answer tests with RFC 3264 and RFC 4317 examples.

use super::*;

#[test]
fn answers_pcmu_offer() {
    let offer = SessionDescription::parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
    )
    .unwrap();
    let local = AnswerParams {
        address: "198.51.100.1".into(),
        ports: vec![20000],
        username: "switchboard".into(),
        session_id: "7".into(),
        session_version: 1,
    };
    let outcome = answer(&offer, &Capabilities::default(), &local).unwrap();
    assert!(outcome.streams[0].accepted);
    assert_eq!(outcome.answer.media[0].formats, ["0"]);
}
