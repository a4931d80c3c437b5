//! When an in-memory table of entries that expire drops the expired ones.
//!
//! Sweeping on every insert costs a scan each time; sweeping only when the
//! table is full lets it hold every key it ever saw until then. Sweeping
//! whenever the table has doubled since its last sweep costs O(1) per
//! insert, amortized, and keeps the table within about twice its live
//! entries. The rate limiter's fallback table and registration's status
//! cache both keep entries that stop mattering after a while (a TAT that
//! has passed, a status too old to answer) and sweep on this schedule.

/// The fewest entries at which a table is swept: below it, too small to
/// matter.
pub const SWEEP_FLOOR: usize = 1024;

/// When a table is next swept, and how far it shrinks after a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepSchedule {
    /// The size at which the next sweep is due: twice what the last one
    /// left, at least [`SWEEP_FLOOR`].
    sweep_at: usize,
}

impl Default for SweepSchedule {
    fn default() -> Self {
        Self {
            sweep_at: SWEEP_FLOOR,
        }
    }
}

impl SweepSchedule {
    /// Whether a table of `size` entries is due a sweep.
    pub fn due(&self, size: usize) -> bool {
        size >= self.sweep_at
    }

    /// Records a sweep that left `left` entries in a table that can hold
    /// `capacity`; answers the capacity to shrink it to when it was large
    /// once, so that its memory is given back.
    pub fn swept(&mut self, left: usize, capacity: usize) -> Option<usize> {
        self.sweep_at = (2 * left).max(SWEEP_FLOOR);
        (capacity > 4 * self.sweep_at).then_some(self.sweep_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_due_once_the_table_doubles_what_the_last_left() {
        let mut schedule = SweepSchedule::default();
        assert!(!schedule.due(SWEEP_FLOOR - 1));
        assert!(schedule.due(SWEEP_FLOOR));
        assert_eq!(schedule.swept(3000, 4096), None);
        assert!(!schedule.due(5999));
        assert!(schedule.due(6000));
    }

    #[test]
    fn a_table_that_was_large_once_is_shrunk() {
        let mut schedule = SweepSchedule::default();
        assert_eq!(schedule.swept(10, 1 << 20), Some(SWEEP_FLOOR));
        assert_eq!(schedule.swept(10, 4 * SWEEP_FLOOR), None);
    }
}
