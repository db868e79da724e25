//! The quota a provider reports on its answers, read from the rate-limit
//! headers of the well-known providers:
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

/// One limit's state: what is left, and when it refills (ms from now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    pub remaining: Option<u64>,
    pub reset_ms: Option<u64>,
}

/// What an answer says of its provider's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    pub requests: Limit,
    pub tokens: Limit,
}

/// The header names the parser reads, for a caller that fetches them one by one.
pub const HEADERS: [&str; 12] = [
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
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
            remaining: count("x-ratelimit-remaining-requests")
                .or_else(|| count("anthropic-ratelimit-requests-remaining"))
                .or_else(|| count("ratelimit-remaining"))
                .or_else(|| count("x-ratelimit-remaining")),
            reset_ms: duration("x-ratelimit-reset-requests")
                .or_else(|| until("anthropic-ratelimit-requests-reset"))
                .or_else(|| seconds("ratelimit-reset"))
                .or_else(|| seconds("x-ratelimit-reset")),
        };
        let tokens = Limit {
            remaining: count("x-ratelimit-remaining-tokens")
                .or_else(|| count("anthropic-ratelimit-tokens-remaining")),
            reset_ms: duration("x-ratelimit-reset-tokens")
                .or_else(|| until("anthropic-ratelimit-tokens-reset")),
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

/// A Go-style duration: `6m0s`, `1h2m3.5s`, `20ms`, `0.5s`; a bare number is
/// seconds.
pub fn parse_duration_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Ok(secs) = value.parse::<f64>() {
        // Huge values saturate (`as` does) rather than vanish: the policy's cap applies.
        return (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).ceil() as u64);
    }
    let mut total = 0.0f64;
    let mut rest = value;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let number: f64 = rest.get(..number_end)?.parse().ok()?;
        rest = rest.get(number_end..)?;
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match rest.get(..unit_end)? {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        total += number * scale;
        rest = rest.get(unit_end..)?;
    }
    (total.is_finite() && total < 1e15).then(|| total.ceil() as u64)
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    const NOW: u64 = 1_717_243_200_000; // 2024-06-01T12:00:00Z

    fn quota(headers: &[(&str, &str)]) -> Quota {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Quota::read(&|name| map.get(name).cloned(), NOW)
    }

    #[test]
    fn a_reset_past_u64_is_the_longest_not_none() {
        // As `99999999999` is: the policy's cap then applies to both.
        for reset in ["99999999999", "99999999999999999999"] {
            let q = quota(&[("ratelimit-remaining", "0"), ("ratelimit-reset", reset)]);
            assert!(
                q.requests
                    .reset_ms
                    .is_some_and(|ms| ms >= 99_999_999_999_000),
                "{reset}"
            );
        }
        let q = quota(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1e30"),
        ]);
        assert_eq!(q.requests.reset_ms, Some(u64::MAX));
    }

    #[test]
    fn openai_headers_as_its_docs_show_them() {
        let q = quota(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(
            q.requests,
            Limit {
                remaining: Some(59),
                reset_ms: Some(1000)
            }
        );
        assert_eq!(
            q.tokens,
            Limit {
                remaining: Some(149_984),
                reset_ms: Some(360_000)
            }
        );
    }

    #[test]
    fn anthropic_headers_as_its_docs_show_them() {
        let q = quota(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2024-06-01T12:00:30Z"),
            ("anthropic-ratelimit-tokens-remaining", "12000"),
            (
                "anthropic-ratelimit-tokens-reset",
                "2024-06-01T12:00:02.5+00:00",
            ),
        ]);
        assert_eq!(
            q.requests,
            Limit {
                remaining: Some(0),
                reset_ms: Some(30_000)
            }
        );
        assert_eq!(q.tokens.reset_ms, Some(2_500));
    }

    #[test]
    fn groq_durations_and_the_draft_standard() {
        assert_eq!(parse_duration_ms("2m59.56s"), Some(179_560));
        assert_eq!(parse_duration_ms("7.66s"), Some(7_660));
        assert_eq!(parse_duration_ms("20ms"), Some(20));
        assert_eq!(parse_duration_ms("1h2m3s"), Some(3_723_000));
        assert_eq!(parse_duration_ms("12"), Some(12_000));
        let q = quota(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "7")]);
        assert_eq!(
            q.requests,
            Limit {
                remaining: Some(0),
                reset_ms: Some(7_000)
            }
        );
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("2024-06-01T14:00:00+02:00"), Some(NOW));
        assert_eq!(
            parse_rfc3339_ms("2024-06-01T12:00:00.123Z"),
            Some(NOW + 123)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z"),
            Some(951_782_400_000)
        );
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "", "soon", "-1", "1x", "5m-3s", "NaN", "inf", "1e400", "m", "..s",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
        for bad in [
            "2024-13-01T00:00:00Z",
            "2024-06-01",
            "2024-06-01T12:00:00",
            "2024-06-01T12:00:00+0200",
            "x",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        let q = quota(&[
            ("x-ratelimit-remaining-requests", "lots"),
            ("x-ratelimit-reset-requests", "later"),
        ]);
        assert_eq!(q, Quota::default());
    }

    #[test]
    fn only_a_limit_at_or_under_its_floor_with_a_known_reset_blocks() {
        let floor = QuotaFloor {
            requests: 0,
            tokens: None,
        };
        let low = quota(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
        ]);
        assert_eq!(low.exhausted_for_ms(&floor, None), Some(2_000));
        let fine = quota(&[
            ("x-ratelimit-remaining-requests", "1"),
            ("x-ratelimit-reset-requests", "2s"),
        ]);
        assert_eq!(fine.exhausted_for_ms(&floor, None), None);
        let unknown_reset = quota(&[("x-ratelimit-remaining-requests", "0")]);
        assert_eq!(unknown_reset.exhausted_for_ms(&floor, None), None);
        // Azure states no reset: its window is taken instead.
        assert_eq!(
            unknown_reset.exhausted_for_ms(&floor, Some(10_000)),
            Some(10_000)
        );
        let tokens = quota(&[
            ("x-ratelimit-remaining-requests", "10"),
            ("x-ratelimit-remaining-tokens", "100"),
            ("x-ratelimit-reset-tokens", "30s"),
        ]);
        assert_eq!(
            tokens.exhausted_for_ms(&floor, None),
            None,
            "tokens are ignored unless a floor is set"
        );
        let floor = QuotaFloor {
            requests: 0,
            tokens: Some(500),
        };
        assert_eq!(tokens.exhausted_for_ms(&floor, None), Some(30_000));
    }
}
