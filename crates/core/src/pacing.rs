//! Deployments' pacing: a target with `rpm`/`tpm` is sent no more than
//! they allow in any 60 seconds. Its counts are a client key's
//! (`limits::Counts`, one slot per target in the shared store): an attempt
//! reserves one request and the request's estimate of tokens (the client
//! keys' estimate) before it is sent, and the answer's `usage` settles the
//! estimate. A target without room for a request is unavailable to it
//! until its window has room (`RequestState::blocked_until`), so the
//! choices skip it as they skip a block, and with every target full the
//! request waits for the soonest room (the filter's queue).

use crate::blocks::SharedStore;
use crate::limits::{self, Charge, Counts, Others, Verdict};
use crate::plan::{KeyLimits, Target};
use crate::quota::Quota;
use crate::replicas::counts::View;

pub mod queue;

/// What the other replicas have sent to the target whose slot is `slot`,
/// as the etcd holder last wrote (the client keys' way, `limits::replicas`).
pub fn others(store: &dyn SharedStore, slot: &str, now_ms: u64) -> Others {
    let seen = limits::replicas::seen(store);
    Others::known(seen, || View::read(store, slot).sum, now_ms)
}

/// Every target's slot starts so.
pub const SLOT_PREFIX: &str = "plano.pace.";

/// The slot of a target's counts: its cluster's name is unique per target.
/// With `shared_state` the replicas publish it and add it up as a client
/// key's (`replicas::summary`).
pub fn slot(target: &Target) -> String {
    format!("{SLOT_PREFIX}{}", target.cluster)
}

/// When `target` has room for a request estimated at `estimate` tokens:
/// `None` when it has room now (or is not paced), else the time (ms since
/// the epoch) its window will have made room. Nothing is reserved.
pub fn room_at(
    store: &dyn SharedStore,
    target: &Target,
    estimate: u64,
    now_ms: u64,
) -> Option<u64> {
    let pace = &limits_of(store, target)?;
    let slot = slot(target);
    let others = &others(store, &slot, now_ms);
    let counts = store
        .get(&slot)
        .map(|(value, _)| Counts::decode(&value, now_ms))
        .unwrap_or_default();
    let all = counts.plus(&others.peers);
    let pace = others.split(pace);
    limits::refusal(&all, &pace, clamp(&pace, estimate), now_ms).map(|(_, at)| at)
}

/// The slot of the limits `target`'s provider last reported: `rpm,tpm`,
/// either empty when not reported.
pub fn learned_slot(target: &Target) -> String {
    format!("plano.learned.{}", target.cluster)
}

/// The provider's own limits on a paced target, as an answer's headers
/// state them (`x-ratelimit-limit-requests`/`-tokens`,
/// `anthropic-ratelimit-requests-limit`/`-tokens-limit`), are kept for it:
/// a lower one tightens its configured limit, a higher one never raises it
/// ([`limits_of`]). Written only when they change. True when written.
pub fn learn(store: &dyn SharedStore, target: &Target, quota: &Quota) -> bool {
    if target.pace.is_none() || (quota.requests.limit.is_none() && quota.tokens.limit.is_none()) {
        return false;
    }
    let slot = learned_slot(target);
    let known = store.get(&slot);
    let (rpm, tpm) = known
        .as_ref()
        .map_or((None, None), |(v, _)| parse_learned(v));
    let value = format!(
        "{},{}",
        quota
            .requests
            .limit
            .or(rpm)
            .map_or(String::new(), |n| n.to_string()),
        quota
            .tokens
            .limit
            .or(tpm)
            .map_or(String::new(), |n| n.to_string())
    );
    if known.as_ref().is_some_and(|(v, _)| v == value.as_bytes()) {
        return false;
    }
    let cas = known.map_or(0, |(_, cas)| cas);
    store.set(&slot, value.as_bytes(), cas)
}

fn parse_learned(value: &[u8]) -> (Option<u64>, Option<u64>) {
    let text = std::str::from_utf8(value).unwrap_or_default();
    let (rpm, tpm) = text.split_once(',').unwrap_or(("", ""));
    (rpm.parse().ok(), tpm.parse().ok())
}

/// A paced target's limits now: each configured one, or what its provider
/// last reported when that is lower. `None` for a target not paced.
pub fn limits_of(store: &dyn SharedStore, target: &Target) -> Option<KeyLimits> {
    let pace = target.pace.as_ref()?;
    let (rpm, tpm) = store
        .get(&learned_slot(target))
        .map_or((None, None), |(v, _)| parse_learned(&v));
    let tighter = |configured: Option<u64>, learned: Option<u64>| match (configured, learned) {
        (Some(c), Some(l)) => Some(c.min(l.max(1))),
        (c, _) => c,
    };
    Some(KeyLimits {
        requests_per_minute: tighter(pace.requests_per_minute, rpm),
        tokens_per_minute: tighter(pace.tokens_per_minute, tpm),
        tokens_per_day: None,
    })
}

/// A paced target's minute now, for `planoai status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minute {
    /// What the window counts, the other replicas' included.
    pub requests: u64,
    pub tokens: u64,
    /// The limits in force, and whether each is its provider's (lower
    /// than the configured one) rather than the configured one.
    pub limits: KeyLimits,
    pub learned_rpm: bool,
    pub learned_tpm: bool,
}

pub fn minute(store: &dyn SharedStore, target: &Target, now_ms: u64) -> Option<Minute> {
    let pace = target.pace.as_ref()?;
    let limits = limits_of(store, target)?;
    let slot = slot(target);
    let counts = store
        .get(&slot)
        .map(|(value, _)| Counts::decode(&value, now_ms))
        .unwrap_or_default()
        .plus(&others(store, &slot, now_ms).peers);
    Some(Minute {
        requests: counts.requests(),
        tokens: counts.tokens(),
        learned_rpm: limits.requests_per_minute != pace.requests_per_minute,
        learned_tpm: limits.tokens_per_minute != pace.tokens_per_minute,
        limits,
    })
}

/// What reserving an attempt's share of a target gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The target is not paced: nothing to settle.
    Unpaced,
    /// One request and the estimate were counted; settle it with the answer.
    Charged(Charge),
    /// No room: nothing was counted, and room comes at this time.
    Full { at_ms: u64 },
}

/// Reserves one request and `estimate` tokens of `target`'s minute.
pub fn reserve(store: &dyn SharedStore, target: &Target, estimate: u64, now_ms: u64) -> Reserved {
    let Some(limits) = limits_of(store, target) else {
        return Reserved::Unpaced;
    };
    let slot = slot(target);
    let others = &others(store, &slot, now_ms);
    match limits::charge(store, &slot, &limits, estimate, now_ms, others) {
        Verdict::Allowed(charge, _) => Reserved::Charged(charge),
        Verdict::Refused { retry_after_ms, .. } => Reserved::Full {
            at_ms: now_ms + retry_after_ms,
        },
    }
}

/// The attempt's answer said it took `tokens` (0 for one that failed
/// before any work): its reservation's estimate is replaced by them.
pub fn settle(store: &dyn SharedStore, target: &Target, charge: &Charge, tokens: u64, now_ms: u64) {
    let slot = slot(target);
    let others = &others(store, &slot, now_ms);
    limits::settle(store, &slot, charge, tokens, now_ms, others);
}

/// An estimate past `tpm` whole counts as `tpm`, as `limits::charge` does:
/// such a request fits an empty window rather than never.
fn clamp(pace: &KeyLimits, estimate: u64) -> u64 {
    pace.tokens_per_minute
        .map_or(estimate, |tpm| estimate.min(tpm))
}

#[cfg(test)]
mod tests;
