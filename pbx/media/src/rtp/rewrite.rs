//! Keeps one outgoing RTP stream continuous while its input changes source. A relayed
//! leg must see a single SSRC with sequence numbers and timestamps that only move
//! forward, even when the other leg re-INVITEs to a new phone, a call is picked up
//! elsewhere, or hold music is replaced by the caller again. Many phones treat a jump back
//! in time or a new SSRC mid-call as a new stream and reset their jitter buffer (audible
//! gaps) or drop the packets entirely.
//!
//! The rule (what Switchboard does and why):
//! * Within a run (same input SSRC, no restart) the output keeps the input's deltas:
//!   `out_seq = in_seq + seq_offset`, `out_ts = in_ts + ts_offset` (wrapping). Gaps stay
//!   gaps so the receiver still sees loss, reordering stays reordering.
//! * At a switch (new input SSRC, or the same SSRC jumping by more than RFC 3550 A.1's
//!   MAX_DROPOUT forward / MAX_MISORDER backward), offsets are recomputed so that the
//!   first packet of the new run gets `last_out_seq + 1` and
//!   `last_out_ts + elapsed × clock_rate` where `elapsed` is the arrival time since the
//!   last forwarded packet (at least one sample). The receiver's timeline therefore
//!   advances by real time across the switch, as if the talker had been silent, and the
//!   marker bit is set on that packet (RFC 3551 §4.1: first packet of a talkspurt).
//! * Late packets of the previous run (same old SSRC, not newer than its last packet)
//!   are mapped with the previous run's offsets rather than triggering a switch back.
//!
//! Prior art: Asterisk's constant-SSRC mode keeps its SSRC across `ast_rtp_change_source`
//! and the "timestamp dilemma" note (Olle E. Johansson, asterisk docs) concludes the
//! outbound timestamp must never follow the incoming one backwards but "keep our time
//! stamp and just add to it". FreeSWITCH's `rtp_rewrite_timestamps` regenerates
//! timestamps from its own write clock. SFU rewriters (e.g. the 8x8/jitsi-style
//! `AudioRewriter`) compute `offset = last_sent + one frame - incoming` on a new SSRC;
//! we use the measured arrival gap instead of one frame so that a hold of ten seconds
//! shows as ten seconds, which keeps RTCP SR timestamps and recordings aligned.

use std::time::Instant;

use super::stats::{MAX_DROPOUT, MAX_MISORDER};
use super::{set_marker, set_sequence, set_ssrc, set_timestamp, RtpError, RtpPacket};

/// Output header fields for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    /// This packet starts a new run (first packet or a switch): set the marker bit.
    pub switched: bool,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    input_ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    /// Highest input sequence number seen in this run.
    last_in_seq: u16,
}

impl Run {
    fn map(&self, seq: u16, ts: u32) -> (u16, u32) {
        (
            seq.wrapping_add(self.seq_offset),
            ts.wrapping_add(self.ts_offset),
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct LastOut {
    sequence: u16,
    timestamp: u32,
    at: Instant,
}

/// The rewriter for one outgoing stream. Pure: arrival times come in as `now`.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    ssrc: u32,
    clock_rate: u32,
    initial_seq: u16,
    initial_ts: u32,
    current: Option<Run>,
    previous: Option<Run>,
    last_out: Option<LastOut>,
    force_switch: bool,
}

impl StreamRewriter {
    /// `ssrc`, `initial_seq` and `initial_ts` should be random (RFC 3550 §5.1); the
    /// caller picks them so this stays deterministic.
    pub fn new(ssrc: u32, initial_seq: u16, initial_ts: u32, clock_rate: u32) -> StreamRewriter {
        StreamRewriter {
            ssrc,
            clock_rate: clock_rate.max(1),
            initial_seq,
            initial_ts,
            current: None,
            previous: None,
            last_out: None,
            force_switch: false,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// A new codec with another clock rate (after a re-INVITE): applies to the next
    /// switch's elapsed-time conversion. Callers should also [`Self::force_switch`].
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        self.clock_rate = clock_rate.max(1);
    }

    /// Treat the next packet as a new run even if its SSRC is unchanged (the signalling
    /// told us the source changed, e.g. a re-INVITE to a phone that reuses SSRCs).
    pub fn force_switch(&mut self) {
        self.force_switch = true;
    }

    /// Last output (sequence, timestamp), e.g. to continue the stream with locally
    /// generated audio (music on hold) from the right place.
    pub fn last_output(&self) -> Option<(u16, u32)> {
        self.last_out.map(|l| (l.sequence, l.timestamp))
    }

    /// Maps one input packet's header fields to the output's.
    pub fn rewrite(&mut self, now: Instant, ssrc: u32, sequence: u16, timestamp: u32) -> Rewritten {
        let mut switched = false;
        let (out_seq, out_ts) = match self.current {
            Some(run)
                if !self.force_switch
                    && run.input_ssrc == ssrc
                    && in_run(run.last_in_seq, sequence) =>
            {
                let run = self.current.as_mut().expect("matched Some");
                if is_newer(sequence, run.last_in_seq) {
                    run.last_in_seq = sequence;
                }
                run.map(sequence, timestamp)
            }
            _ => match self.previous {
                Some(prev)
                    if !self.force_switch
                        && prev.input_ssrc == ssrc
                        && !is_newer(sequence, prev.last_in_seq)
                        && prev.last_in_seq.wrapping_sub(sequence) <= MAX_MISORDER =>
                {
                    // A straggler of the run we just left.
                    prev.map(sequence, timestamp)
                }
                _ => {
                    switched = true;
                    self.force_switch = false;
                    let (next_seq, next_ts) = match self.last_out {
                        None => (self.initial_seq, self.initial_ts),
                        Some(last) => {
                            let elapsed = now.saturating_duration_since(last.at);
                            let units = (elapsed.as_nanos() * u128::from(self.clock_rate)
                                / 1_000_000_000)
                                .clamp(1, u128::from(u32::MAX / 2))
                                as u32;
                            (
                                last.sequence.wrapping_add(1),
                                last.timestamp.wrapping_add(units),
                            )
                        }
                    };
                    let run = Run {
                        input_ssrc: ssrc,
                        seq_offset: next_seq.wrapping_sub(sequence),
                        ts_offset: next_ts.wrapping_sub(timestamp),
                        last_in_seq: sequence,
                    };
                    if let Some(cur) = self.current.replace(run) {
                        if cur.input_ssrc != ssrc {
                            self.previous = Some(cur);
                        }
                    }
                    (next_seq, next_ts)
                }
            },
        };
        let newer = self
            .last_out
            .is_none_or(|last| is_newer(out_seq, last.sequence));
        if newer {
            self.last_out = Some(LastOut {
                sequence: out_seq,
                timestamp: out_ts,
                at: now,
            });
        }
        Rewritten {
            ssrc: self.ssrc,
            sequence: out_seq,
            timestamp: out_ts,
            switched,
        }
    }

    /// Parses `buf` and rewrites its SSRC, sequence number and timestamp in place (and
    /// sets the marker on a switch): the zero-copy forwarding path.
    pub fn rewrite_packet(&mut self, now: Instant, buf: &mut [u8]) -> Result<Rewritten, RtpError> {
        let (ssrc, seq, ts) = {
            let p = RtpPacket::parse(buf)?;
            (p.ssrc(), p.sequence(), p.timestamp())
        };
        let out = self.rewrite(now, ssrc, seq, ts);
        set_ssrc(buf, out.ssrc)?;
        set_sequence(buf, out.sequence)?;
        set_timestamp(buf, out.timestamp)?;
        if out.switched {
            set_marker(buf, true)?;
        }
        Ok(out)
    }
}

/// `a` is after `b` in 16-bit sequence space.
fn is_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// `seq` continues a run whose highest sequence is `last` (RFC 3550 A.1 thresholds).
fn in_run(last: u16, seq: u16) -> bool {
    let forward = seq.wrapping_sub(last);
    let backward = last.wrapping_sub(seq);
    forward < MAX_DROPOUT || backward <= MAX_MISORDER
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_run_keeps_deltas_from_initial_values() {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(0xAAAA, 1000, 50_000, 8000);
        let a = r.rewrite(t0, 1, 7, 320);
        assert_eq!(
            (a.ssrc, a.sequence, a.timestamp, a.switched),
            (0xAAAA, 1000, 50_000, true)
        );
        let b = r.rewrite(t0 + ms(20), 1, 8, 480);
        assert_eq!((b.sequence, b.timestamp, b.switched), (1001, 50_160, false));
        // A gap of 2 stays a gap; a reordered packet keeps its place.
        let c = r.rewrite(t0 + ms(60), 1, 11, 960);
        assert_eq!((c.sequence, c.timestamp), (1004, 50_640));
        let d = r.rewrite(t0 + ms(61), 1, 10, 800);
        assert_eq!((d.sequence, d.timestamp, d.switched), (1003, 50_480, false));
        assert_eq!(r.last_output(), Some((1004, 50_640)));
    }

    #[test]
    fn ssrc_switch_continues_with_elapsed_time() {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(9, 65535, u32::MAX - 100, 8000);
        r.rewrite(t0, 1, 100, 1_000);
        // New source after 500 ms of silence, with unrelated seq/ts.
        let s = r.rewrite(t0 + ms(500), 2, 40_000, 7);
        assert!(s.switched);
        assert_eq!(s.sequence, 0); // 65535 + 1 wraps
        assert_eq!(s.timestamp, (u32::MAX - 100).wrapping_add(4000));
        let n = r.rewrite(t0 + ms(520), 2, 40_001, 167);
        assert_eq!(
            (n.sequence, n.timestamp, n.switched),
            (1, s.timestamp.wrapping_add(160), false)
        );
    }

    #[test]
    fn straggler_of_previous_source_does_not_switch_back() {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(9, 0, 0, 8000);
        r.rewrite(t0, 1, 10, 1600);
        r.rewrite(t0 + ms(20), 1, 11, 1760);
        let s = r.rewrite(t0 + ms(40), 2, 500, 0);
        assert_eq!((s.sequence, s.timestamp), (2, 160 + 160));
        // Old packet 9 arrives late: mapped by the old run's offsets (seq -1), no switch.
        let late = r.rewrite(t0 + ms(45), 1, 9, 1440);
        assert_eq!(
            (late.sequence, late.timestamp, late.switched),
            (u16::MAX, u32::MAX - 159, false)
        );
        let next = r.rewrite(t0 + ms(60), 2, 501, 160);
        assert_eq!(
            (next.sequence, next.timestamp, next.switched),
            (3, 480, false)
        );
        // The old source really coming back (newer packets) is a switch.
        let back = r.rewrite(t0 + ms(1060), 1, 12, 1920);
        assert!(back.switched);
        assert_eq!((back.sequence, back.timestamp), (4, 480 + 8000));
    }

    #[test]
    fn big_jump_on_same_ssrc_is_a_restart() {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(9, 0, 0, 8000);
        r.rewrite(t0, 1, 10, 0);
        let j = r.rewrite(t0 + ms(20), 1, 30_000, 99_999);
        assert!(j.switched);
        assert_eq!((j.sequence, j.timestamp), (1, 160));
        r.force_switch();
        let f = r.rewrite(t0 + ms(40), 1, 30_001, 100_159);
        assert!(f.switched);
        assert_eq!((f.sequence, f.timestamp), (2, 320));
    }

    #[test]
    fn rewrite_packet_in_place() {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(0xFEED, 100, 1000, 8000);
        let mut buf = super::super::RtpHeader::new(0, 5, 77, 3).to_bytes(&[0xFF; 160]);
        let out = r.rewrite_packet(t0, &mut buf).unwrap();
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(
            (p.ssrc(), p.sequence(), p.timestamp(), p.marker()),
            (0xFEED, 100, 1000, true)
        );
        assert_eq!(out.sequence, 100);
        assert_eq!(p.payload(), &[0xFF; 160]);
        assert!(r.rewrite_packet(t0, &mut [0u8; 3]).is_err());
    }

    #[test]
    fn simulated_relay_with_loss_reorder_and_switches() {
        // Three sources in turn, seeded loss and adjacent swaps: output sequence numbers
        // are unique and timestamps never go back by more than a reordered packet.
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(3550);
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(1, 60_000, 4_000_000_000, 8000);
        let mut arrivals = Vec::new();
        let mut t = 0u64;
        for (ssrc, start_seq, start_ts) in [(11u32, 65_000u16, 5u32), (22, 3, 900_000), (33, 7, 1)]
        {
            for i in 0..300u16 {
                t += 20;
                if rng.gen_bool(0.05) {
                    continue;
                }
                let seq = start_seq.wrapping_add(i);
                let ts = start_ts.wrapping_add(u32::from(i) * 160);
                arrivals.push((t, ssrc, seq, ts));
            }
            t += 1000; // a second on hold between sources
        }
        for i in (1..arrivals.len()).step_by(17) {
            arrivals.swap(i - 1, i);
        }
        let mut seen = std::collections::HashSet::new();
        let mut max_ts: Option<u32> = None;
        for (t, ssrc, seq, ts) in arrivals {
            let out = r.rewrite(t0 + ms(t), ssrc, seq, ts);
            assert!(
                seen.insert(out.sequence),
                "duplicate output seq {}",
                out.sequence
            );
            if let Some(m) = max_ts {
                assert!(
                    out.timestamp.wrapping_sub(m) < 0x8000_0000
                        || m.wrapping_sub(out.timestamp) <= 320
                );
            }
            if max_ts.is_none_or(|m| out.timestamp.wrapping_sub(m) < 0x8000_0000) {
                max_ts = Some(out.timestamp);
            }
        }
    }
}
