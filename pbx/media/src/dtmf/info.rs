//! DTMF in SIP INFO bodies: `application/dtmf-relay` (Cisco's de-facto format,
//! `Signal=5\r\nDuration=160\r\n`) and `application/dtmf` (the digit alone). Parsing is
//! tolerant of what phones actually send (LF or CRLF, spaces around `=`, any key case,
//! event numbers 10–15 for `*#A-D`); building produces the canonical form.

use super::{digit_to_event, event_to_digit, DtmfDigit, DtmfError, DtmfSource};

/// Duration reported when an INFO body carries none (the common default of phones).
pub const DEFAULT_INFO_DURATION_MS: u32 = 250;

/// A signal value: a digit character, or an RFC 4733 event number.
fn parse_signal(value: &str) -> Result<char, DtmfError> {
    let bad = || DtmfError::BadSignal(value.chars().take(32).collect());
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => match digit_to_event(c) {
            Some(event) => Ok(event_to_digit(event).ok_or_else(bad)?),
            None => Err(bad()),
        },
        (Some(_), Some(_)) => value
            .parse::<u8>()
            .ok()
            .and_then(event_to_digit)
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn as_text(body: &[u8]) -> Result<&str, DtmfError> {
    std::str::from_utf8(body).map_err(|_| DtmfError::NotUtf8)
}

/// Parses an `application/dtmf-relay` body.
pub fn parse_dtmf_relay(body: &[u8]) -> Result<DtmfDigit, DtmfError> {
    let text = as_text(body)?;
    let mut digit = None;
    let mut duration_ms = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.eq_ignore_ascii_case("signal") {
            digit = Some(parse_signal(value)?);
        } else if key.eq_ignore_ascii_case("duration") {
            let ms = value
                .parse::<u32>()
                .map_err(|_| DtmfError::BadDuration(value.chars().take(32).collect()))?;
            duration_ms = Some(ms);
        }
    }
    Ok(DtmfDigit {
        digit: digit.ok_or(DtmfError::MissingSignal)?,
        duration_ms: duration_ms.unwrap_or(DEFAULT_INFO_DURATION_MS),
        source: DtmfSource::SipInfo,
    })
}

/// Parses an `application/dtmf` body: the digit (or event number) alone.
pub fn parse_dtmf(body: &[u8]) -> Result<DtmfDigit, DtmfError> {
    let value = as_text(body)?.trim();
    if value.is_empty() {
        return Err(DtmfError::MissingSignal);
    }
    Ok(DtmfDigit {
        digit: parse_signal(value)?,
        duration_ms: DEFAULT_INFO_DURATION_MS,
        source: DtmfSource::SipInfo,
    })
}

/// Parses an INFO body by its Content-Type (parameters and case ignored).
pub fn parse_info_body(content_type: &str, body: &[u8]) -> Result<DtmfDigit, DtmfError> {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/dtmf-relay") {
        parse_dtmf_relay(body)
    } else if media_type.eq_ignore_ascii_case("application/dtmf") {
        parse_dtmf(body)
    } else {
        Err(DtmfError::UnsupportedContentType(
            media_type.chars().take(64).collect(),
        ))
    }
}

/// Builds an `application/dtmf-relay` body.
pub fn build_dtmf_relay(digit: char, duration_ms: u32) -> Result<String, DtmfError> {
    let event = digit_to_event(digit).ok_or(DtmfError::InvalidDigit(digit))?;
    let digit = event_to_digit(event).ok_or(DtmfError::InvalidDigit(digit))?;
    Ok(format!("Signal={digit}\r\nDuration={duration_ms}\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(digit: char, duration_ms: u32) -> DtmfDigit {
        DtmfDigit {
            digit,
            duration_ms,
            source: DtmfSource::SipInfo,
        }
    }

    #[test]
    fn parse_dtmf_relay_bodies() {
        assert_eq!(
            parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n"),
            Ok(d('5', 160))
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=5\r\nDuration=160"),
            Ok(d('5', 160))
        );
        assert_eq!(
            parse_dtmf_relay(b"signal = *\nduration= 100\n"),
            Ok(d('*', 100))
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=#"),
            Ok(d('#', DEFAULT_INFO_DURATION_MS))
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=11\r\nDuration=90"),
            Ok(d('#', 90))
        );
        assert_eq!(parse_dtmf_relay(b"Signal=b\r\n"), Ok(d('B', 250)));
        assert_eq!(
            parse_dtmf_relay(b"Duration=90"),
            Err(DtmfError::MissingSignal)
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=X"),
            Err(DtmfError::BadSignal("X".into()))
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=16"),
            Err(DtmfError::BadSignal("16".into()))
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=1\r\nDuration=-5"),
            Err(DtmfError::BadDuration("-5".into()))
        );
        assert_eq!(parse_dtmf_relay(b"Signal=\xff"), Err(DtmfError::NotUtf8));
    }

    #[test]
    fn parse_application_dtmf() {
        assert_eq!(parse_dtmf(b"5"), Ok(d('5', 250)));
        assert_eq!(parse_dtmf(b" 10\r\n"), Ok(d('*', 250)));
        assert_eq!(parse_dtmf(b""), Err(DtmfError::MissingSignal));
        assert!(parse_dtmf(b"55").is_err()); // "55" is neither a digit nor an event 0-15
    }

    #[test]
    fn dispatch_by_content_type() {
        assert_eq!(
            parse_info_body(
                "Application/DTMF-Relay; charset=utf-8",
                b"Signal=7\r\nDuration=200"
            ),
            Ok(d('7', 200))
        );
        assert_eq!(parse_info_body("application/dtmf", b"7"), Ok(d('7', 250)));
        assert_eq!(
            parse_info_body("application/sdp", b"v=0"),
            Err(DtmfError::UnsupportedContentType("application/sdp".into()))
        );
    }

    #[test]
    fn build_then_parse() {
        let body = build_dtmf_relay('5', 160).unwrap();
        assert_eq!(body, "Signal=5\r\nDuration=160\r\n");
        for c in "0123456789*#ABCDabcd".chars() {
            let body = build_dtmf_relay(c, 100).unwrap();
            assert_eq!(
                parse_dtmf_relay(body.as_bytes()),
                Ok(d(c.to_ascii_uppercase(), 100))
            );
        }
        assert_eq!(build_dtmf_relay('E', 1), Err(DtmfError::InvalidDigit('E')));
    }
}
