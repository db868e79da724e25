//! A deployment's pace as its provider keeps it: a bucket that refills
//! continuously, `rpm / 60` requests and `tpm / 60` tokens a second, up to
//! its capacity ([`capacity`]: a minute's worth less [`MARGIN_S`] seconds'
//! refill). What is sent empties it; a request fits when the bucket holds
//! its one request and its tokens.
//!
//! The bucket is not a slot of its own: its level is worked out from what
//! was sent, the per-second counts that the workers (and, through etcd, the
//! replicas) already keep of a paced target (`limits::Counts`), so that
//! peers' counts add up as they always did. A second's sends count at its
//! end (the current second's at once), never before they were sent, so the
//! room it sees is never more than the provider's. Counts last a minute;
//! what was sent before is carried by a [`Checkpoint`], the level at a
//! second old enough that no count of it is still to arrive
//! ([`SETTLED_S`]), moved forward now and then by a reservation. Without
//! one (or with one older than the counts, or of other limits), the bucket
//! is taken as empty a minute ago: that errs on the side of less room, and
//! a minute's refill fills a bucket nothing was sent from since.

use crate::limits::{Bucket, Counts, WINDOW_MS};
use crate::plan::KeyLimits;

/// One request or one token in a level's units: a limit of `L` a minute
/// refills `L` units a millisecond.
pub const UNIT: u128 = WINDOW_MS as u128;
/// The bucket holds a minute's worth less this many seconds' refill: peers'
/// counts reach a replica up to 1.5 s late (`replicas::counts::MAX_AGE_MS`),
/// so at an empty bucket's edge replicas may spend the same refill; the
/// margin keeps that within the provider's bucket.
pub const MARGIN_S: u64 = 2;
/// A checkpoint's second ends at least this long before now: by then every
/// peer's counts of it have arrived.
pub const SETTLED_S: u64 = 5;
/// A reservation moves the checkpoint when it is this far behind now: one
/// write every few seconds, whatever the load.
pub const MOVE_S: u64 = 15;

/// How many requests (or tokens) a bucket for `limit` a minute holds: a
/// minute's worth less [`MARGIN_S`] seconds' refill, and at least one.
pub fn capacity(limit: u64) -> u64 {
    limit.saturating_sub(limit / (60 / MARGIN_S)).max(1)
}

/// A request's tokens as its bucket takes them: an estimate past the
/// capacity counts as the capacity, so it fits an empty bucket rather than
/// never.
pub fn taken(limits: &KeyLimits, estimate: u64) -> u64 {
    limits
        .tokens_per_minute
        .map_or(estimate, |tpm| estimate.min(capacity(tpm)))
}

/// What has not refilled yet, in [`UNIT`]s: the bucket's capacity less its
/// level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spent {
    pub requests: u128,
    pub tokens: u128,
}

impl Spent {
    fn refilled(self, limits: &KeyLimits, ms: u64) -> Spent {
        let rate = |l: Option<u64>| u128::from(l.unwrap_or(0)) * u128::from(ms);
        Spent {
            requests: self
                .requests
                .saturating_sub(rate(limits.requests_per_minute)),
            tokens: self.tokens.saturating_sub(rate(limits.tokens_per_minute)),
        }
    }

    /// `b`'s sends spent, of each limit there is (an unlimited one is not
    /// counted: nothing refills it).
    fn plus(self, b: &Bucket, limits: &KeyLimits) -> Spent {
        let add = |spent: u128, limit: Option<u64>, n: u64| match limit {
            Some(_) => spent.saturating_add(u128::from(n).saturating_mul(UNIT)),
            None => 0,
        };
        Spent {
            requests: add(self.requests, limits.requests_per_minute, b.requests),
            tokens: add(self.tokens, limits.tokens_per_minute, b.tokens),
        }
    }

    /// An empty bucket: all of each capacity spent.
    fn empty(limits: &KeyLimits) -> Spent {
        let full = |l: Option<u64>| l.map_or(0, |l| u128::from(capacity(l)) * UNIT);
        Spent {
            requests: full(limits.requests_per_minute),
            tokens: full(limits.tokens_per_minute),
        }
    }
}

/// The bucket's level at the start of `second` (every send of an earlier
/// second in it), for the limits it was worked out for: this replica's
/// share of each (etcd away, see `limits::replicas`) or a changed limit
/// makes another bucket, and an unlimited dimension is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub second: u64,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub spent: Spent,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let limit = |l: Option<u64>| l.map_or(String::new(), |l| l.to_string());
        format!(
            "{}:{}:{}:{}:{}",
            self.second,
            limit(self.rpm),
            limit(self.tpm),
            self.spent.requests,
            self.spent.tokens
        )
        .into_bytes()
    }

    pub fn decode(value: &[u8]) -> Option<Checkpoint> {
        let text = std::str::from_utf8(value).ok()?;
        let mut f = text.split(':');
        let limit = |f: &str| -> Option<Option<u64>> {
            if f.is_empty() {
                Some(None)
            } else {
                f.parse().ok().map(Some)
            }
        };
        Some(Checkpoint {
            second: f.next()?.parse().ok()?,
            rpm: limit(f.next()?)?,
            tpm: limit(f.next()?)?,
            spent: Spent {
                requests: f.next()?.parse().ok()?,
                tokens: f.next()?.parse().ok()?,
            },
        })
    }

    /// Whether this is a level of the bucket of `limits`.
    pub fn of(&self, limits: &KeyLimits) -> bool {
        (self.rpm, self.tpm) == (limits.requests_per_minute, limits.tokens_per_minute)
    }

    /// Where a level at `now_ms` starts: `known` when the counts still hold
    /// every second since it and it is of the same limits; else an empty
    /// bucket at the oldest second the counts hold.
    pub fn start(known: Option<Checkpoint>, limits: &KeyLimits, now_ms: u64) -> Self {
        let now_s = now_ms / 1000;
        let oldest = now_s.saturating_sub(WINDOW_MS / 1000);
        match known {
            Some(c) if c.of(limits) && (oldest..=now_s).contains(&c.second) => c,
            _ => Checkpoint {
                second: oldest,
                rpm: limits.requests_per_minute,
                tpm: limits.tokens_per_minute,
                spent: Spent::empty(limits),
            },
        }
    }

    /// The checkpoint moved to `second` (not before its own) over the
    /// sends of `counts`.
    pub fn moved(&self, counts: &Counts, limits: &KeyLimits, second: u64) -> Checkpoint {
        if second <= self.second {
            return *self;
        }
        let sent = sends(counts, self.second, second);
        let (spent, at) = walk(self, &sent, limits, second * 1000);
        Checkpoint {
            second,
            spent: spent.refilled(limits, (second * 1000).saturating_sub(at)),
            ..*self
        }
    }

    /// The second a reservation at `now_ms` moves the checkpoint to, when
    /// it is due ([`MOVE_S`] behind).
    pub fn due(&self, now_ms: u64) -> Option<u64> {
        let to = (now_ms / 1000).saturating_sub(SETTLED_S);
        (to >= self.second + MOVE_S).then_some(to)
    }
}

/// The buckets of seconds `from..until`, oldest first.
fn sends(counts: &Counts, from: u64, until: u64) -> Vec<Bucket> {
    let mut sent: Vec<Bucket> = counts
        .buckets
        .iter()
        .filter(|b| (from..until).contains(&b.second))
        .copied()
        .collect();
    sent.sort_by_key(|b| b.second);
    sent
}

/// What is spent just after the last of `sent` counts, and when that is:
/// each second's sends at its end, or at `latest_ms` if that comes first.
fn walk(start: &Checkpoint, sent: &[Bucket], limits: &KeyLimits, latest_ms: u64) -> (Spent, u64) {
    let mut at = start.second * 1000;
    let mut spent = start.spent;
    for b in sent {
        let counted = ((b.second + 1) * 1000).min(latest_ms).max(at);
        spent = spent.refilled(limits, counted - at).plus(b, limits);
        at = counted;
    }
    (spent, at)
}

/// The bucket of `limits` (this replica's share), from `start` and the
/// sends `counts` lists (this replica's and its peers').
#[derive(Debug, Clone, Copy)]
pub struct Level<'a> {
    pub start: Checkpoint,
    pub counts: &'a Counts,
    pub limits: &'a KeyLimits,
}

impl Level<'_> {
    /// What is spent at `now_ms`.
    pub fn spent(&self, now_ms: u64) -> Spent {
        let sent = sends(self.counts, self.start.second, u64::MAX);
        let (spent, at) = walk(&self.start, &sent, self.limits, now_ms);
        spent.refilled(self.limits, now_ms.saturating_sub(at))
    }

    fn cost(&self, estimate: u64) -> u128 {
        u128::from(taken(self.limits, estimate)) * UNIT
    }

    /// How much of one request and `estimate` tokens does not fit now:
    /// what must refill first, in units of each limit. Zero when it fits.
    fn short(&self, spent: Spent, estimate: u64) -> Spent {
        let over = |limit: Option<u64>, spent: u128, cost: u128| {
            limit.map_or(0, |l| {
                (spent + cost).saturating_sub(u128::from(capacity(l)) * UNIT)
            })
        };
        Spent {
            requests: over(self.limits.requests_per_minute, spent.requests, UNIT),
            tokens: over(
                self.limits.tokens_per_minute,
                spent.tokens,
                self.cost(estimate),
            ),
        }
    }

    /// `None` when one request of `estimate` tokens fits now; else when it
    /// will (ms since the epoch), nothing more being sent.
    pub fn room_at(&self, estimate: u64, now_ms: u64) -> Option<u64> {
        if self.short(self.spent(now_ms), estimate) == Spent::default() {
            return None;
        }
        // Past the current second's end every send counts, so the level
        // only refills from the last of them on.
        let sent = sends(self.counts, self.start.second, u64::MAX);
        let (spent, at) = walk(&self.start, &sent, self.limits, u64::MAX);
        let short = self.short(spent, estimate);
        let wait = |short: u128, limit: Option<u64>| match limit {
            Some(l) if short > 0 => short.div_ceil(u128::from(l.max(1))),
            _ => 0,
        };
        let wait = wait(short.requests, self.limits.requests_per_minute)
            .max(wait(short.tokens, self.limits.tokens_per_minute));
        let wait = u64::try_from(wait).unwrap_or(u64::MAX);
        Some(at.saturating_add(wait).max(now_ms + 1))
    }

    /// How many requests of `estimate` tokens fit now, one after another.
    pub fn room(&self, estimate: u64, now_ms: u64) -> u64 {
        let spent = self.spent(now_ms);
        let fits = |limit: Option<u64>, spent: u128, cost: u128| {
            limit.map_or(u64::MAX, |l| {
                let left = (u128::from(capacity(l)) * UNIT).saturating_sub(spent);
                u64::try_from(left / cost.max(1)).unwrap_or(u64::MAX)
            })
        };
        fits(self.limits.requests_per_minute, spent.requests, UNIT).min(fits(
            self.limits.tokens_per_minute,
            spent.tokens,
            self.cost(estimate),
        ))
    }
}

#[cfg(test)]
mod tests;
