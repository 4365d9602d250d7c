//! Cancellation in long numerical loops: [`Pace`] counts the work done and asks a cancellation
//! closure (the plugin's `|| ctx.is_cancelled()`) once per [`EVERY`] units, so a loop stops soon
//! after a request's deadline without paying for a host call per iteration.

/// Units of work (about one multiply-add each) between two questions: well under a
/// millisecond optimised, a few milliseconds in a debug build.
pub const EVERY: usize = 1 << 20;

pub struct Pace<'a> {
    cancelled: &'a dyn Fn() -> bool,
    left: usize,
}

impl<'a> Pace<'a> {
    pub fn new(cancelled: &'a dyn Fn() -> bool) -> Self {
        Pace { cancelled, left: EVERY }
    }

    /// Books `work` units done (or about to be); true when the loop should stop now.
    pub fn stop(&mut self, work: usize) -> bool {
        if work < self.left {
            self.left -= work;
            return false;
        }
        self.left = EVERY;
        (self.cancelled)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn asks_once_per_stretch_of_work() {
        let asked = Cell::new(0);
        let cancelled = || {
            asked.set(asked.get() + 1);
            false
        };
        let mut pace = Pace::new(&cancelled);
        for _ in 0..(3 * EVERY / 1000) {
            assert!(!pace.stop(1000));
        }
        // 3·EVERY units in steps of 1000: the question comes every EVERY/1000 steps.
        assert_eq!(asked.get(), 2);
        assert!(!pace.stop(10 * EVERY), "a big step asks at once");
        assert_eq!(asked.get(), 3);
        let stop = || true;
        let mut pace = Pace::new(&stop);
        assert!(!pace.stop(1));
        assert!(pace.stop(EVERY));
    }
}
