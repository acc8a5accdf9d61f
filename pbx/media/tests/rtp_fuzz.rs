//! Deterministic stand-in for the `rtp`, `rtcp` and `dtmf_info` cargo-fuzz targets (which
//! need nightly): the shared bodies run over seeded pseudo-random mutations of packets
//! and bodies built here. A failure prints the seed, seed input and iteration.
//! `RTP_FUZZ_ITERS=n` runs n mutations per seed input (and `RTP_FUZZ_SEED` another seed).

#[allow(dead_code)] // each test file uses some of the bodies
#[path = "common/fuzz_bodies.rs"]
mod fuzz_bodies;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard_media::dtmf::DtmfEventSender;
use switchboard_media::rtp::rtcp::{build_rr, build_sr};
use switchboard_media::rtp::{
    App, Goodbye, ReceiverReport, ReportBlock, RtcpPacket, RtpHeader, SenderReport,
};

const SEED: u64 = 0x3550_4733;
const PER_INPUT: usize = 400;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let len = out.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                // Header bytes matter most: hit the first 16 often.
                let i = rng.gen_range(0..len.min(16));
                out[i] = rng.gen();
            }
            2 => {
                let i = rng.gen_range(0..=len);
                out.insert(
                    i,
                    [0, 0xFF, 0x80, 0x20, 0x10, b'=', b'\n'][rng.gen_range(0..7)],
                );
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(8));
                out.drain(i..i + n);
            }
            4 if len > 0 => out.truncate(rng.gen_range(0..len)),
            5 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(32));
                let chunk = out[i..i + n].to_vec();
                out.extend_from_slice(&chunk);
            }
            _ => {
                let i = rng.gen_range(0..=len);
                let b: u8 = rng.gen();
                out.insert(i, b);
            }
        }
    }
    out
}

fn run(target: fn(&[u8]), salt: u64, seeds: &[Vec<u8>]) {
    let seed = env_or("RTP_FUZZ_SEED", SEED);
    let per_input = env_or("RTP_FUZZ_ITERS", PER_INPUT);
    let mut rng = StdRng::seed_from_u64(seed ^ salt);
    for (s, input) in seeds.iter().enumerate() {
        target(input);
        for n in 0..per_input {
            let mutated = mutate(&mut rng, input);
            if std::panic::catch_unwind(|| target(&mutated)).is_err() {
                panic!("panic on seed input #{s} mutation #{n} (seed {seed}^{salt}): {mutated:?}");
            }
        }
    }
}

fn rtp_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![RtpHeader::new(0, 1, 160, 0x1234).to_bytes(&[0xFF; 160])];
    let full = RtpHeader {
        marker: true,
        payload_type: 101,
        sequence: 65535,
        timestamp: u32::MAX,
        ssrc: 7,
        csrcs: vec![1, 2],
        extension: Some((0xBEDE, vec![0x10, 1, 0, 0])),
        padding: 3,
    };
    seeds.push(full.to_bytes(&[5, 0x8A, 3, 0x20]));
    for p in DtmfEventSender::new(8000).packets('#', 120, 99).unwrap() {
        seeds.push(
            RtpHeader::new(101, 5, p.timestamp, 8)
                .with_marker(p.marker)
                .to_bytes(&p.payload),
        );
    }
    seeds
}

fn rtcp_seeds() -> Vec<Vec<u8>> {
    let block = ReportBlock {
        ssrc: 2,
        fraction_lost: 3,
        cumulative_lost: -4,
        extended_highest_seq: 70_000,
        jitter: 12,
        last_sr: 99,
        delay_since_last_sr: 65536,
    };
    let sr = SenderReport {
        ssrc: 1,
        ntp_timestamp: 0xE54F_2C00_8000_0000,
        rtp_timestamp: 800,
        packet_count: 5,
        octet_count: 800,
        reports: vec![block],
    };
    let rr = ReceiverReport {
        ssrc: 1,
        reports: vec![block, block],
    };
    vec![
        build_sr(sr, "caller@198.51.100.7"),
        build_rr(rr.clone(), "switchboard"),
        RtcpPacket::compound_to_bytes(&[
            RtcpPacket::ReceiverReport(rr),
            RtcpPacket::App(App {
                subtype: 1,
                ssrc: 1,
                name: *b"TEST",
                data: vec![1, 2, 3, 4],
            }),
            RtcpPacket::Unknown {
                packet_type: 206,
                count: 1,
                body: vec![0; 8],
            },
            RtcpPacket::Goodbye(Goodbye {
                sources: vec![1],
                reason: Some(b"bye".to_vec()),
            }),
        ]),
    ]
}

fn info_seeds() -> Vec<Vec<u8>> {
    vec![
        b"\x00Signal=5\r\nDuration=160\r\n".to_vec(),
        b"\x02signal = #\nduration=90".to_vec(),
        b"\x011".to_vec(),
        b"\x0111".to_vec(),
        vec![5, 0x8A, 3, 0x20],
    ]
}

#[test]
fn rtp_parser_survives_mutations() {
    run(fuzz_bodies::rtp, 1, &rtp_seeds());
}

#[test]
fn rtcp_parser_survives_mutations() {
    run(fuzz_bodies::rtcp, 2, &rtcp_seeds());
}

#[test]
fn dtmf_info_parsers_survive_mutations() {
    run(fuzz_bodies::dtmf_info, 3, &info_seeds());
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(env_or("RTP_FUZZ_SEED", SEED));
    for _ in 0..5000 {
        let len = rng.gen_range(0..80);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        fuzz_bodies::rtp(&data);
        fuzz_bodies::rtcp(&data);
        fuzz_bodies::dtmf_info(&data);
    }
}
