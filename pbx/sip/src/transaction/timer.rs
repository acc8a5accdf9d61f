//! Timers as data (the shape of quinn-proto's `connection/timer.rs`): every transaction owns
//! a small table of optional deadlines indexed by an enum, and the layer keeps one ordered
//! set of all armed deadlines so that the next wake-up is its first element. Arming,
//! re-arming and stopping a timer are O(log n); nothing scans the transactions.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::time::Instant;

/// Who a deadline belongs to. The number is the transaction id (or, for a 2xx waiting for
/// its ACK, the id of the server transaction that sent it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Owner {
    Client(u64),
    Server(u64),
    AckWait(u64),
}

/// A timer enum usable as a table index.
pub(super) trait TimerKind: Copy {
    fn index(self) -> u8;
    fn from_index(index: u8) -> Self;
}

/// Every armed deadline of the layer, ordered by time.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    armed: BTreeSet<(Instant, Owner, u8)>,
}

impl Schedule {
    /// The earliest armed deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.armed.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns the earliest deadline if it is due at `now`. The caller must
    /// tell the owner's table (`TimerTable::expired`) before acting on it.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Owner, u8)> {
        let first = *self.armed.first()?;
        if first.0 > now {
            return None;
        }
        self.armed.pop_first()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.armed.len()
    }
}

/// The deadlines of one transaction. Invariant: `at[i] == Some(t)` exactly when
/// `(t, owner, i)` is in the layer's [`Schedule`].
#[derive(Debug)]
pub(super) struct TimerTable<K, const N: usize> {
    owner: Owner,
    at: [Option<Instant>; N],
    kind: PhantomData<K>,
}

impl<K: TimerKind, const N: usize> TimerTable<K, N> {
    pub(super) fn new(owner: Owner) -> Self {
        TimerTable {
            owner,
            at: [None; N],
            kind: PhantomData,
        }
    }

    #[cfg(test)]
    pub(super) fn get(&self, timer: K) -> Option<Instant> {
        self.at[timer.index() as usize]
    }

    /// Arms `timer` at `at`, replacing any earlier deadline of the same timer.
    pub(super) fn set(&mut self, schedule: &mut Schedule, timer: K, at: Instant) {
        self.stop(schedule, timer);
        self.at[timer.index() as usize] = Some(at);
        schedule.armed.insert((at, self.owner, timer.index()));
    }

    pub(super) fn stop(&mut self, schedule: &mut Schedule, timer: K) {
        if let Some(old) = self.at[timer.index() as usize].take() {
            schedule.armed.remove(&(old, self.owner, timer.index()));
        }
    }

    pub(super) fn stop_all(&mut self, schedule: &mut Schedule) {
        for i in 0..N {
            self.stop(schedule, K::from_index(i as u8));
        }
    }

    /// Records that the schedule popped `(at, index)`; returns the timer if that deadline
    /// is still the armed one (it always is while the invariant holds).
    pub(super) fn expired(&mut self, index: u8, at: Instant) -> Option<K> {
        let slot = self.at.get_mut(index as usize)?;
        if *slot == Some(at) {
            *slot = None;
            Some(K::from_index(index))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum T {
        A,
        B,
    }
    impl TimerKind for T {
        fn index(self) -> u8 {
            self as u8
        }
        fn from_index(i: u8) -> T {
            [T::A, T::B][i as usize]
        }
    }

    #[test]
    fn rearming_replaces_and_next_is_minimum() {
        let now = Instant::now();
        let mut s = Schedule::default();
        let mut t1: TimerTable<T, 2> = TimerTable::new(Owner::Client(1));
        let mut t2: TimerTable<T, 2> = TimerTable::new(Owner::Server(2));
        t1.set(&mut s, T::A, now + Duration::from_secs(5));
        t1.set(&mut s, T::A, now + Duration::from_secs(3));
        t2.set(&mut s, T::B, now + Duration::from_secs(4));
        assert_eq!(s.len(), 2);
        assert_eq!(s.next(), Some(now + Duration::from_secs(3)));
        t1.stop(&mut s, T::A);
        assert_eq!(s.next(), Some(now + Duration::from_secs(4)));
        assert!(s.pop_due(now).is_none());
        let (at, owner, idx) = s.pop_due(now + Duration::from_secs(4)).unwrap();
        assert_eq!(owner, Owner::Server(2));
        assert_eq!(t2.expired(idx, at), Some(T::B));
        assert_eq!(t2.get(T::B), None);
        t1.set(&mut s, T::B, now);
        t1.stop_all(&mut s);
        assert_eq!(s.len(), 0);
    }
}
