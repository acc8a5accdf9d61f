//! RFC 4475 torture tests against the wire parser and the request checks. The corpus lives
//! in `tests/data/rfc4475/` (byte-exact; see its README); `cases.tsv` is the oracle for
//! parse versus reject, and the tables below hold what RFC 4475 says to answer.

mod common;

use switchboard_sip::check::{check_max_forwards, check_proxy_require, check_request};
use switchboard_sip::parse::{parse_datagram, parse_stream, ParseErrorKind, StreamItem};
use switchboard_sip::{HeaderName, Message, Request};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/rfc4475");

struct Case {
    file: String,
    section: String,
    parse: bool,
    data: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let tsv = std::fs::read_to_string(format!("{DIR}/cases.tsv")).expect("cases.tsv");
    let cases: Vec<Case> = tsv
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert!(f.len() >= 3, "bad line {l:?}");
            let parse = match f[2] {
                "parse" => true,
                "reject" => false,
                other => panic!("unknown verdict {other}"),
            };
            Case {
                file: f[0].to_string(),
                section: f[1].to_string(),
                parse,
                data: std::fs::read(format!("{DIR}/{}", f[0])).expect(f[0]),
            }
        })
        .collect();
    assert_eq!(cases.len(), 50, "the corpus has 50 messages");
    cases
}

fn request(file: &str) -> Request {
    let data = std::fs::read(format!("{DIR}/{file}")).unwrap();
    match parse_datagram(&data) {
        Ok(Message::Request(r)) => r,
        other => panic!("{file}: expected a request, got {other:?}"),
    }
}

#[test]
fn parse_cases_parse_and_reject_cases_are_rejected() {
    for case in cases() {
        let result = parse_datagram(&case.data);
        assert_eq!(
            result.is_ok(),
            case.parse,
            "{} (§{}): {:?}",
            case.file,
            case.section,
            result.as_ref().err()
        );
    }
}

/// What the answer to each rejected message is: `Some(status)` when RFC 4475 asks for a
/// response and the headers to build one are present, `None` when it must be dropped.
#[test]
fn rejected_requests_get_the_answer_rfc4475_asks_for() {
    let expected: &[(&str, Option<u16>, &str)] = &[
        ("TC_BADINV01_I.dat", Some(400), "Bad Via"),
        ("TC_CLERR_I.dat", Some(400), "Bad Content-Length"),
        ("TC_NCL_I.dat", Some(400), "Bad Content-Length"),
        ("TC_SCALAR02_V.dat", Some(400), "Bad CSeq"),
        ("TC_SCALARLG_V.dat", None, ""), // a response: never answered
        ("TC_QUOTBAL_I.dat", Some(400), "Bad To"),
        ("TC_LTGTRURI_I.dat", Some(400), "Bad Request-URI"),
        ("TC_LWSRURI_I.dat", Some(400), "Bad Request-URI"),
        ("TC_LWSSTART_V.dat", Some(400), "Bad Request-URI"),
        ("TC_TRWS_I.dat", Some(400), "Bad Request-Line"),
        ("TC_ESCRURI_V.dat", Some(400), "Bad Request-URI"),
        ("TC_BADDATE_V.dat", Some(400), "Bad Date"),
        ("TC_REGBADCT_I.dat", Some(400), "Bad Contact"),
        ("TC_BADASPEC_I.dat", Some(400), "Bad To"),
        ("TC_BADDN_I.dat", Some(400), "Bad From"),
        ("TC_BADVERS_V.dat", Some(505), "Version Not Supported"),
        ("TC_MISMATCH01_V.dat", Some(400), "CSeq Method Mismatch"),
        ("TC_MISMATCH02_V.dat", Some(400), "CSeq Method Mismatch"),
        ("TC_BIGCODE_V.dat", None, ""), // a response
        ("TC_TEST_I.dat", None, ""),    // no SIP-Version, no Via: nothing to answer
    ];
    let all = cases();
    assert_eq!(
        expected.len(),
        all.iter().filter(|c| !c.parse).count(),
        "every reject case has an expectation"
    );
    for (file, status, reason) in expected {
        let data = std::fs::read(format!("{DIR}/{file}")).unwrap();
        let err = parse_datagram(&data).expect_err(file);
        let resp = err.response();
        assert_eq!(resp.as_ref().map(|r| r.status), *status, "{file}: {err}");
        if let Some(resp) = resp {
            assert_eq!(resp.reason, *reason, "{file}");
            assert_eq!(err.kind().status(), resp.status);
            // The answer copies what the client matches it on (RFC 3261 §8.2.6.2).
            for name in [
                HeaderName::Via,
                HeaderName::From,
                HeaderName::To,
                HeaderName::CallId,
                HeaderName::CSeq,
            ] {
                assert!(resp.headers.get(&name).is_some(), "{file}: {name} copied");
            }
            let printed = resp.to_bytes();
            assert!(printed.starts_with(format!("SIP/2.0 {} ", resp.status).as_bytes()));
        }
    }
}

#[test]
fn rejection_kinds_are_specific() {
    let kind = |file: &str| {
        parse_datagram(&std::fs::read(format!("{DIR}/{file}")).unwrap())
            .unwrap_err()
            .kind()
    };
    assert_eq!(kind("TC_CLERR_I.dat"), ParseErrorKind::BodyTruncated);
    assert_eq!(kind("TC_NCL_I.dat"), ParseErrorKind::BadContentLength);
    assert_eq!(kind("TC_BADVERS_V.dat"), ParseErrorKind::BadVersion);
    assert_eq!(kind("TC_BIGCODE_V.dat"), ParseErrorKind::BadStatusCode);
    assert_eq!(kind("TC_SCALARLG_V.dat"), ParseErrorKind::BadHeader("CSeq"));
    assert_eq!(
        kind("TC_MISMATCH02_V.dat"),
        ParseErrorKind::CSeqMethodMismatch
    );
    assert_eq!(kind("TC_TEST_I.dat"), ParseErrorKind::BadHeaderLine);
}

/// RFC 4475 §3.1.1: the valid-syntax messages, with the details each one tests.
#[test]
fn valid_messages_read_as_the_rfc_describes() {
    let wsinv = request("TC_WSINV.dat");
    assert_eq!(wsinv.uri.param("unknownparam"), Some(None));
    let to = wsinv.to().unwrap();
    assert_eq!(to.tag(), Some("1918181833n"));
    let from = wsinv.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some(r#""J Rosenberg \\\"""#));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(wsinv.max_forwards(), Ok(Some(68)));
    assert_eq!(wsinv.cseq().unwrap().seq, 9);
    let vias: Vec<_> = wsinv.headers.get_all(&HeaderName::Via).collect();
    assert_eq!(vias.len(), 3, "{vias:?}");
    let via = wsinv.top_via().unwrap();
    assert_eq!(
        (via.transport.as_str(), via.host.as_str()),
        ("UDP", "192.0.2.2")
    );
    assert_eq!(
        wsinv
            .headers
            .get(&HeaderName::Other("NewFangledHeader".into())),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(wsinv.headers.get(&HeaderName::Subject), Some(""));
    assert_eq!(wsinv.body.len(), 150);

    let intmeth = request("TC_INTMETH.dat");
    assert_eq!(
        intmeth.method.as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert_eq!(
        intmeth.uri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        intmeth.uri.password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );

    let esc01 = request("TC_ESC01_V.dat");
    assert_eq!(
        esc01.uri.user_unescaped().as_deref(),
        Some("sips:user@example.com")
    );

    let semiuri = request("TC_SEMIURI_V.dat");
    assert_eq!(
        semiuri.uri.user.as_deref(),
        Some("user;par=u%40example.net")
    );
    assert!(semiuri.uri.params.is_empty());

    let dblreq = request("TC_DBLREQ.dat");
    assert_eq!(dblreq.method.as_str(), "REGISTER");
    assert!(dblreq.body.is_empty(), "trailing octets are discarded");

    let transports = request("TC_TRANSPORTS_V.dat");
    let kinds: Vec<String> = transports
        .headers
        .get_all(&HeaderName::Via)
        .map(|v| switchboard_sip::Via::parse(v).unwrap().transport)
        .collect();
    assert_eq!(kinds, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);

    let lwsdisp = request("TC_LWSDISP_V.dat");
    assert_eq!(
        lwsdisp.from().unwrap().display_name.as_deref(),
        Some("caller")
    );

    for (file, status, reason) in [
        ("TC_UNREASON_V.dat", 200, None),
        ("TC_NOREASON_V.dat", 100, Some("")),
    ] {
        let data = std::fs::read(format!("{DIR}/{file}")).unwrap();
        match parse_datagram(&data).unwrap() {
            Message::Response(r) => {
                assert_eq!(r.status, status);
                if let Some(reason) = reason {
                    assert_eq!(r.reason, reason);
                } else {
                    assert!(r.reason.starts_with("= 2**3 * 5**2 "));
                }
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

/// RFC 4475 §3.3: messages that parse but that a UAS must refuse, each with the status
/// the RFC names. Where the RFC leaves the answer to the application (415 for an unknown
/// Content-Type, 401 for an unknown auth scheme), `check_request` lets it through.
#[test]
fn semantic_cases_get_the_rfc4475_rejection() {
    const SUPPORTED: &[&str] = &["100rel", "timer", "replaces", "path", "outbound"];
    let status = |file: &str| {
        check_request(&request(file), SUPPORTED)
            .err()
            .map(|r| r.status)
    };

    assert_eq!(status("TC_INSUF_I.dat"), Some(400)); // §3.3.1
    let insuf = check_request(&request("TC_INSUF_I.dat"), SUPPORTED).unwrap_err();
    assert_eq!(insuf.reason, "Missing To, From, Call-ID Headers");
    assert_eq!(status("TC_UNKSCM_V.dat"), Some(416)); // §3.3.2
    assert_eq!(status("TC_NOVELSC_V.dat"), Some(416)); // §3.3.3
    assert_eq!(status("TC_UNKSM2_V.dat"), None); // §3.3.4: schemes in headers are fine

    // §3.3.5: 420 listing the Require tags (UAS) or the Proxy-Require tags (proxy).
    let bext = request("TC_BEXT01_V.dat");
    let r = check_request(&bext, SUPPORTED).unwrap_err();
    assert_eq!(r.status, 420);
    let tags: Vec<&str> = r.headers.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(tags, ["nothingSupportsThis", "nothingSupportsThisEither"]);
    assert!(r.headers.iter().all(|(n, _)| *n == HeaderName::Unsupported));
    let resp = r.to_response(&bext, Some("t1"));
    assert_eq!(resp.headers.count(&HeaderName::Unsupported), 2);
    let p = check_proxy_require(&bext, SUPPORTED).unwrap_err();
    assert_eq!(p.status, 420);
    assert_eq!(p.headers.len(), 2);

    assert_eq!(status("TC_INVUT_V.dat"), None); // §3.3.6: 415 is the application's
    assert_eq!(status("TC_REGAUT01_V.dat"), None); // §3.3.7: 401 is the registrar's
    assert_eq!(status("TC_MULTI01_I.dat"), Some(400)); // §3.3.8
    assert_eq!(status("TC_MCL01_I.dat"), Some(400)); // §3.3.9
    let mcl = check_request(&request("TC_MCL01_I.dat"), SUPPORTED).unwrap_err();
    assert_eq!(mcl.reason, "Multiple Content-Length Headers");

    // §3.3.11: only an element that forwards refuses Max-Forwards 0.
    let zeromf = request("TC_ZEROMF_V.dat");
    assert_eq!(check_request(&zeromf, SUPPORTED), Ok(()));
    assert_eq!(check_max_forwards(&zeromf).unwrap_err().status, 483);

    for ok in [
        "TC_BADBRANCH_V.dat",
        "TC_CPARAM01_V.dat",
        "TC_CPARAM02_V.dat",
        "TC_REGESCRT_V.dat",
        "TC_SDP01_V.dat",
        "TC_INV2543_I.dat", // §3.4.1: no Max-Forwards is acceptable
    ] {
        assert_eq!(check_request(&request(ok), SUPPORTED), Ok(()), "{ok}");
        assert_eq!(check_max_forwards(&request(ok)), Ok(()), "{ok}");
    }

    // §3.3.12–13: where the parameter belongs depends on the brackets.
    let c1 = request("TC_CPARAM01_V.dat");
    let contact =
        switchboard_sip::NameAddr::parse(c1.headers.get(&HeaderName::Contact).unwrap()).unwrap();
    assert_eq!(contact.param("unknownparam"), Some(None));
    assert!(contact.uri.params.is_empty());
    let c2 = request("TC_CPARAM02_V.dat");
    let contact =
        switchboard_sip::NameAddr::parse(c2.headers.get(&HeaderName::Contact).unwrap()).unwrap();
    assert_eq!(contact.uri.param("unknownparam"), Some(None));
    assert!(contact.params.is_empty());
}

#[test]
fn every_parsed_message_prints_and_parses_back_equal() {
    for case in cases().into_iter().filter(|c| c.parse) {
        let msg = parse_datagram(&case.data).unwrap();
        let printed = msg.to_bytes();
        let again = parse_datagram(&printed)
            .unwrap_or_else(|e| panic!("{}: re-parse failed: {e}", case.file));
        assert_eq!(
            common::fuzz_bodies::without_content_length(&msg),
            common::fuzz_bodies::without_content_length(&again),
            "{}",
            case.file
        );
        // Printing is a fixed point after one round.
        assert_eq!(again.to_bytes(), printed, "{}", case.file);
    }
}

/// Feeds each valid message (printed, so with an exact Content-Length) one byte at a time:
/// `Incomplete` until the last byte, then the whole message and its length.
#[test]
fn stream_framing_byte_by_byte() {
    for case in cases().into_iter().filter(|c| c.parse) {
        let msg = parse_datagram(&case.data).unwrap();
        let mut wire = b"\r\n\r\n".to_vec(); // a keep-alive ping first
        wire.extend_from_slice(&msg.to_bytes());
        let mut pos = 0;
        let mut got = None;
        for end in 1..=wire.len() {
            loop {
                match parse_stream(&wire[pos..end], 64 * 1024) {
                    Ok(StreamItem::KeepAlive(n)) => {
                        assert!(pos < 4, "{}: keep-alive only before", case.file);
                        pos += n;
                    }
                    Ok(StreamItem::Incomplete) => break,
                    Ok(StreamItem::Message(m, n)) => {
                        assert_eq!(pos + n, wire.len(), "{}", case.file);
                        assert_eq!(end, wire.len(), "{}: complete too early", case.file);
                        got = Some(m);
                        pos += n;
                        break;
                    }
                    Err(e) => panic!("{} at byte {end}: {e}", case.file),
                }
            }
        }
        assert_eq!(pos, wire.len(), "{}", case.file);
        let got = got.expect("a message");
        assert_eq!(
            common::fuzz_bodies::without_content_length(&got),
            common::fuzz_bodies::without_content_length(&msg),
            "{}",
            case.file
        );
    }
}

#[test]
fn stream_reads_back_to_back_messages() {
    // TC_DBLREQ on a stream: the REGISTER (Content-Length 0), a stray CRLF that RFC 3261
    // §7.5 says to skip, then the INVITE with its 150 announced octets. The corpus file
    // carries 155 octets after the INVITE's headers, so the last 5 ("C\r\n\r\n") are
    // not a message: on a stream that is a framing error and the connection is closed.
    let data = std::fs::read(format!("{DIR}/TC_DBLREQ.dat")).unwrap();
    let mut pos = 0;
    let mut methods = Vec::new();
    let err = loop {
        match parse_stream(&data[pos..], 64 * 1024) {
            Ok(StreamItem::Message(Message::Request(r), n)) => {
                methods.push((r.method.as_str().to_string(), r.body.len()));
                pos += n;
            }
            Ok(StreamItem::KeepAlive(n)) => pos += n,
            Ok(_) => panic!("unexpected item at {pos}"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        methods,
        [("REGISTER".to_string(), 0), ("INVITE".to_string(), 150)]
    );
    assert_eq!(&data[pos..], b"C\r\n\r\n");
    assert_eq!(err.kind(), ParseErrorKind::BadStartLine);
    assert_eq!(err.frame_len(), None);
}

#[test]
fn stream_limits_and_content_length_rules() {
    // No Content-Length on a stream: an error, never a guess.
    let no_cl = b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let err = parse_stream(no_cl, 4096)
        .err()
        .expect("missing Content-Length");
    assert_eq!(err.kind(), ParseErrorKind::MissingContentLength);
    assert_eq!(err.response().map(|r| r.status), Some(400));
    // The same on a datagram is fine.
    assert!(parse_datagram(no_cl).is_ok());

    // Headers that never end within the limit.
    let mut endless = b"OPTIONS sip:a@example.com SIP/2.0\r\n".to_vec();
    while endless.len() < 5000 {
        endless.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert!(matches!(
        parse_stream(&endless[..1000], 4096),
        Ok(StreamItem::Incomplete)
    ));
    let err = parse_stream(&endless, 4096).err().expect("too large");
    assert_eq!(err.kind(), ParseErrorKind::TooLarge);
    assert_eq!(err.frame_len(), None);

    // A Content-Length that would exceed the limit is refused before the body arrives.
    let big = b"MESSAGE sip:a@example.com SIP/2.0\r\nContent-Length: 100000\r\n\r\n";
    assert_eq!(
        parse_stream(big, 4096).err().map(|e| e.kind()),
        Some(ParseErrorKind::TooLarge)
    );

    // Garbage is refused as soon as its first line is complete.
    assert!(parse_stream(b"\x16\x03\x01 hello\r\n", 4096).is_err());
    assert!(matches!(
        parse_stream(b"INVITE sip:a@b SIP/2.0\r\nVia: SI", 4096),
        Ok(StreamItem::Incomplete)
    ));
    assert!(matches!(
        parse_stream(b"\r", 4096),
        Ok(StreamItem::Incomplete)
    ));
    assert!(matches!(
        parse_stream(b"\r\n", 4096),
        Ok(StreamItem::KeepAlive(2))
    ));

    // A well-framed but invalid message can be skipped.
    let bad =
        b"OPTIONS sip:a@example.com SIP/2.0\r\nCSeq: x OPTIONS\r\nContent-Length: 2\r\n\r\nhiNEXT";
    let err = parse_stream(bad, 4096).err().expect("bad CSeq");
    assert_eq!(err.frame_len(), Some(bad.len() - 4));
}
