//! Retry budgets, as Envoy's and Linkerd's: the retries a model's failures
//! cause may add at most `ratio` of its recent requests, plus
//! `min_per_second` over the window. The counts live in the shared store,
//! one slot per model, so every worker spends the same budget.
//!
//! With `shared_state`, replicas spend one budget between them: the ratio
//! part on each replica's own requests, the floor split by each replica's
//! share of all the requests ([`allowance`]), from the counts the replicas
//! publish (`replicas::counts`). A replica never spends what it believes
//! its peers left unspent: their counts are up to a second old, so each
//! would spend the same remainder before hearing of the others, and N
//! replicas would spend N budgets again.

use crate::blocks::{update, BlockKey, SharedStore};
use crate::buckets;
use crate::plan::RetryBudget;
use crate::replicas::counts;

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
    buckets::parse(std::str::from_utf8(value).unwrap_or_default())
        .map(|(second, requests, retries)| Bucket {
            second,
            requests,
            retries,
        })
        .filter(|b| b.second > oldest)
        .collect()
}

fn encode(buckets: &[Bucket]) -> Vec<u8> {
    buckets::format(buckets.iter().map(|b| (b.second, b.requests, b.retries))).into_bytes()
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

/// The retries this replica may have made within the window: `ratio` of
/// its own requests, plus its share of the floor: its part of every
/// replica's requests, counted over the seconds whole in every peer's
/// published value (a replica must not look busier than its peers for
/// having fresher counts of itself); an even split while there are none
/// yet; all of it alone. Summed over the replicas, one budget.
pub fn allowance(budget: &RetryBudget, own_requests: u64, shares: &Shares) -> f64 {
    let floor = budget.min_per_second as f64 * budget.window_ms as f64 / 1000.0;
    let all = shares.own.saturating_add(shares.peers);
    let share = if all == 0 {
        1.0 / shares.replicas as f64
    } else {
        shares.own as f64 / all as f64
    };
    budget.ratio * own_requests as f64 + floor * share
}

/// Requests within the window, in the seconds that every replica's
/// published counts hold whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    pub own: u64,
    pub peers: u64,
    /// Live replicas, this one included.
    pub replicas: usize,
}

impl Shares {
    fn of(own: &[Bucket], view: &counts::View, now_ms: u64, window_ms: u64) -> Shares {
        let whole = |buckets: &[Bucket]| -> u64 {
            buckets
                .iter()
                .filter(|b| (b.second + 1) * 1000 + counts::MAX_AGE_MS <= now_ms)
                .fold(0, |all: u64, b| all.saturating_add(b.requests))
        };
        Shares {
            own: whole(own),
            peers: whole(&decode(view.sum.as_bytes(), now_ms, window_ms)),
            replicas: view.replicas(),
        }
    }
}

/// Spends one retry of `key`'s budget if it has one left; false when the
/// retry would exceed it.
pub fn try_retry(
    store: &dyn SharedStore,
    key: &BlockKey,
    budget: &RetryBudget,
    now_ms: u64,
) -> bool {
    let slot = key.budget_slot();
    let view = counts::View::read(store, &slot);
    update(store, &slot, |current| {
        let mut buckets = decode(current, now_ms, budget.window_ms);
        let requests: u64 = buckets.iter().map(|b| b.requests).sum();
        let retries: u64 = buckets.iter().map(|b| b.retries).sum();
        let shares = Shares::of(&buckets, &view, now_ms, budget.window_ms);
        if (retries + 1) as f64 > allowance(budget, requests, &shares) {
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
    fn the_floor_is_shared_by_request_share_and_the_ratio_is_each_replicas_own() {
        let b = budget(0.1, 1);
        let shares = |own, peers, replicas| Shares {
            own,
            peers,
            replicas,
        };
        assert_eq!(
            allowance(&b, 100, &shares(0, 0, 1)),
            20.0,
            "alone: 10% of 100, plus 10"
        );
        assert_eq!(
            allowance(&b, 100, &shares(90, 270, 3)),
            12.5,
            "a quarter of the published requests"
        );
        assert_eq!(
            allowance(&b, 100, &shares(0, 0, 4)),
            12.5,
            "none published: even"
        );
    }

    /// Three replicas, each with its own store, publishing to one another
    /// as their holders do (a tick every 100 ms, at most once a second,
    /// delivered 20 ms later), under a model whose every request fails and
    /// asks for a retry.
    fn spent_by_three(share: bool, b: RetryBudget, seconds: u64) -> usize {
        use crate::replicas::counts::{Publication, Published, Publisher};
        let key = BlockKey::Model("m".into());
        let slots = [key.budget_slot()];
        let stores: Vec<MemoryStore> = (0..3).map(|_| MemoryStore::default()).collect();
        let mut views: Vec<Published> = (0..3).map(|_| Published::default()).collect();
        let mut publishers: Vec<Publisher> = (0..3).map(|_| Publisher::default()).collect();
        let mut in_flight: Vec<(u64, usize, Publication)> = Vec::new();
        for p in &mut publishers {
            p.leased(1, T0);
        }
        let start = T0 + 2_000;
        let mut granted = 0;
        for now in (T0..start + seconds * 1000).step_by(10) {
            for (i, store) in stores.iter().enumerate() {
                if now.is_multiple_of(100) && share {
                    let current = Publication::read(store, &slots);
                    if publishers[i].due(now, &current).is_some() {
                        in_flight.push((now + 20, i, current.clone()));
                        publishers[i].published(now, current);
                    }
                    views[i].store(store, &slots, now, crate::replicas::summary::sum);
                }
                // Each replica's requests come every 20 ms, offset.
                if now >= start && (now / 10 + i as u64).is_multiple_of(2) {
                    record_request(store, &key, &b, now);
                    granted += try_retry(store, &key, &b, now) as usize;
                }
            }
            for (_, from, p) in in_flight.iter().filter(|(at, _, _)| *at == now) {
                for (_, view) in views.iter_mut().enumerate().filter(|(to, _)| to != from) {
                    view.peer(&from.to_string(), Some(p.clone()));
                }
            }
            in_flight.retain(|(at, _, _)| *at > now);
        }
        granted
    }

    #[test]
    fn three_replicas_spend_about_one_budget_between_them() {
        // A floor of 20 retries per 10 s window, nothing in proportion: over
        // 30 s, one budget is 60 retries; three alone spend 180.
        let b = budget(0.0, 2);
        let alone = spent_by_three(false, b, 30);
        let shared = spent_by_three(true, b, 30);
        assert_eq!(alone, 180);
        // Each replica's share is rounded down to whole retries: up to one
        // fewer per replica and window.
        assert!((51..=60).contains(&shared), "shared {shared}");
        // With a ratio, the ratio part is each replica's own either way.
        let b = budget(0.1, 1);
        let alone = spent_by_three(false, b, 30);
        let shared = spent_by_three(true, b, 30);
        // One budget is 10% of 150 requests a second plus 1, over 30 s: 480.
        assert_eq!(alone, 540);
        assert!((470..=480).contains(&shared), "shared {shared}");
    }

    #[test]
    fn a_garbled_slot_counts_as_empty() {
        let store = MemoryStore::default();
        let key = BlockKey::Model("m".into());
        assert!(store.set(&key.budget_slot(), b"x:y,1:2", 0));
        assert!(try_retry(&store, &key, &budget(0.0, 1), T0));
    }
}
