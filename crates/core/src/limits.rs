//! Client keys' limits: requests and tokens in any 60 seconds, tokens in a
//! UTC day. Each limited key has one slot in the shared store (every worker
//! spends one allowance): per-second buckets of the last minute and the
//! day's tokens. A request is charged when it starts (one request, and an
//! estimate of its tokens) and settled when its answer ends (the estimate
//! replaced by the answer's `usage`), so a burst cannot overshoot a minute's
//! tokens by more than the estimates are off.

use crate::blocks::{update, SharedStore};
use crate::buckets;
use crate::plan::KeyLimits;

pub const WINDOW_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;
/// Output tokens assumed for a request that sets no `max_tokens`.
pub const DEFAULT_OUTPUT_ESTIMATE: u64 = 1024;
/// Bytes of request body per input token: English text runs about 4
/// characters a token, and a body's JSON punctuation makes it an overestimate.
const BYTES_PER_TOKEN: u64 = 4;

/// The slot of a client key's counts.
pub fn slot(name: &str) -> String {
    format!("plano.limit.{name}")
}

/// What a request is guessed to spend before its answer says: its body's
/// bytes / 4 in, and its `max_tokens` (or [`DEFAULT_OUTPUT_ESTIMATE`]) out.
pub fn estimate(body_len: usize, max_output_tokens: Option<u64>) -> u64 {
    (body_len as u64).div_ceil(BYTES_PER_TOKEN)
        + max_output_tokens.unwrap_or(DEFAULT_OUTPUT_ESTIMATE)
}

/// One second's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    pub second: u64,
    pub requests: u64,
    pub tokens: u64,
}

/// A key's counts: the last minute's buckets and the day's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts {
    pub day: u64,
    pub day_tokens: u64,
    pub buckets: Vec<Bucket>,
}

impl Counts {
    /// `day:tokens;second:requests:tokens,...`, buckets out of the window
    /// (and a past day) dropped: the slot stays under about 1.5 KB.
    pub fn decode(value: &[u8], now_ms: u64) -> Counts {
        let text = std::str::from_utf8(value).unwrap_or_default();
        let (day, buckets) = text.split_once(';').unwrap_or(("", text));
        let today = now_ms / DAY_MS;
        let day_tokens = day
            .split_once(':')
            .filter(|(d, _)| d.parse() == Ok(today))
            .and_then(|(_, t)| t.parse().ok())
            .unwrap_or(0);
        let oldest = oldest_second(now_ms);
        let buckets = buckets::parse(buckets)
            .map(|(second, requests, tokens)| Bucket {
                second,
                requests,
                tokens,
            })
            .filter(|b| b.second >= oldest)
            .collect();
        Counts {
            day: today,
            day_tokens,
            buckets,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.encode_string().into_bytes()
    }

    fn encode_string(&self) -> String {
        let buckets = buckets::format(
            self.buckets
                .iter()
                .map(|b| (b.second, b.requests, b.tokens)),
        );
        format!("{}:{};{buckets}", self.day, self.day_tokens)
    }

    // Sums saturate: a peer's value is not trusted not to overflow.
    pub fn requests(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0, |all, b| all.saturating_add(b.requests))
    }

    pub fn tokens(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0, |all, b| all.saturating_add(b.tokens))
    }

    pub(crate) fn bucket(&mut self, second: u64) -> &mut Bucket {
        let at = match self.buckets.iter().position(|b| b.second == second) {
            Some(at) => at,
            None => {
                self.buckets.push(Bucket {
                    second,
                    ..Bucket::default()
                });
                self.buckets.len() - 1
            }
        };
        &mut self.buckets[at]
    }

    /// When the window will have room for `more` beyond `limit` of what
    /// `count` counts, as buckets leave it oldest first (ms since the epoch).
    fn room_at(&self, limit: u64, more: u64, count: fn(&Bucket) -> u64) -> u64 {
        let mut used: u64 = self
            .buckets
            .iter()
            .fold(0, |all: u64, b| all.saturating_add(count(b)));
        let mut sorted = self.buckets.clone();
        sorted.sort_by_key(|b| b.second);
        for b in &sorted {
            used = used.saturating_sub(count(b));
            if used.saturating_add(more) <= limit {
                return (b.second + 1) * 1000 + WINDOW_MS;
            }
        }
        0
    }

    /// When every bucket has left the window: OpenAI's "reset", the time
    /// until the limit is back to its initial state.
    fn empty_at(&self) -> u64 {
        self.buckets
            .iter()
            .map(|b| (b.second + 1) * 1000 + WINDOW_MS)
            .max()
            .unwrap_or(0)
    }
}

/// The first second still in the window at `now_ms`. A bucket stays 61
/// seconds (its own and the 60 after it), so no request leaves the window
/// before 60 s have passed since it: any 60 seconds hold at most the limit.
fn oldest_second(now_ms: u64) -> u64 {
    (now_ms / 1000).saturating_sub(WINDOW_MS / 1000)
}

/// A charge taken at a request's start, settled at its answer's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub second: u64,
    pub day: u64,
    pub tokens: u64,
}

/// One limit as an answer's headers state it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
}

/// A key's requests and tokens limits after a request's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standings {
    pub requests: Option<Standing>,
    pub tokens: Option<Standing>,
    pub spent: Spent,
}

/// What a key has spent: in the window, and today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spent {
    pub minute_requests: u64,
    pub minute_tokens: u64,
    pub day_tokens: u64,
}

impl Counts {
    pub fn spent(&self) -> Spent {
        Spent {
            minute_requests: self.requests(),
            minute_tokens: self.tokens(),
            day_tokens: self.day_tokens,
        }
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    RequestsPerMinute,
    TokensPerMinute,
    TokensPerDay,
}

impl Exceeded {
    pub fn describe(self) -> &'static str {
        match self {
            Exceeded::RequestsPerMinute => "requests per minute",
            Exceeded::TokensPerMinute => "tokens per minute",
            Exceeded::TokensPerDay => "tokens per day",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed(Charge, Standings),
    /// Nothing was charged; the request may fit in `retry_after_ms`.
    Refused {
        exceeded: Exceeded,
        retry_after_ms: u64,
        standings: Standings,
    },
}

/// Checks a request estimated at `estimate` tokens against `limits` and,
/// if every limit has room, charges it. An estimate past a limit whole is
/// charged as the limit: such a request fits only an empty window, rather
/// than never.
pub fn charge(
    store: &dyn SharedStore,
    slot: &str,
    limits: &KeyLimits,
    estimate: u64,
    now_ms: u64,
    others: &Others,
) -> Verdict {
    let limits = &others.split(limits);
    let mut verdict = None;
    update(store, slot, |current| {
        let mut counts = Counts::decode(current, now_ms);
        let all = counts.plus(&others.peers);
        let tokens = [limits.tokens_per_minute, limits.tokens_per_day]
            .into_iter()
            .flatten()
            .fold(estimate, u64::min);
        let refused = refusal(&all, limits, tokens, now_ms);
        if let Some((exceeded, at)) = refused {
            verdict = Some(Verdict::Refused {
                exceeded,
                retry_after_ms: at.saturating_sub(now_ms),
                standings: standings(&all, limits, now_ms),
            });
            return None;
        }
        let second = now_ms / 1000;
        let b = counts.bucket(second);
        b.requests += 1;
        b.tokens += tokens;
        counts.day_tokens += tokens;
        let charge = Charge {
            second,
            day: counts.day,
            tokens,
        };
        let all = counts.plus(&others.peers);
        verdict = Some(Verdict::Allowed(charge, standings(&all, limits, now_ms)));
        Some(counts.encode())
    });
    // A slot that lost every CAS round (64 of them) fails open: a limit
    // must never turn a gateway fault into a refusal.
    verdict.unwrap_or(Verdict::Allowed(
        Charge {
            second: now_ms / 1000,
            day: now_ms / DAY_MS,
            tokens: 0,
        },
        Standings::default(),
    ))
}

/// A key's standing at `now_ms`, nothing charged: for the headers of an
/// answer.
pub fn standing(
    store: &dyn SharedStore,
    slot: &str,
    limits: &KeyLimits,
    now_ms: u64,
    others: &Others,
) -> Standings {
    let counts = store
        .get(slot)
        .map(|(value, _)| Counts::decode(&value, now_ms))
        .unwrap_or_default();
    standings(&counts.plus(&others.peers), &others.split(limits), now_ms)
}

/// The first limit a request of `tokens` would break, and when it would
/// fit (ms since the epoch): `None` when every limit has room.
fn refusal(
    counts: &Counts,
    limits: &KeyLimits,
    tokens: u64,
    now_ms: u64,
) -> Option<(Exceeded, u64)> {
    if let Some(rpm) = limits.requests_per_minute {
        if counts.requests().saturating_add(1) > rpm {
            let at = counts.room_at(rpm, 1, |b| b.requests);
            return Some((Exceeded::RequestsPerMinute, at));
        }
    }
    if let Some(tpm) = limits.tokens_per_minute {
        if counts.tokens().saturating_add(tokens) > tpm {
            let at = counts.room_at(tpm, tokens, |b| b.tokens);
            return Some((Exceeded::TokensPerMinute, at));
        }
    }
    if let Some(cap) = limits.tokens_per_day {
        if counts.day_tokens.saturating_add(tokens) > cap {
            return Some((Exceeded::TokensPerDay, (now_ms / DAY_MS + 1) * DAY_MS));
        }
    }
    None
}

fn standings(counts: &Counts, limits: &KeyLimits, now_ms: u64) -> Standings {
    let reset_ms = counts.empty_at().saturating_sub(now_ms);
    let minute = |limit: u64, used: u64| Standing {
        limit,
        remaining: limit.saturating_sub(used),
        reset_ms,
    };
    Standings {
        requests: limits
            .requests_per_minute
            .map(|l| minute(l, counts.requests())),
        tokens: match (limits.tokens_per_minute, limits.tokens_per_day) {
            (Some(tpm), _) => Some(minute(tpm, counts.tokens())),
            (None, Some(cap)) => Some(Standing {
                limit: cap,
                remaining: cap.saturating_sub(counts.day_tokens),
                reset_ms: ((now_ms / DAY_MS + 1) * DAY_MS).saturating_sub(now_ms),
            }),
            (None, None) => None,
        },
        spent: counts.spent(),
    }
}

/// The answer said the request took `tokens`: the charge's estimate is
/// replaced by them, in its second if that is still in the window (else
/// what the estimate fell short by counts now), and in its day.
/// Returns what the key has spent since, when its slot was written.
pub fn settle(
    store: &dyn SharedStore,
    slot: &str,
    charge: &Charge,
    tokens: u64,
    now_ms: u64,
    others: &Others,
) -> Option<Spent> {
    if tokens == charge.tokens {
        return None;
    }
    let mut spent = None;
    update(store, slot, |current| {
        let mut counts = Counts::decode(current, now_ms);
        let short = tokens.saturating_sub(charge.tokens);
        if charge.second >= oldest_second(now_ms) {
            let b = counts.bucket(charge.second);
            b.tokens = (b.tokens + tokens).saturating_sub(charge.tokens);
        } else if short > 0 {
            counts.bucket(now_ms / 1000).tokens += short;
        }
        if charge.day == counts.day {
            counts.day_tokens = (counts.day_tokens + tokens).saturating_sub(charge.tokens);
        } else {
            counts.day_tokens += short;
        }
        spent = Some(counts.plus(&others.peers).spent());
        Some(counts.encode())
    });
    spent
}

mod headers;
pub mod replicas;

pub use headers::{duration, headers, provider_quota};
pub use replicas::Others;

#[cfg(test)]
mod tests;
