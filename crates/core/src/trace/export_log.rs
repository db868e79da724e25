//! A collector that fails every export (down, full, or accepting and never
//! answering) is said once per window with the count since, not in a line
//! per export: under load that was over 100 lines a second.

/// At most one line this often, per worker.
pub const WINDOW_MS: u64 = 10_000;

#[derive(Debug, Default)]
pub struct ExportFailures {
    said_at: Option<u64>,
    since: u64,
}

impl ExportFailures {
    /// An export failed at `now` (ms): `Some(n)` when a line is due, `n`
    /// the failures it reports (this one and those not said yet).
    pub fn failed(&mut self, now: u64) -> Option<u64> {
        self.since += 1;
        if self
            .said_at
            .is_some_and(|at| now.saturating_sub(at) < WINDOW_MS)
        {
            return None;
        }
        self.said_at = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_collector_is_said_once_per_window_with_the_count() {
        let mut f = ExportFailures::default();
        assert_eq!(f.failed(1_000), Some(1));
        // 112 failures a second for 10 s: none said until the window ends.
        let said: Vec<u64> = (1..1_111).filter_map(|i| f.failed(1_000 + i * 9)).collect();
        assert_eq!(said, Vec::<u64>::new());
        assert_eq!(f.failed(11_000), Some(1_111));
        assert_eq!(f.failed(11_001), None);
    }
}
