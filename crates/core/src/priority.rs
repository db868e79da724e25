//! Priorities among client keys when a model's quota runs low. Each 2xx
//! answer's rate-limit headers (`x-ratelimit-limit-*` and `-remaining-*`,
//! Anthropic's and the draft standard's alike) give the share of the
//! model's quota left; the latest reading of each target is kept in the
//! shared store until the reset it states. A key ranked `r` priorities below
//! the highest configured may not use a target whose reading is under
//! `r` x `priority_reserve`: it goes to a fallback its policy allows, or gets
//! the gateway's 429, while the keys above it keep the model.

use crate::blocks::SharedStore;
use crate::plan::{GatewayPlan, Target};
use crate::quota::Quota;

/// How long a reading that states no reset is believed: about one of the
/// providers' own windows (a minute), and replaced by every answer.
const UNSTATED_RESET_MS: u64 = 60_000;

/// The latest reading of `t`'s quota.
pub fn slot(t: &Target) -> String {
    format!("plano.left.{}", t.label())
}

/// Whether the configured keys have more than one priority: only then is a
/// reading worth keeping.
pub fn ranked(plan: &GatewayPlan) -> bool {
    plan.priority_reserve > 0.0
        && plan
            .client_keys
            .windows(2)
            .any(|w| w[0].priority != w[1].priority)
}

/// How many distinct configured priorities are above `priority`.
fn rank(plan: &GatewayPlan, priority: u32) -> usize {
    let mut above: Vec<u32> = plan
        .client_keys
        .iter()
        .map(|k| k.priority)
        .filter(|&p| p > priority)
        .collect();
    above.sort_unstable();
    above.dedup();
    above.len()
}

/// An answer of `t` reported its quota: its share left is kept (the least
/// of its requests' and tokens'), until that limit's reset.
pub fn note_left(store: &dyn SharedStore, t: &Target, quota: &Quota, now_ms: u64) {
    let lowest = [&quota.requests, &quota.tokens]
        .into_iter()
        .filter_map(|l| Some((l.left_share()?, l.reset_ms)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((share, reset_ms)) = lowest {
        let until = now_ms + reset_ms.unwrap_or(UNSTATED_RESET_MS);
        store.set(&slot(t), format!("{share},{until}").as_bytes(), 0);
    }
}

/// The reading of `t` in force at `now_ms`: its share left and its end.
pub fn left(store: &dyn SharedStore, t: &Target, now_ms: u64) -> Option<(f64, u64)> {
    let (value, _) = store.get(&slot(t))?;
    let (share, until) = std::str::from_utf8(&value).ok()?.split_once(',')?;
    let until: u64 = until.parse().ok()?;
    (until > now_ms).then_some((share.parse().ok()?, until))
}

/// A target kept from a request for its key's priority.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reserved {
    pub target: usize,
    /// The share of its quota left.
    pub left: f64,
    /// When the reading ends.
    pub until_ms: u64,
}

/// The targets the request of client key `client` may not use now.
pub fn reserved(
    plan: &GatewayPlan,
    store: &dyn SharedStore,
    client: Option<usize>,
    now_ms: u64,
) -> Vec<Reserved> {
    let Some(key) = client.and_then(|i| plan.client_keys.get(i)) else {
        return Vec::new();
    };
    let floor = rank(plan, key.priority) as f64 * plan.priority_reserve;
    if floor <= 0.0 {
        return Vec::new();
    }
    plan.targets
        .iter()
        .enumerate()
        .filter_map(|(target, t)| {
            let (left, until_ms) = left(store, t, now_ms)?;
            (left < floor).then_some(Reserved {
                target,
                left,
                until_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
