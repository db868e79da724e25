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
            reset_ms: Some(1000),
            limit: Some(60),
        }
    );
    assert_eq!(
        q.tokens,
        Limit {
            remaining: Some(149_984),
            reset_ms: Some(360_000),
            limit: None,
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
            reset_ms: Some(30_000),
            limit: Some(50),
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
            reset_ms: Some(7_000),
            limit: None,
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
