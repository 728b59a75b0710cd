//! Per-loop connection timers: a hashed timing wheel with lazy rescheduling.
//!
//! Activity on a connection only stores a tick number in the connection (no wheel
//! operation on the hot path). Each connection has at most one live entry in the wheel,
//! at the earliest tick any of its timeouts could expire (`Connection::timer_at`). When
//! the entry comes due, the loop recomputes the real deadline from the connection's
//! stamps: expired means close, otherwise the entry moves to the new deadline. So the
//! cost is O(1) per activity and O(due entries) per tick, however many connections the
//! loop holds; an idle loop with no timed connections never wakes for the wheel.

use std::time::{Duration, Instant};

/// Wheel resolution: timeouts fire within one tick after they expire.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// Slots in the wheel (a span of 102.4 s); later deadlines go round more than once.
const SLOTS: usize = 1024;

/// Ticks since the loop started, as stored in connections (u32 at 100 ms: 13 years).
pub(crate) type Tick = u32;

/// One wheel entry: (slab key, low 32 bits of the generation, due tick): 12 bytes.
///
/// The generation is kept to its low half to halve the entry. Whoever acts on an entry
/// checks it against the slot's current occupant, and a later occupant of the same
/// slot could match only after 2^32 more connections (connects) on the loop while
/// the entry waits; the connection timers check the due tick as well
/// (`Connection::timer_at`) and recompute the deadline from the connection's own
/// stamps, so even such a match could only move an entry, never close early.
pub(crate) type Entry = (u32, u32, Tick);

/// A wheel of [`Entry`]s.
pub(crate) struct TimerWheel {
    start: Instant,
    slots: Vec<Vec<Entry>>,
    /// The next tick to process: every tick before it has been processed.
    next: Tick,
    len: usize,
    /// The earliest due tick of any entry (exact after `expire`, lowered by `insert`).
    earliest: Tick,
}

impl TimerWheel {
    pub(crate) fn new(start: Instant) -> Self {
        TimerWheel {
            start,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            next: 0,
            len: 0,
            earliest: Tick::MAX,
        }
    }

    /// The tick `now` falls in.
    pub(crate) fn tick_of(&self, now: Instant) -> Tick {
        let t = now.saturating_duration_since(self.start).as_millis() / TICK.as_millis();
        Tick::try_from(t).unwrap_or(Tick::MAX)
    }

    /// Ticks a duration spans, rounded up (at least 1).
    pub(crate) fn ticks(d: Duration) -> Tick {
        let t = d.as_millis().div_ceil(TICK.as_millis()).max(1);
        Tick::try_from(t).unwrap_or(Tick::MAX)
    }

    /// Adds an entry due at tick `due` (never earlier than the next unprocessed tick).
    pub(crate) fn insert(&mut self, key: usize, generation: u64, due: Tick) {
        let due = due.max(self.next);
        // (A key past u32 would need 4 billion connections on one loop.)
        let key = u32::try_from(key).unwrap_or(u32::MAX);
        self.slots[due as usize % SLOTS].push((key, generation as u32, due));
        self.len += 1;
        self.earliest = self.earliest.min(due);
    }

    /// When the loop must wake up for the wheel (the end of the earliest due tick), or
    /// `None` when the wheel is empty. O(1).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        (self.len > 0).then(|| self.start + TICK * self.earliest.saturating_add(1))
    }

    /// Recomputes `earliest` after entries were removed: the first slot, in time order,
    /// holding an entry due in this round; failing that, the minimum over all entries.
    fn recompute_earliest(&mut self) {
        self.earliest = Tick::MAX;
        if self.len == 0 {
            return;
        }
        for i in 0..SLOTS as Tick {
            let t = self.next.saturating_add(i);
            if self.slots[t as usize % SLOTS].iter().any(|e| e.2 <= t) {
                self.earliest = t;
                return;
            }
        }
        self.earliest = self.slots.iter().flatten().map(|e| e.2).min().unwrap_or(Tick::MAX);
    }

    /// Moves every entry due at or before `now` into `due` (key, generation, tick).
    pub(crate) fn expire(&mut self, now: Instant, due: &mut Vec<Entry>) {
        if self.len == 0 {
            self.next = self.tick_of(now).saturating_add(1).max(self.next);
            return;
        }
        let current = self.tick_of(now);
        let before = due.len();
        let batch = due;
        while self.next <= current {
            let t = self.next;
            let slot = &mut self.slots[t as usize % SLOTS];
            if !slot.is_empty() {
                // Entries for later rounds of the wheel stay in their slot.
                let mut i = 0;
                while i < slot.len() {
                    if slot[i].2 <= t {
                        batch.push(slot.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            self.next += 1;
            if self.len == batch.len() - before {
                // Nothing else in the wheel: skip the empty ticks up to `current`.
                self.next = self.next.max(current.saturating_add(1));
            }
        }
        self.len -= batch.len() - before;
        self.recompute_earliest();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_once_at_their_tick() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(1, 0, 3);
        w.insert(2, 0, 3 + SLOTS as Tick); // same slot, next round
        w.insert(3, 0, 10);
        assert_eq!(w.next_deadline(), Some(t0 + TICK * 4));
        let mut fired = Vec::new();
        let keys = |v: &Vec<Entry>| v.iter().map(|e| e.0).collect::<Vec<_>>();
        w.expire(t0 + TICK * 2, &mut fired);
        assert!(fired.is_empty());
        w.expire(t0 + TICK * 3, &mut fired);
        assert_eq!(keys(&fired), vec![1]);
        assert_eq!(w.next_deadline(), Some(t0 + TICK * 11));
        w.expire(t0 + TICK * 50, &mut fired);
        assert_eq!(keys(&fired), vec![1, 3]);
        assert_eq!(w.next_deadline(), Some(t0 + TICK * (4 + SLOTS as u32)));
        w.expire(t0 + TICK * (3 + SLOTS as u32), &mut fired);
        assert_eq!(keys(&fired), vec![1, 3, 2]);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn late_inserts_are_due_at_the_next_tick() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(9, 0, 5);
        let mut fired = Vec::new();
        w.expire(t0 + TICK * 20, &mut fired);
        fired.clear();
        w.insert(7, 1, 2); // in the past
        w.expire(t0 + TICK * 21, &mut fired);
        assert_eq!(fired, vec![(7, 1, 21)]);
    }

    #[test]
    fn ticks_round_up() {
        assert_eq!(TimerWheel::ticks(Duration::from_millis(1)), 1);
        assert_eq!(TimerWheel::ticks(Duration::from_millis(100)), 1);
        assert_eq!(TimerWheel::ticks(Duration::from_millis(101)), 2);
        assert_eq!(TimerWheel::ticks(Duration::from_secs(60)), 600);
    }
}
