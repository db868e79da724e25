use super::*;
use crate::blocks::memory::MemoryStore;
use crate::retry_after::parse_duration_ms;

/// A second boundary, early in a UTC day.
const T0: u64 = 1_700_006_400_000;

fn limits(rpm: Option<u64>, tpm: Option<u64>, day: Option<u64>) -> KeyLimits {
    KeyLimits {
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        tokens_per_day: day,
    }
}

fn allowed(v: Verdict) -> Option<Charge> {
    match v {
        Verdict::Allowed(c, _) => Some(c),
        Verdict::Refused { .. } => None,
    }
}

#[test]
fn sixty_a_minute_lets_sixty_of_a_hundred_through_and_says_when_to_come_back() {
    let store = MemoryStore::default();
    let l = limits(Some(60), None, None);
    let mut refused = Vec::new();
    let mut served = 0;
    for i in 0..100 {
        match charge(&store, "k", &l, 10, T0 + i * 100, &Others::default()) {
            Verdict::Allowed(_, s) => {
                served += 1;
                assert_eq!(s.requests.map(|r| r.remaining), Some(60 - served));
            }
            Verdict::Refused {
                exceeded,
                retry_after_ms,
                standings,
            } => {
                assert_eq!(exceeded, Exceeded::RequestsPerMinute);
                assert_eq!(standings.requests.map(|r| r.remaining), Some(0));
                refused.push((i, retry_after_ms));
            }
        }
    }
    assert_eq!(served, 60);
    assert_eq!(refused.len(), 40);
    // The first second's ten requests leave the window 61 s after it began.
    let (i, wait) = refused[0];
    assert_eq!(T0 + i * 100 + wait, T0 + 61_000);
    assert!(allowed(charge(&store, "k", &l, 10, T0 + 60_999, &Others::default())).is_none());
    assert!(allowed(charge(&store, "k", &l, 10, T0 + 61_000, &Others::default())).is_some());
}

#[test]
fn no_sixty_seconds_hold_more_than_the_limit() {
    let store = MemoryStore::default();
    let l = limits(Some(5), None, None);
    let mut times = Vec::new();
    for i in 0..3000 {
        let now = T0 + i * 97;
        if allowed(charge(&store, "k", &l, 1, now, &Others::default())).is_some() {
            times.push(now);
        }
    }
    for (i, &t) in times.iter().enumerate() {
        let within = times[i..].iter().take_while(|&&u| u < t + 60_000).count();
        assert!(within <= 5, "{within} requests from {t}");
    }
    // And the limit is used: 5 per 61 s over 291 s.
    assert!(times.len() >= 20, "{}", times.len());
}

#[test]
fn tokens_are_charged_an_estimate_and_settled_to_the_usage() {
    let store = MemoryStore::default();
    let l = limits(None, Some(1000), None);
    let charges: Vec<Charge> = (0..3)
        .filter_map(|i| allowed(charge(&store, "k", &l, 300, T0 + i, &Others::default())))
        .collect();
    assert_eq!(charges.len(), 3);
    // 900 estimated: a fourth estimate of 300 would overshoot.
    assert!(allowed(charge(&store, "k", &l, 300, T0 + 5, &Others::default())).is_none());
    for c in &charges {
        settle(&store, "k", c, 100, T0 + 10, &Others::default());
    }
    // 300 spent: seven more estimates of 100 fit, the eighth not.
    let more = (0..8)
        .filter(|i| {
            allowed(charge(
                &store,
                "k",
                &l,
                100,
                T0 + 20 + i,
                &Others::default(),
            ))
            .is_some()
        })
        .count();
    assert_eq!(more, 7);
}

#[test]
fn an_answer_past_its_estimate_counts_what_it_took() {
    let store = MemoryStore::default();
    let l = limits(None, Some(1000), None);
    let c = allowed(charge(&store, "k", &l, 100, T0, &Others::default())).expect("allowed");
    settle(&store, "k", &c, 900, T0 + 500, &Others::default());
    let Verdict::Refused {
        exceeded,
        standings,
        ..
    } = charge(&store, "k", &l, 200, T0 + 600, &Others::default())
    else {
        panic!("900 spent, 200 more do not fit 1000");
    };
    assert_eq!(exceeded, Exceeded::TokensPerMinute);
    assert_eq!(standings.tokens.map(|t| t.remaining), Some(100));
}

#[test]
fn a_stream_longer_than_the_window_counts_its_shortfall_when_it_ends() {
    let store = MemoryStore::default();
    let l = limits(None, Some(1000), Some(10_000));
    let c = allowed(charge(&store, "k", &l, 100, T0, &Others::default())).expect("allowed");
    settle(&store, "k", &c, 700, T0 + 90_000, &Others::default());
    let (value, _) = store.get("k").expect("slot");
    let counts = Counts::decode(&value, T0 + 90_000);
    assert_eq!(counts.tokens(), 600);
    assert_eq!(counts.day_tokens, 700);
}

#[test]
fn an_estimate_past_the_whole_limit_fits_only_an_empty_window() {
    let store = MemoryStore::default();
    let l = limits(None, Some(1000), None);
    let c =
        allowed(charge(&store, "k", &l, 5000, T0, &Others::default())).expect("an empty window");
    assert_eq!(c.tokens, 1000);
    assert!(allowed(charge(&store, "k", &l, 1, T0 + 1, &Others::default())).is_none());
}

#[test]
fn the_day_cap_refuses_until_midnight_utc() {
    let store = MemoryStore::default();
    let l = limits(None, None, Some(500));
    assert!(allowed(charge(&store, "k", &l, 400, T0, &Others::default())).is_some());
    let Verdict::Refused {
        exceeded,
        retry_after_ms,
        ..
    } = charge(&store, "k", &l, 200, T0 + 120_000, &Others::default())
    else {
        panic!("600 > 500");
    };
    assert_eq!(exceeded, Exceeded::TokensPerDay);
    let midnight = (T0 / DAY_MS + 1) * DAY_MS;
    assert_eq!(T0 + 120_000 + retry_after_ms, midnight);
    assert!(allowed(charge(&store, "k", &l, 200, midnight, &Others::default())).is_some());
}

#[test]
fn refused_requests_are_not_charged() {
    let store = MemoryStore::default();
    let l = limits(Some(1), Some(100), None);
    assert!(allowed(charge(&store, "k", &l, 10, T0, &Others::default())).is_some());
    for i in 1..50 {
        assert!(allowed(charge(&store, "k", &l, 10, T0 + i, &Others::default())).is_none());
    }
    let (value, _) = store.get("k").expect("slot");
    let counts = Counts::decode(&value, T0 + 50);
    assert_eq!((counts.requests(), counts.tokens()), (1, 10));
}

#[test]
fn a_garbled_slot_counts_as_empty() {
    let store = MemoryStore::default();
    assert!(store.set("k", b"x;1:2:q,zz", 0));
    assert!(allowed(charge(
        &store,
        "k",
        &limits(Some(1), None, None),
        1,
        T0,
        &Others::default()
    ))
    .is_some());
}

#[test]
fn headers_are_openais_and_their_resets_parse_back() {
    let store = MemoryStore::default();
    let l = limits(Some(10), Some(1000), None);
    let Verdict::Allowed(_, s) = charge(&store, "k", &l, 250, T0 + 500, &Others::default()) else {
        panic!("allowed");
    };
    let h = headers(&s);
    let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
    assert_eq!(get("x-ratelimit-limit-requests"), Some("10"));
    assert_eq!(get("x-ratelimit-remaining-requests"), Some("9"));
    assert_eq!(get("x-ratelimit-limit-tokens"), Some("1000"));
    assert_eq!(get("x-ratelimit-remaining-tokens"), Some("750"));
    assert_eq!(get("x-ratelimit-reset-requests"), Some("1m0.5s"));
    for ms in [0, 20, 999, 1000, 12_500, 60_000, 359_999, 3_723_000] {
        assert_eq!(
            parse_duration_ms(&duration(ms)),
            Some(ms),
            "{}",
            duration(ms)
        );
    }
    assert_eq!(duration(360_000), "6m0s");
    assert!(headers(&Standings::default()).is_empty());
}

#[test]
fn the_estimate_is_a_quarter_of_the_body_and_the_cap() {
    assert_eq!(estimate(400, Some(50)), 150);
    assert_eq!(estimate(401, None), 101 + DEFAULT_OUTPUT_ESTIMATE);
}

#[test]
fn a_providers_quota_headers_are_named_as_each_provider_writes_them() {
    for name in [
        "x-ratelimit-remaining-tokens",
        "X-RateLimit-Limit-Requests",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-requests-reset",
        "ratelimit-remaining",
        "ratelimit-policy",
        "x-ratelimit-remaining",
    ] {
        assert!(super::provider_quota(name), "{name}");
    }
    for name in [
        "retry-after",
        "content-type",
        "x-plano-model",
        "anthropic-version",
    ] {
        assert!(!super::provider_quota(name), "{name}");
    }
}
