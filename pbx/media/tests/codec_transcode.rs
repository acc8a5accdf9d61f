//! Transcoding a call leg PCMU ↔ Opus in simulated time: a 1 kHz tone keeps its
//! frequency and level through PCMU → Opus → PCMU (with both resamplers), and stays
//! recognisable with 5% packet loss through the jitter buffer with Opus FEC/PLC. Also
//! G.711 concealment, and the codec factory.

use std::time::{Duration, Instant};

use switchboard_media::codec::{decoder_for, encoder_for, AudioDecoder, CodecKind, CodecSpec};
use switchboard_media::jitter::{JitterBuffer, Playout};
use switchboard_media::resample::Resampler;

const TAU: f64 = 2.0 * std::f64::consts::PI;

fn sine(rate: u32, freq: f64, amplitude: f64, len: usize) -> Vec<i16> {
    (0..len)
        .map(|n| (amplitude * (TAU * freq * n as f64 / rate as f64).sin()).round() as i16)
        .collect()
}

fn rms(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

fn db(ratio: f64) -> f64 {
    20.0 * ratio.log10()
}

/// Goertzel amplitude of `freq` in `samples`.
fn tone_amplitude(samples: &[i16], rate: u32, freq: f64) -> f64 {
    let coeff = 2.0 * (TAU * freq / rate as f64).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2).sqrt() / samples.len() as f64
}

/// The frequency with the strongest Goertzel response between 500 and 2000 Hz, in 5 Hz
/// steps.
fn peak_frequency(samples: &[i16], rate: u32) -> f64 {
    (100..=400)
        .map(|k| f64::from(k) * 5.0)
        .max_by(|a, b| {
            tone_amplitude(samples, rate, *a).total_cmp(&tone_amplitude(samples, rate, *b))
        })
        .unwrap()
}

/// Frequency from rising zero crossings, interpolated between samples.
fn zero_crossing_frequency(samples: &[i16], rate: u32) -> f64 {
    let mut crossings = Vec::new();
    for n in 1..samples.len() {
        let (a, b) = (f64::from(samples[n - 1]), f64::from(samples[n]));
        if a < 0.0 && b >= 0.0 {
            crossings.push(n as f64 - 1.0 + a / (a - b));
        }
    }
    (crossings.len() - 1) as f64 * rate as f64 / (crossings[crossings.len() - 1] - crossings[0])
}

fn pcmu() -> CodecSpec {
    CodecSpec::from_rtpmap("PCMU", 8000, 1, 0, None).unwrap()
}

fn opus() -> CodecSpec {
    CodecSpec::from_rtpmap("opus", 48000, 2, 111, Some("useinbandfec=1")).unwrap()
}

/// The caller's leg: PCMU payloads of a 1 kHz tone, one per 20 ms.
fn pcmu_packets(seconds: usize) -> (Vec<i16>, Vec<Vec<u8>>) {
    let tone = sine(8000, 1000.0, 10_000.0, 8000 * seconds);
    let mut encoder = encoder_for(&pcmu()).unwrap();
    let packets = tone
        .chunks(encoder.frame_samples())
        .map(|frame| encoder.encode(frame).unwrap())
        .collect();
    (tone, packets)
}

/// Switchboard's transcoder, PCMU leg → Opus leg: decode, 8k→48k, encode.
fn to_opus(pcmu_packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut decoder = decoder_for(&pcmu()).unwrap();
    let mut up = Resampler::new(8000, 48000);
    let mut encoder = encoder_for(&opus()).unwrap();
    assert_eq!((encoder.rate(), encoder.frame_samples()), (48000, 960));
    pcmu_packets
        .iter()
        .map(|packet| {
            let pcm = up.process(&decoder.decode(packet).unwrap());
            encoder.encode(&pcm).unwrap()
        })
        .collect()
}

/// Opus leg → PCMU leg, given what the jitter buffer says for each tick: decode (or
/// recover, or conceal), 48k→8k, encode; then the far phone decodes PCMU.
fn to_pcmu_and_listen(playouts: Vec<Playout>) -> Vec<i16> {
    let mut decoder = decoder_for(&opus()).unwrap();
    let mut down = Resampler::new(48000, 8000);
    let mut encoder = encoder_for(&pcmu()).unwrap();
    let mut phone = decoder_for(&pcmu()).unwrap();
    let mut heard = Vec::new();
    for playout in playouts {
        let pcm48 = match playout {
            Playout::Frame(payload, _) => decoder.decode(&payload).unwrap(),
            Playout::Missing { next: Some(next) } => decoder
                .decode_fec(&next, 960)
                .unwrap_or_else(|| decoder.conceal(960)),
            Playout::Missing { next: None } => decoder.conceal(960),
            Playout::Empty => continue,
        };
        assert_eq!(pcm48.len(), 960);
        let pcm8 = down.process(&pcm48);
        assert_eq!(pcm8.len(), 160);
        let payload = encoder.encode(&pcm8).unwrap();
        heard.extend(phone.decode(&payload).unwrap());
    }
    heard
}

#[test]
fn pcmu_to_opus_to_pcmu_keeps_a_1khz_tone() {
    let (tone, packets) = pcmu_packets(3);
    let opus_packets = to_opus(&packets);
    let heard = to_pcmu_and_listen(
        opus_packets
            .into_iter()
            .enumerate()
            .map(|(i, p)| Playout::Frame(p, 960 * i as u32))
            .collect(),
    );
    assert_eq!(heard.len(), tone.len());
    // Past the start-up delay of the resamplers and the Opus encoder (~10 ms).
    let steady = &heard[1600..];
    let frequency = zero_crossing_frequency(steady, 8000);
    assert!(
        (frequency - 1000.0).abs() <= 20.0,
        "frequency {frequency:.1} Hz"
    );
    let peak = peak_frequency(steady, 8000);
    assert!((peak - 1000.0).abs() <= 20.0, "peak at {peak} Hz");
    let level = db(rms(steady) / rms(&tone[1600..]));
    assert!(level.abs() <= 1.5, "level change {level:.2} dB");
    // Almost all of the energy is the tone itself.
    let purity = tone_amplitude(steady, 8000, 1000.0) / std::f64::consts::SQRT_2 / rms(steady);
    assert!(
        purity > 0.95,
        "tone is {:.0}% of the signal",
        purity * 100.0
    );
}

#[test]
fn five_percent_loss_through_the_jitter_buffer_stays_recognisable() {
    let (tone, packets) = pcmu_packets(10);
    let opus_packets = to_opus(&packets);

    // The network between the Opus phone and Switchboard: seeded 5% loss, 0–30 ms
    // jitter (so some reordering), 20 ms ticks.
    let mut seed: u64 = 0x5EED_1234;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let epoch = Instant::now();
    let mut arrivals = Vec::new();
    let mut lost = 0;
    for (i, packet) in opus_packets.into_iter().enumerate() {
        if random() % 100 < 5 {
            lost += 1;
            continue;
        }
        let at = 20 * i as u64 + 5 + random() % 30;
        arrivals.push((at, i, packet));
    }
    arrivals.sort_by_key(|a| a.0);
    assert!(lost > 10, "{lost} lost");

    let mut buffer = JitterBuffer::new(48000, 20, 40, 200);
    let mut playouts = Vec::new();
    let mut pending = arrivals.into_iter().peekable();
    for tick in 0..(tone.len() / 160 + 20) as u64 {
        let now = 20 * tick + 3;
        while let Some((at, i, _)) = pending.peek() {
            if *at > now {
                break;
            }
            let (at, i, packet) = (*at, *i, pending.next().unwrap().2);
            let seq = (9000 + i) as u16;
            let ts = (960 * i as u32).wrapping_add(4_000_000_000);
            buffer.push(seq, ts, packet, epoch + Duration::from_millis(at));
        }
        playouts.push(buffer.pop(epoch + Duration::from_millis(now)));
    }
    let stats = buffer.stats();
    assert!(
        stats.lost + stats.late >= lost,
        "{stats:?}, {lost} lost on the network"
    );
    let recovered = playouts
        .iter()
        .filter(|p| matches!(p, Playout::Missing { next: Some(_) }))
        .count();
    assert!(recovered > 0, "no frame offered for FEC");

    let heard = to_pcmu_and_listen(playouts);
    let steady = &heard[1600..heard.len() - 1600];
    let peak = peak_frequency(steady, 8000);
    assert!((peak - 1000.0).abs() <= 20.0, "peak at {peak} Hz");
    let frequency = zero_crossing_frequency(steady, 8000);
    assert!(
        (frequency - 1000.0).abs() <= 20.0,
        "frequency {frequency:.1} Hz"
    );
    let level = db(rms(steady) / rms(&tone));
    assert!(level.abs() <= 3.0, "level change {level:.2} dB");
    let purity = tone_amplitude(steady, 8000, 1000.0) / std::f64::consts::SQRT_2 / rms(steady);
    assert!(purity > 0.8, "tone is {:.0}% of the signal", purity * 100.0);
}

#[test]
fn opus_fec_recovers_a_lost_frame_better_than_silence() {
    let spec = opus();
    let mut encoder = encoder_for(&spec).unwrap();
    let mut decoder = decoder_for(&spec).unwrap();
    let tone = sine(48000, 1000.0, 10_000.0, 48000);
    let packets: Vec<Vec<u8>> = tone
        .chunks(960)
        .map(|f| encoder.encode(f).unwrap())
        .collect();
    for packet in &packets[..20] {
        decoder.decode(packet).unwrap();
    }
    // Packet 20 is lost; 21 carries its FEC.
    let recovered = decoder.decode_fec(&packets[21], 960).unwrap();
    assert_eq!(recovered.len(), 960);
    let level = db(tone_amplitude(&recovered, 48000, 1000.0) / 10_000.0);
    assert!(level > -6.0, "recovered frame at {level:.1} dB");
    assert_eq!(decoder.decode(&packets[21]).unwrap().len(), 960);
}

#[test]
fn g711_concealment_repeats_the_pitch_and_fades_out() {
    for kind in ["PCMU", "PCMA"] {
        let spec = CodecSpec::from_rtpmap(kind, 8000, 1, 0, None).unwrap();
        let mut encoder = encoder_for(&spec).unwrap();
        let mut decoder = decoder_for(&spec).unwrap();
        assert_eq!(decoder.decode_fec(&[0xFF; 160], 160), None);
        // A voiced-like signal: 150 Hz fundamental with two harmonics.
        let signal: Vec<i16> = (0..8000)
            .map(|n| {
                let t = n as f64 / 8000.0;
                (6000.0 * (TAU * 150.0 * t).sin()
                    + 3000.0 * (TAU * 300.0 * t).sin()
                    + 1500.0 * (TAU * 450.0 * t).sin()) as i16
            })
            .collect();
        let frames: Vec<&[i16]> = signal.chunks(160).collect();
        for frame in &frames[..10] {
            decoder.decode(&encoder.encode(frame).unwrap()).unwrap();
        }
        // Frame 10 lost: the concealment should track the real signal closely.
        let concealed = decoder.conceal(160);
        let error: Vec<i16> = concealed
            .iter()
            .zip(frames[10])
            .map(|(a, b)| a - b)
            .collect();
        let snr = db(rms(frames[10]) / rms(&error[..80]));
        assert!(
            snr > 10.0,
            "{kind}: first 10 ms concealed at SNR {snr:.1} dB"
        );
        // The level fades from 10 ms on and is gone after 60 ms.
        let more = decoder.conceal(400);
        assert!(rms(&more[..80]) < rms(&concealed[..80]));
        assert!(
            more[320..].iter().all(|&s| s == 0),
            "{kind}: not muted at 60 ms"
        );
        // The first good frame is spliced in without a click.
        let resumed = decoder
            .decode(&encoder.encode(frames[14]).unwrap())
            .unwrap();
        let jump = (i32::from(resumed[0]) - i32::from(more[399])).abs();
        assert!(jump < 2000, "{kind}: splice jumps by {jump}");
        // After the cross-fade (10 ms for a loss this long) it is the plain decode.
        let mut fresh = decoder_for(&spec).unwrap();
        let plain = fresh.decode(&encoder.encode(frames[14]).unwrap()).unwrap();
        assert_eq!(resumed[80..], plain[80..], "{kind}");
    }
}

#[test]
fn g711_concealment_of_a_tone_keeps_its_frequency() {
    let spec = pcmu();
    let mut encoder = encoder_for(&spec).unwrap();
    let mut decoder = decoder_for(&spec).unwrap();
    let tone = sine(8000, 1000.0, 10_000.0, 8000);
    let mut out = Vec::new();
    for (i, frame) in tone.chunks(160).enumerate() {
        if i % 10 == 5 {
            out.extend(decoder.conceal(160));
        } else {
            out.extend(decoder.decode(&encoder.encode(frame).unwrap()).unwrap());
        }
    }
    let peak = peak_frequency(&out, 8000);
    assert_eq!(peak, 1000.0);
    let level = db(rms(&out) / rms(&tone));
    assert!(level.abs() < 1.0, "{level:.2} dB");
}

#[test]
fn factory_builds_every_audio_codec() {
    for (name, rate, channels, kind, pcm_rate) in [
        ("PCMU", 8000, 1, CodecKind::Pcmu, 8000),
        ("PCMA", 8000, 1, CodecKind::Pcma, 8000),
        ("opus", 48000, 2, CodecKind::Opus, 48000),
    ] {
        let spec = CodecSpec::from_rtpmap(name, rate, channels, 96, None).unwrap();
        assert_eq!(spec.kind, kind);
        let mut encoder = encoder_for(&spec).unwrap();
        let mut decoder: Box<dyn AudioDecoder> = decoder_for(&spec).unwrap();
        assert_eq!((encoder.rate(), decoder.rate()), (pcm_rate, pcm_rate));
        let frame = sine(pcm_rate, 1000.0, 8000.0, encoder.frame_samples());
        let payload = encoder.encode(&frame).unwrap();
        assert_eq!(decoder.decode(&payload).unwrap().len(), frame.len());
    }
}
