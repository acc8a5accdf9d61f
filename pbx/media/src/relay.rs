//! The per-call media relay: two legs (A toward the caller, B toward the callee), each
//! with its own local ports, and the rules that move media between them. Pure: packets,
//! configuration changes and `now` go in; packets to send, events and the next deadline
//! come out (the runtime owns the sockets).
//!
//! Drive contract: feed [`MediaSession::handle_packet`] / [`MediaSession::configure_leg`] /
//! [`MediaSession::handle_timeout`] (when [`MediaSession::poll_timeout`] passes), then drain
//! [`MediaSession::poll_transmit`] and [`MediaSession::poll_event`].
//!
//! Rules it must keep: a leg only ever receives one continuous outgoing stream from us (our
//! SSRC, sequence and timestamp run on across re-INVITEs and source switches); a source
//! other than the latched one never reaches the other leg; nothing is sent to a leg that
//! said it does not receive (sendonly/inactive).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Which side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    A,
    B,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }

    fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Rtp,
    Rtcp,
}

/// The audio format negotiated on a leg (from SDP: rtpmap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFormat {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: u8,
    pub fmtp: Option<String>,
}

impl PayloadFormat {
    /// Same codec on both sides: packets can be forwarded without decoding.
    pub fn same_codec(&self, other: &PayloadFormat) -> bool {
        self.encoding.eq_ignore_ascii_case(&other.encoding) && self.clock_rate == other.clock_rate
    }
}

/// What the offer/answer on one leg settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegConfig {
    /// Where the peer said it receives RTP (c=/m=); replaced by the latched source.
    pub remote_rtp: Option<SocketAddr>,
    pub remote_rtcp: Option<SocketAddr>,
    pub audio: Option<PayloadFormat>,
    /// RFC 4733 telephone-event payload type on this leg, if negotiated.
    pub telephone_event: Option<u8>,
    /// We may send media to this leg (it did not say sendonly/inactive).
    pub send: bool,
    /// The peer sends media to us (it did not say recvonly/inactive): the RTP timeout
    /// applies only then.
    pub recv: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// A leg that should send but has sent nothing for this long raises `RtpTimeout`.
    pub rtp_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            rtp_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTransmit {
    /// The leg whose socket sends it.
    pub leg: Leg,
    pub kind: PacketKind,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// Media from this leg now comes from `addr` (symmetric RTP / comedia).
    Latched { leg: Leg, addr: SocketAddr },
    /// No RTP from a leg that should be sending, for `SessionConfig::rtp_timeout`.
    RtpTimeout { leg: Leg },
}

/// Counters for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub packets_in: [u64; 2],
    pub packets_out: [u64; 2],
    pub malformed: u64,
    pub unexpected_source: u64,
    /// Packets that had nowhere to go (other leg unknown, on hold, or unknown payload).
    pub undeliverable: u64,
}

/// Our outgoing stream toward one leg: one SSRC, sequence and timestamp that continue
/// across input changes. Within a run of one input SSRC the input's deltas are kept (so
/// loss and reordering show through unchanged); at a switch the next packet continues
/// one sequence number and the elapsed time after our last one (RFC 3550 §5.1: the
/// timestamp advances with real time), as rtpengine and Asterisk do.
#[derive(Debug)]
struct OutStream {
    ssrc: u32,
    /// Input SSRC of the current run and the offsets mapping it onto ours.
    run: Option<Run>,
    last_seq: u16,
    last_ts: u32,
    last_sent: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    in_ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    clock_rate: u32,
}

impl OutStream {
    fn new() -> OutStream {
        OutStream {
            ssrc: rand::random(),
            run: None,
            last_seq: rand::random(),
            last_ts: rand::random(),
            last_sent: None,
        }
    }

    /// Maps an input packet's (ssrc, seq, ts) onto our stream.
    fn map(
        &mut self,
        in_ssrc: u32,
        seq: u16,
        ts: u32,
        clock_rate: u32,
        now: Instant,
    ) -> (u16, u32) {
        let same_run = self
            .run
            .is_some_and(|r| r.in_ssrc == in_ssrc && r.clock_rate == clock_rate);
        if !same_run {
            let elapsed = self
                .last_sent
                .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64);
            let advance = (elapsed * u64::from(clock_rate) / 1000).max(1) as u32;
            let want_seq = self.last_seq.wrapping_add(1);
            let want_ts = self.last_ts.wrapping_add(advance);
            self.run = Some(Run {
                in_ssrc,
                seq_offset: want_seq.wrapping_sub(seq),
                ts_offset: want_ts.wrapping_sub(ts),
                clock_rate,
            });
        }
        let run = self.run.expect("set above");
        let out_seq = seq.wrapping_add(run.seq_offset);
        let out_ts = ts.wrapping_add(run.ts_offset);
        // Track the newest packet sent (serial-number arithmetic for wrap-around).
        if self.last_sent.is_none() || (out_seq.wrapping_sub(self.last_seq) as i16) > 0 {
            self.last_seq = out_seq;
            self.last_ts = out_ts;
        }
        self.last_sent = Some(now);
        (out_seq, out_ts)
    }
}

#[derive(Debug)]
struct LegState {
    config: Option<LegConfig>,
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    last_rx: Option<Instant>,
    /// When the timeout clock started (configuration time, or the last packet).
    watch_since: Instant,
    timed_out: bool,
    out: OutStream,
}

impl LegState {
    fn new(now: Instant) -> LegState {
        LegState {
            config: None,
            latched_rtp: None,
            latched_rtcp: None,
            last_rx: None,
            watch_since: now,
            timed_out: false,
            out: OutStream::new(),
        }
    }

    fn rtp_destination(&self) -> Option<SocketAddr> {
        self.latched_rtp
            .or_else(|| self.config.as_ref().and_then(|c| c.remote_rtp))
    }

    fn rtcp_destination(&self) -> Option<SocketAddr> {
        self.latched_rtcp
            .or_else(|| self.config.as_ref().and_then(|c| c.remote_rtcp))
            .or_else(|| {
                self.rtp_destination()
                    .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
            })
    }

    fn may_send(&self) -> bool {
        self.config.as_ref().is_some_and(|c| c.send)
    }
}

/// The fixed RTP header fields the relay reads and rewrites (RFC 3550 §5.1).
struct RtpHeader {
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
}

fn read_rtp_header(data: &[u8]) -> Option<RtpHeader> {
    if data.len() < 12 || data[0] >> 6 != 2 {
        return None;
    }
    let csrc = usize::from(data[0] & 0x0f);
    if data.len() < 12 + 4 * csrc {
        return None;
    }
    Some(RtpHeader {
        payload_type: data[1] & 0x7f,
        sequence: u16::from_be_bytes([data[2], data[3]]),
        timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
    })
}

fn write_rtp_header(data: &mut [u8], payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32) {
    data[1] = (data[1] & 0x80) | (payload_type & 0x7f);
    data[2..4].copy_from_slice(&sequence.to_be_bytes());
    data[4..8].copy_from_slice(&timestamp.to_be_bytes());
    data[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// RTCP packets start with version 2 and a packet type of 192–223 (RFC 5761 §4).
fn looks_like_rtcp(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

pub struct MediaSession {
    config: SessionConfig,
    legs: [LegState; 2],
    transmits: VecDeque<MediaTransmit>,
    events: VecDeque<MediaEvent>,
    stats: SessionStats,
}

impl MediaSession {
    pub fn new(config: SessionConfig, now: Instant) -> MediaSession {
        MediaSession {
            config,
            legs: [LegState::new(now), LegState::new(now)],
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: SessionStats::default(),
        }
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Applies a (re-)negotiated configuration to a leg. A changed remote address drops
    /// the latch, so the peer's new source is learned again.
    pub fn configure_leg(&mut self, leg: Leg, config: LegConfig, now: Instant) {
        let state = &mut self.legs[leg.index()];
        let moved = state
            .config
            .as_ref()
            .is_none_or(|c| c.remote_rtp != config.remote_rtp);
        if moved {
            state.latched_rtp = None;
            state.latched_rtcp = None;
        }
        state.config = Some(config);
        state.watch_since = now;
        state.timed_out = false;
    }

    pub fn handle_packet(
        &mut self,
        leg: Leg,
        kind: PacketKind,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        match kind {
            PacketKind::Rtp => self.handle_rtp(leg, from, data, now),
            PacketKind::Rtcp => self.handle_rtcp(leg, from, data),
        }
    }

    fn accept_source(&mut self, leg: Leg, kind: PacketKind, from: SocketAddr) -> bool {
        let state = &mut self.legs[leg.index()];
        let latch = match kind {
            PacketKind::Rtp => &mut state.latched_rtp,
            PacketKind::Rtcp => &mut state.latched_rtcp,
        };
        match latch {
            Some(addr) if *addr == from => true,
            Some(_) => {
                self.stats.unexpected_source += 1;
                false
            }
            None => {
                *latch = Some(from);
                if kind == PacketKind::Rtp {
                    self.events
                        .push_back(MediaEvent::Latched { leg, addr: from });
                }
                true
            }
        }
    }

    fn handle_rtp(&mut self, leg: Leg, from: SocketAddr, data: &[u8], now: Instant) {
        // RTCP multiplexed on the RTP port (RFC 5761) is relayed as RTCP.
        if looks_like_rtcp(data) {
            self.handle_rtcp(leg, from, data);
            return;
        }
        let Some(header) = read_rtp_header(data) else {
            self.stats.malformed += 1;
            return;
        };
        if !self.accept_source(leg, PacketKind::Rtp, from) {
            return;
        }
        self.stats.packets_in[leg.index()] += 1;
        {
            let state = &mut self.legs[leg.index()];
            state.last_rx = Some(now);
            state.watch_since = now;
            state.timed_out = false;
        }
        let (Some(in_cfg), Some(out_cfg)) = (
            self.legs[leg.index()].config.clone(),
            self.legs[leg.other().index()].config.clone(),
        ) else {
            self.stats.undeliverable += 1;
            return;
        };
        // Map the payload type onto the other leg's numbering.
        let out_pt = if Some(header.payload_type) == in_cfg.telephone_event {
            out_cfg.telephone_event.map(|pt| (pt, 8000))
        } else {
            match (&in_cfg.audio, &out_cfg.audio) {
                (Some(i), Some(o)) if i.payload_type == header.payload_type && i.same_codec(o) => {
                    Some((o.payload_type, o.clock_rate))
                }
                _ => None,
            }
        };
        let Some((out_pt, clock_rate)) = out_pt else {
            self.stats.undeliverable += 1;
            return;
        };
        let target = &mut self.legs[leg.other().index()];
        let (Some(to), true) = (target.rtp_destination(), target.may_send()) else {
            self.stats.undeliverable += 1;
            return;
        };
        let (seq, ts) = target.out.map(
            header.ssrc,
            header.sequence,
            header.timestamp,
            clock_rate,
            now,
        );
        let mut out = data.to_vec();
        write_rtp_header(&mut out, out_pt, seq, ts, target.out.ssrc);
        self.stats.packets_out[leg.other().index()] += 1;
        self.transmits.push_back(MediaTransmit {
            leg: leg.other(),
            kind: PacketKind::Rtp,
            to,
            data: out,
        });
    }

    fn handle_rtcp(&mut self, leg: Leg, from: SocketAddr, data: &[u8]) {
        if !looks_like_rtcp(data) {
            self.stats.malformed += 1;
            return;
        }
        if !self.accept_source(leg, PacketKind::Rtcp, from) {
            return;
        }
        let target = &self.legs[leg.other().index()];
        if let (Some(to), true) = (target.rtcp_destination(), target.may_send()) {
            self.transmits.push_back(MediaTransmit {
                leg: leg.other(),
                kind: PacketKind::Rtcp,
                to,
                data: data.to_vec(),
            });
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for leg in [Leg::A, Leg::B] {
            let state = &mut self.legs[leg.index()];
            let watching = state.config.as_ref().is_some_and(|c| c.recv) && !state.timed_out;
            if watching && now >= state.watch_since + self.config.rtp_timeout {
                state.timed_out = true;
                self.events.push_back(MediaEvent::RtpTimeout { leg });
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.legs
            .iter()
            .filter(|s| s.config.as_ref().is_some_and(|c| c.recv) && !s.timed_out)
            .map(|s| s.watch_since + self.config.rtp_timeout)
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<MediaTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn pcmu(pt: u8) -> PayloadFormat {
        PayloadFormat {
            payload_type: pt,
            encoding: "PCMU".into(),
            clock_rate: 8000,
            channels: 1,
            fmtp: None,
        }
    }

    fn leg(remote: &str, pt: u8, te: Option<u8>) -> LegConfig {
        LegConfig {
            remote_rtp: Some(addr(remote)),
            remote_rtcp: None,
            audio: Some(pcmu(pt)),
            telephone_event: te,
            send: true,
            recv: true,
        }
    }

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        write_rtp_header(&mut p, pt, seq, ts, ssrc);
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    fn session(now: Instant) -> MediaSession {
        let mut s = MediaSession::new(SessionConfig::default(), now);
        s.configure_leg(Leg::A, leg("10.0.0.1:4000", 0, Some(101)), now);
        s.configure_leg(Leg::B, leg("10.0.0.2:5000", 0, Some(96)), now);
        s
    }

    #[test]
    fn forwards_with_our_ssrc_and_continuous_numbering_across_a_source_switch() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let a = addr("192.0.2.10:4000"); // NAT: not the SDP address
        let mut out = Vec::new();
        for i in 0..3u16 {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            s.handle_packet(
                Leg::A,
                PacketKind::Rtp,
                a,
                &rtp(0, 100 + i, 1000 + 160 * u32::from(i), 7),
                at,
            );
            out.push(s.poll_transmit().unwrap());
        }
        assert_eq!(
            s.poll_event(),
            Some(MediaEvent::Latched {
                leg: Leg::A,
                addr: a
            })
        );
        assert!(out
            .iter()
            .all(|t| t.leg == Leg::B && t.to == addr("10.0.0.2:5000")));
        let hdr: Vec<RtpHeader> = out
            .iter()
            .map(|t| read_rtp_header(&t.data).unwrap())
            .collect();
        assert!(hdr
            .windows(2)
            .all(|w| w[1].sequence == w[0].sequence.wrapping_add(1)));
        assert!(hdr
            .windows(2)
            .all(|w| w[1].timestamp == w[0].timestamp.wrapping_add(160)));
        assert!(hdr.iter().all(|h| h.ssrc == hdr[0].ssrc && h.ssrc != 7));
        // The caller's phone restarts its stream (new SSRC, new numbers) 100 ms later.
        let at = t0 + Duration::from_millis(140);
        s.handle_packet(Leg::A, PacketKind::Rtp, a, &rtp(0, 9, 555, 8), at);
        let h = read_rtp_header(&s.poll_transmit().unwrap().data).unwrap();
        assert_eq!(h.ssrc, hdr[0].ssrc);
        assert_eq!(h.sequence, hdr[2].sequence.wrapping_add(1));
        assert_eq!(h.timestamp, hdr[2].timestamp.wrapping_add(800)); // 100 ms at 8 kHz
    }

    #[test]
    fn telephone_events_are_renumbered_and_unknown_payloads_dropped() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let a = addr("10.0.0.1:4000");
        s.handle_packet(Leg::A, PacketKind::Rtp, a, &rtp(101, 1, 0, 1), t0);
        assert_eq!(
            read_rtp_header(&s.poll_transmit().unwrap().data)
                .unwrap()
                .payload_type,
            96
        );
        s.handle_packet(Leg::A, PacketKind::Rtp, a, &rtp(18, 2, 160, 1), t0);
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.stats().undeliverable, 1);
    }

    #[test]
    fn other_sources_after_latching_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.handle_packet(
            Leg::B,
            PacketKind::Rtp,
            addr("10.0.0.2:5000"),
            &rtp(0, 1, 0, 3),
            t0,
        );
        assert!(s.poll_transmit().is_some());
        s.handle_packet(
            Leg::B,
            PacketKind::Rtp,
            addr("203.0.113.9:6666"),
            &rtp(0, 2, 160, 3),
            t0,
        );
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.stats().unexpected_source, 1);
        // Garbage never panics and is counted.
        s.handle_packet(
            Leg::B,
            PacketKind::Rtp,
            addr("10.0.0.2:5000"),
            &[0x80, 0],
            t0,
        );
        s.handle_packet(
            Leg::B,
            PacketKind::Rtcp,
            addr("10.0.0.2:5001"),
            &[1, 2, 3],
            t0,
        );
        assert_eq!(s.stats().malformed, 2);
    }

    #[test]
    fn nothing_is_sent_to_a_leg_on_hold_and_rtcp_follows_rtp() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let mut held = leg("10.0.0.2:5000", 0, None);
        held.send = false;
        s.configure_leg(Leg::B, held, t0);
        s.handle_packet(
            Leg::A,
            PacketKind::Rtp,
            addr("10.0.0.1:4000"),
            &rtp(0, 1, 0, 1),
            t0,
        );
        assert_eq!(s.poll_transmit(), None);
        s.configure_leg(Leg::B, leg("10.0.0.2:5000", 0, None), t0);
        let sr = [0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        s.handle_packet(Leg::A, PacketKind::Rtcp, addr("10.0.0.1:4001"), &sr, t0);
        let t = s.poll_transmit().unwrap();
        assert_eq!((t.kind, t.to), (PacketKind::Rtcp, addr("10.0.0.2:5001")));
    }

    #[test]
    fn silence_from_a_sending_leg_times_out_once() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(
            SessionConfig {
                rtp_timeout: Duration::from_secs(10),
            },
            t0,
        );
        s.configure_leg(Leg::A, leg("10.0.0.1:4000", 0, None), t0);
        let mut quiet = leg("10.0.0.2:5000", 0, None);
        quiet.recv = false; // B answered recvonly: it sends nothing, so no timeout for B
        s.configure_leg(Leg::B, quiet, t0);
        s.handle_packet(
            Leg::A,
            PacketKind::Rtp,
            addr("10.0.0.1:4000"),
            &rtp(0, 1, 0, 1),
            t0 + Duration::from_secs(5),
        );
        let _ = s.poll_event();
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(15)));
        s.handle_timeout(t0 + Duration::from_secs(15));
        assert_eq!(s.poll_event(), Some(MediaEvent::RtpTimeout { leg: Leg::A }));
        assert_eq!(s.poll_timeout(), None);
    }
}
