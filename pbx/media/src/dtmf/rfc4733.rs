//! RFC 4733 telephone-event payloads, a receiver that turns the packet stream of one
//! RTP source into one digit per key press, and a sender that produces the packets for a
//! digit.
//!
//! Receiver drive contract: for every telephone-event RTP packet call
//! [`DtmfEventReceiver::handle_packet`] with its arrival `now`; whenever
//! [`DtmfEventReceiver::poll_timeout`] returns a deadline, call
//! [`DtmfEventReceiver::handle_timeout`] at (or after) it; after either, drain
//! [`DtmfEventReceiver::poll_digit`]. A key press is identified by its RTP timestamp
//! (§2.5.1.1: all packets of an event carry the event's start time), which is what makes
//! deduplicating the three end packets and tolerating reordering simple: packets for an
//! event already reported, or older than the current one, are ignored.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{digit_to_event, event_to_digit, DtmfDigit, DtmfError, DtmfSource};

/// The four-byte telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    /// The E bit: this packet reports the end of the event.
    pub end: bool,
    /// Power level in -dBm0 (0–63; 6 bits).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event of a payload (extra bytes, e.g. a second stacked event, are
    /// ignored).
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        if payload.len() < 4 {
            return Err(DtmfError::ShortPayload(payload.len()));
        }
        Ok(TelephoneEvent {
            event: payload[0],
            end: payload[1] & 0x80 != 0,
            volume: payload[1] & 0x3F,
            duration: u16::from_be_bytes([payload[2], payload[3]]),
        })
    }

    /// The wire form; the R bit is always 0.
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            u8::from(self.end) << 7 | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// How long after the last packet of an event without an end packet it is ended anyway.
/// Senders refresh every 50 ms at most (§2.5.1.2), so this survives several lost
/// packets while keeping the digit's delay short.
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_millis(400);

#[derive(Debug, Clone, Copy)]
struct Active {
    event: u8,
    /// Units accumulated by earlier segments of a long event (§2.5.1.3).
    previous_segments: u32,
    /// Timestamp of the current segment.
    segment_timestamp: u32,
    duration: u16,
    last_seen: Instant,
}

impl Active {
    fn total_units(&self) -> u32 {
        self.previous_segments + u32::from(self.duration)
    }
}

/// Turns the telephone-event packets of one source into digits.
#[derive(Debug, Clone)]
pub struct DtmfEventReceiver {
    clock_rate: u32,
    end_timeout: Duration,
    active: Option<Active>,
    /// Timestamp of the last segment of the last event reported (its start for
    /// ordinary events); packets for it or older are stale.
    last_reported: Option<u32>,
    digits: VecDeque<DtmfDigit>,
}

/// `a` is after `b` in 32-bit RTP time.
fn ts_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

impl DtmfEventReceiver {
    /// A receiver for a telephone-event stream with this clock rate (8000 usually, 48000
    /// alongside Opus).
    pub fn new(clock_rate: u32) -> DtmfEventReceiver {
        DtmfEventReceiver {
            clock_rate: clock_rate.max(1),
            end_timeout: DEFAULT_END_TIMEOUT,
            active: None,
            last_reported: None,
            digits: VecDeque::new(),
        }
    }

    pub fn with_end_timeout(mut self, timeout: Duration) -> DtmfEventReceiver {
        self.end_timeout = timeout;
        self
    }

    /// The digit currently held down, if any (reported at its start, for relaying or
    /// stopping a prompt early).
    pub fn current_digit(&self) -> Option<char> {
        self.active.and_then(|a| event_to_digit(a.event))
    }

    /// Feeds one telephone-event packet's RTP timestamp, sequence number, marker and
    /// payload. Non-DTMF events (flash, fax tones) are ignored. The sequence number is not
    /// needed to order events (the timestamp does) and is accepted for callers' symmetry.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        timestamp: u32,
        _sequence: u16,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), DtmfError> {
        let ev = TelephoneEvent::parse(payload)?;
        if event_to_digit(ev.event).is_none() {
            return Ok(());
        }
        if let Some(last) = self.last_reported {
            if !ts_newer(timestamp, last) {
                return Ok(()); // redundant end packet, or a late packet of an old event
            }
        }
        if let Some(active) = self.active.as_mut() {
            let same_event = active.event == ev.event;
            if timestamp == active.segment_timestamp && same_event {
                active.duration = active.duration.max(ev.duration);
                active.last_seen = now;
                if ev.end {
                    self.finish();
                }
                return Ok(());
            }
            // §2.5.1.3: segments of a long event start exactly 0xFFFF units apart (the
            // segment's last report, duration 0xFFFF, may have been lost).
            if same_event
                && !marker
                && timestamp == active.segment_timestamp.wrapping_add(u32::from(u16::MAX))
            {
                // Next segment of a long event: continues the same key press.
                active.previous_segments += u32::from(u16::MAX);
                active.segment_timestamp = timestamp;
                active.duration = ev.duration;
                active.last_seen = now;
                if ev.end {
                    self.finish();
                }
                return Ok(());
            }
            if !ts_newer(timestamp, active.segment_timestamp) {
                return Ok(()); // a straggler from before the current event
            }
            // A new event while the previous one never saw its end: it ended.
            self.finish();
        }
        self.active = Some(Active {
            event: ev.event,
            previous_segments: 0,
            segment_timestamp: timestamp,
            duration: ev.duration,
            last_seen: now,
        });
        if ev.end {
            self.finish();
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Some(active) = self.active.take() {
            let ms = u64::from(active.total_units()) * 1000 / u64::from(self.clock_rate);
            self.last_reported = Some(active.segment_timestamp);
            if let Some(digit) = event_to_digit(active.event) {
                self.digits.push_back(DtmfDigit {
                    digit,
                    duration_ms: ms as u32,
                    source: DtmfSource::Rfc4733,
                });
            }
        }
    }

    /// When the current event will be ended if no packet arrives.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.active.map(|a| a.last_seen + self.end_timeout)
    }

    /// Ends the current event if its end packets were lost.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            self.finish();
        }
    }

    /// The next completed key press.
    pub fn poll_digit(&mut self) -> Option<DtmfDigit> {
        self.digits.pop_front()
    }
}

/// One telephone-event packet to send: the relay wraps it in RTP with the negotiated
/// payload type, its own SSRC and the next sequence number, and sends it `send_after`
/// the start of the digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEventPacket {
    pub payload: [u8; 4],
    pub timestamp: u32,
    pub marker: bool,
    pub send_after: Duration,
}

/// Produces the packet sequence for digits (§2.5.1: marker on the first packet, one
/// timestamp per event, a refresh every `interval` with the growing duration, the final
/// packet sent three times with the E bit).
#[derive(Debug, Clone, Copy)]
pub struct DtmfEventSender {
    clock_rate: u32,
    interval: Duration,
    volume: u8,
}

impl DtmfEventSender {
    /// Refreshes every 50 ms (RFC 4733's recommended maximum) at -10 dBm0.
    pub fn new(clock_rate: u32) -> DtmfEventSender {
        DtmfEventSender {
            clock_rate: clock_rate.max(1),
            interval: Duration::from_millis(50),
            volume: 10,
        }
    }

    /// Another refresh interval, e.g. 20 ms to match the audio packetization.
    pub fn with_interval(mut self, interval: Duration) -> DtmfEventSender {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    pub fn with_volume(mut self, volume: u8) -> DtmfEventSender {
        self.volume = volume.min(63);
        self
    }

    fn units(&self, d: Duration) -> u64 {
        (d.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u64
    }

    /// Packets for `digit` held `duration_ms`, the event starting at RTP `timestamp`.
    /// Events longer than 65535 units are split into segments (§2.5.1.3).
    pub fn packets(
        &self,
        digit: char,
        duration_ms: u32,
        timestamp: u32,
    ) -> Result<Vec<TelephoneEventPacket>, DtmfError> {
        let event = digit_to_event(digit).ok_or(DtmfError::InvalidDigit(digit))?;
        let total = self
            .units(Duration::from_millis(u64::from(duration_ms)))
            .max(1);
        let step = self.units(self.interval).max(1);
        let mut out = Vec::new();
        let mut elapsed = Duration::ZERO;
        let mut segment_start = 0u64;
        let mut sent = 0u64;
        let max = u64::from(u16::MAX);
        loop {
            sent = (sent + step).min(total);
            while sent - segment_start > max {
                // Close the segment at the largest duration, continue in the next one.
                let first = out.is_empty();
                out.push(self.packet(
                    event,
                    false,
                    timestamp,
                    segment_start,
                    segment_start + max,
                    elapsed,
                    first,
                ));
                segment_start += max;
            }
            if sent == total {
                break;
            }
            out.push(self.packet(
                event,
                false,
                timestamp,
                segment_start,
                sent,
                elapsed,
                out.is_empty(),
            ));
            elapsed += self.interval;
        }
        for _ in 0..3 {
            out.push(self.packet(
                event,
                true,
                timestamp,
                segment_start,
                total,
                elapsed,
                out.is_empty(),
            ));
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn packet(
        &self,
        event: u8,
        end: bool,
        timestamp: u32,
        segment_start: u64,
        sent: u64,
        send_after: Duration,
        first: bool,
    ) -> TelephoneEventPacket {
        TelephoneEventPacket {
            payload: TelephoneEvent {
                event,
                end,
                volume: self.volume,
                duration: (sent - segment_start) as u16,
            }
            .to_bytes(),
            timestamp: timestamp.wrapping_add(segment_start as u32),
            marker: first,
            send_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn payload_print_and_parse() {
        // Digit 5, E bit, volume 10, duration 800: 05 8a 03 20.
        let bytes = [0x05, 0x8A, 0x03, 0x20];
        let ev = TelephoneEvent::parse(&bytes).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(ev.to_bytes(), bytes);
        // The R bit is ignored on receipt and cleared on send.
        assert_eq!(TelephoneEvent::parse(&[5, 0xCA, 3, 0x20]).unwrap(), ev);
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::ShortPayload(3))
        );
    }

    /// The shape of RFC 4733's DTMF examples: one event timestamp, marker on the first
    /// packet, updates every 50 ms (400 units at 8 kHz), the end reported three times.
    #[test]
    fn rfc4733_style_sequence_yields_one_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfEventReceiver::new(8000);
        let ts = 0x1000;
        for (i, d) in [400u16, 800, 1200].into_iter().enumerate() {
            rx.handle_packet(
                t0 + ms(50 * i as u64),
                ts,
                i as u16,
                i == 0,
                &pkt(9, false, d),
            )
            .unwrap();
            assert_eq!(rx.current_digit(), Some('9'));
            assert!(rx.poll_digit().is_none());
        }
        for i in 3..6u16 {
            rx.handle_packet(t0 + ms(150), ts, i, false, &pkt(9, true, 1600))
                .unwrap();
        }
        assert_eq!(
            rx.poll_digit(),
            Some(DtmfDigit {
                digit: '9',
                duration_ms: 200,
                source: DtmfSource::Rfc4733
            })
        );
        assert!(rx.poll_digit().is_none());
        assert!(rx.poll_timeout().is_none());
        // A second press of the same digit has a new timestamp.
        rx.handle_packet(t0 + ms(400), ts + 3200, 6, true, &pkt(9, false, 400))
            .unwrap();
        rx.handle_packet(t0 + ms(450), ts + 3200, 7, false, &pkt(9, true, 800))
            .unwrap();
        assert_eq!(
            rx.poll_digit().map(|d| (d.digit, d.duration_ms)),
            Some(('9', 100))
        );
    }

    #[test]
    fn lost_end_packets_end_on_timeout() {
        let t0 = Instant::now();
        let mut rx = DtmfEventReceiver::new(8000);
        rx.handle_packet(t0, 80, 1, true, &pkt(1, false, 160))
            .unwrap();
        rx.handle_packet(t0 + ms(20), 80, 2, false, &pkt(1, false, 320))
            .unwrap();
        let deadline = rx.poll_timeout().unwrap();
        assert_eq!(deadline, t0 + ms(20) + DEFAULT_END_TIMEOUT);
        rx.handle_timeout(deadline - ms(1));
        assert!(rx.poll_digit().is_none());
        rx.handle_timeout(deadline);
        assert_eq!(
            rx.poll_digit().map(|d| (d.digit, d.duration_ms)),
            Some(('1', 40))
        );
        // The end packets arriving after all are not a second digit.
        rx.handle_packet(deadline + ms(5), 80, 3, false, &pkt(1, true, 640))
            .unwrap();
        assert!(rx.poll_digit().is_none());
        assert!(rx.poll_timeout().is_none());
    }

    #[test]
    fn lost_end_packets_end_on_next_event() {
        let t0 = Instant::now();
        let mut rx = DtmfEventReceiver::new(8000);
        rx.handle_packet(t0, 0, 1, true, &pkt(2, false, 400))
            .unwrap();
        rx.handle_packet(t0 + ms(300), 4000, 2, true, &pkt(3, false, 400))
            .unwrap();
        assert_eq!(rx.poll_digit().map(|d| d.digit), Some('2'));
        rx.handle_packet(t0 + ms(350), 4000, 3, false, &pkt(3, true, 800))
            .unwrap();
        assert_eq!(rx.poll_digit().map(|d| d.digit), Some('3'));
    }

    #[test]
    fn reordered_packets_and_lost_start() {
        let t0 = Instant::now();
        let mut rx = DtmfEventReceiver::new(8000);
        // Start (marker) lost; an update, then the end before a late update.
        rx.handle_packet(t0, 160, 2, false, &pkt(11, false, 800))
            .unwrap();
        rx.handle_packet(t0 + ms(50), 160, 4, false, &pkt(11, true, 1600))
            .unwrap();
        rx.handle_packet(t0 + ms(51), 160, 3, false, &pkt(11, false, 1200))
            .unwrap();
        rx.handle_packet(t0 + ms(52), 160, 1, true, &pkt(11, false, 400))
            .unwrap();
        rx.handle_packet(t0 + ms(53), 160, 5, false, &pkt(11, true, 1600))
            .unwrap();
        assert_eq!(
            rx.poll_digit().map(|d| (d.digit, d.duration_ms)),
            Some(('#', 200))
        );
        assert!(rx.poll_digit().is_none());
        // Only end packets (very short press, everything else lost) still count.
        rx.handle_packet(t0 + ms(300), 9000, 9, false, &pkt(0, true, 320))
            .unwrap();
        assert_eq!(rx.poll_digit().map(|d| d.digit), Some('0'));
        // A late packet of an older event after a newer one is ignored.
        rx.handle_packet(t0 + ms(301), 5000, 6, true, &pkt(7, false, 160))
            .unwrap();
        assert!(rx.poll_digit().is_none() && rx.current_digit().is_none());
    }

    #[test]
    fn non_dtmf_events_are_ignored() {
        let t0 = Instant::now();
        let mut rx = DtmfEventReceiver::new(8000);
        rx.handle_packet(t0, 0, 1, true, &pkt(16, true, 800))
            .unwrap(); // flash
        rx.handle_packet(t0, 0, 1, true, &pkt(32, true, 800))
            .unwrap(); // fax ANS
        assert!(rx.poll_digit().is_none() && rx.poll_timeout().is_none());
        assert!(rx.handle_packet(t0, 0, 1, true, &[1]).is_err());
    }

    #[test]
    fn sender_packets() {
        let tx = DtmfEventSender::new(8000);
        let p = tx.packets('5', 200, 1234).unwrap();
        let parsed: Vec<_> = p
            .iter()
            .map(|p| TelephoneEvent::parse(&p.payload).unwrap())
            .collect();
        assert_eq!(
            parsed
                .iter()
                .map(|e| (e.duration, e.end))
                .collect::<Vec<_>>(),
            [
                (400, false),
                (800, false),
                (1200, false),
                (1600, true),
                (1600, true),
                (1600, true)
            ]
        );
        assert!(p
            .iter()
            .all(|p| p.timestamp == 1234 && TelephoneEvent::parse(&p.payload).unwrap().event == 5));
        assert_eq!(p.iter().filter(|p| p.marker).count(), 1);
        assert!(p[0].marker);
        assert_eq!(p[3].send_after, ms(150));
        let tx20 = DtmfEventSender::new(48_000).with_interval(ms(20));
        let p = tx20.packets('#', 100, 0).unwrap();
        assert_eq!(p.len(), 4 + 3);
        assert_eq!(TelephoneEvent::parse(&p[0].payload).unwrap().duration, 960);
        assert_eq!(TelephoneEvent::parse(&p[6].payload).unwrap().duration, 4800);
        assert_eq!(tx.packets('x', 100, 0), Err(DtmfError::InvalidDigit('x')));
    }

    #[test]
    fn sender_to_receiver_for_every_digit_including_long_segments() {
        for (rate, ms_len) in [(8000, 120), (48_000, 250), (48_000, 3000), (8000, 9000)] {
            let tx = DtmfEventSender::new(rate);
            let t0 = Instant::now();
            let mut rx = DtmfEventReceiver::new(rate);
            let mut got = String::new();
            let mut ts = 0u32;
            for (n, d) in "0123456789*#ABCD".chars().enumerate() {
                for (seq, p) in tx.packets(d, ms_len, ts).unwrap().into_iter().enumerate() {
                    let now = t0 + ms(n as u64 * 20_000) + p.send_after;
                    rx.handle_packet(now, p.timestamp, seq as u16, p.marker, &p.payload)
                        .unwrap();
                }
                ts = ts.wrapping_add(rate * 20);
                let digit = rx.poll_digit().expect("digit");
                assert_eq!(digit.digit, d);
                assert!(
                    digit.duration_ms.abs_diff(ms_len) <= 1,
                    "{rate} {ms_len} {digit:?}"
                );
                got.push(digit.digit);
                assert!(rx.poll_digit().is_none());
            }
            assert_eq!(got, "0123456789*#ABCD");
        }
    }
}
