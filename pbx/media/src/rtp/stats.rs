//! Per-source receiver statistics, RFC 3550 Appendix A.1 (sequence validation with
//! probation and wrap), A.3 (expected / lost / fraction lost) and A.8 (interarrival
//! jitter), producing the report block for our RR/SR.
//!
//! Drive contract: call [`ReceiverStats::handle_packet`] for every RTP packet of the
//! source with its arrival `now`, [`ReceiverStats::handle_sender_report`] for the
//! source's SRs, and [`ReceiverStats::report_block`] once per report interval (it closes
//! the interval used for the fraction lost). No clock is read here.

use std::time::{Duration, Instant};

use super::rtcp::ReportBlock;

const RTP_SEQ_MOD: u32 = 1 << 16;
/// A.1: a forward jump up to this is a gap (loss), beyond it a restart candidate.
pub const MAX_DROPOUT: u16 = 3000;
/// A.1: a backward jump up to this is a late (reordered or duplicate) packet.
pub const MAX_MISORDER: u16 = 100;
/// A.1: sequential packets required before a source is valid.
pub const MIN_SEQUENTIAL: u32 = 2;

#[derive(Debug, Clone)]
pub struct ReceiverStats {
    ssrc: u32,
    clock_rate: u32,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    started: bool,
    /// Arrival time origin for converting `now` to timestamp units.
    epoch: Option<Instant>,
    transit: Option<u32>,
    /// Jitter scaled by 16 (A.8's integer form).
    jitter_q4: u32,
    last_sr: Option<(u32, Instant)>,
}

impl ReceiverStats {
    /// Statistics for source `ssrc` whose payload clock runs at `clock_rate` Hz.
    pub fn new(ssrc: u32, clock_rate: u32) -> ReceiverStats {
        ReceiverStats {
            ssrc,
            clock_rate: clock_rate.max(1),
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            started: false,
            epoch: None,
            transit: None,
            jitter_q4: 0,
            last_sr: None,
        }
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// A.1 `update_seq`; true when the packet counts (source valid, not a restart probe).
    fn update_seq(&mut self, seq: u16) -> bool {
        if !self.started {
            self.started = true;
            self.init_seq(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump: twice in a row means the source restarted.
            if u32::from(seq) == self.bad_seq {
                self.init_seq(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        }
        // Otherwise a duplicate or reordered packet: counted, max unchanged.
        self.received = self.received.wrapping_add(1);
        true
    }

    /// Arrival time in timestamp units since the first packet, wrapping like RTP time.
    fn arrival_units(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        let elapsed = now.saturating_duration_since(epoch);
        (elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u32
    }

    /// Feeds one received packet. Returns whether it was accepted as valid for this
    /// source (false while on probation or for a jump that may be a restart).
    pub fn handle_packet(&mut self, now: Instant, sequence: u16, timestamp: u32) -> bool {
        let arrival = self.arrival_units(now);
        if !self.update_seq(sequence) {
            return false;
        }
        // A.8: D(i-1,i) = (Rj - Ri) - (Sj - Si); J += (|D| - J) / 16.
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
        true
    }

    /// Notes an SR from this source (NTP timestamp as sent) for LSR/DLSR.
    pub fn handle_sender_report(&mut self, now: Instant, ntp_timestamp: u64) {
        self.last_sr = Some(((ntp_timestamp >> 16) as u32, now));
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Still on probation (A.1): no packet counted yet.
    pub fn on_probation(&self) -> bool {
        self.probation > 0
    }

    /// Sequence number wrap count, times 65536 (A.1 `cycles`).
    pub fn cycles(&self) -> u32 {
        self.cycles
    }

    /// Cycles in the high 16 bits, highest sequence number in the low 16.
    pub fn extended_highest_seq(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    pub fn received(&self) -> u32 {
        self.received
    }

    pub fn expected(&self) -> u32 {
        if self.on_probation() {
            return 0;
        }
        self.extended_highest_seq()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    /// Cumulative packets lost, clamped to the signed 24-bit field (A.3).
    pub fn cumulative_lost(&self) -> i32 {
        let lost = i64::from(self.expected()) - i64::from(self.received);
        lost.clamp(-0x80_0000, 0x7F_FFFF) as i32
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// The report block for this source; closes the fraction-lost interval (A.3).
    pub fn report_block(&mut self, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => (lsr, to_q16(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost(),
            extended_highest_seq: self.extended_highest_seq(),
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        }
    }
}

/// A duration in units of 1/65536 s (DLSR), saturating.
fn to_q16(d: Duration) -> u32 {
    (d.as_nanos() * 65536 / 1_000_000_000).min(u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS20: Duration = Duration::from_millis(20);

    /// Feeds `seqs` at 20 ms spacing with timestamps 160 apart (perfect pacing).
    fn feed(stats: &mut ReceiverStats, t0: Instant, seqs: impl IntoIterator<Item = u16>) {
        for (i, seq) in seqs.into_iter().enumerate() {
            let now = t0 + MS20 * i as u32;
            stats.handle_packet(now, seq, u32::from(seq).wrapping_mul(160));
        }
    }

    #[test]
    fn probation_then_counting() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(7, 8000);
        assert!(!s.handle_packet(t0, 100, 0));
        assert!(s.on_probation());
        assert!(s.handle_packet(t0 + MS20, 101, 160));
        assert_eq!((s.received(), s.expected(), s.cumulative_lost()), (1, 1, 0));
    }

    #[test]
    fn probation_restarts_on_gap() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(7, 8000);
        assert!(!s.handle_packet(t0, 100, 0));
        assert!(!s.handle_packet(t0, 300, 0));
        assert!(s.handle_packet(t0, 301, 0));
        assert_eq!(s.extended_highest_seq(), 301);
    }

    #[test]
    fn wrap_extends_sequence_and_counts_cycles() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(1, 8000);
        feed(&mut s, t0, (65530..=65535).chain(0..5));
        assert_eq!(s.cycles(), 65536);
        assert_eq!(s.extended_highest_seq(), 65536 + 4);
        assert_eq!(s.received(), 10); // the first packet was the probation probe
        assert_eq!(s.cumulative_lost(), 0);
    }

    #[test]
    fn loss_and_fraction_per_interval() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(1, 8000);
        // 1..=100 with every 4th lost (25 lost out of the 99 expected after probation).
        feed(&mut s, t0, (1..=100).filter(|q| q % 4 != 0 || *q == 100));
        let block = s.report_block(t0 + Duration::from_secs(2));
        assert_eq!(block.extended_highest_seq, 100);
        assert_eq!(block.cumulative_lost, 24);
        assert_eq!(block.fraction_lost, (24 * 256 / 99) as u8);
        // The next interval has no loss: fraction back to 0, cumulative unchanged.
        feed(&mut s, t0 + Duration::from_secs(3), 101..=150);
        let block = s.report_block(t0 + Duration::from_secs(4));
        assert_eq!((block.fraction_lost, block.cumulative_lost), (0, 24));
    }

    #[test]
    fn duplicates_make_loss_negative() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(1, 8000);
        feed(&mut s, t0, [1, 2, 3, 3, 3, 4]);
        assert_eq!(s.cumulative_lost(), -2);
        assert_eq!(s.report_block(t0).fraction_lost, 0);
    }

    #[test]
    fn reordered_packet_does_not_move_max() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(1, 8000);
        feed(&mut s, t0, [1, 2, 4, 3, 5]);
        assert_eq!(s.extended_highest_seq(), 5);
        assert_eq!(s.cumulative_lost(), 0);
    }

    #[test]
    fn restart_after_two_sequential_big_jumps() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(1, 8000);
        feed(&mut s, t0, 1..=10);
        assert!(!s.handle_packet(t0, 40_000, 0));
        assert!(s.handle_packet(t0, 40_001, 0));
        assert_eq!(s.extended_highest_seq(), 40_001);
        assert_eq!(s.received(), 1);
    }

    #[test]
    fn jitter_is_zero_for_perfect_pacing_and_grows_with_variation() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(1, 8000);
        feed(&mut s, t0, 1..=50);
        assert_eq!(s.jitter(), 0);
        // Alternate arrivals 10 ms early/late: |D| = 160 units every packet, so J -> 160.
        let mut s = ReceiverStats::new(1, 8000);
        for i in 0..2000u32 {
            let skew = if i % 2 == 0 { 0 } else { 20 };
            let now = t0 + Duration::from_millis(u64::from(i * 20 + skew));
            s.handle_packet(now, i as u16, i * 160);
        }
        assert!((150..=165).contains(&s.jitter()), "jitter {}", s.jitter());
    }

    #[test]
    fn lsr_and_dlsr() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(1, 8000);
        feed(&mut s, t0, 1..=3);
        s.handle_sender_report(t0, 0x1234_5678_9ABC_DEF0);
        let block = s.report_block(t0 + Duration::from_millis(500));
        assert_eq!(block.last_sr, 0x5678_9ABC);
        assert_eq!(block.delay_since_last_sr, 32768);
        assert_eq!(block.ssrc, 1);
    }
}
