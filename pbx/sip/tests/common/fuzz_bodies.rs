//! The bodies of the fuzz targets in `fuzz/fuzz_targets/`, shared with the deterministic
//! mutation test (`tests/fuzz_corpus.rs`) so that both exercise the same properties on
//! stable Rust. Each must never panic on any input; the asserts are the properties.

use switchboard_sip::parse::{
    parse_cseq, parse_datagram, parse_name_addr, parse_stream, parse_uri, parse_via, StreamItem,
};
use switchboard_sip::{HeaderName, Message};

/// The message without its Content-Length headers: printing rewrites them from the body
/// length (RFC 3261 §18.3), which is the one intended difference after a round trip.
pub fn without_content_length(msg: &Message) -> Message {
    let mut msg = msg.clone();
    msg.headers_mut().remove(&HeaderName::ContentLength);
    msg
}

/// `parse_datagram`; when it accepts, the printed message must parse back to the same.
pub fn sip_datagram(data: &[u8]) {
    match parse_datagram(data) {
        Ok(msg) => {
            let printed = msg.to_bytes();
            let again = parse_datagram(&printed).unwrap_or_else(|e| {
                panic!(
                    "printed message does not re-parse ({e}):\n{}",
                    String::from_utf8_lossy(&printed)
                )
            });
            assert_eq!(without_content_length(&msg), without_content_length(&again));
        }
        Err(e) => {
            if let Some(resp) = e.response() {
                assert!(resp.status == 400 || resp.status == 505 || resp.status == 513);
                let _ = resp.to_bytes();
            }
        }
    }
}

/// `parse_stream` over a buffer, as a connection driver would consume it.
pub fn sip_stream(data: &[u8]) {
    let mut pos = 0;
    while pos < data.len() {
        match parse_stream(&data[pos..], 4096) {
            Ok(StreamItem::Message(msg, used)) => {
                assert!(used > 0 && pos + used <= data.len());
                pos += used;
                // Printing always carries Content-Length, so it frames as one message.
                let printed = msg.to_bytes();
                match parse_stream(&printed, usize::MAX) {
                    Ok(StreamItem::Message(again, n)) => {
                        assert_eq!(n, printed.len());
                        assert_eq!(without_content_length(&msg), without_content_length(&again));
                    }
                    _ => panic!("printed stream message does not re-parse"),
                }
            }
            Ok(StreamItem::KeepAlive(n)) => {
                assert!(n > 0 && pos + n <= data.len());
                pos += n;
            }
            Ok(StreamItem::Incomplete) => break,
            Err(e) => {
                if let Some(n) = e.frame_len() {
                    assert!(n > 0 && pos + n <= data.len());
                }
                let _ = e.response();
                break;
            }
        }
    }
}

/// The value parsers on UTF-8 input; anything accepted must print and parse back equal.
pub fn sip_uri(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = parse_uri(s) {
        let printed = uri.to_string();
        assert_eq!(parse_uri(&printed).as_ref(), Ok(&uri), "URI {printed}");
    }
    if let Ok(na) = parse_name_addr(s) {
        let printed = na.to_string();
        assert_eq!(
            parse_name_addr(&printed).as_ref(),
            Ok(&na),
            "name-addr {printed}"
        );
    }
    if let Ok(via) = parse_via(s) {
        let printed = via.to_string();
        assert_eq!(parse_via(&printed).as_ref(), Ok(&via), "Via {printed}");
    }
    if let Ok(cseq) = parse_cseq(s) {
        let printed = cseq.to_string();
        assert_eq!(parse_cseq(&printed).as_ref(), Ok(&cseq), "CSeq {printed}");
    }
}

/// `Credentials::parse` (Authorization / Proxy-Authorization values from any client) and
/// `ChallengeParams::parse` (challenges from providers we register with); whatever parses
/// must survive verification, or answering, without panicking.
pub fn digest_credentials(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(creds) = switchboard_sip::digest::Credentials::parse(s) {
        let _ = creds.nonce_count();
        let ha1 = switchboard_sip::digest::ha1(creds.algorithm.base(), "u", "r", "p");
        let _ = switchboard_sip::digest::verify(&creds, "REGISTER", &ha1);
        let mut nonces = switchboard_sip::digest::NonceManager::new(b"fuzz".to_vec());
        let _ = nonces.authenticate(&creds, "INVITE", &ha1, std::time::SystemTime::UNIX_EPOCH);
    }
    // The same bytes as a challenge from a provider (WWW-/Proxy-Authenticate): whatever
    // parses is answered, and our own answer must parse back as credentials.
    if let Ok(ch) = switchboard_sip::digest::ChallengeParams::parse(s) {
        let value = ch.answer("user", "pw", "REGISTER", "sip:x", 1, "c0ffee");
        assert!(
            switchboard_sip::digest::Credentials::parse(&value).is_ok(),
            "our answer to {s:?} does not parse: {value}"
        );
    }
}
