//! `Retry-After` (delta-seconds or HTTP-date) and `retry-after-ms`, and the
//! Go-style durations other headers and error bodies state a wait in.

use std::time::{Duration, UNIX_EPOCH};

/// How long a provider asked us to wait, in milliseconds from `now_ms`
/// (Unix epoch milliseconds). `retry_after_ms` wins when both are present:
/// it is the more precise of the two.
pub fn wait_ms(
    retry_after: Option<&str>,
    retry_after_ms: Option<&str>,
    now_ms: u64,
) -> Option<u64> {
    if let Some(ms) = retry_after_ms.and_then(parse_ms) {
        return Some(ms);
    }
    retry_after.and_then(|value| parse_retry_after(value, now_ms))
}

fn parse_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<u64>() {
        return Some(ms);
    }
    // Some providers send fractional milliseconds.
    value
        .parse::<f64>()
        .ok()
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| ms.ceil() as u64)
}

/// Parses a `Retry-After` value. A date in the past means "now" (zero).
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Past u64: as long as can be said, capped by the policy like any wait.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(secs.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64;
    Some(at_ms.saturating_sub(now_ms))
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn delta_seconds() {
        assert_eq!(parse_retry_after("2", NOW), Some(2000));
        assert_eq!(parse_retry_after(" 60 ", NOW), Some(60_000));
        assert_eq!(parse_retry_after("0", NOW), Some(0));
    }

    #[test]
    fn http_date_in_the_future_and_past() {
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", NOW),
            Some(10_000)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:30 GMT", NOW),
            Some(0)
        );
        // RFC 850 and asctime forms are legal HTTP-dates too.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", NOW),
            Some(10_000)
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:47 1994", NOW),
            Some(10_000)
        );
    }

    #[test]
    fn a_number_past_u64_is_the_longest_wait() {
        assert_eq!(
            parse_retry_after("18446744073709551616", NOW),
            Some(u64::MAX)
        );
        assert_eq!(
            parse_retry_after("99999999999", NOW),
            Some(99_999_999_999_000)
        );
    }

    #[test]
    fn garbage_is_ignored() {
        assert_eq!(parse_retry_after("soon", NOW), None);
        assert_eq!(parse_retry_after("-5", NOW), None);
        assert_eq!(parse_retry_after("", NOW), None);
        assert_eq!(parse_retry_after("1.5", NOW), None);
    }

    #[test]
    fn retry_after_ms_wins() {
        assert_eq!(wait_ms(Some("5"), Some("1500"), NOW), Some(1500));
        assert_eq!(wait_ms(Some("5"), Some("12.2"), NOW), Some(13));
        assert_eq!(wait_ms(Some("5"), Some("bad"), NOW), Some(5000));
        assert_eq!(wait_ms(None, None, NOW), None);
    }
}
