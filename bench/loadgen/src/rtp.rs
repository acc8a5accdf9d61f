//! RTP for the load generator: the 20 ms G.711 tone every call sends, the packet writer
//! (into a caller-owned buffer: nothing here allocates per packet) and the receive-side
//! statistics per call (loss by sequence, RFC 3550 jitter, late packets, echo round trips).
//!
//! A latency probe is an ordinary packet of the stream whose payload starts with
//! (offsets in the payload, after the 12-byte RTP header; integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | [`PROBE_MAGIC`] |
//! | 4..6 | the sender's RTP sequence number (relays rewrite the header's) |
//! | 6..10 | the reflector's turnaround in ns (u32, saturating): the time from its kernel receiving the probe to its `send_to` of the echo. The sender writes 0; a reflector that does not fill it in (SIPp's `-rtp_echo`) leaves 0 |
//!
//! The rest is the tone. With the sender's send time T1 and kernel receive time T4 of the
//! echo, the network round trip is (T4 − T1) − turnaround (RFC 5357 §4.2 style): what the
//! path and any relay on it took, without the reflector's scheduling or the sender's wake-up.

use std::time::Instant;

use crate::hist::Histogram;

pub const HEADER_LEN: usize = 12;
/// Samples (= payload bytes for G.711) in one 20 ms packet at 8 kHz.
pub const SAMPLES: usize = 160;
pub const PACKET_LEN: usize = HEADER_LEN + SAMPLES;
pub const PTIME: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    pub fn rtpmap(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
        }
    }
}

/// 440 Hz at 8 kHz repeats every 200 samples (11 periods); 20 ms packets of 160 samples
/// therefore cycle through five distinct payloads, encoded once here.
pub struct Tone {
    payloads: [[u8; SAMPLES]; 5],
}

impl Tone {
    pub fn new(codec: Codec, freq_hz: f64, amplitude: i16) -> Tone {
        let mut payloads = [[0u8; SAMPLES]; 5];
        for (p, payload) in payloads.iter_mut().enumerate() {
            let pcm: Vec<i16> = (0..SAMPLES)
                .map(|i| {
                    let n = (p * SAMPLES + i) as f64;
                    (f64::from(amplitude)
                        * (2.0 * std::f64::consts::PI * freq_hz * n / 8000.0).sin())
                        as i16
                })
                .collect();
            let enc = match codec {
                Codec::Pcmu => switchboard_media::g711::encode_ulaw(&pcm),
                Codec::Pcma => switchboard_media::g711::encode_alaw(&pcm),
            };
            payload.copy_from_slice(&enc);
        }
        Tone { payloads }
    }

    pub fn payload(&self, packet_index: u64) -> &[u8; SAMPLES] {
        &self.payloads[(packet_index % 5) as usize]
    }
}

/// One call's outgoing stream.
pub struct Sender {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    /// Packets sent so far (also the tone phase).
    pub sent: u64,
    phase: u64,
}

impl Sender {
    pub fn new(ssrc: u32, seq: u16, timestamp: u32, phase: u64) -> Sender {
        Sender {
            ssrc,
            seq,
            timestamp,
            sent: 0,
            phase,
        }
    }

    /// Writes the next packet into `buf` and advances the stream. A `probe` packet carries
    /// [`PROBE_MAGIC`], its sequence number and a zero turnaround in its first payload bytes
    /// (see the module docs), so that its echo is recognised through a relay that rewrites
    /// SSRC, sequence and timestamp but forwards the payload untouched.
    pub fn next_packet(
        &mut self,
        tone: &Tone,
        pt: u8,
        probe: bool,
        buf: &mut [u8; PACKET_LEN],
    ) -> u16 {
        let marker = if self.sent == 0 { 0x80 } else { 0 };
        buf[0] = 0x80;
        buf[1] = marker | (pt & 0x7f);
        buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        buf[HEADER_LEN..].copy_from_slice(tone.payload(self.phase + self.sent));
        if probe {
            buf[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&PROBE_MAGIC);
            buf[HEADER_LEN + 4..HEADER_LEN + 6].copy_from_slice(&self.seq.to_be_bytes());
            buf[HEADER_LEN + 6..HEADER_LEN + PROBE_LEN].fill(0);
        }
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(SAMPLES as u32);
        self.sent += 1;
        seq
    }
}

/// The fields of an RTP header the statistics need.
pub struct Header {
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

pub fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER_LEN || b[0] >> 6 != 2 {
        return None;
    }
    Some(Header {
        seq: u16::from_be_bytes([b[2], b[3]]),
        timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
    })
}

const RTT_RING: usize = 128;
/// First payload bytes of a probe packet (then its sequence number, 2 bytes, and the
/// reflector's turnaround, 4 bytes; see the module docs).
pub const PROBE_MAGIC: [u8; 4] = [0x53, 0x42, 0x4c, 0x47];
/// Payload bytes a probe's fields take.
pub const PROBE_LEN: usize = 10;
const TURNAROUND: std::ops::Range<usize> = HEADER_LEN + 6..HEADER_LEN + PROBE_LEN;

/// The fields of a probe packet (whole datagram, header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The sender's sequence number.
    pub seq: u16,
    /// The reflector's turnaround in ns (0: not reported).
    pub turnaround_ns: u32,
}

/// Whether the datagram is a probe (room for all its fields and the magic).
pub fn is_probe(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN + PROBE_LEN && packet[HEADER_LEN..HEADER_LEN + 4] == PROBE_MAGIC
}

pub fn parse_probe(packet: &[u8]) -> Option<Probe> {
    if !is_probe(packet) {
        return None;
    }
    let p = &packet[HEADER_LEN..];
    Some(Probe {
        seq: u16::from_be_bytes([p[4], p[5]]),
        turnaround_ns: u32::from_be_bytes([p[6], p[7], p[8], p[9]]),
    })
}

/// The reflector's side: writes its turnaround (saturating at u32::MAX ns, 4.3 s) into a
/// probe about to be echoed. `packet` must be a probe ([`is_probe`]).
pub fn write_turnaround(packet: &mut [u8], turnaround_ns: u64) {
    let ns = u32::try_from(turnaround_ns).unwrap_or(u32::MAX);
    packet[TURNAROUND].copy_from_slice(&ns.to_be_bytes());
}

/// The network round trip in ns: (T4 − T1) − turnaround, with T1 the send time and T4
/// the kernel's receive time of the echo, both realtime ns. Negative when the clocks
/// disagree (a step of the realtime clock between T1 and T4) or the turnaround is wrong.
pub fn net_round_trip_ns(sent_ns: u64, received_ns: u64, turnaround_ns: u32) -> i64 {
    received_ns as i64 - sent_ns as i64 - i64::from(turnaround_ns)
}

/// What all calls' probes add up to.
pub struct ProbeStats {
    /// Userspace send to userspace receive (both generators' scheduling included).
    pub rtt: Histogram,
    /// Kernel-stamped round trip minus the reflector's turnaround ([`net_round_trip_ns`]).
    pub net_rtt: Histogram,
    /// The reflector's turnaround as it reported it.
    pub turnaround: Histogram,
    /// Net round trips below zero (not recorded in `net_rtt`).
    pub net_negative: u64,
    /// Echoed probes without a kernel receive time (not in `net_rtt`).
    pub unstamped: u64,
}

impl Default for ProbeStats {
    fn default() -> Self {
        ProbeStats {
            rtt: Histogram::default(),
            net_rtt: Histogram::fine(),
            turnaround: Histogram::fine(),
            net_negative: 0,
            unstamped: 0,
        }
    }
}

impl ProbeStats {
    /// One echoed probe: `sent` (Instant, realtime ns) at our send, `now` when userspace
    /// saw the echo, `received_ns` the kernel's stamp of it.
    fn record(
        &mut self,
        sent: (Instant, u64),
        now: Instant,
        received_ns: Option<u64>,
        turnaround_ns: u32,
    ) {
        self.rtt.record(now.saturating_duration_since(sent.0));
        let Some(t4) = received_ns else {
            self.unstamped += 1;
            return;
        };
        self.turnaround.record_us(u64::from(turnaround_ns) / 1000);
        let net = net_round_trip_ns(sent.1, t4, turnaround_ns);
        if net < 0 {
            self.net_negative += 1;
        } else {
            self.net_rtt.record_us(net as u64 / 1000);
        }
    }
}

/// Receive statistics of one call. Loss follows RFC 3550 A.3 (expected from the extended
/// highest sequence number, per SSRC segment); jitter is RFC 3550 6.4.1 in timestamp units.
pub struct Receiver {
    ssrc: Option<u32>,
    base_ext: i64,
    max_ext: i64,
    /// Packets expected in earlier SSRC segments (the sender changed its SSRC).
    expected_before: u64,
    pub received: u64,
    pub ssrc_changes: u64,
    jitter: f64,
    last_transit: Option<i64>,
    /// Packets that came more than one packet time plus the late bound after the previous
    /// one (a hole in the 20 ms cadence). Not by transit: a mixer that skips a tick may
    /// not advance its timestamps, which would make every later packet "late".
    pub late: u64,
    last_arrival: Option<Instant>,
    // Echo round trips: send time of our own recent probes (monotonic, and realtime ns
    // for the kernel-stamped round trip), by sequence number.
    sent_at: [Option<(Instant, u64)>; RTT_RING],
    sent_seq: [u16; RTT_RING],
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver {
            ssrc: None,
            base_ext: 0,
            max_ext: 0,
            expected_before: 0,
            received: 0,
            ssrc_changes: 0,
            jitter: 0.0,
            last_transit: None,
            late: 0,
            last_arrival: None,
            sent_at: [None; RTT_RING],
            sent_seq: [0; RTT_RING],
        }
    }
}

/// Where a receiver adds what all calls share.
pub struct Shared<'a> {
    pub epoch: Instant,
    /// Inter-arrival time above which a packet counts as late (packet time + bound).
    pub late_bound: std::time::Duration,
    pub interarrival: &'a mut Histogram,
    pub probes: &'a mut ProbeStats,
}

impl Receiver {
    /// Notes that our probe `seq` left at `at`, `at_ns` on the realtime clock (read right
    /// before its `send`), for echo round trips.
    pub fn note_sent(&mut self, seq: u16, at: Instant, at_ns: u64) {
        let i = seq as usize % RTT_RING;
        self.sent_at[i] = Some((at, at_ns));
        self.sent_seq[i] = seq;
    }

    /// `packet` is the whole datagram (header included), `now` when userspace got it and
    /// `received_ns` the kernel's receive stamp (realtime ns) if the socket has them.
    pub fn handle_packet(
        &mut self,
        packet: &[u8],
        now: Instant,
        received_ns: Option<u64>,
        shared: &mut Shared<'_>,
    ) {
        let Some(h) = parse_header(packet) else {
            return;
        };
        if let Some(probe) = parse_probe(packet) {
            // One of our probes back (an echo): round trip by our sequence number.
            let i = probe.seq as usize % RTT_RING;
            if self.sent_seq[i] == probe.seq {
                if let Some(sent) = self.sent_at[i].take() {
                    shared
                        .probes
                        .record(sent, now, received_ns, probe.turnaround_ns);
                }
            }
        }
        if self.ssrc != Some(h.ssrc) {
            if self.ssrc.is_some() {
                self.ssrc_changes += 1;
                self.expected_before += self.segment_expected();
            }
            self.ssrc = Some(h.ssrc);
            self.base_ext = i64::from(h.seq);
            self.max_ext = i64::from(h.seq);
            self.last_transit = None;
        } else {
            let delta = i64::from(h.seq.wrapping_sub(self.max_ext as u16) as i16);
            if delta > 0 {
                self.max_ext += delta;
            }
        }
        self.received += 1;
        let arrival_ts =
            (now.saturating_duration_since(shared.epoch).as_micros() as i64) * 8 / 1000;
        let transit = arrival_ts - i64::from(h.timestamp);
        if let Some(last) = self.last_transit {
            // Timestamps wrap at 2^32: the difference of consecutive transits stays small.
            let d = ((transit - last) as i32).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        if let Some(prev) = self.last_arrival {
            let gap = now.saturating_duration_since(prev);
            shared.interarrival.record(gap);
            if gap > shared.late_bound {
                self.late += 1;
            }
        }
        self.last_arrival = Some(now);
    }

    fn segment_expected(&self) -> u64 {
        if self.ssrc.is_none() {
            0
        } else {
            (self.max_ext - self.base_ext + 1).max(0) as u64
        }
    }

    pub fn expected(&self) -> u64 {
        self.expected_before + self.segment_expected()
    }

    /// Expected minus received, never below zero (duplicates can make it negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter / 8.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bytes(seq: u16, timestamp: u32, ssrc: u32) -> [u8; PACKET_LEN] {
        let mut s = Sender::new(ssrc, seq, timestamp, 0);
        let mut b = [0u8; PACKET_LEN];
        s.next_packet(&Tone::new(Codec::Pcmu, 440.0, 1000), 0, false, &mut b);
        b
    }

    fn shared<'a>(epoch: Instant, ia: &'a mut Histogram, probes: &'a mut ProbeStats) -> Shared<'a> {
        Shared {
            epoch,
            late_bound: Duration::from_millis(40),
            interarrival: ia,
            probes,
        }
    }

    #[test]
    fn loss_counts_gaps_across_wrap() {
        let epoch = Instant::now();
        let (mut ia, mut rtt) = (Histogram::default(), ProbeStats::default());
        let mut sh = shared(epoch, &mut ia, &mut rtt);
        let mut r = Receiver::default();
        // 65534, 65535, (0 lost), 1, 2
        for (k, seq) in [65534u16, 65535, 1, 2].into_iter().enumerate() {
            let p = bytes(seq, 160 * k as u32, 9);
            r.handle_packet(&p, epoch + PTIME * k as u32, None, &mut sh);
        }
        assert_eq!(r.expected(), 5);
        assert_eq!(r.received, 4);
        assert_eq!(r.lost(), 1);
    }

    #[test]
    fn regular_stream_has_no_jitter_and_late_packets_are_counted() {
        let epoch = Instant::now();
        let (mut ia, mut rtt) = (Histogram::default(), ProbeStats::default());
        let mut sh = shared(epoch, &mut ia, &mut rtt);
        let mut r = Receiver::default();
        for k in 0..10u32 {
            r.handle_packet(
                &bytes(k as u16, 160 * k, 9),
                epoch + PTIME * k,
                None,
                &mut sh,
            );
        }
        assert!(r.jitter_ms() < 0.01, "{}", r.jitter_ms());
        assert_eq!(r.late, 0);
        // Packet 10 arrives 30 ms late: 50 ms after packet 9, more than 20 + 20 ms.
        let at = epoch + PTIME * 10 + Duration::from_millis(30);
        r.handle_packet(&bytes(10, 1600, 9), at, None, &mut sh);
        assert_eq!(r.late, 1);
        assert!(r.jitter_ms() > 1.0);
        assert_eq!(ia.count(), 10);
    }

    #[test]
    fn probe_round_trip_survives_header_rewrites() {
        let epoch = Instant::now();
        let (mut ia, mut rtt) = (Histogram::default(), ProbeStats::default());
        let tone = Tone::new(Codec::Pcma, 440.0, 4000);
        let mut s = Sender::new(7, 42, 0, 0);
        let mut r = Receiver::default();
        let mut b = [0u8; PACKET_LEN];
        let seq = s.next_packet(&tone, 8, true, &mut b);
        // T1 on the realtime clock (simulated): 1.7e18 ns.
        let t1 = 1_700_000_000_000_000_000u64;
        r.note_sent(seq, epoch, t1);
        // A relay rewrites SSRC, sequence and timestamp; the payload passes untouched.
        b[2..12].copy_from_slice(&[0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
        // The reflector held it 250 µs; the kernel got the echo 290 µs after T1 and
        // userspace 300 µs after: the network took 40 µs.
        write_turnaround(&mut b, 250_000);
        {
            let mut sh = shared(epoch, &mut ia, &mut rtt);
            r.handle_packet(
                &b,
                epoch + Duration::from_micros(300),
                Some(t1 + 290_000),
                &mut sh,
            );
            // A packet that is no probe adds no sample.
            let plain = bytes(42, 0, 7);
            r.handle_packet(&plain, epoch + Duration::from_micros(400), None, &mut sh);
        }
        assert_eq!(rtt.rtt.count(), 1);
        assert_eq!(rtt.rtt.max_us(), 300);
        assert_eq!(rtt.net_rtt.count(), 1);
        assert_eq!(rtt.net_rtt.max_us(), 40);
        assert_eq!(rtt.turnaround.max_us(), 250);
        assert_eq!((rtt.net_negative, rtt.unstamped), (0, 0));
    }

    #[test]
    fn probe_fields_encode_and_decode() {
        let tone = Tone::new(Codec::Pcmu, 440.0, 4000);
        let mut s = Sender::new(7, 0xbeef, 0, 0);
        let mut b = [0xffu8; PACKET_LEN];
        s.next_packet(&tone, 0, true, &mut b);
        // The sender zeroes the turnaround: an echo that does not fill it reports 0.
        assert_eq!(
            &b[HEADER_LEN..HEADER_LEN + PROBE_LEN],
            &[0x53, 0x42, 0x4c, 0x47, 0xbe, 0xef, 0, 0, 0, 0]
        );
        assert_eq!(
            parse_probe(&b),
            Some(Probe {
                seq: 0xbeef,
                turnaround_ns: 0
            })
        );
        write_turnaround(&mut b, 0x0102_0304);
        assert_eq!(&b[HEADER_LEN + 6..HEADER_LEN + 10], &[1, 2, 3, 4]);
        assert_eq!(parse_probe(&b).map(|p| p.turnaround_ns), Some(0x0102_0304));
        // Saturating: 5 s does not fit in a u32 of ns.
        write_turnaround(&mut b, 5_000_000_000);
        assert_eq!(parse_probe(&b).map(|p| p.turnaround_ns), Some(u32::MAX));
        // Only the magic makes a probe; a short packet is none.
        let plain = bytes(1, 0, 7);
        assert!(!is_probe(&plain));
        assert!(!is_probe(&b[..HEADER_LEN + PROBE_LEN - 1]));
        assert!(is_probe(&b[..HEADER_LEN + PROBE_LEN]));
    }

    #[test]
    fn net_round_trip_subtracts_the_turnaround() {
        let t1 = 1_700_000_000_123_456_789u64;
        // 1.5 ms from T1 to T4, of which the reflector held it 1.46 ms: 40 µs of network.
        assert_eq!(net_round_trip_ns(t1, t1 + 1_500_000, 1_460_000), 40_000);
        // No turnaround reported: the whole kernel-to-kernel round trip.
        assert_eq!(net_round_trip_ns(t1, t1 + 1_500_000, 0), 1_500_000);
        // A turnaround longer than the round trip (a clock step) is negative, not wrapped.
        assert_eq!(net_round_trip_ns(t1, t1 + 1_000, 2_000), -1_000);
        let mut p = ProbeStats::default();
        let now = Instant::now();
        p.record((now, t1), now, Some(t1 + 1_000), 2_000);
        p.record((now, t1), now, None, 0);
        assert_eq!(
            (
                p.net_rtt.count(),
                p.net_negative,
                p.unstamped,
                p.rtt.count()
            ),
            (0, 1, 1, 2)
        );
    }

    #[test]
    fn tone_is_not_silence_and_packets_advance() {
        let tone = Tone::new(Codec::Pcmu, 440.0, 4000);
        let silence = switchboard_media::g711::linear_to_ulaw(0);
        assert!(tone.payload(0).iter().any(|&b| b != silence));
        let mut s = Sender::new(1, 65535, 0, 0);
        let mut buf = [0u8; PACKET_LEN];
        assert_eq!(s.next_packet(&tone, 0, false, &mut buf), 65535);
        assert_eq!(buf[1], 0x80);
        assert_eq!(s.next_packet(&tone, 0, false, &mut buf), 0);
        assert_eq!(buf[1], 0);
        let h = parse_header(&buf).unwrap();
        assert_eq!((h.seq, h.timestamp, h.ssrc), (0, 160, 1));
    }
}
