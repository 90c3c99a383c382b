//! The timer queue of waiting units: one entry per unit (its wake-up time), ordered by time.
//!
//! A unit that waits for its next check or a retry is an entry here instead of a sleeping task,
//! so waiting costs a few dozen bytes per unit. It must not know what the units wait for.

use std::collections::{BTreeSet, HashMap};

use crate::store::UnitId;

/// Wake-up times of waiting units; at most one entry per unit.
#[derive(Debug, Default)]
pub(super) struct Timers {
    queue: BTreeSet<(i64, UnitId)>,
    due_at: HashMap<UnitId, i64>,
}

impl Timers {
    /// Wakes `unit` at the unix-millis time `at`; an earlier entry for it is replaced when `at`
    /// is sooner (a reload or a respawn wants it now), kept otherwise.
    pub(super) fn wake_at(&mut self, unit: UnitId, at: i64) {
        match self.due_at.get(&unit) {
            Some(&old) if old <= at => {}
            Some(&old) => {
                self.queue.remove(&(old, unit));
                self.queue.insert((at, unit));
                self.due_at.insert(unit, at);
            }
            None => {
                self.queue.insert((at, unit));
                self.due_at.insert(unit, at);
            }
        }
    }

    /// Forgets `unit`'s entry, if any (another instance took it over).
    pub(super) fn remove(&mut self, unit: UnitId) {
        if let Some(at) = self.due_at.remove(&unit) {
            self.queue.remove(&(at, unit));
        }
    }

    /// The earliest wake-up time.
    pub(super) fn next_wake(&self) -> Option<i64> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest unit due at `now`.
    pub(super) fn pop_due(&mut self, now: i64) -> Option<UnitId> {
        let &(at, unit) = self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.pop_first();
        self.due_at.remove(&unit);
        Some(unit)
    }

    /// How many units wait.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// No unit waits.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_out_in_time_order_once_due() {
        let mut t = Timers::default();
        t.wake_at(UnitId::order(1), 300);
        t.wake_at(UnitId::order(2), 100);
        t.wake_at(UnitId::domain(3), 200);
        assert_eq!(t.next_wake(), Some(100));
        assert_eq!(t.pop_due(50), None);
        assert_eq!(t.pop_due(250), Some(UnitId::order(2)));
        assert_eq!(t.pop_due(250), Some(UnitId::domain(3)));
        assert_eq!(t.pop_due(250), None);
        assert_eq!(t.pop_due(300), Some(UnitId::order(1)));
        assert!(t.is_empty());
    }

    #[test]
    fn one_entry_per_unit_the_sooner_wins() {
        let mut t = Timers::default();
        t.wake_at(UnitId::order(1), 500);
        t.wake_at(UnitId::order(1), 900);
        assert_eq!(t.next_wake(), Some(500));
        t.wake_at(UnitId::order(1), 0);
        assert_eq!(t.pop_due(0), Some(UnitId::order(1)));
        assert!(t.is_empty(), "the replaced entry is gone");
        t.wake_at(UnitId::order(2), 10);
        t.wake_at(UnitId::order(3), 20);
        t.remove(UnitId::order(2));
        t.remove(UnitId::order(9));
        assert_eq!((t.len(), t.pop_due(100)), (1, Some(UnitId::order(3))));
    }
}
