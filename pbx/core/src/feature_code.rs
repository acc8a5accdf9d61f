//! In-call feature codes: keys a user presses during a bridged call that ask Switchboard,
//! not the other party, for something. One code exists: park (`features.park_code`,
//! `#72` by default, Asterisk's `parkcall`), which parks the *other* party in the first
//! free slot, tells the presser the slot ("call parked at slot seven zero one", see
//! `say`) and then releases the presser's leg.
//!
//! Keys arrive from the media (RFC 4733 events and in-band tones of either leg) and from
//! SIP INFO, whatever carried them. Like Asterisk (whose `featuredigittimeout` is 1 s) a
//! code counts only when each key follows the one before within
//! `features.feature_digit_timeout`; the time is the input's `now`, never a clock. Keys
//! are relayed to the other party as they come (the media relays them before the engine
//! sees them), so the other party may hear the code's first tones before the music.
//!
//! Must never: act on the keys of a party that called in through a trunk (a customer's
//! keys are not a way to park the agent), or on a call that is not a plain two-party
//! call at that moment (ringing, parked, transferring, in a menu).

use std::time::{Duration, Instant};

use crate::call::CallState;
use crate::engine::Engine;
use crate::say::AfterAnnouncement;

/// Watches one party's keys for a feature code. Only the keys that could still begin the
/// code are kept, so it never holds more than the code's length.
#[derive(Debug, Clone, Default)]
pub(crate) struct CodeWatch {
    typed: String,
    last: Option<Instant>,
}

impl CodeWatch {
    /// Feeds one key pressed at `now`; true when it completes `code` (every key of it
    /// within `gap` of the one before). An empty code never matches.
    pub(crate) fn handle_digit(
        &mut self,
        digit: char,
        code: &str,
        gap: Duration,
        now: Instant,
    ) -> bool {
        if code.is_empty() {
            return false;
        }
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) > gap)
        {
            self.typed.clear();
        }
        self.last = Some(now);
        self.typed.push(digit.to_ascii_uppercase());
        // Keep the longest tail of what was typed that still begins the code ("##72"
        // for "#72": the second "#" starts it again).
        while !code.starts_with(self.typed.as_str()) {
            self.typed.remove(0);
        }
        if self.typed == code {
            self.typed.clear();
            self.last = None;
            return true;
        }
        false
    }
}

/// Whether `code` can be typed on a phone's keypad: 1 to 8 of `0-9 * # A-D`. Empty
/// disables a code, and is valid.
pub fn valid_feature_code(code: &str) -> bool {
    code.len() <= 8
        && code
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
}

impl Engine {
    /// A key pressed by the party on `side` of a call; true when it completed a feature
    /// code (which was then carried out).
    pub(crate) fn feature_digit(
        &mut self,
        key: u64,
        side: usize,
        digit: char,
        now: Instant,
    ) -> bool {
        let code = self.config.features.park_code.clone();
        if code.is_empty() || !self.codes_apply(key, side) {
            return false;
        }
        let gap = self.config.features.feature_digit_timeout;
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        if !call.code_watch[side].handle_digit(digit, &code, gap, now) {
            return false;
        }
        self.park_by_code(key, side, now);
        true
    }

    /// Feature codes apply to a user's keys in an established, anchored two-party call
    /// that nothing else is changing.
    fn codes_apply(&self, key: u64, side: usize) -> bool {
        let Some(c) = self.calls.get(&key) else {
            return false;
        };
        let quiet = matches!(c.state, CallState::Answered | CallState::Established)
            && c.media.is_some()
            && c.ring.is_none()
            && c.parked.is_none()
            && c.announcement.is_none()
            && !c.own_reinvite
            && c.reinvite_retry.is_none();
        let winner = c.winner.map(|w| &c.branches[w]);
        let both = c.a_present && winner.is_some();
        let user = if side == 0 {
            !c.a_from_trunk
        } else {
            winner.is_some_and(|b| b.trunk.is_none())
        };
        quiet && both && user
    }

    /// The party on `side` pressed the park code: the other party waits in the first
    /// free slot with music, the presser hears the slot, then gets BYE. When no slot is
    /// free the call goes on as it was.
    fn park_by_code(&mut self, key: u64, side: usize, now: Instant) {
        let by = self.calls.get(&key).map(|c| {
            if side == 0 {
                c.caller.clone()
            } else {
                c.callee.clone()
            }
        });
        let slot = match self.park(key, 1 - side, None, by.clone(), now) {
            Ok(slot) => slot,
            Err(e) => {
                tracing::info!(call = key, error = %e, "park code pressed but the call cannot be parked");
                return;
            }
        };
        tracing::info!(call = key, %slot, parker = ?by, "parked by feature code");
        // The parker leaves its side now (so the parked party is alone, as after any
        // park) but keeps its dialog, answered by us, until the announcement ends.
        let Some(dialog) = self.take_parker(key, side) else {
            return;
        };
        self.announce_park(key, side, &slot, AfterAnnouncement::Release { dialog }, now);
    }
}

#[cfg(test)]
mod tests {
    use super::{valid_feature_code, CodeWatch};
    use std::time::{Duration, Instant};

    fn feed(w: &mut CodeWatch, keys: &str, t0: Instant, step_ms: u64) -> Vec<bool> {
        keys.chars()
            .enumerate()
            .map(|(i, k)| {
                let at = t0 + Duration::from_millis(step_ms * i as u64);
                w.handle_digit(k, "#72", Duration::from_secs(1), at)
            })
            .collect()
    }

    #[test]
    fn the_code_matches_when_typed_in_time_and_after_other_keys() {
        let t0 = Instant::now();
        let mut w = CodeWatch::default();
        assert_eq!(feed(&mut w, "#72", t0, 300), [false, false, true]);
        // Inside a longer run of keys, and with a repeated first key.
        let mut w = CodeWatch::default();
        assert_eq!(
            feed(&mut w, "5##72", t0, 100),
            [false, false, false, false, true]
        );
        let mut w = CodeWatch::default();
        assert_eq!(feed(&mut w, "#7#72", t0, 100).last(), Some(&true));
    }

    #[test]
    fn slow_or_wrong_keys_do_not_match() {
        let t0 = Instant::now();
        let mut w = CodeWatch::default();
        // 1.5 s between keys: each key starts afresh.
        assert_eq!(feed(&mut w, "#72", t0, 1500), [false, false, false]);
        let mut w = CodeWatch::default();
        assert_eq!(feed(&mut w, "#73", t0, 100), [false, false, false]);
        let mut w = CodeWatch::default();
        assert!(!w.handle_digit('#', "", Duration::from_secs(1), t0));
        // After a match the next code needs all its keys again.
        let mut w = CodeWatch::default();
        assert_eq!(feed(&mut w, "#722", t0, 100), [false, false, true, false]);
    }

    #[test]
    fn codes_are_keypad_keys() {
        for good in ["", "#72", "*8", "A1", "12345678"] {
            assert!(valid_feature_code(good), "{good:?}");
        }
        for bad in ["#7 2", "park", "123456789", "#72\n", "é"] {
            assert!(!valid_feature_code(bad), "{bad:?}");
        }
    }
}
