//! Deterministic stand-in for the `mixer_packet` cargo-fuzz target (which needs nightly or
//! `--sanitizer none`): the shared body runs over seeded mutations of rooms built here,
//! whose participants send real PCMU, PCMA and Opus packets of a tone (so most mutations
//! reach the jitter buffers and decoders rather than stopping at the RTP parser). A
//! failure prints the seed, seed input and iteration. `MIXER_FUZZ_ITERS=n` runs n
//! mutations per seed input (and `MIXER_FUZZ_SEED` another seed).

#[allow(dead_code)] // each test file uses some of the bodies
#[path = "common/fuzz_bodies.rs"]
mod fuzz_bodies;

use rand::rngs::StdRng;
use rand::SeedableRng;
use switchboard_media::codec::encoder_for;
use switchboard_media::rtp::RtpHeader;

const SEED: u64 = 0x00d1_c0f5;
/// Four rooms × 500 = 2,000 mutated rooms per run (about 40 s of CPU in a debug build,
/// 4 s with `--release`: resampling the Opus participant dominates).
const PER_INPUT: usize = 500;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A room (settings byte `room`) where each participant sends `rounds` packets of a tone in
/// its codec, one tick after each round; `extra` controls are OR-ed into every record.
fn room(room: u8, rounds: u32, extra: u8) -> Vec<u8> {
    let codecs = fuzz_bodies::mixer_codecs();
    let mut encoders: Vec<_> = codecs.iter().map(|c| encoder_for(c).unwrap()).collect();
    let mut out = vec![room];
    for round in 0..rounds {
        for (i, (codec, encoder)) in codecs.iter().zip(&mut encoders).enumerate() {
            let n = encoder.frame_samples();
            let rate = f64::from(encoder.rate());
            let hz = 300.0 + 200.0 * i as f64;
            let pcm: Vec<i16> = (0..n)
                .map(|k| {
                    let t = (f64::from(round) * n as f64 + k as f64) / rate;
                    (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
                })
                .collect();
            let payload = encoder.encode(&pcm).unwrap();
            let packet = RtpHeader::new(
                codec.payload_type,
                round as u16,
                round * (codec.clock_rate / 50),
                0x1000 + i as u32,
            )
            .to_bytes(&payload);
            let len = u8::try_from(packet.len()).expect("a 20 ms packet under 256 bytes");
            let ticks = if i == 2 { 1 << 3 } else { 0 };
            out.push(i as u8 | ticks | extra);
            out.push(len);
            out.extend_from_slice(&packet);
        }
    }
    out
}

#[test]
fn mutated_rooms_never_panic_and_send_only_their_participants_rtp() {
    let seed = env_or("MIXER_FUZZ_SEED", SEED);
    let per_input = env_or("MIXER_FUZZ_ITERS", PER_INPUT);
    let inputs = [
        room(0b0000_0000, 3, 0),
        // Moderated with the Opus participant as speaker, PCMA muted, no tones.
        room(0b0101_0011, 3, 0),
        // Header rewriting on: payload mutations go straight to the decoders.
        room(0b0000_0010, 3, 0x04),
        // Moderated, nobody speaks (music on hold), a second passes before each packet.
        room(0b0000_0001, 2, 0x80),
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let interesting = [0x80, 0x00, 0x08, 0x6F, 0xFF, 0x7F, 0x44, 0x1C, 0x04, 0xC0];
    for (s, input) in inputs.iter().enumerate() {
        fuzz_bodies::mixer_packet(input);
        let other = &inputs[(s + 1) % inputs.len()];
        for n in 0..per_input {
            let mutated = switchboard_testkit::mutate_text(&mut rng, input, other, &interesting);
            if std::panic::catch_unwind(|| fuzz_bodies::mixer_packet(&mutated)).is_err() {
                panic!("panic on seed input #{s} mutation #{n} (seed {seed}): {mutated:?}");
            }
        }
    }
}

/// The seeds are what they claim: real audio reaches the mix (the property test would
/// otherwise only exercise the RTP parser).
#[test]
fn seed_rooms_carry_decodable_audio_to_every_participant() {
    use std::time::Instant;
    use switchboard_media::mixer::{Mixer, MixerConfig, ParticipantConfig, TICK};
    let input = room(0b0000_0010, 12, 0);
    let codecs = fuzz_bodies::mixer_codecs();
    let mut mixer = Mixer::new(MixerConfig {
        join_tone: None,
        leave_tone: None,
        ..MixerConfig::default()
    });
    let mut now = Instant::now();
    for (i, codec) in codecs.iter().enumerate() {
        let config = ParticipantConfig {
            codec: codec.clone(),
            ssrc: i as u32,
            speaker: false,
            muted: false,
            send: true,
        };
        mixer.add_participant(i as u64 + 1, config, now).unwrap();
    }
    let mut rest = &input[1..];
    while let [control, len, tail @ ..] = rest {
        let (packet, next) = tail.split_at(usize::from(*len));
        mixer.handle_packet(u64::from(control & 3) + 1, packet, now);
        rest = next;
        if control & 0x18 != 0 {
            now += TICK;
            mixer.tick(now);
        }
    }
    let stats = mixer.stats();
    assert_eq!(stats.packets_in, 36);
    assert_eq!(stats.packets_ignored, 0, "{stats:?}");
}
