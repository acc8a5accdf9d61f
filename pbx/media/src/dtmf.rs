//! DTMF every way a PBX meets it, all reduced to one [`DtmfDigit`] per key press:
//! RFC 4733 telephone-events in RTP ([`rfc4733`]), tones in the audio ([`inband`]), and
//! SIP INFO bodies ([`info`]). No I/O and no clock: packets, frames and `now` come in,
//! digits and packets to send come out.

pub mod inband;
pub mod info;
pub mod rfc4733;

pub use inband::{generate_digit, InbandDetector};
pub use info::{build_dtmf_relay, parse_dtmf, parse_dtmf_relay, parse_info_body};
pub use rfc4733::{DtmfEventReceiver, DtmfEventSender, TelephoneEvent, TelephoneEventPacket};

use thiserror::Error;

/// Where a digit was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfSource {
    /// RFC 4733 telephone-event packets.
    Rfc4733,
    /// Goertzel detection in the audio.
    Inband,
    /// A SIP INFO body.
    SipInfo,
}

/// One key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtmfDigit {
    /// One of `0-9`, `*`, `#`, `A-D`.
    pub digit: char,
    pub duration_ms: u32,
    pub source: DtmfSource,
}

/// Errors of the DTMF parsers and builders.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DtmfError {
    #[error("'{0}' is not a DTMF digit (0-9, *, #, A-D)")]
    InvalidDigit(char),
    #[error("telephone-event payload of {0} bytes, need 4")]
    ShortPayload(usize),
    #[error("telephone-event code {0} is not a DTMF digit")]
    NotDtmfEvent(u8),
    #[error("DTMF INFO body is not UTF-8")]
    NotUtf8,
    #[error("DTMF INFO body has no Signal")]
    MissingSignal,
    #[error("DTMF INFO signal {0:?} is not a digit")]
    BadSignal(String),
    #[error("DTMF INFO duration {0:?} is not a number of milliseconds")]
    BadDuration(String),
    #[error("content type {0:?} is not application/dtmf-relay or application/dtmf")]
    UnsupportedContentType(String),
}

/// RFC 4733 §3.2 event code of a DTMF digit (lowercase `a-d` accepted).
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// The digit of an RFC 4733 event code 0–15 (16, flash, and others are not digits).
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes() {
        let all = "0123456789*#ABCD";
        for (i, d) in all.chars().enumerate() {
            assert_eq!(digit_to_event(d), Some(i as u8));
            assert_eq!(event_to_digit(i as u8), Some(d));
        }
        assert_eq!(digit_to_event('c'), Some(14));
        assert_eq!(digit_to_event('E'), None);
        assert_eq!(event_to_digit(16), None);
    }
}
