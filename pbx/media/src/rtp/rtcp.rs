//! RFC 3550 §6 RTCP: compound packet parsing (SR, RR, SDES, BYE, APP; other packet types
//! such as RFC 4585 feedback are skipped by their length and reported as `Unknown`) and
//! serialization, with builders for the SR/RR + SDES CNAME compounds a terminating leg
//! sends. The relay forwards foreign RTCP untouched; this module only needs to understand
//! what Switchboard itself produces and consumes.
//!
//! Parsing is lenient where real endpoints are (RFC 5506 reduced-size RTCP may start with
//! any type, profile extensions after SR/RR blocks are ignored) and strict where a wrong
//! length would make us read another packet's bytes.

use thiserror::Error;

pub const PT_SR: u8 = 200;
pub const PT_RR: u8 = 201;
pub const PT_SDES: u8 = 202;
pub const PT_BYE: u8 = 203;
pub const PT_APP: u8 = 204;
/// SDES item type CNAME (RFC 3550 §6.5.1).
pub const SDES_CNAME: u8 = 1;
/// A 5-bit count field limits report blocks / SDES chunks / BYE sources per packet.
pub const MAX_COUNT: usize = 31;

/// Why bytes are not a valid RTCP compound packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtcpError {
    #[error("RTCP packet at offset {offset} is truncated ({len} bytes, {needed} needed)")]
    Truncated {
        offset: usize,
        len: usize,
        needed: usize,
    },
    #[error("RTCP version {version} at offset {offset}, expected 2")]
    BadVersion { offset: usize, version: u8 },
    #[error("RTCP padding of {padding} bytes at offset {offset} exceeds the packet")]
    BadPadding { offset: usize, padding: usize },
    #[error("RTCP {packet_type} packet at offset {offset} is shorter than its count implies")]
    BadCount { offset: usize, packet_type: u8 },
    #[error("empty RTCP compound packet")]
    Empty,
}

/// RFC 3550 §6.4.1 reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost, a signed 24-bit value (negative with duplicates).
    pub cumulative_lost: i32,
    /// Cycles in the high 16 bits, highest sequence number in the low 16.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (0 if none).
    pub last_sr: u32,
    /// Delay since that SR in 1/65536 seconds.
    pub delay_since_last_sr: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderReport {
    pub ssrc: u32,
    /// 64-bit NTP timestamp (seconds since 1900 in the high half, fraction in the low).
    pub ntp_timestamp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
    pub reports: Vec<ReportBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiverReport {
    pub ssrc: u32,
    pub reports: Vec<ReportBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesItem {
    pub kind: u8,
    /// At most 255 bytes (longer values are cut when writing).
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdesChunk {
    pub ssrc: u32,
    pub items: Vec<SdesItem>,
}

impl SdesChunk {
    pub fn cname(ssrc: u32, cname: &str) -> SdesChunk {
        SdesChunk {
            ssrc,
            items: vec![SdesItem {
                kind: SDES_CNAME,
                value: cname.as_bytes().to_vec(),
            }],
        }
    }

    /// The CNAME item, if present and UTF-8.
    pub fn get_cname(&self) -> Option<&str> {
        self.items
            .iter()
            .find(|i| i.kind == SDES_CNAME)
            .and_then(|i| std::str::from_utf8(&i.value).ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Goodbye {
    pub sources: Vec<u32>,
    /// At most 255 bytes; RFC 3550 says UTF-8 but we keep bytes as received.
    pub reason: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct App {
    /// 5 bits.
    pub subtype: u8,
    pub ssrc: u32,
    pub name: [u8; 4],
    /// A multiple of 4 bytes (zero-padded when writing).
    pub data: Vec<u8>,
}

/// One packet of a compound.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpPacket {
    SenderReport(SenderReport),
    ReceiverReport(ReceiverReport),
    SourceDescription(Vec<SdesChunk>),
    Goodbye(Goodbye),
    App(App),
    /// A packet type this module does not interpret (e.g. 205/206 feedback), skipped by
    /// its length; kept whole so it can be forwarded or counted.
    Unknown {
        packet_type: u8,
        count: u8,
        body: Vec<u8>,
    },
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_report_block(b: &[u8]) -> ReportBlock {
    // Sign-extend the 24-bit cumulative loss.
    let lost = i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8;
    ReportBlock {
        ssrc: be32(b, 0),
        fraction_lost: b[4],
        cumulative_lost: lost,
        extended_highest_seq: be32(b, 8),
        jitter: be32(b, 12),
        last_sr: be32(b, 16),
        delay_since_last_sr: be32(b, 20),
    }
}

fn parse_report_blocks(
    body: &[u8],
    count: usize,
    offset: usize,
    packet_type: u8,
) -> Result<Vec<ReportBlock>, RtcpError> {
    if body.len() < 24 * count {
        return Err(RtcpError::BadCount {
            offset,
            packet_type,
        });
    }
    Ok(body
        .chunks_exact(24)
        .take(count)
        .map(parse_report_block)
        .collect())
}

fn parse_sdes(body: &[u8], count: usize, offset: usize) -> Result<Vec<SdesChunk>, RtcpError> {
    let bad = RtcpError::BadCount {
        offset,
        packet_type: PT_SDES,
    };
    let mut chunks = Vec::with_capacity(count.min(MAX_COUNT));
    let mut at = 0;
    for _ in 0..count {
        if body.len() < at + 4 {
            return Err(bad);
        }
        let mut chunk = SdesChunk {
            ssrc: be32(body, at),
            items: Vec::new(),
        };
        at += 4;
        loop {
            let Some(&kind) = body.get(at) else {
                return Err(bad);
            };
            if kind == 0 {
                // END: skip to the next 32-bit boundary (RFC 3550 §6.5).
                at = (at + 4) & !3;
                break;
            }
            let Some(&len) = body.get(at + 1) else {
                return Err(bad);
            };
            let end = at + 2 + usize::from(len);
            if body.len() < end {
                return Err(bad);
            }
            chunk.items.push(SdesItem {
                kind,
                value: body[at + 2..end].to_vec(),
            });
            at = end;
        }
        chunks.push(chunk);
    }
    Ok(chunks)
}

impl RtcpPacket {
    /// Parses a compound packet into its parts, in order.
    pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
        if buf.is_empty() {
            return Err(RtcpError::Empty);
        }
        let mut packets = Vec::new();
        let mut offset = 0;
        while offset < buf.len() {
            let rest = &buf[offset..];
            if rest.len() < 4 {
                return Err(RtcpError::Truncated {
                    offset,
                    len: rest.len(),
                    needed: 4,
                });
            }
            let version = rest[0] >> 6;
            if version != 2 {
                return Err(RtcpError::BadVersion { offset, version });
            }
            let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
            if rest.len() < len {
                return Err(RtcpError::Truncated {
                    offset,
                    len: rest.len(),
                    needed: len,
                });
            }
            let mut body = &rest[4..len];
            if rest[0] & 0x20 != 0 {
                let padding = usize::from(rest[len - 1]);
                if padding == 0 || padding > body.len() {
                    return Err(RtcpError::BadPadding { offset, padding });
                }
                body = &body[..body.len() - padding];
            }
            packets.push(Self::parse_one(rest[0] & 0x1F, rest[1], body, offset)?);
            offset += len;
        }
        Ok(packets)
    }

    fn parse_one(
        count: u8,
        packet_type: u8,
        body: &[u8],
        offset: usize,
    ) -> Result<Self, RtcpError> {
        let n = usize::from(count);
        let short = RtcpError::BadCount {
            offset,
            packet_type,
        };
        Ok(match packet_type {
            PT_SR => {
                if body.len() < 24 {
                    return Err(short);
                }
                RtcpPacket::SenderReport(SenderReport {
                    ssrc: be32(body, 0),
                    ntp_timestamp: u64::from(be32(body, 4)) << 32 | u64::from(be32(body, 8)),
                    rtp_timestamp: be32(body, 12),
                    packet_count: be32(body, 16),
                    octet_count: be32(body, 20),
                    reports: parse_report_blocks(&body[24..], n, offset, packet_type)?,
                })
            }
            PT_RR => {
                if body.len() < 4 {
                    return Err(short);
                }
                RtcpPacket::ReceiverReport(ReceiverReport {
                    ssrc: be32(body, 0),
                    reports: parse_report_blocks(&body[4..], n, offset, packet_type)?,
                })
            }
            PT_SDES => RtcpPacket::SourceDescription(parse_sdes(body, n, offset)?),
            PT_BYE => {
                if body.len() < 4 * n {
                    return Err(short);
                }
                let sources = body.chunks_exact(4).take(n).map(|c| be32(c, 0)).collect();
                let rest = &body[4 * n..];
                let reason = match rest.first() {
                    Some(&len) if len > 0 => {
                        let end = 1 + usize::from(len);
                        if rest.len() < end {
                            return Err(short);
                        }
                        Some(rest[1..end].to_vec())
                    }
                    _ => None,
                };
                RtcpPacket::Goodbye(Goodbye { sources, reason })
            }
            PT_APP => {
                if body.len() < 8 {
                    return Err(short);
                }
                RtcpPacket::App(App {
                    subtype: count,
                    ssrc: be32(body, 0),
                    name: [body[4], body[5], body[6], body[7]],
                    data: body[8..].to_vec(),
                })
            }
            _ => RtcpPacket::Unknown {
                packet_type,
                count,
                body: body.to_vec(),
            },
        })
    }

    /// Appends this packet to `out`. Counts above 31 and over-long items are cut so the
    /// output is always well-formed.
    pub fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0x80, 0, 0, 0]);
        let (count, packet_type) = match self {
            RtcpPacket::SenderReport(sr) => {
                for word in [
                    sr.ssrc,
                    (sr.ntp_timestamp >> 32) as u32,
                    sr.ntp_timestamp as u32,
                    sr.rtp_timestamp,
                    sr.packet_count,
                    sr.octet_count,
                ] {
                    out.extend_from_slice(&word.to_be_bytes());
                }
                (write_report_blocks(&sr.reports, out), PT_SR)
            }
            RtcpPacket::ReceiverReport(rr) => {
                out.extend_from_slice(&rr.ssrc.to_be_bytes());
                (write_report_blocks(&rr.reports, out), PT_RR)
            }
            RtcpPacket::SourceDescription(chunks) => {
                let chunks = &chunks[..chunks.len().min(MAX_COUNT)];
                for chunk in chunks {
                    out.extend_from_slice(&chunk.ssrc.to_be_bytes());
                    for item in &chunk.items {
                        let value = &item.value[..item.value.len().min(255)];
                        out.push(item.kind);
                        out.push(value.len() as u8);
                        out.extend_from_slice(value);
                    }
                    // END item plus zero padding to the next word (at least one zero).
                    out.push(0);
                    pad_to_word(out, start);
                }
                (chunks.len(), PT_SDES)
            }
            RtcpPacket::Goodbye(bye) => {
                let sources = &bye.sources[..bye.sources.len().min(MAX_COUNT)];
                for s in sources {
                    out.extend_from_slice(&s.to_be_bytes());
                }
                if let Some(reason) = bye.reason.as_ref().filter(|r| !r.is_empty()) {
                    let reason = &reason[..reason.len().min(255)];
                    out.push(reason.len() as u8);
                    out.extend_from_slice(reason);
                    pad_to_word(out, start);
                }
                (sources.len(), PT_BYE)
            }
            RtcpPacket::App(app) => {
                out.extend_from_slice(&app.ssrc.to_be_bytes());
                out.extend_from_slice(&app.name);
                out.extend_from_slice(&app.data);
                pad_to_word(out, start);
                (usize::from(app.subtype & 0x1F), PT_APP)
            }
            RtcpPacket::Unknown {
                packet_type,
                count,
                body,
            } => {
                out.extend_from_slice(body);
                pad_to_word(out, start);
                (usize::from(count & 0x1F), *packet_type)
            }
        };
        // Lengths beyond 16 bits cannot be expressed; only absurd inputs reach that.
        let words = ((out.len() - start) / 4 - 1).min(usize::from(u16::MAX));
        out.truncate(start + 4 * (words + 1));
        out[start] = 0x80 | count as u8;
        out[start + 1] = packet_type;
        out[start + 2..start + 4].copy_from_slice(&(words as u16).to_be_bytes());
    }

    /// Serializes a compound packet.
    pub fn compound_to_bytes(packets: &[RtcpPacket]) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        for p in packets {
            p.write(&mut out);
        }
        out
    }
}

fn write_report_blocks(reports: &[ReportBlock], out: &mut Vec<u8>) -> usize {
    let reports = &reports[..reports.len().min(MAX_COUNT)];
    for r in reports {
        out.extend_from_slice(&r.ssrc.to_be_bytes());
        out.push(r.fraction_lost);
        let lost = r.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF);
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        for word in [
            r.extended_highest_seq,
            r.jitter,
            r.last_sr,
            r.delay_since_last_sr,
        ] {
            out.extend_from_slice(&word.to_be_bytes());
        }
    }
    reports.len()
}

fn pad_to_word(out: &mut Vec<u8>, start: usize) {
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
}

/// The compound a sending leg emits every report interval: SR then SDES CNAME
/// (RFC 3550 §6.1: every compound carries a CNAME).
pub fn build_sr(sr: SenderReport, cname: &str) -> Vec<u8> {
    let ssrc = sr.ssrc;
    RtcpPacket::compound_to_bytes(&[
        RtcpPacket::SenderReport(sr),
        RtcpPacket::SourceDescription(vec![SdesChunk::cname(ssrc, cname)]),
    ])
}

/// The compound a receive-only leg emits: RR then SDES CNAME.
pub fn build_rr(rr: ReceiverReport, cname: &str) -> Vec<u8> {
    let ssrc = rr.ssrc;
    RtcpPacket::compound_to_bytes(&[
        RtcpPacket::ReceiverReport(rr),
        RtcpPacket::SourceDescription(vec![SdesChunk::cname(ssrc, cname)]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> ReportBlock {
        ReportBlock {
            ssrc: 0x1111_2222,
            fraction_lost: 25,
            cumulative_lost: -3,
            extended_highest_seq: 0x0001_0005,
            jitter: 17,
            last_sr: 0xAABB_CCDD,
            delay_since_last_sr: 65536,
        }
    }

    /// A hand-assembled SR + SDES compound (RFC 3550 §6.4.1 / §6.5 layout).
    const SR_SDES: [u8; 68] = [
        0x81, 200, 0, 12, // V=2, RC=1, SR, length 12 words
        0, 0, 0, 1, // SSRC
        0xE5, 0x4F, 0x2C, 0x00, 0x80, 0, 0, 0, // NTP
        0, 0, 0x03, 0x20, // RTP ts 800
        0, 0, 0, 5, // packets
        0, 0, 3, 0x20, // octets 800
        0x11, 0x11, 0x22, 0x22, 25, 0xFF, 0xFF, 0xFD, // block: ssrc, fraction, lost -3
        0, 1, 0, 5, 0, 0, 0, 17, 0xAA, 0xBB, 0xCC, 0xDD, 0, 1, 0, 0, //
        0x81, 202, 0, 3, // SDES, SC=1, length 3
        0, 0, 0, 1, 1, 5, b'a', b'@', b'b', b'.', b'c', 0, // CNAME "a@b.c", END
    ];

    #[test]
    fn parse_sr_with_sdes() {
        let packets = RtcpPacket::parse_compound(&SR_SDES).unwrap();
        assert_eq!(packets.len(), 2);
        let RtcpPacket::SenderReport(sr) = &packets[0] else {
            panic!("not an SR: {:?}", packets[0]);
        };
        assert_eq!(sr.ssrc, 1);
        assert_eq!(sr.ntp_timestamp, 0xE54F_2C00_8000_0000);
        assert_eq!(
            (sr.rtp_timestamp, sr.packet_count, sr.octet_count),
            (800, 5, 800)
        );
        assert_eq!(sr.reports, [block()]);
        let RtcpPacket::SourceDescription(chunks) = &packets[1] else {
            panic!("not SDES");
        };
        assert_eq!(chunks[0].get_cname(), Some("a@b.c"));
        assert_eq!(RtcpPacket::compound_to_bytes(&packets), SR_SDES);
    }

    #[test]
    fn build_sr_and_rr_round_trip() {
        let sr = SenderReport {
            ssrc: 1,
            ntp_timestamp: 0xE54F_2C00_8000_0000,
            rtp_timestamp: 800,
            packet_count: 5,
            octet_count: 800,
            reports: vec![block()],
        };
        assert_eq!(build_sr(sr, "a@b.c"), SR_SDES);
        let rr = ReceiverReport {
            ssrc: 9,
            reports: vec![block(), ReportBlock::default()],
        };
        let bytes = build_rr(rr.clone(), "switchboard");
        assert_eq!(bytes.len() % 4, 0);
        let packets = RtcpPacket::parse_compound(&bytes).unwrap();
        assert_eq!(packets[0], RtcpPacket::ReceiverReport(rr));
        assert_eq!(
            packets[1],
            RtcpPacket::SourceDescription(vec![SdesChunk::cname(9, "switchboard")])
        );
    }

    #[test]
    fn bye_app_and_unknown_types() {
        let packets = vec![
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: 5,
                reports: vec![],
            }),
            RtcpPacket::Unknown {
                packet_type: 206,
                count: 1,
                body: vec![0, 0, 0, 5, 0, 0, 0, 6],
            },
            RtcpPacket::App(App {
                subtype: 3,
                ssrc: 5,
                name: *b"SWBD",
                data: vec![1, 2, 3, 4],
            }),
            RtcpPacket::Goodbye(Goodbye {
                sources: vec![5, 6],
                reason: Some(b"hangup".to_vec()),
            }),
        ];
        let bytes = RtcpPacket::compound_to_bytes(&packets);
        // BYE: header + 2 sources + len byte + "hangup" + 1 pad = 4 + 8 + 8.
        assert_eq!(
            &bytes[bytes.len() - 20..bytes.len() - 16],
            &[0x82, 203, 0, 4]
        );
        assert_eq!(RtcpPacket::parse_compound(&bytes).unwrap(), packets);
    }

    #[test]
    fn empty_rr_is_eight_bytes() {
        let bytes = RtcpPacket::compound_to_bytes(&[RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: 0x0102_0304,
            reports: vec![],
        })]);
        assert_eq!(bytes, [0x80, 201, 0, 1, 1, 2, 3, 4]);
    }

    #[test]
    fn padding_on_last_packet() {
        // RR with 4 bytes of padding (P bit, length 2 words).
        let bytes = [0xA0, 201, 0, 2, 0, 0, 0, 7, 0, 0, 0, 4];
        let packets = RtcpPacket::parse_compound(&bytes).unwrap();
        assert_eq!(
            packets,
            [RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: 7,
                reports: vec![]
            })]
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(RtcpPacket::parse_compound(&[]), Err(RtcpError::Empty));
        assert!(matches!(
            RtcpPacket::parse_compound(&[0x80, 201, 0]),
            Err(RtcpError::Truncated { .. })
        ));
        assert!(matches!(
            RtcpPacket::parse_compound(&[0x40, 201, 0, 0]),
            Err(RtcpError::BadVersion { version: 1, .. })
        ));
        // Length says 3 words, 8 bytes present.
        assert!(matches!(
            RtcpPacket::parse_compound(&[0x80, 201, 0, 2, 0, 0, 0, 1]),
            Err(RtcpError::Truncated { needed: 12, .. })
        ));
        // RC=1 but no block.
        assert!(matches!(
            RtcpPacket::parse_compound(&[0x81, 201, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::BadCount { .. })
        ));
        // SDES item runs past the packet.
        assert!(matches!(
            RtcpPacket::parse_compound(&[0x81, 202, 0, 2, 0, 0, 0, 1, 1, 9, b'x', 0]),
            Err(RtcpError::BadCount { .. })
        ));
        // Padding larger than the body.
        assert!(matches!(
            RtcpPacket::parse_compound(&[0xA0, 201, 0, 1, 0, 0, 0, 9]),
            Err(RtcpError::BadPadding { .. })
        ));
    }

    #[test]
    fn cumulative_loss_is_clamped_to_24_bits() {
        let mut b = block();
        b.cumulative_lost = 10_000_000;
        let rr = RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: 1,
            reports: vec![b],
        });
        let parsed = RtcpPacket::parse_compound(&RtcpPacket::compound_to_bytes(&[rr])).unwrap();
        let RtcpPacket::ReceiverReport(rr) = &parsed[0] else {
            panic!()
        };
        assert_eq!(rr.reports[0].cumulative_lost, 0x7F_FFFF);
    }
}
