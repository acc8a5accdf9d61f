//! Mixer scenarios in simulated time: phones are tone generators that packetise their
//! audio every 20 ms; what the mixer sends each of them is decoded and analysed.

use std::time::{Duration, Instant};

use super::*;
use crate::codec::{decoder_for, encoder_for, AudioEncoder, CodecSpec};
use crate::rtp::RtpPacket;

fn pcmu() -> CodecSpec {
    CodecSpec::from_static_payload_type(0).unwrap()
}
fn pcma() -> CodecSpec {
    CodecSpec::from_static_payload_type(8).unwrap()
}
fn opus() -> CodecSpec {
    CodecSpec::from_rtpmap("opus", 48000, 2, 111, None).unwrap()
}

/// A phone: sends a sine (or silence) in its codec, and keeps what it receives.
struct Phone {
    id: ParticipantId,
    codec: CodecSpec,
    encoder: Box<dyn AudioEncoder>,
    tone_hz: Option<f64>,
    phase: f64,
    seq: u16,
    ts: u32,
    received: Vec<Vec<u8>>,
}

impl Phone {
    fn new(id: ParticipantId, codec: CodecSpec, tone_hz: Option<f64>) -> Phone {
        Phone {
            id,
            encoder: encoder_for(&codec).unwrap(),
            codec,
            tone_hz,
            phase: 0.0,
            seq: 1000,
            ts: 0,
            received: Vec::new(),
        }
    }

    fn config(&self) -> ParticipantConfig {
        ParticipantConfig {
            codec: self.codec.clone(),
            ssrc: 0x1000 + self.id as u32,
            speaker: false,
            muted: false,
            send: true,
        }
    }

    fn packet(&mut self) -> Vec<u8> {
        let rate = self.encoder.rate() as f64;
        let n = self.encoder.frame_samples();
        let pcm: Vec<i16> = (0..n)
            .map(|_| {
                let v = match self.tone_hz {
                    Some(hz) => {
                        let s = (2.0 * std::f64::consts::PI * self.phase).sin() * 6000.0;
                        self.phase = (self.phase + hz / rate).fract();
                        s
                    }
                    None => 0.0,
                };
                v as i16
            })
            .collect();
        let payload = self.encoder.encode(&pcm).unwrap();
        let data = RtpHeader::new(
            self.codec.payload_type,
            self.seq,
            self.ts,
            0xAB00 + self.id as u32,
        )
        .to_bytes(&payload);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(self.codec.clock_rate / 50);
        data
    }

    /// Everything received, decoded in order, at the decoder's rate.
    fn heard(&self) -> (Vec<f64>, u32) {
        let mut decoder = decoder_for(&self.codec).unwrap();
        let mut out = Vec::new();
        for data in &self.received {
            let packet = RtpPacket::parse(data).unwrap();
            assert_eq!(packet.payload_type(), self.codec.payload_type);
            out.extend(
                decoder
                    .decode(packet.payload())
                    .unwrap()
                    .iter()
                    .map(|&s| f64::from(s)),
            );
        }
        (out, decoder.rate())
    }
}

/// Amplitude of the `hz` component (1.0 = a full-scale sine), by Goertzel.
fn amplitude(samples: &[f64], rate: u32, hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / samples.len() as f64 / 32768.0
}

struct Room {
    mixer: Mixer,
    phones: Vec<Phone>,
    now: Instant,
}

impl Room {
    fn new(config: MixerConfig, phones: Vec<Phone>) -> Room {
        let now = Instant::now();
        let mut mixer = Mixer::new(config);
        for p in &phones {
            mixer.add_participant(p.id, p.config(), now).unwrap();
        }
        Room { mixer, phones, now }
    }

    fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for p in &mut self.phones {
                let data = p.packet();
                self.mixer.handle_packet(p.id, &data, self.now);
            }
            self.mixer.tick(self.now);
            while let Some(t) = self.mixer.poll_transmit() {
                // A phone taken out of `phones` (gone silent) still gets packets.
                if let Some(phone) = self.phones.iter_mut().find(|p| p.id == t.participant) {
                    phone.received.push(t.data);
                }
            }
            self.now += TICK;
        }
    }

    fn clear(&mut self) {
        for p in &mut self.phones {
            p.received.clear();
        }
    }

    /// Amplitude of each frequency in what phone `i` heard, skipping the first 200 ms.
    fn levels(&self, i: usize, freqs: &[f64]) -> Vec<f64> {
        let (samples, rate) = self.phones[i].heard();
        let skip = rate as usize / 5;
        freqs
            .iter()
            .map(|&f| amplitude(&samples[skip..], rate, f))
            .collect()
    }
}

const FREQS: [f64; 3] = [440.0, 700.0, 1000.0];
/// The phones send at 6000/32768 ≈ 0.18 of full scale.
const PRESENT: f64 = 0.08;
const ABSENT: f64 = 0.01;

fn three_codecs() -> Room {
    Room::new(
        MixerConfig::default(),
        vec![
            Phone::new(1, pcmu(), Some(FREQS[0])),
            Phone::new(2, pcma(), Some(FREQS[1])),
            Phone::new(3, opus(), Some(FREQS[2])),
        ],
    )
}

#[test]
fn each_participant_hears_the_other_two_and_not_itself_in_its_own_codec() {
    let mut room = three_codecs();
    assert_eq!(
        room.mixer.rate(),
        WIDEBAND_RATE,
        "an Opus participant makes the room wideband"
    );
    room.run(100);
    for i in 0..3 {
        let levels = room.levels(i, &FREQS);
        for (j, level) in levels.iter().enumerate() {
            if i == j {
                assert!(*level < ABSENT, "phone {i} hears itself: {levels:?}");
            } else {
                assert!(
                    *level > PRESENT,
                    "phone {i} misses {} Hz: {levels:?}",
                    FREQS[j]
                );
            }
        }
        // One packet per tick, 20 ms each.
        assert_eq!(room.phones[i].received.len(), 100);
    }
}

#[test]
fn narrowband_room_mixes_at_8khz_and_is_symmetric() {
    let mut room = Room::new(
        MixerConfig::default(),
        vec![
            Phone::new(1, pcmu(), Some(FREQS[0])),
            Phone::new(2, pcmu(), Some(FREQS[1])),
            Phone::new(3, pcma(), Some(FREQS[2])),
        ],
    );
    assert_eq!(room.mixer.rate(), NARROWBAND_RATE);
    room.run(60);
    for i in 0..3 {
        let levels = room.levels(i, &FREQS);
        for (j, level) in levels.iter().enumerate() {
            assert_eq!(i != j, *level > PRESENT, "phone {i}: {levels:?}");
            assert_eq!(i == j, *level < ABSENT, "phone {i}: {levels:?}");
        }
    }
}

#[test]
fn a_muted_participant_is_not_heard_but_still_hears() {
    let mut room = three_codecs();
    room.run(20);
    room.mixer.set_muted(2, true).unwrap();
    room.clear();
    room.run(60);
    let a = room.levels(0, &FREQS);
    assert!(a[1] < ABSENT, "the muted 700 Hz is still heard: {a:?}");
    assert!(a[2] > PRESENT, "{a:?}");
    let muted = room.levels(1, &FREQS);
    assert!(muted[0] > PRESENT && muted[2] > PRESENT, "{muted:?}");
    room.mixer.set_muted(2, false).unwrap();
    room.clear();
    room.run(40);
    assert!(room.levels(0, &FREQS)[1] > PRESENT);
    assert_eq!(
        room.mixer.set_muted(9, true),
        Err(MixerError::NoSuchParticipant(9))
    );
}

#[test]
fn silent_listeners_share_one_encode_per_codec() {
    let mut room = Room::new(
        MixerConfig::default(),
        vec![
            Phone::new(1, pcmu(), Some(FREQS[0])),
            Phone::new(2, pcmu(), None),
            Phone::new(3, pcmu(), None),
            Phone::new(4, pcma(), None),
            Phone::new(5, pcma(), None),
        ],
    );
    room.run(50);
    let stats = room.mixer.stats();
    // Per tick: the talker's own mix, one PCMU and one PCMA encode for the four others.
    assert_eq!(stats.packets_out, 250);
    assert!(stats.encodes + stats.shared_encodes <= 150, "{stats:?}");
    assert!(stats.shared_encodes >= 90, "{stats:?}");
    for i in 1..5 {
        assert!(room.levels(i, &[440.0])[0] > PRESENT);
    }
    // The talker hears nothing of itself (only the join tones at the start, skipped).
    assert!(room.levels(0, &[440.0])[0] < ABSENT);
}

#[test]
fn loud_talkers_saturate_instead_of_wrapping() {
    let mut room = Room::new(
        MixerConfig::default(),
        vec![
            Phone::new(1, pcmu(), Some(440.0)),
            Phone::new(2, pcmu(), Some(440.0)),
            Phone::new(3, pcmu(), Some(440.0)),
            Phone::new(4, pcmu(), Some(440.0)),
            Phone::new(5, pcmu(), Some(440.0)),
            Phone::new(6, pcmu(), Some(440.0)),
            Phone::new(7, pcmu(), None),
        ],
    );
    room.run(30);
    // Six in-phase sines of 6000 sum to 36000: clipped at full scale, never wrapped to
    // the opposite sign (which would show as a large negative sample at a positive peak).
    let (samples, _) = room.phones[6].heard();
    let peak = samples.iter().cloned().fold(0.0f64, f64::max);
    assert!(peak > 30000.0, "peak {peak}");
    assert!(room.levels(6, &[440.0])[0] > 0.5);
}

#[test]
fn moderated_room_plays_music_until_a_speaker_joins() {
    let config = MixerConfig {
        moderated: true,
        join_tone: None,
        leave_tone: None,
        ..MixerConfig::default()
    };
    let mut room = Room::new(
        config,
        vec![
            Phone::new(1, pcmu(), Some(440.0)),
            Phone::new(2, pcmu(), Some(700.0)),
        ],
    );
    assert!(room.mixer.is_waiting_for_speaker());
    room.run(100);
    for i in 0..2 {
        let (samples, _) = room.phones[i].heard();
        let rms = (samples.iter().map(|s| s * s).sum::<f64>() / samples.len() as f64).sqrt();
        assert!(rms > 500.0, "phone {i} hears no music (rms {rms})");
        let other = if i == 0 { 700.0 } else { 440.0 };
        assert!(
            room.levels(i, &[other])[0] < 0.03,
            "waiting participants hear each other"
        );
    }
    // The speaker joins: music stops, everyone hears everyone.
    let mut speaker = Phone::new(3, pcmu(), Some(1000.0));
    let config = ParticipantConfig {
        speaker: true,
        ..speaker.config()
    };
    room.mixer.add_participant(3, config, room.now).unwrap();
    speaker.received.clear();
    room.phones.push(speaker);
    assert!(!room.mixer.is_waiting_for_speaker());
    room.clear();
    room.run(60);
    let heard = room.levels(0, &FREQS);
    assert!(heard[1] > PRESENT && heard[2] > PRESENT, "{heard:?}");
    let speaker_heard = room.levels(2, &FREQS);
    assert!(
        speaker_heard[0] > PRESENT && speaker_heard[1] > PRESENT,
        "{speaker_heard:?}"
    );
}

#[test]
fn join_and_leave_tones_reach_everyone() {
    let mut room = Room::new(
        MixerConfig::default(),
        vec![Phone::new(1, pcmu(), None), Phone::new(2, pcmu(), None)],
    );
    room.run(15);
    // The join cadence: 600 Hz then 900 Hz, within the first 240 ms.
    let (samples, rate) = room.phones[0].heard();
    assert!(amplitude(&samples[..640], rate, 600.0) > 0.02);
    assert!(amplitude(&samples[960..1920], rate, 900.0) > 0.02);
    room.clear();
    room.run(10);
    let (quiet, _) = room.phones[0].heard();
    assert!(
        quiet.iter().all(|s| s.abs() < 50.0),
        "silence after the tone"
    );
    room.mixer.remove_participant(2).unwrap();
    room.phones.pop();
    room.clear();
    room.run(15);
    let (samples, rate) = room.phones[0].heard();
    assert!(amplitude(&samples[..640], rate, 900.0) > 0.02, "leave tone");
}

#[test]
fn garbage_and_foreign_payloads_are_ignored() {
    let mut room = three_codecs();
    let now = room.now;
    for bad in [
        &b""[..],
        b"\x80",
        b"\x80\x00\x00",
        &[0xFF; 40],
        &[0x80, 0xC8, 0, 1, 0, 0, 0, 0],
    ] {
        room.mixer.handle_packet(1, bad, now);
    }
    // telephone-event on 101, and a participant that does not exist.
    let event = RtpHeader::new(101, 1, 1, 1).to_bytes(&[1, 0, 0, 160]);
    room.mixer.handle_packet(1, &event, now);
    room.mixer.handle_packet(42, &event, now);
    assert!(room.mixer.stats().packets_ignored >= 6);
    room.run(5);
    assert_eq!(
        room.mixer.add_participant(1, room.phones[0].config(), now),
        Err(MixerError::Duplicate(1))
    );
}

#[test]
fn silent_participant_is_reported_once_after_the_timeout() {
    let config = MixerConfig {
        rtp_timeout: Some(Duration::from_millis(500)),
        ..MixerConfig::default()
    };
    let mut room = Room::new(
        config,
        vec![Phone::new(1, pcmu(), None), Phone::new(2, pcmu(), None)],
    );
    room.run(10);
    // Phone 2 stops sending.
    let gone = room.phones.pop().unwrap();
    room.run(30);
    let events: Vec<_> = std::iter::from_fn(|| room.mixer.poll_event()).collect();
    assert_eq!(
        events,
        vec![MixerEvent::RtpTimeout {
            participant: gone.id
        }]
    );
}
