//! Exponential backoff: `min(base * 2^(n-1), max)`, optionally jittered.

use crate::plan::Backoff;

/// The wait before retry number `n` (1-based) in the backoff's scope.
/// `jitter` is a uniform sample in [0, 1): with jitter on, the wait is spread
/// between half of the full delay and all of it.
pub fn delay_ms(backoff: &Backoff, n: u32, jitter: f64) -> u64 {
    if n == 0 {
        return 0;
    }
    let exp = (n - 1).min(63);
    let full = backoff
        .base_ms
        .saturating_mul(1u64.checked_shl(exp).unwrap_or(u64::MAX))
        .min(backoff.max_ms);
    if !backoff.jitter {
        return full;
    }
    let half = full / 2;
    let spread = (full - half) as f64 * jitter.clamp(0.0, 1.0);
    half + spread as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackoffScope;

    fn backoff(base: u64, max: u64, jitter: bool) -> Backoff {
        Backoff {
            apply_to: BackoffScope::Global,
            base_ms: base,
            max_ms: max,
            jitter,
        }
    }

    #[test]
    fn doubles_then_caps() {
        let b = backoff(500, 5000, false);
        let waits: Vec<u64> = (1..=6).map(|n| delay_ms(&b, n, 0.9)).collect();
        assert_eq!(waits, vec![500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(delay_ms(&b, 200, 0.0), 5000);
    }

    #[test]
    fn jitter_spans_half_to_full() {
        let b = backoff(1000, 60_000, true);
        assert_eq!(delay_ms(&b, 2, 0.0), 1000);
        assert_eq!(delay_ms(&b, 2, 0.5), 1500);
        assert_eq!(delay_ms(&b, 2, 0.999_999), 1999);
    }
}
