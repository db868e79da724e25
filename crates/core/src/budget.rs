//! Retry budgets, as Envoy's and Linkerd's: the retries a model's failures
//! cause may add at most `ratio` of its recent requests, plus
//! `min_per_second` over the window. The counts live in the shared store,
//! one slot per model, so every worker spends the same budget.

use crate::blocks::{update, BlockKey, SharedStore};
use crate::plan::RetryBudget;

/// One second's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    second: u64,
    requests: u64,
    retries: u64,
}

/// `second:requests:retries` buckets joined by `,`, those older than the
/// window dropped on every write, so the slot stays small.
fn decode(value: &[u8], now_ms: u64, window_ms: u64) -> Vec<Bucket> {
    let oldest = now_ms.saturating_sub(window_ms) / 1000;
    std::str::from_utf8(value)
        .unwrap_or_default()
        .split(',')
        .filter_map(|b| {
            let mut parts = b.split(':').map(|n| n.parse::<u64>().ok());
            Some(Bucket {
                second: parts.next()??,
                requests: parts.next()??,
                retries: parts.next()??,
            })
        })
        .filter(|b| b.second > oldest)
        .collect()
}

fn encode(buckets: &[Bucket]) -> Vec<u8> {
    buckets
        .iter()
        .map(|b| format!("{}:{}:{}", b.second, b.requests, b.retries))
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

fn add(buckets: &mut Vec<Bucket>, now_ms: u64, requests: u64, retries: u64) {
    let second = now_ms / 1000;
    match buckets.iter_mut().find(|b| b.second == second) {
        Some(b) => {
            b.requests += requests;
            b.retries += retries;
        }
        None => buckets.push(Bucket {
            second,
            requests,
            retries,
        }),
    }
}

/// Counts a request sent to the model `key` names.
pub fn record_request(store: &dyn SharedStore, key: &BlockKey, budget: &RetryBudget, now_ms: u64) {
    update(store, &key.budget_slot(), |current| {
        let mut buckets = decode(current, now_ms, budget.window_ms);
        add(&mut buckets, now_ms, 1, 0);
        Some(encode(&buckets))
    });
}

/// Spends one retry of `key`'s budget if it has one left; false when the
/// retry would exceed it.
pub fn try_retry(
    store: &dyn SharedStore,
    key: &BlockKey,
    budget: &RetryBudget,
    now_ms: u64,
) -> bool {
    update(store, &key.budget_slot(), |current| {
        let mut buckets = decode(current, now_ms, budget.window_ms);
        let requests: u64 = buckets.iter().map(|b| b.requests).sum();
        let retries: u64 = buckets.iter().map(|b| b.retries).sum();
        let floor = budget.min_per_second as f64 * budget.window_ms as f64 / 1000.0;
        let allowed = budget.ratio * requests as f64 + floor;
        if (retries + 1) as f64 > allowed {
            return None;
        }
        add(&mut buckets, now_ms, 0, 1);
        Some(encode(&buckets))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::memory::MemoryStore;

    const T0: u64 = 1_700_000_000_000;

    fn budget(ratio: f64, min_per_second: u64) -> RetryBudget {
        RetryBudget {
            ratio,
            min_per_second,
            window_ms: 10_000,
        }
    }

    #[test]
    fn retries_stay_within_the_ratio_plus_the_floor() {
        let store = MemoryStore::default();
        let key = BlockKey::Model("m".into());
        let b = budget(0.2, 1);
        for i in 0..100 {
            record_request(&store, &key, &b, T0 + i * 50);
        }
        let granted = (0..100)
            .filter(|i| try_retry(&store, &key, &b, T0 + 5_000 + i))
            .count();
        // 20% of 100 requests, plus 1 a second over 10 s.
        assert_eq!(granted, 30);
    }

    #[test]
    fn the_window_forgets_old_traffic_with_a_fake_clock() {
        let store = MemoryStore::default();
        let key = BlockKey::Model("m".into());
        let b = budget(0.5, 0);
        for _ in 0..10 {
            record_request(&store, &key, &b, T0);
        }
        assert!((0..5).all(|_| try_retry(&store, &key, &b, T0 + 1)));
        assert!(!try_retry(&store, &key, &b, T0 + 2));
        // Ten seconds on, those requests and retries have left the window.
        assert!(!try_retry(&store, &key, &b, T0 + 11_000));
        record_request(&store, &key, &b, T0 + 11_000);
        record_request(&store, &key, &b, T0 + 11_000);
        assert!(try_retry(&store, &key, &b, T0 + 11_001));
        assert!(!try_retry(&store, &key, &b, T0 + 11_002));
    }

    #[test]
    fn a_floor_alone_allows_retries_without_traffic() {
        let store = MemoryStore::default();
        let key = BlockKey::Model("m".into());
        let b = budget(0.0, 2);
        assert_eq!(
            (0..50)
                .filter(|i| try_retry(&store, &key, &b, T0 + i))
                .count(),
            20
        );
    }

    #[test]
    fn a_garbled_slot_counts_as_empty() {
        let store = MemoryStore::default();
        let key = BlockKey::Model("m".into());
        assert!(store.set(&key.budget_slot(), b"x:y,1:2", 0));
        assert!(try_retry(&store, &key, &budget(0.0, 1), T0));
    }
}
