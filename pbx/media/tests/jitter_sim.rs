//! The jitter buffer in simulated time: a 20 ms sender, a network with seeded delay,
//! loss, duplication and reordering, and a receiver that pops every 20 ms.

use std::time::{Duration, Instant};

use switchboard_media::jitter::{JitterBuffer, Playout};

/// xorshift64*: deterministic across platforms and crate versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[derive(Clone)]
struct Network {
    seed: u64,
    loss: f64,
    duplicate: f64,
    /// Extra delay, uniform in 0..jitter_ms.
    jitter_ms: u64,
}

struct Outcome {
    /// Index of each packet played, in play order.
    played: Vec<u64>,
    /// Frames concealed before the last frame played (the end of the stream is
    /// concealed for up to the maximum delay too, and is not counted here).
    missing: usize,
    missing_with_next: usize,
    /// Packets the network dropped.
    dropped: usize,
    duplicated: usize,
    buffer: JitterBuffer,
    /// (tick, current delay) samples.
    delays: Vec<u32>,
}

/// One stream segment: `count` packets starting at send time `start_ms`.
struct Segment {
    count: u64,
    start_ms: u64,
    seq: u16,
    ts: u32,
    first_index: u64,
    network: Network,
}

fn run(segments: &[Segment], duration_ms: u64) -> Outcome {
    let epoch = Instant::now();
    let mut arrivals = Vec::new();
    let (mut dropped, mut duplicated) = (0, 0);
    for segment in segments {
        let mut rng = Rng(segment.network.seed | 1);
        for i in 0..segment.count {
            let sent = segment.start_ms + 20 * i;
            if rng.chance(segment.network.loss) {
                dropped += 1;
                continue;
            }
            let at = sent + 5 + rng.below(segment.network.jitter_ms);
            let seq = segment.seq.wrapping_add(i as u16);
            let ts = segment.ts.wrapping_add(160 * i as u32);
            let index = segment.first_index + i;
            arrivals.push((at * 1000, seq, ts, index));
            if rng.chance(segment.network.duplicate) {
                duplicated += 1;
                arrivals.push((at * 1000 + 700, seq, ts, index));
            }
        }
    }
    arrivals.sort_by_key(|a| a.0);

    let mut buffer = JitterBuffer::new(8000, 20, 40, 200);
    let mut outcome = Outcome {
        played: Vec::new(),
        missing: 0,
        missing_with_next: 0,
        dropped,
        duplicated,
        buffer: JitterBuffer::new(8000, 20, 40, 200),
        delays: Vec::new(),
    };
    let mut pending = arrivals.into_iter().peekable();
    // Ticks at 20 ms + 3 ms phase, so that arrivals and ticks interleave.
    let mut tick_us = 3_000;
    let mut missing_since_frame = 0;
    while tick_us <= duration_ms * 1000 {
        while let Some(&(at, seq, ts, index)) = pending.peek() {
            if at > tick_us {
                break;
            }
            buffer.push(
                seq,
                ts,
                index.to_be_bytes().to_vec(),
                epoch + Duration::from_micros(at),
            );
            pending.next();
        }
        match buffer.pop(epoch + Duration::from_micros(tick_us)) {
            Playout::Frame(payload, _) => {
                outcome
                    .played
                    .push(u64::from_be_bytes(payload.try_into().unwrap()));
                outcome.missing += missing_since_frame;
                missing_since_frame = 0;
            }
            Playout::Missing { next } => {
                missing_since_frame += 1;
                if next.is_some() {
                    outcome.missing_with_next += 1;
                }
            }
            Playout::Empty => {}
        }
        outcome.delays.push(buffer.stats().current_delay_ms);
        tick_us += 20_000;
    }
    outcome.buffer = buffer;
    outcome
}

fn clean() -> Network {
    Network {
        seed: 1,
        loss: 0.0,
        duplicate: 0.0,
        jitter_ms: 0,
    }
}

fn assert_in_order(played: &[u64]) {
    assert!(
        played.windows(2).all(|w| w[0] < w[1]),
        "played out of order"
    );
}

#[test]
fn clean_stream_plays_everything_at_minimum_delay() {
    let out = run(
        &[Segment {
            count: 500,
            start_ms: 0,
            seq: 1000,
            ts: 5000,
            first_index: 0,
            network: clean(),
        }],
        10_400,
    );
    assert_eq!(out.played, (0..500).collect::<Vec<_>>());
    let stats = out.buffer.stats();
    assert_eq!((stats.lost, stats.late, stats.duplicates), (0, 0, 0));
    assert_eq!(stats.target_delay_ms, 40);
    assert!(
        out.delays[10..490].iter().all(|&d| d <= 60),
        "{:?}",
        &out.delays[..20]
    );
}

#[test]
fn sequence_and_timestamp_wrap_around() {
    let out = run(
        &[Segment {
            count: 300,
            start_ms: 0,
            seq: 65_400,
            ts: u32::MAX - 3000,
            first_index: 0,
            network: Network {
                jitter_ms: 30,
                seed: 7,
                ..clean()
            },
        }],
        6_400,
    );
    assert_eq!(out.played.len() as u64 + out.buffer.stats().late, 300);
    assert_in_order(&out.played);
    assert_eq!(out.buffer.stats().resyncs, 0);
}

#[test]
fn loss_jitter_and_duplicates_are_counted_and_survived() {
    for seed in [3, 17, 99, 2024] {
        let out = run(
            &[Segment {
                count: 3000,
                start_ms: 0,
                seq: 40_000,
                ts: 123_456,
                first_index: 0,
                network: Network {
                    seed,
                    loss: 0.05,
                    duplicate: 0.01,
                    jitter_ms: 40,
                },
            }],
            60_400,
        );
        let stats = out.buffer.stats();
        assert_in_order(&out.played);
        assert_eq!(stats.duplicates as usize, out.duplicated, "seed {seed}");
        // Everything the network delivered in time is played; the rest is late.
        assert_eq!(
            out.played.len() as u64 + stats.late + stats.discarded,
            3000 - out.dropped as u64,
            "seed {seed}"
        );
        // Adaptation keeps late packets rare (they are only the first few spikes).
        assert!(stats.late <= 30, "seed {seed}: {} late", stats.late);
        // Every network loss shows up as a lost frame (or was shed as a late one).
        let accounted = stats.lost + stats.late;
        assert!(
            accounted >= out.dropped as u64 && accounted <= out.dropped as u64 + 40,
            "seed {seed}: lost {} late {} dropped {}",
            stats.lost,
            stats.late,
            out.dropped
        );
        assert!(out.missing_with_next > 0);
        // 40 ms of uniform jitter: RFC 3550 J ≈ 13 ms, target ≈ 60–80 ms.
        assert!(
            (60..=100).contains(&stats.target_delay_ms),
            "seed {seed}: target {} jitter {}",
            stats.target_delay_ms,
            stats.jitter_ms
        );
        assert!(out.delays.iter().all(|&d| d <= 200 + 20));
    }
}

#[test]
fn delay_grows_with_jitter_and_shrinks_when_it_goes() {
    let out = run(
        &[
            Segment {
                count: 1000,
                start_ms: 0,
                seq: 1,
                ts: 0,
                first_index: 0,
                network: Network {
                    seed: 5,
                    jitter_ms: 120,
                    ..clean()
                },
            },
            Segment {
                count: 1500,
                start_ms: 20_000,
                seq: 1001,
                ts: 160_000,
                first_index: 1000,
                network: clean(),
            },
        ],
        50_400,
    );
    assert_in_order(&out.played);
    let during = out.delays[900];
    let after = *out.delays.last().unwrap();
    assert!(during >= 100, "delay under jitter {during}");
    assert!(after <= 60, "delay after jitter stopped {after}");
    assert!(out.buffer.stats().discarded > 0);
}

#[test]
fn new_stream_with_far_sequence_numbers_resyncs() {
    // A source switch: new SSRC, random sequence number and timestamp.
    let out = run(
        &[
            Segment {
                count: 200,
                start_ms: 0,
                seq: 100,
                ts: 1000,
                first_index: 0,
                network: clean(),
            },
            Segment {
                count: 200,
                start_ms: 4000,
                seq: 50_000,
                ts: 3_000_000_000,
                first_index: 200,
                network: clean(),
            },
        ],
        8_400,
    );
    assert_in_order(&out.played);
    let stats = out.buffer.stats();
    assert_eq!(stats.resyncs, 1);
    // Only the first packet of the new stream is spent confirming it.
    assert!(out.played.len() >= 398, "{}", out.played.len());
    assert!(out.missing <= 5, "{} concealed", out.missing);
    assert_eq!(stats.lost, 0);
}

#[test]
fn forward_jump_inside_the_window_does_not_conceal_for_ever() {
    let out = run(
        &[
            Segment {
                count: 100,
                start_ms: 0,
                seq: 10,
                ts: 0,
                first_index: 0,
                network: clean(),
            },
            Segment {
                count: 100,
                start_ms: 2000,
                seq: 2010,
                ts: 16_000,
                first_index: 100,
                network: clean(),
            },
        ],
        4_400,
    );
    assert_eq!(out.played.len(), 200);
    assert!(out.missing <= 12, "{} concealed", out.missing);
    assert_eq!(out.buffer.stats().resyncs, 1);
}

#[test]
fn a_stopped_stream_goes_quiet_then_resumes() {
    // 2 s of audio, 3 s of nothing (hold), then the same stream goes on.
    let out = run(
        &[
            Segment {
                count: 100,
                start_ms: 0,
                seq: 7,
                ts: 0,
                first_index: 0,
                network: clean(),
            },
            Segment {
                count: 100,
                start_ms: 5000,
                seq: 107,
                ts: 40_000,
                first_index: 100,
                network: clean(),
            },
        ],
        7_400,
    );
    assert_eq!(out.played, (0..200).collect::<Vec<_>>());
    // Concealment stops after the maximum delay (200 ms = 10 ticks), then Empty.
    assert!(out.missing <= 12, "{} concealed", out.missing);
    assert_eq!(out.buffer.stats().lost, 0);
}
