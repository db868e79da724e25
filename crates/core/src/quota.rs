//! The quota a provider reports on its answers, read from the rate-limit
//! headers of the well-known providers (their names are each provider's,
//! in `providers`):
//!
//! - OpenAI, Groq, DeepSeek, xAI, Together: `x-ratelimit-remaining-requests`,
//!   `x-ratelimit-remaining-tokens`, `x-ratelimit-reset-requests` and
//!   `x-ratelimit-reset-tokens` as durations (`6m0s`, `1s`, `20ms`, `2m59.56s`).
//! - Anthropic: `anthropic-ratelimit-requests-remaining`,
//!   `anthropic-ratelimit-tokens-remaining` and their `-reset` as RFC 3339
//!   times (`2024-06-01T12:00:30Z`).
//! - The IETF draft and others (Mistral among them): `ratelimit-remaining`
//!   and `ratelimit-reset` (seconds), `x-ratelimit-remaining` likewise.
//!
//! A value that does not parse is ignored, never an error.

use crate::plan::QuotaFloor;
use crate::providers::{anthropic, openai, DRAFT_REQUESTS, DRAFT_X_REQUESTS};
use crate::retry_after::parse_duration_ms;

/// One limit's state: what is left, and when it refills (ms from now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    pub remaining: Option<u64>,
    pub reset_ms: Option<u64>,
    /// The whole limit, when stated: what `remaining` is a share of.
    pub limit: Option<u64>,
}

impl Limit {
    /// The share of the limit left, when both are stated.
    pub fn left_share(&self) -> Option<f64> {
        match (self.remaining, self.limit) {
            (Some(r), Some(l)) if l > 0 => Some((r as f64 / l as f64).min(1.0)),
            _ => None,
        }
    }
}

/// What an answer says of its provider's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    pub requests: Limit,
    pub tokens: Limit,
}

/// The header names the parser reads, for a caller that fetches them one by one.
pub const HEADERS: [&str; 18] = [
    openai::REQUESTS.limit,
    openai::TOKENS.limit,
    anthropic::REQUESTS.limit,
    anthropic::TOKENS.limit,
    DRAFT_REQUESTS.limit,
    DRAFT_X_REQUESTS.limit,
    openai::REQUESTS.remaining,
    openai::REQUESTS.reset,
    openai::TOKENS.remaining,
    openai::TOKENS.reset,
    anthropic::REQUESTS.remaining,
    anthropic::REQUESTS.reset,
    anthropic::TOKENS.remaining,
    anthropic::TOKENS.reset,
    DRAFT_REQUESTS.remaining,
    DRAFT_REQUESTS.reset,
    DRAFT_X_REQUESTS.remaining,
    DRAFT_X_REQUESTS.reset,
];

impl Quota {
    /// Reads the quota from an answer's headers; `header` looks one up by
    /// its lower-case name. `now_ms` is Unix epoch milliseconds.
    pub fn read(header: &dyn Fn(&str) -> Option<String>, now_ms: u64) -> Quota {
        let count = |name: &str| header(name).and_then(|v| parse_count(&v));
        let duration = |name: &str| header(name).and_then(|v| parse_duration_ms(&v));
        let instant = |name: &str| header(name).and_then(|v| parse_rfc3339_ms(&v));
        let until = |name: &str| instant(name).map(|at| at.saturating_sub(now_ms));
        let seconds = |name: &str| {
            header(name)
                .and_then(|v| parse_count(&v))
                .map(|s| s.saturating_mul(1000))
        };
        let requests = Limit {
            remaining: count(openai::REQUESTS.remaining)
                .or_else(|| count(anthropic::REQUESTS.remaining))
                .or_else(|| count(DRAFT_REQUESTS.remaining))
                .or_else(|| count(DRAFT_X_REQUESTS.remaining)),
            reset_ms: duration(openai::REQUESTS.reset)
                .or_else(|| until(anthropic::REQUESTS.reset))
                .or_else(|| seconds(DRAFT_REQUESTS.reset))
                .or_else(|| seconds(DRAFT_X_REQUESTS.reset)),
            limit: count(openai::REQUESTS.limit)
                .or_else(|| count(anthropic::REQUESTS.limit))
                .or_else(|| count(DRAFT_REQUESTS.limit))
                .or_else(|| count(DRAFT_X_REQUESTS.limit)),
        };
        let tokens = Limit {
            remaining: count(openai::TOKENS.remaining)
                .or_else(|| count(anthropic::TOKENS.remaining)),
            reset_ms: duration(openai::TOKENS.reset).or_else(|| until(anthropic::TOKENS.reset)),
            limit: count(openai::TOKENS.limit).or_else(|| count(anthropic::TOKENS.limit)),
        };
        Quota { requests, tokens }
    }

    /// How long the target should be left alone: the reset of every limit
    /// at or under its floor. `None` when none is, or when its reset is
    /// unknown and the provider has no `unstated_reset_ms` (Azure states no
    /// reset; see [`crate::plan::Target::unstated_reset_ms`]).
    pub fn exhausted_for_ms(
        &self,
        floor: &QuotaFloor,
        unstated_reset_ms: Option<u64>,
    ) -> Option<u64> {
        let low = |limit: &Limit, floor: u64| {
            limit
                .remaining
                .filter(|r| *r <= floor)
                .and(limit.reset_ms.or(unstated_reset_ms))
                .filter(|ms| *ms > 0)
        };
        let requests = low(&self.requests, floor.requests);
        let tokens = floor.tokens.and_then(|f| low(&self.tokens, f));
        requests.max(tokens)
    }
}

fn parse_count(value: &str) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Past u64 is as much as can be said, not nothing.
        return Some(value.parse::<u64>().unwrap_or(u64::MAX));
    }
    value.parse::<u64>().ok().or_else(|| {
        // Some send a decimal ("0.0"); a negative or absurd value is ignored.
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e18)
            .map(|v| v as u64)
    })
}

/// An RFC 3339 time (`2024-06-01T12:00:30Z`, `...30.5+02:00`) as Unix epoch
/// milliseconds.
pub fn parse_rfc3339_ms(value: &str) -> Option<u64> {
    let v = value.trim().as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let s = std::str::from_utf8(v.get(from..from + len)?).ok()?;
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if v.get(4) != Some(&b'-')
        || v.get(7) != Some(&b'-')
        || !matches!(v.get(10), Some(b'T' | b't' | b' '))
        || v.get(13) != Some(&b':')
        || v.get(16) != Some(&b':')
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if v.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while v.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let fraction = std::str::from_utf8(v.get(start..i)?).ok()?;
        let padded: String = fraction.chars().chain("000".chars()).take(3).collect();
        millis = padded.parse().ok()?;
    }
    let offset_minutes = match v.get(i)? {
        b'Z' | b'z' if i + 1 == v.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == v.len() && v.get(i + 3) == Some(&b':') => {
            let minutes = digits(i + 1, 2)? * 60 + digits(i + 4, 2)?;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
