//! The player as the relay drives it: one `next_frame` per 20 ms, events drained after.

#[path = "signal/mod.rs"]
mod signal;

use std::sync::Arc;

use signal::{goertzel, peak, sine};
use switchboard_media::player::{MohClass, PlaybackId, Player, PlayerEvent, Source, StartAt};
use switchboard_media::tones::{preset, Country, Level, ToneGenerator, ToneKind};
use switchboard_media::wav::Clip;

fn clip(rate: u32, samples: Vec<i16>) -> Source {
    Source::Clip(Arc::new(Clip::new(rate, samples)))
}

fn ramp(start: i16, len: usize) -> Vec<i16> {
    (0..len as i16).map(|i| start + i).collect()
}

/// Pulls `n` frames, asserting each is 20 ms at the player's rate; returns the samples.
fn pull(p: &mut Player, n: usize) -> Vec<i16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let f = p.next_frame().expect("a frame");
        assert_eq!(f.rate, p.rate());
        assert_eq!(f.samples.len(), p.frame_len());
        out.extend(f.samples);
    }
    out
}

fn events(p: &mut Player) -> Vec<PlayerEvent> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

#[test]
fn prompt_plays_once_padded_to_a_frame() {
    let mut p = Player::new(8000);
    let samples = ramp(1, 500);
    let id = p.play(clip(8000, samples.clone()));
    let out = pull(&mut p, 4);
    assert_eq!(&out[..500], &samples[..]);
    assert!(out[500..].iter().all(|&s| s == 0));
    assert_eq!(p.next_frame(), None);
    assert_eq!(
        events(&mut p),
        vec![PlayerEvent::Started(id), PlayerEvent::Finished(id)]
    );
    assert!(p.is_idle());
}

#[test]
fn queued_prompts_follow_each_other_without_a_gap() {
    let mut p = Player::new(8000);
    let (a, b) = (ramp(1, 250), ramp(1000, 300));
    let ida = p.play(clip(8000, a.clone()));
    let idb = p.play(clip(8000, b.clone()));
    let out = pull(&mut p, 4);
    assert_eq!(&out[..250], &a[..]);
    assert_eq!(&out[250..550], &b[..]);
    assert!(out[550..].iter().all(|&s| s == 0));
    assert_eq!(p.next_frame(), None);
    assert_eq!(
        events(&mut p),
        vec![
            PlayerEvent::Started(ida),
            PlayerEvent::Finished(ida),
            PlayerEvent::Started(idb),
            PlayerEvent::Finished(idb)
        ]
    );
    assert_ne!(ida, idb);
}

fn class(clips: Vec<Clip>) -> Arc<MohClass> {
    Arc::new(MohClass {
        name: "test".into(),
        clips: clips.into_iter().map(Arc::new).collect(),
    })
}

#[test]
fn playlist_loops_from_the_start_or_an_offset() {
    let (a, b) = (ramp(1, 100), ramp(500, 150)); // 12.5 ms + 18.75 ms at 8 kHz
    let pass: Vec<i16> = a.iter().chain(&b).copied().collect();
    let moh = class(vec![Clip::new(8000, a.clone()), Clip::new(8000, b.clone())]);
    let mut p = Player::new(8000);
    let id = p.play(Source::Moh {
        class: moh.clone(),
        start: StartAt::Beginning,
    });
    let out = pull(&mut p, 50);
    for (i, s) in out.iter().enumerate() {
        assert_eq!(*s, pass[i % pass.len()], "sample {i}");
    }
    assert_eq!(events(&mut p), vec![PlayerEvent::Started(id)]);

    // 20 ms into the 31.25 ms pass (after four whole passes): 7.5 ms into the second clip.
    let mut p = Player::new(8000);
    p.play(Source::Moh {
        class: moh.clone(),
        start: StartAt::OffsetMs(20 + 125),
    });
    let out = pull(&mut p, 5);
    let mut expected = pass[160..].to_vec();
    while expected.len() < out.len() {
        expected.extend(&pass);
    }
    assert_eq!(out, expected[..out.len()]);

    // Random offsets: reproducible from the seed, different between callers.
    let first = |seed| {
        let mut p = Player::new(8000);
        p.play(Source::Moh {
            class: moh.clone(),
            start: StartAt::Random { seed },
        });
        p.next_frame().unwrap().samples
    };
    assert_eq!(first(7), first(7));
    let distinct: std::collections::BTreeSet<Vec<i16>> = (0..20).map(first).collect();
    assert!(
        distinct.len() > 10,
        "only {} distinct starts",
        distinct.len()
    );
}

#[test]
fn clips_at_44100_are_resampled_keeping_frequency_and_level() {
    let source = sine(44_100, 1000.0, 10_000.0, 44_100);
    for target in [8000u32, 16_000, 48_000] {
        let mut p = Player::new(target);
        let id = p.play(clip(44_100, source.clone()));
        let mut out = Vec::new();
        while let Some(f) = p.next_frame() {
            assert_eq!(f.samples.len(), (target / 50) as usize);
            out.extend(f.samples);
        }
        assert_eq!(
            events(&mut p),
            vec![PlayerEvent::Started(id), PlayerEvent::Finished(id)]
        );
        // One second of audio plus the filter's flush, within one frame.
        let frames = out.len() / (target as usize / 50);
        assert!((50..=52).contains(&frames), "{frames} frames at {target}");
        // Steady state (skip the filter's first milliseconds).
        let mid = &out[target as usize / 10..target as usize * 9 / 10];
        let a = goertzel(mid, target, 1000.0);
        assert!(
            (a / 10_000.0 - 1.0).abs() < 0.03,
            "amplitude {a} at {target}"
        );
        let (f, _) = signal::dominant(mid, target, (50..=150).map(|k| f64::from(k) * 10.0));
        assert_eq!(f, 1000.0);
    }
}

#[test]
fn playlist_of_mixed_rates_loops_at_the_target_rate() {
    let moh = class(vec![
        Clip::new(44_100, sine(44_100, 600.0, 8000.0, 44_100 / 2)),
        Clip::new(16_000, sine(16_000, 1200.0, 8000.0, 8000)),
        Clip::new(8000, sine(8000, 400.0, 8000.0, 4000)),
    ]);
    let mut p = Player::new(8000);
    p.play(Source::Moh {
        class: moh,
        start: StartAt::Beginning,
    });
    // Three passes of 1.5 s.
    let out = pull(&mut p, 225);
    for pass in 0..3 {
        let base = pass * 12_000;
        for (offset, freq) in [(1000, 600.0), (5000, 1200.0), (9000, 400.0)] {
            let w = &out[base + offset..base + offset + 2000];
            let a = goertzel(w, 8000, freq);
            assert!(a > 7000.0, "pass {pass}, {freq} Hz: {a}");
        }
    }
}

#[test]
fn stop_skip_and_play_now() {
    let mut p = Player::new(8000);
    let moh = p.play(Source::Silence { ms: None });
    let prompt = p.play(clip(8000, ramp(1, 1000)));
    pull(&mut p, 3);
    p.skip();
    let out = pull(&mut p, 1);
    assert_eq!(out, ramp(1, 160));
    assert_eq!(
        events(&mut p),
        vec![
            PlayerEvent::Started(moh),
            PlayerEvent::Stopped(moh),
            PlayerEvent::Started(prompt)
        ]
    );
    let later = p.play(clip(8000, ramp(1, 10)));
    p.stop();
    assert_eq!(
        events(&mut p),
        vec![PlayerEvent::Stopped(prompt), PlayerEvent::Stopped(later)]
    );
    assert!(p.is_idle());
    assert_eq!(p.next_frame(), None);

    let tone = p.play(Source::Tone {
        cadence: preset(Country::Us, ToneKind::Ringback),
        level: Level::DEFAULT,
    });
    pull(&mut p, 2);
    let beep = p.play_now(clip(8000, vec![7; 160]));
    assert_eq!(pull(&mut p, 1), vec![7; 160]);
    assert_eq!(
        events(&mut p),
        vec![
            PlayerEvent::Started(tone),
            PlayerEvent::Stopped(tone),
            PlayerEvent::Started(beep),
            PlayerEvent::Finished(beep)
        ]
    );
    assert_eq!(beep, PlaybackId(beep.0));
}

#[test]
fn tones_and_timed_silence() {
    let cadence = preset(Country::Uk, ToneKind::Busy);
    let mut p = Player::new(16_000);
    p.play(Source::Tone {
        cadence: cadence.clone(),
        level: Level::Dbm0(-10.0),
    });
    let out = pull(&mut p, 100);
    let mut g = ToneGenerator::new(&cadence, 16_000, Level::Dbm0(-10.0));
    let mut expected = vec![0; out.len()];
    g.fill(&mut expected);
    assert!(out == expected);

    let mut p = Player::new(8000);
    let pause = p.play(Source::Silence { ms: Some(50) });
    let after = p.play(clip(8000, vec![5; 100]));
    let out = pull(&mut p, 3);
    assert!(out[..400].iter().all(|&s| s == 0));
    assert_eq!(&out[400..], &[5; 80][..]);
    assert_eq!(
        events(&mut p),
        vec![
            PlayerEvent::Started(pause),
            PlayerEvent::Finished(pause),
            PlayerEvent::Started(after)
        ]
    );
}

#[test]
fn volume_scales_and_saturates() {
    let loud = sine(8000, 500.0, 20_000.0, 8000);
    let mut p = Player::new(8000);
    p.set_volume_db(-6.0206);
    p.play(clip(8000, loud.clone()));
    let half = pull(&mut p, 50);
    assert!((goertzel(&half, 8000, 500.0) / 10_000.0 - 1.0).abs() < 0.001);
    let mut p = Player::new(8000);
    p.set_volume_db(12.0);
    p.play(clip(8000, loud));
    assert_eq!(peak(&pull(&mut p, 50)), 32768);
    p.set_volume_db(f32::NAN);
}

#[test]
fn default_moh_loops_past_its_end() {
    let mut p = Player::new(8000);
    let id = p.play(Source::DefaultMoh {
        start: StartAt::Random { seed: 99 },
    });
    // 42 s: past the end of the 40 s piece, which wraps without a gap.
    let out = pull(&mut p, 2100);
    for (i, second) in out.chunks(8000).enumerate() {
        assert!(signal::rms(second) > 500.0, "second {i} is (nearly) silent");
    }
    assert_eq!(events(&mut p), vec![PlayerEvent::Started(id)]);
    assert_eq!(MohClass::default_class(8000).duration_ms(), 40_000);
}

#[test]
fn resampled_prompts_end_cleanly_whatever_their_length() {
    // Lengths around frame and filter boundaries: no panic, no sample lost or invented
    // beyond the filter's flush, and exactly one Finished.
    for len in [0usize, 1, 2, 881, 882, 883, 1764, 4410] {
        let mut p = Player::new(8000);
        let id = p.play(clip(44_100, vec![1000; len]));
        let mut frames = 0;
        while p.next_frame().is_some() {
            frames += 1;
            assert!(frames < 100);
        }
        let expected_ms = len as u64 * 1000 / 44_100 + 6; // plus the flushed tail
        assert!(
            frames as u64 * 20 <= expected_ms + 20,
            "{len}: {frames} frames"
        );
        let ev = events(&mut p);
        assert_eq!(ev.last(), Some(&PlayerEvent::Finished(id)), "{len}");
        assert_eq!(ev.len(), 2);
    }
}
