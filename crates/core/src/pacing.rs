//! Deployments' pacing: a target with `rpm`/`tpm` is sent no more than
//! its provider's bucket allows ([`bucket`]: refilling `rpm / 60` requests
//! and `tpm / 60` tokens a second, holding about a minute's worth). What
//! was sent is counted as a client key's requests are (`limits::Counts`,
//! one slot per target in the shared store, published to the replicas as
//! theirs): an attempt reserves one request and the request's estimate of
//! tokens (the client keys' estimate) before it is sent, and the answer's
//! `usage` settles the estimate. A target without room for a request is
//! unavailable to it until its bucket has refilled enough
//! (`RequestState::blocked_until`), so the choices skip it as they skip a
//! block, and with every target full the request waits for the soonest
//! room (the filter's queue).

use crate::blocks::{update, SharedStore};
use crate::limits::{self, Charge, Counts, Others};
use crate::plan::{KeyLimits, Target};
use crate::quota::Quota;
use crate::replicas::counts::View;

pub mod bucket;
pub mod queue;

use bucket::{Checkpoint, Level};

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

/// The slot of a target's bucket's [`Checkpoint`]: this replica's own,
/// never published.
pub fn checkpoint_slot(target: &Target) -> String {
    format!("plano.bucket.{}", target.cluster)
}

/// A paced target's bucket as this replica knows it: its limits (this
/// replica's share while etcd is away), its peers' counts and where its
/// level starts.
struct Paced {
    slot: String,
    limits: KeyLimits,
    others: Others,
    start: Checkpoint,
}

impl Paced {
    fn read(store: &dyn SharedStore, target: &Target, now_ms: u64) -> Option<Paced> {
        let limits = limits_of(store, target)?;
        let slot = slot(target);
        let others = others(store, &slot, now_ms);
        let limits = others.split(&limits);
        let known = store
            .get(&checkpoint_slot(target))
            .and_then(|(v, _)| Checkpoint::decode(&v));
        let start = Checkpoint::start(known, &limits, now_ms);
        Some(Paced {
            slot,
            limits,
            others,
            start,
        })
    }

    /// This replica's counts and its peers', from `value` of its slot.
    fn all(&self, value: &[u8], now_ms: u64) -> Counts {
        Counts::decode(value, now_ms).plus(&self.others.peers)
    }

    fn level<'a>(&'a self, all: &'a Counts) -> Level<'a> {
        Level {
            start: self.start,
            counts: all,
            limits: &self.limits,
        }
    }

    fn own(&self, store: &dyn SharedStore) -> Vec<u8> {
        store.get(&self.slot).map(|(v, _)| v).unwrap_or_default()
    }
}

/// When `target` has room for a request estimated at `estimate` tokens:
/// `None` when it has room now (or is not paced), else the time (ms since
/// the epoch) its bucket will have refilled enough. Nothing is reserved.
pub fn room_at(
    store: &dyn SharedStore,
    target: &Target,
    estimate: u64,
    now_ms: u64,
) -> Option<u64> {
    let paced = Paced::read(store, target, now_ms)?;
    let all = paced.all(&paced.own(store), now_ms);
    paced.level(&all).room_at(estimate, now_ms)
}

/// Every slot of a paced target's: its counts, its checkpoint and the
/// limits its provider reported.
pub fn slots(target: &Target) -> [String; 3] {
    [slot(target), checkpoint_slot(target), learned_slot(target)]
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

/// What a paced target was sent in the last 60 seconds, for `planoai
/// status` and the gauges (its bucket may take more: see [`bucket`]).
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
    /// Room, but no more than the waiters that come first take: nothing
    /// was counted (`queue::ahead`).
    Behind,
}

/// Reserves one request and `estimate` tokens of `target`'s bucket, when
/// it holds more than the `ahead` waiters that come before this request
/// take (asked only when the bucket has room: under a load above the limit
/// most looks find none, and read no queue).
pub fn reserve(
    store: &dyn SharedStore,
    target: &Target,
    estimate: u64,
    now_ms: u64,
    ahead: impl FnOnce() -> u64,
) -> Reserved {
    let Some(paced) = Paced::read(store, target, now_ms) else {
        return Reserved::Unpaced;
    };
    let mut ahead = Some(ahead);
    let mut waiters = 0;
    let mut reserved = None;
    let mut moved = None;
    update(store, &paced.slot, |current| {
        let mut counts = Counts::decode(current, now_ms);
        let all = counts.plus(&paced.others.peers);
        let level = paced.level(&all);
        if let Some(at_ms) = level.room_at(estimate, now_ms) {
            reserved = Some(Reserved::Full { at_ms });
            return None;
        }
        if let Some(ahead) = ahead.take() {
            waiters = ahead();
        }
        if waiters > 0 && waiters >= level.room(estimate, now_ms) {
            reserved = Some(Reserved::Behind);
            return None;
        }
        let tokens = bucket::taken(&paced.limits, estimate);
        let second = now_ms / 1000;
        let b = counts.bucket(second);
        b.requests += 1;
        b.tokens += tokens;
        reserved = Some(Reserved::Charged(Charge {
            second,
            day: counts.day,
            tokens,
        }));
        moved = paced
            .start
            .due(now_ms)
            .map(|to| paced.start.moved(&all, &paced.limits, to));
        Some(counts.encode())
    });
    if let Some(moved) = moved {
        // A lost race leaves the checkpoint another worker moved.
        update(store, &checkpoint_slot(target), |current| {
            let known = Checkpoint::decode(current);
            known
                .is_none_or(|k| k.second < moved.second || k.rpm != moved.rpm || k.tpm != moved.tpm)
                .then(|| moved.encode())
        });
    }
    // A slot that lost every CAS round (64 of them) fails open: pacing
    // must never turn a gateway fault into a refusal.
    reserved.unwrap_or(Reserved::Charged(Charge {
        second: now_ms / 1000,
        day: now_ms / 86_400_000,
        tokens: 0,
    }))
}

/// The attempt's answer said it took `tokens` (0 for one that failed
/// before any work): its reservation's estimate is replaced by them. What
/// it took less is given back in its second, while the counts hold it (a
/// checkpoint past it keeps the estimate: less room, never more); what it
/// took more counts now, so that no checkpoint already past its second
/// misses it.
pub fn settle(store: &dyn SharedStore, target: &Target, charge: &Charge, tokens: u64, now_ms: u64) {
    if tokens == charge.tokens || target.pace.is_none() {
        return;
    }
    update(store, &slot(target), |current| {
        let mut counts = Counts::decode(current, now_ms);
        if tokens > charge.tokens {
            counts.bucket(now_ms / 1000).tokens += tokens - charge.tokens;
        } else if counts.buckets.iter().any(|b| b.second == charge.second) {
            let b = counts.bucket(charge.second);
            b.tokens = b.tokens.saturating_sub(charge.tokens - tokens);
        } else {
            return None;
        }
        Some(counts.encode())
    });
}

#[cfg(test)]
mod tests;
