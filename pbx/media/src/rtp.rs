//! RFC 3550 RTP packets: a zero-copy parsed view, a serializer, and in-place header
//! rewriting for forwarding without decoding. RTCP, receiver statistics and the relay's
//! SSRC/sequence/timestamp rewriter live in the submodules. Nothing here does I/O or reads
//! a clock; arrival times come in as `now`.
//!
//! Why our own parser rather than the `rtp-rs` crate: the fixed header is 12 bytes and the
//! whole grammar is ~60 lines; owning it gives typed errors in this crate's style, the
//! in-place setters the relay's hot path needs (rtp-rs only offers a builder that copies),
//! RTCP in the same shape, and no extra dependency to audit or fuzz separately.

pub mod rewrite;
pub mod rtcp;
pub mod stats;

pub use rewrite::{Rewritten, StreamRewriter};
pub use rtcp::{
    App, Goodbye, ReceiverReport, ReportBlock, RtcpError, RtcpPacket, SdesChunk, SdesItem,
    SenderReport,
};
pub use stats::ReceiverStats;

use thiserror::Error;

/// The only RTP version in use (RFC 3550 §5.1).
pub const RTP_VERSION: u8 = 2;
/// Length of the fixed header, without CSRCs or extension.
pub const RTP_HEADER_LEN: usize = 12;

/// Why bytes are not an RTP packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtpError {
    #[error("RTP packet of {len} bytes is shorter than its header ({needed} bytes)")]
    TooShort { len: usize, needed: usize },
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    #[error("RTP padding of {padding} bytes exceeds the {available} bytes after the header")]
    BadPadding { padding: usize, available: usize },
}

/// RFC 3550 §5.3.1 header extension: 16 profile-defined bits and the data words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    pub profile: u16,
    /// A multiple of 4 bytes.
    pub data: &'a [u8],
}

/// A parsed RTP packet borrowing the datagram. Parsing validates the structure once;
/// the accessors then read fixed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    header_len: usize,
    payload_end: usize,
}

impl<'a> RtpPacket<'a> {
    /// Parses and validates version, CSRC list, header extension and padding.
    pub fn parse(buf: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        if buf.len() < RTP_HEADER_LEN {
            return Err(RtpError::TooShort {
                len: buf.len(),
                needed: RTP_HEADER_LEN,
            });
        }
        let version = buf[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion(version));
        }
        let csrc_count = usize::from(buf[0] & 0x0F);
        let mut header_len = RTP_HEADER_LEN + 4 * csrc_count;
        if buf[0] & 0x10 != 0 {
            // Extension header: 2 bytes profile, 2 bytes length in 32-bit words.
            if buf.len() < header_len + 4 {
                return Err(RtpError::TooShort {
                    len: buf.len(),
                    needed: header_len + 4,
                });
            }
            let words = usize::from(u16::from_be_bytes([
                buf[header_len + 2],
                buf[header_len + 3],
            ]));
            header_len += 4 + 4 * words;
        }
        if buf.len() < header_len {
            return Err(RtpError::TooShort {
                len: buf.len(),
                needed: header_len,
            });
        }
        let mut payload_end = buf.len();
        if buf[0] & 0x20 != 0 {
            // RFC 3550 §5.1: the last octet counts the padding, itself included.
            let padding = usize::from(buf[buf.len() - 1]);
            let available = buf.len() - header_len;
            if padding == 0 || padding > available {
                return Err(RtpError::BadPadding { padding, available });
            }
            payload_end -= padding;
        }
        Ok(RtpPacket {
            buf,
            header_len,
            payload_end,
        })
    }

    pub fn version(&self) -> u8 {
        self.buf[0] >> 6
    }
    pub fn has_padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }
    pub fn has_extension(&self) -> bool {
        self.buf[0] & 0x10 != 0
    }
    pub fn csrc_count(&self) -> u8 {
        self.buf[0] & 0x0F
    }
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }
    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7F
    }
    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]])
    }
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let end = RTP_HEADER_LEN + 4 * usize::from(self.csrc_count());
        self.buf[RTP_HEADER_LEN..end]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
    pub fn extension(&self) -> Option<RtpExtension<'a>> {
        if !self.has_extension() {
            return None;
        }
        let at = RTP_HEADER_LEN + 4 * usize::from(self.csrc_count());
        Some(RtpExtension {
            profile: u16::from_be_bytes([self.buf[at], self.buf[at + 1]]),
            data: &self.buf[at + 4..self.header_len],
        })
    }
    /// Header length including CSRCs and extension: where the payload starts.
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// The payload without padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..self.payload_end]
    }
    /// Number of padding bytes (0 without the P bit).
    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.payload_end
    }
    /// The whole datagram.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// An owned copy of the header fields, for building a modified packet.
    pub fn header(&self) -> RtpHeader {
        RtpHeader {
            marker: self.marker(),
            payload_type: self.payload_type(),
            sequence: self.sequence(),
            timestamp: self.timestamp(),
            ssrc: self.ssrc(),
            csrcs: self.csrcs().collect(),
            extension: self.extension().map(|e| (e.profile, e.data.to_vec())),
            padding: self.padding_len() as u8,
        }
    }
}

/// The header of a packet to send; [`RtpHeader::write`] serializes it with a payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtpHeader {
    pub marker: bool,
    /// 7 bits; higher bits are dropped when writing.
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// At most 15 are written.
    pub csrcs: Vec<u32>,
    /// Profile bits and data; the data is zero-padded to a multiple of 4 bytes (and cut
    /// at 65535 words).
    pub extension: Option<(u16, Vec<u8>)>,
    /// Padding bytes to append (0 = no P bit), e.g. for SRTP block alignment.
    pub padding: u8,
}

impl RtpHeader {
    pub fn new(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32) -> RtpHeader {
        RtpHeader {
            payload_type,
            sequence,
            timestamp,
            ssrc,
            ..RtpHeader::default()
        }
    }

    pub fn with_marker(mut self, marker: bool) -> RtpHeader {
        self.marker = marker;
        self
    }

    /// Appends the packet (header, `payload`, padding) to `out`.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) {
        let csrcs = &self.csrcs[..self.csrcs.len().min(15)];
        let mut b0 = RTP_VERSION << 6 | csrcs.len() as u8;
        if self.padding > 0 {
            b0 |= 0x20;
        }
        if self.extension.is_some() {
            b0 |= 0x10;
        }
        out.push(b0);
        out.push(u8::from(self.marker) << 7 | (self.payload_type & 0x7F));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for csrc in csrcs {
            out.extend_from_slice(&csrc.to_be_bytes());
        }
        if let Some((profile, data)) = &self.extension {
            let words = data.len().div_ceil(4).min(usize::from(u16::MAX));
            out.extend_from_slice(&profile.to_be_bytes());
            out.extend_from_slice(&(words as u16).to_be_bytes());
            let data = &data[..data.len().min(words * 4)];
            out.extend_from_slice(data);
            out.resize(out.len() + (words * 4 - data.len()), 0);
        }
        out.extend_from_slice(payload);
        if self.padding > 0 {
            out.resize(out.len() + usize::from(self.padding) - 1, 0);
            out.push(self.padding);
        }
    }

    /// The packet as a new buffer.
    pub fn to_bytes(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(RTP_HEADER_LEN + 4 * self.csrcs.len() + payload.len());
        self.write(payload, &mut out);
        out
    }
}

fn check_fixed_header(buf: &[u8]) -> Result<(), RtpError> {
    if buf.len() < RTP_HEADER_LEN {
        return Err(RtpError::TooShort {
            len: buf.len(),
            needed: RTP_HEADER_LEN,
        });
    }
    Ok(())
}

/// Rewrites the SSRC of the packet in `buf` in place.
pub fn set_ssrc(buf: &mut [u8], ssrc: u32) -> Result<(), RtpError> {
    check_fixed_header(buf)?;
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Ok(())
}

/// Rewrites the sequence number in place.
pub fn set_sequence(buf: &mut [u8], sequence: u16) -> Result<(), RtpError> {
    check_fixed_header(buf)?;
    buf[2..4].copy_from_slice(&sequence.to_be_bytes());
    Ok(())
}

/// Rewrites the timestamp in place.
pub fn set_timestamp(buf: &mut [u8], timestamp: u32) -> Result<(), RtpError> {
    check_fixed_header(buf)?;
    buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
    Ok(())
}

/// Rewrites the 7-bit payload type in place, keeping the marker bit.
pub fn set_payload_type(buf: &mut [u8], payload_type: u8) -> Result<(), RtpError> {
    check_fixed_header(buf)?;
    buf[1] = (buf[1] & 0x80) | (payload_type & 0x7F);
    Ok(())
}

/// Sets or clears the marker bit in place.
pub fn set_marker(buf: &mut [u8], marker: bool) -> Result<(), RtpError> {
    check_fixed_header(buf)?;
    buf[1] = (buf[1] & 0x7F) | (u8::from(marker) << 7);
    Ok(())
}

/// RFC 5761 §4 demultiplexing of RTP and RTCP on one port: RTCP packet types 192–223
/// occupy the byte where RTP carries marker + payload type.
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PCMU packet as captured from a phone: V=2, PT 0, seq 0x1234, ts 0xDEADBEEF.
    const PCMU: [u8; 16] = [
        0x80, 0x00, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02, 0x03, 0x04, 0xFF, 0xFF, 0x7F,
        0x00,
    ];

    #[test]
    fn parse_fixed_header() {
        let p = RtpPacket::parse(&PCMU).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.marker() && !p.has_padding() && !p.has_extension());
        assert_eq!(p.payload_type(), 0);
        assert_eq!(p.sequence(), 0x1234);
        assert_eq!(p.timestamp(), 0xDEAD_BEEF);
        assert_eq!(p.ssrc(), 0x0102_0304);
        assert_eq!(p.payload(), &[0xFF, 0xFF, 0x7F, 0x00]);
        assert_eq!(p.csrcs().count(), 0);
        assert_eq!(p.header().to_bytes(p.payload()), PCMU);
    }

    #[test]
    fn print_then_parse_with_everything() {
        let header = RtpHeader {
            marker: true,
            payload_type: 101,
            sequence: 65535,
            timestamp: 7,
            ssrc: 0xCAFE_BABE,
            csrcs: vec![1, 2, 3],
            extension: Some((0xBEDE, vec![0x10, 0xAA, 0, 0, 0x21, 1, 2, 0])),
            padding: 4,
        };
        let bytes = header.to_bytes(b"\x05\x0a\x00\xa0");
        assert_eq!(bytes.len(), 12 + 12 + 4 + 8 + 4 + 4);
        assert_eq!(bytes[0], 0x80 | 0x20 | 0x10 | 3);
        assert_eq!(bytes[1], 0x80 | 101);
        let p = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [1, 2, 3]);
        let ext = p.extension().unwrap();
        assert_eq!(ext.profile, 0xBEDE);
        assert_eq!(ext.data.len(), 8);
        assert_eq!(p.payload(), b"\x05\x0a\x00\xa0");
        assert_eq!(p.padding_len(), 4);
        assert_eq!(p.header(), header);
    }

    #[test]
    fn extension_data_is_padded_to_words() {
        let mut h = RtpHeader::new(0, 1, 2, 3);
        h.extension = Some((1, vec![9, 9, 9]));
        let bytes = h.to_bytes(&[]);
        let p = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(p.extension().unwrap().data, &[9, 9, 9, 0]);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            RtpPacket::parse(&PCMU[..11]),
            Err(RtpError::TooShort {
                len: 11,
                needed: 12
            })
        );
        let mut v1 = PCMU;
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::BadVersion(1)));
        let mut csrc = PCMU;
        csrc[0] = 0x82; // two CSRCs need 20 bytes
        assert_eq!(
            RtpPacket::parse(&csrc),
            Err(RtpError::TooShort {
                len: 16,
                needed: 20
            })
        );
        let mut ext = PCMU;
        ext[0] = 0x90; // extension header of 0x7F00 words
        ext[14] = 0x7F;
        assert!(matches!(
            RtpPacket::parse(&ext),
            Err(RtpError::TooShort { .. })
        ));
        let mut pad = PCMU;
        pad[0] = 0xA0;
        pad[15] = 5; // 5 bytes of padding but only 4 after the header
        assert_eq!(
            RtpPacket::parse(&pad),
            Err(RtpError::BadPadding {
                padding: 5,
                available: 4
            })
        );
        pad[15] = 0;
        assert!(RtpPacket::parse(&pad).is_err());
        pad[15] = 4; // padding is the whole payload
        assert_eq!(RtpPacket::parse(&pad).unwrap().payload(), &[] as &[u8]);
    }

    #[test]
    fn in_place_rewrite() {
        let mut buf = PCMU;
        set_ssrc(&mut buf, 0xAABB_CCDD).unwrap();
        set_sequence(&mut buf, 7).unwrap();
        set_timestamp(&mut buf, 160).unwrap();
        set_marker(&mut buf, true).unwrap();
        set_payload_type(&mut buf, 8).unwrap();
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(
            (
                p.ssrc(),
                p.sequence(),
                p.timestamp(),
                p.marker(),
                p.payload_type()
            ),
            (0xAABB_CCDD, 7, 160, true, 8)
        );
        assert_eq!(p.payload(), &PCMU[12..]);
        assert!(set_ssrc(&mut [0u8; 4], 1).is_err());
    }

    #[test]
    fn rtcp_demultiplexing() {
        assert!(!is_rtcp(&PCMU));
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 201, 0, 1]));
        assert!(!is_rtcp(&[0x80]));
    }
}
