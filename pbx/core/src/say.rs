//! Saying things to a party with prompts: a number read out digit by digit (Asterisk's
//! `SayDigits`, with its `digits/N` prompt names), and the park announcement ("call parked
//! at slot seven zero one") with what follows it. A saying is one playback of several
//! prompts ([`Playback::Prompts`]), so it ends with one `PlaybackFinished` for the leg.
//!
//! Owns only prompt names and the bookkeeping of an announcement in progress; the runtime
//! finds and plays the audio. Must never leave a parker connected once its announcement
//! has ended, been cut short, or could not be played.

use std::time::Instant;

use switchboard_media::relay::Leg;

use crate::engine::{Engine, EngineEvent};
use crate::media::{side_leg, MediaCommand, Playback};

/// The prompt that says one key: `digits/0` … `digits/9`, `digits/star`, `digits/pound`.
/// Other characters have no prompt.
pub fn digit_prompt(c: char) -> Option<String> {
    match c {
        '0'..='9' => Some(format!("digits/{c}")),
        '*' => Some("digits/star".to_string()),
        '#' => Some("digits/pound".to_string()),
        _ => None,
    }
}

/// The prompts that read `text` out one key at a time ("701": seven, zero, one);
/// characters without a prompt are left out.
pub fn digits(text: &str) -> Vec<String> {
    text.chars().filter_map(digit_prompt).collect()
}

/// What a parker hears: "call parked at", "slot", then the slot's digits.
pub fn park_announcement(slot: &str) -> Vec<String> {
    let mut names = vec!["call-parked-at".to_string(), "slot".to_string()];
    names.extend(digits(slot));
    names
}

/// An announcement playing to one side of a call, and what happens when it ends.
#[derive(Debug, Clone)]
pub(crate) struct Announcement {
    /// The side whose leg hears it.
    pub(crate) side: usize,
    pub(crate) then: AfterAnnouncement,
}

#[derive(Debug, Clone)]
pub(crate) enum AfterAnnouncement {
    /// A parker by feature code: already off its side (its dialog, named by Call-ID and
    /// our tag, waits in `released`), it gets BYE.
    Release { dialog: (String, String) },
    /// A caller that parked itself (dialled the park extension): it stays parked and
    /// hears music on hold.
    Music,
}

impl Engine {
    /// Plays `names` to `leg` as one playback; false when the call's media is not
    /// anchored (nothing can be played).
    pub(crate) fn say(&mut self, key: u64, leg: Leg, names: Vec<String>) -> bool {
        if self.calls.get(&key).is_none_or(|c| c.media.is_none()) {
            return false;
        }
        tracing::debug!(call = key, ?leg, prompts = ?names, "saying");
        self.events
            .push_back(EngineEvent::Media(MediaCommand::Play {
                call: key,
                leg,
                what: Playback::Prompts { names },
            }));
        true
    }

    /// Announces `slot` to `side`; `then` happens when it ends. Without anchored media
    /// it happens at once.
    pub(crate) fn announce_park(
        &mut self,
        key: u64,
        side: usize,
        slot: &str,
        then: AfterAnnouncement,
        now: Instant,
    ) {
        if !self.say(key, side_leg(side), park_announcement(slot)) {
            self.after_announcement(key, side, then, now);
            return;
        }
        if let Some(c) = self.calls.get_mut(&key) {
            c.announcement = Some(Announcement { side, then });
        }
    }

    /// What played toward `leg` ended: true when it was an announcement (now followed
    /// by what it was waiting for).
    pub(crate) fn announcement_finished(&mut self, key: u64, leg: Leg, now: Instant) -> bool {
        let ours = self
            .calls
            .get(&key)
            .and_then(|c| c.announcement.as_ref())
            .is_some_and(|a| side_leg(a.side) == leg);
        if !ours {
            return false;
        }
        if let Some(a) = self.calls.get_mut(&key).and_then(|c| c.announcement.take()) {
            tracing::debug!(call = key, ?leg, "announcement finished");
            self.after_announcement(key, a.side, a.then, now);
        }
        true
    }

    /// Cuts an announcement short (the call is retrieved, moves on or ends): a parker
    /// waiting for it is released now; a party that parked itself hears music now if
    /// it is still parked.
    pub(crate) fn end_announcement(&mut self, key: u64, now: Instant) {
        let Some(a) = self.calls.get_mut(&key).and_then(|c| c.announcement.take()) else {
            return;
        };
        tracing::debug!(call = key, side = a.side, "announcement cut short");
        if matches!(a.then, AfterAnnouncement::Release { .. }) {
            // Its leg is about to carry someone else (a retriever) or nothing.
            self.events
                .push_back(EngineEvent::Media(MediaCommand::StopPlayback {
                    call: key,
                    leg: side_leg(a.side),
                }));
        }
        self.after_announcement(key, a.side, a.then, now);
    }

    /// A party that hung up while its announcement played: nothing to follow it.
    pub(crate) fn forget_announcement_of(&mut self, key: u64, dialog: &(String, String)) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        let matches = c.announcement.as_ref().is_some_and(
            |a| matches!(&a.then, AfterAnnouncement::Release { dialog: d } if d == dialog),
        );
        if matches {
            let side = c.announcement.take().map_or(0, |a| a.side);
            self.events
                .push_back(EngineEvent::Media(MediaCommand::StopPlayback {
                    call: key,
                    leg: side_leg(side),
                }));
        }
    }

    fn after_announcement(&mut self, key: u64, side: usize, then: AfterAnnouncement, now: Instant) {
        match then {
            AfterAnnouncement::Release { dialog } => self.bye_released(key, &dialog, now),
            AfterAnnouncement::Music => {
                let parked_here = self
                    .calls
                    .get(&key)
                    .and_then(|c| c.parked.as_ref())
                    .is_some_and(|p| p.side == side);
                if parked_here {
                    self.media_moh(key, side, true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{digit_prompt, digits, park_announcement};

    #[test]
    fn keys_have_asterisk_digit_prompts() {
        assert_eq!(digit_prompt('0').as_deref(), Some("digits/0"));
        assert_eq!(digit_prompt('9').as_deref(), Some("digits/9"));
        assert_eq!(digit_prompt('*').as_deref(), Some("digits/star"));
        assert_eq!(digit_prompt('#').as_deref(), Some("digits/pound"));
        for c in ['a', 'A', ' ', '+', 'é', '\0'] {
            assert_eq!(digit_prompt(c), None, "{c:?}");
        }
    }

    #[test]
    fn numbers_are_read_out_one_key_at_a_time() {
        assert_eq!(digits("701"), ["digits/7", "digits/0", "digits/1"]);
        assert_eq!(digits("*8#"), ["digits/star", "digits/8", "digits/pound"]);
        assert_eq!(digits("7a-1"), ["digits/7", "digits/1"]);
        assert!(digits("").is_empty());
        assert_eq!(
            park_announcement("701"),
            ["call-parked-at", "slot", "digits/7", "digits/0", "digits/1"]
        );
    }
}
