//! The stereo recorder as the relay drives it: frames of both legs with their media time,
//! `poll_bytes` drained after each push, `finish` at the end; the result parsed back.

#[path = "signal/mod.rs"]
mod signal;

use signal::{goertzel, sine};
use switchboard_media::recorder::{Channel, Recorder};
use switchboard_media::wav::read_wav;
use switchboard_media::AudioFrame;

/// Collects what the runtime would write to the file.
struct File {
    bytes: Vec<u8>,
}

impl File {
    fn new() -> File {
        File { bytes: Vec::new() }
    }

    fn drain(&mut self, rec: &mut Recorder) {
        loop {
            let b = rec.poll_bytes();
            if b.is_empty() {
                break;
            }
            self.bytes.extend(b);
        }
    }

    /// Closes the recording; returns (rate, left, right) parsed from the file.
    fn close(mut self, rec: Recorder) -> (u32, Vec<i16>, Vec<i16>) {
        let (tail, header) = rec.finish();
        self.bytes.extend(tail);
        self.bytes[..44].copy_from_slice(&header);
        let f = &self.bytes;
        assert_eq!(&f[0..4], b"RIFF");
        assert_eq!(u16::from_le_bytes([f[22], f[23]]), 2, "stereo");
        assert_eq!(u16::from_le_bytes([f[34], f[35]]), 16);
        let rate = u32::from_le_bytes([f[24], f[25], f[26], f[27]]);
        let data_len = u32::from_le_bytes([f[40], f[41], f[42], f[43]]) as usize;
        assert_eq!(data_len, f.len() - 44, "header data size");
        assert_eq!(
            u32::from_le_bytes([f[4], f[5], f[6], f[7]]) as usize,
            f.len() - 8
        );
        // Our own reader accepts it (as a mono mix).
        assert_eq!(read_wav(f).unwrap().samples.len(), data_len / 4);
        let samples: Vec<i16> = f[44..]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let left = samples.iter().step_by(2).copied().collect();
        let right = samples.iter().skip(1).step_by(2).copied().collect();
        (rate, left, right)
    }
}

/// A sine cut into 20 ms frames.
fn frames(rate: u32, freq: f64, amp: f64, seconds: f64) -> Vec<AudioFrame> {
    let len = (f64::from(rate) * seconds) as usize;
    sine(rate, freq, amp, len)
        .chunks(rate as usize / 50)
        .map(|c| AudioFrame::new(rate, c.to_vec()))
        .collect()
}

fn level(x: &[i16], rate: u32, f: f64) -> f64 {
    goertzel(x, rate, f)
}

#[test]
fn each_leg_on_its_own_channel_at_its_level() {
    let mut rec = Recorder::new(8000);
    let mut file = File::new();
    let left = frames(8000, 1000.0, 8000.0, 2.0);
    let right = frames(8000, 440.0, 4000.0, 2.0);
    for (i, (l, r)) in left.iter().zip(&right).enumerate() {
        rec.push(Channel::Left, l, i as u64 * 20);
        rec.push(Channel::Right, r, i as u64 * 20);
        file.drain(&mut rec);
    }
    // Everything both legs had is already written: nothing waits for `finish`.
    assert_eq!(rec.frames_written(), 16_000);
    let (rate, l, r) = file.close(rec);
    assert_eq!(rate, 8000);
    assert_eq!(l.len(), 16_000);
    assert!((level(&l, 8000, 1000.0) / 8000.0 - 1.0).abs() < 0.001);
    assert!((level(&r, 8000, 440.0) / 4000.0 - 1.0).abs() < 0.001);
    assert!(level(&l, 8000, 440.0) < 10.0 && level(&r, 8000, 1000.0) < 10.0);
    // Sample-exact: the channels are the frames, in order.
    let expected: Vec<i16> = left.iter().flat_map(|f| f.samples.clone()).collect();
    assert!(l == expected);
}

#[test]
fn a_leg_that_stops_for_five_seconds_leaves_five_seconds_of_silence() {
    let mut rec = Recorder::new(8000);
    let mut file = File::new();
    let left = frames(8000, 1000.0, 8000.0, 10.0);
    let right = frames(8000, 440.0, 8000.0, 10.0);
    for i in 0..500 {
        let t = i as u64 * 20;
        rec.push(Channel::Left, &left[i], t);
        // Right is on hold (no RTP) from 2 s to 7 s.
        if !(2000..7000).contains(&t) {
            rec.push(Channel::Right, &right[i], t);
        }
        file.drain(&mut rec);
        // Bounded memory: at most the lag limit (1 s) waits for the silent leg.
        let behind = (t + 20) * 8 - rec.frames_written();
        assert!(behind <= 8000 + 160, "at {t} ms, {behind} frames buffered");
    }
    let (_, l, r) = file.close(rec);
    assert_eq!(l.len(), 80_000);
    assert_eq!(r.len(), 80_000);
    assert!(
        r[16_000..56_000].iter().all(|&s| s == 0),
        "silent from 2 s to 7 s"
    );
    assert!(level(&r[8000..16_000], 8000, 440.0) > 7900.0);
    assert!(level(&r[56_000..64_000], 8000, 440.0) > 7900.0);
    // The right leg resumes exactly where its media time says: its samples are the ones
    // sent at 7 s, at 7 s.
    let sent_at_7s: Vec<i16> = right[350..400]
        .iter()
        .flat_map(|f| f.samples.clone())
        .collect();
    assert!(r[56_000..64_000] == sent_at_7s[..]);
    assert!(level(&l, 8000, 1000.0) > 7990.0, "left untouched");
}

#[test]
fn legs_at_different_rates_are_resampled_onto_one_timeline() {
    let mut rec = Recorder::new(16_000);
    let mut file = File::new();
    let left = frames(48_000, 1000.0, 8000.0, 2.0);
    let right = frames(8000, 440.0, 4000.0, 2.0);
    for i in 0..100 {
        rec.push(Channel::Left, &left[i], i as u64 * 20);
        rec.push(Channel::Right, &right[i], i as u64 * 20);
        file.drain(&mut rec);
    }
    let (rate, l, r) = file.close(rec);
    assert_eq!(rate, 16_000);
    assert_eq!(l.len(), 32_000);
    let (lm, rm) = (&l[1600..30_400], &r[1600..30_400]);
    assert!(
        (level(lm, 16_000, 1000.0) / 8000.0 - 1.0).abs() < 0.02,
        "{}",
        level(lm, 16_000, 1000.0)
    );
    assert!(
        (level(rm, 16_000, 440.0) / 4000.0 - 1.0).abs() < 0.02,
        "{}",
        level(rm, 16_000, 440.0)
    );
    assert!(level(lm, 16_000, 440.0) < 20.0 && level(rm, 16_000, 1000.0) < 20.0);
    // Both legs start together (within the resampler's few ms of filter delay).
    let onset = |x: &[i16]| x.iter().position(|&s| s.abs() > 500).unwrap();
    assert!(
        onset(&l) < 16 * 6 && onset(&r) < 16 * 6,
        "{} {}",
        onset(&l),
        onset(&r)
    );
}

#[test]
fn timer_jitter_does_not_cut_the_audio() {
    let mut rec = Recorder::new(8000);
    let mut file = File::new();
    let left = frames(8000, 1000.0, 8000.0, 2.0);
    let jitter = [0i64, 7, -5, 12, -9, 3, 15, -12, 0, 5];
    for (i, f) in left.iter().enumerate() {
        let t = (i as i64 * 20 + jitter[i % jitter.len()]).max(0) as u64;
        rec.push(Channel::Left, f, t);
        rec.push(
            Channel::Right,
            &AudioFrame::silence(8000, 20),
            i as u64 * 20,
        );
        file.drain(&mut rec);
    }
    let (_, l, _) = file.close(rec);
    let expected: Vec<i16> = left.iter().flat_map(|f| f.samples.clone()).collect();
    assert!(
        l == expected,
        "frames joined contiguously, nothing inserted or dropped"
    );
}

#[test]
fn a_drifting_clock_is_corrected_not_accumulated() {
    // The sender's 20 ms frames come every 20.1 ms of media time (a 0.5 % fast clock):
    // after 60 s the leg must sit where the timeline says, not 300 ms early.
    let mut rec = Recorder::new(8000);
    let mut file = File::new();
    let frame = AudioFrame::new(8000, vec![1000; 160]);
    let mut last = 0;
    for i in 0..3000u64 {
        last = i * 201 / 10;
        rec.push(Channel::Left, &frame, last);
        rec.push(Channel::Right, &frame, last);
        file.drain(&mut rec);
    }
    let (_, l, r) = file.close(rec);
    let expected_end = (last + 20) * 8;
    assert!(
        (l.len() as i64 - expected_end as i64).abs() <= 160,
        "{} samples, timeline says {expected_end}",
        l.len()
    );
    assert_eq!(l, r);
    // Corrections are short silences (at most the tolerance), never long ones.
    let longest_gap = signal::runs(&l)
        .iter()
        .filter(|r| !r.0)
        .map(|r| r.1)
        .max()
        .unwrap_or(0);
    assert!(longest_gap <= 160 + 8, "gap of {longest_gap}");
}

#[test]
fn a_leg_running_ahead_loses_the_overlap() {
    let mut rec = Recorder::new(8000);
    let mut file = File::new();
    rec.push(Channel::Left, &AudioFrame::new(8000, vec![1; 8000]), 0);
    // Entirely in the past: dropped.
    rec.push(Channel::Left, &AudioFrame::new(8000, vec![2; 160]), 500);
    // Starts 60 ms before the leg's end: the first 60 ms are dropped.
    rec.push(Channel::Left, &AudioFrame::new(8000, vec![3; 800]), 940);
    rec.push(Channel::Right, &AudioFrame::new(8000, vec![4; 80]), 0);
    file.drain(&mut rec);
    let (_, l, r) = file.close(rec);
    assert_eq!(l.len(), 8000 + 320);
    assert!(l[..8000].iter().all(|&s| s == 1));
    assert!(l[8000..].iter().all(|&s| s == 3));
    // finish pads the shorter leg.
    assert_eq!(r.len(), l.len());
    assert!(r[..80].iter().all(|&s| s == 4) && r[80..].iter().all(|&s| s == 0));
}

#[test]
fn the_file_is_readable_before_finish_and_long_gaps_stream_in_pieces() {
    let mut rec = Recorder::new(8000);
    let mut bytes = Vec::new();
    rec.push(Channel::Left, &AudioFrame::new(8000, vec![9; 160]), 0);
    rec.push(Channel::Right, &AudioFrame::new(8000, vec![9; 160]), 0);
    bytes.extend(rec.poll_bytes());
    // A file whose writer died before `finish` (placeholder header) still reads.
    assert_eq!(read_wav(&bytes).unwrap().samples, vec![9; 160]);

    // Both legs jump 10 minutes ahead (a held call with no media at all): the silence is
    // not built in memory at once; each poll hands out at most 4 MiB.
    let t = 10 * 60 * 1000;
    rec.push(Channel::Left, &AudioFrame::new(8000, vec![1; 160]), t);
    rec.push(Channel::Right, &AudioFrame::new(8000, vec![1; 160]), t);
    let piece = rec.poll_bytes();
    assert_eq!(piece.len(), 4 << 20);
    assert!(piece.iter().all(|&b| b == 0));
    let mut total = piece.len() as u64;
    loop {
        let b = rec.poll_bytes();
        if b.is_empty() {
            break;
        }
        assert!(b.len() <= 4 << 20);
        total += b.len() as u64;
    }
    assert_eq!(total, (t * 8 + 160 - 160) * 4);
    let (tail, header) = rec.finish();
    assert!(tail.is_empty());
    assert_eq!(
        u32::from_le_bytes(header[40..44].try_into().unwrap()) as u64,
        (t * 8 + 160) * 4
    );
}
