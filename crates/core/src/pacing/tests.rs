//! Pacing against a fake clock and an in-memory store: reservations empty
//! a deployment's bucket, a full one is skipped for one with room, and with
//! every one full the request is told when room comes; under a load above
//! the limit the bucket sends what a provider's bucket takes.

use super::*;
use crate::api::Api;
use crate::blocks::memory::MemoryStore;
use crate::config::GatewayConfig;
use crate::plan::GatewayPlan;
use crate::quota::Quota;
use crate::reach::Reach;
use crate::request::{Effects, Env, RequestState};
use crate::resolve::resolve;
use serde_json::json;

/// A second boundary.
const T0: u64 = 1_700_006_400_000;

/// gpt-4o with two deployments: `a` 3 requests a minute, `b` 1000 tokens
/// (a bucket of 967: a minute's worth less two seconds').
fn plan() -> GatewayPlan {
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000}],
        "model_providers": [
            {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "default": true,
             "retry_policy": {},
             "deployments": [{"name": "a", "rpm": 3}, {"name": "b", "tpm": 1000}]},
        ],
    }))
    .unwrap();
    resolve(&config, &|_| None).0.unwrap().plan
}

fn env<'a>(plan: &'a GatewayPlan, store: &'a MemoryStore, now_ms: u64) -> Env<'a> {
    Env {
        plan,
        store,
        now_ms,
        jitter: 0.0,
        choice: 0.0,
    }
}

fn reach(estimate: u64) -> Reach {
    Reach {
        estimate,
        ..Reach::anywhere(Api::ChatCompletions)
    }
}

fn first(plan: &GatewayPlan, store: &MemoryStore, now: u64, estimate: u64) -> usize {
    let e = env(plan, store, now);
    RequestState::begin_within(&e, 0, reach(estimate), &mut Effects::default()).1
}

#[test]
fn a_buckets_requests_are_reserved_then_refused_until_one_refills() {
    let plan = plan();
    let store = MemoryStore::default();
    let a = &plan.targets[0];
    for i in 0..3 {
        let r = reserve(&store, a, 10, T0 + i * 1000, || 0);
        assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
    }
    // Each second's request counts at its end (T0 + 1, 2, 3 s); from the
    // first on the bucket refills 3 a minute: by T0 + 3 s 0.1 came back,
    // and the 0.9 still missing takes 18 s more. A sliding minute would
    // say T0 + 61 s.
    let full = reserve(&store, a, 10, T0 + 5000, || 0);
    assert_eq!(full, Reserved::Full { at_ms: T0 + 21_000 });
    assert_eq!(room_at(&store, a, 10, T0 + 5000), Some(T0 + 21_000));
    assert_eq!(room_at(&store, a, 10, T0 + 20_999), Some(T0 + 21_000));
    assert_eq!(room_at(&store, a, 10, T0 + 21_000), None);
    let r = reserve(&store, a, 10, T0 + 21_000, || 0);
    assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
    // That one counts at T0 + 22 s, when 0.95 is missing: the next fits
    // 19 s on.
    assert_eq!(room_at(&store, a, 10, T0 + 21_500), Some(T0 + 41_000));
}

#[test]
fn an_unpaced_target_is_never_full() {
    let mut plan = plan();
    plan.targets[0].pace = None;
    let store = MemoryStore::default();
    for i in 0..100 {
        assert_eq!(
            reserve(&store, &plan.targets[0], 10, T0 + i, || 0),
            Reserved::Unpaced
        );
    }
    assert_eq!(room_at(&store, &plan.targets[0], 10, T0), None);
}

#[test]
fn tokens_are_settled_from_the_answer_making_room_for_the_next() {
    let plan = plan();
    let store = MemoryStore::default();
    let b = &plan.targets[1];
    let Reserved::Charged(charge) = reserve(&store, b, 900, T0, || 0) else {
        panic!("room");
    };
    // 900 reserved: a second estimate of 900 does not fit...
    assert!(room_at(&store, b, 900, T0 + 10).is_some());
    // ...until the answer says the first took 50.
    settle(&store, b, &charge, 50, T0 + 20);
    assert_eq!(room_at(&store, b, 900, T0 + 30), None);
}

#[test]
fn a_full_deployment_is_skipped_for_one_with_room() {
    let plan = plan();
    let store = MemoryStore::default();
    // The choice's sample 0.0 picks `a` while it has room.
    assert_eq!(first(&plan, &store, T0, 10), 0);
    for i in 0..3 {
        reserve(&store, &plan.targets[0], 10, T0 + i, || 0);
    }
    assert_eq!(first(&plan, &store, T0 + 10, 10), 1);
    // Too many tokens for `b`'s bucket with 900 of it reserved, and `a`
    // empty: the soonest room is chosen (`a`'s, a request's refill after
    // T0 + 1 s), and the state says when: `b`'s 433 missing tokens take
    // 25.98 s.
    reserve(&store, &plan.targets[1], 900, T0 + 10, || 0);
    let e = env(&plan, &store, T0 + 20);
    let (state, first) = RequestState::begin_within(&e, 0, reach(500), &mut Effects::default());
    assert_eq!(first, 0);
    assert_eq!(state.blocked_until(&e, 0), Some(T0 + 21_000));
    assert_eq!(state.blocked_until(&e, 1), Some(T0 + 26_980));
}

#[test]
fn a_request_larger_than_the_bucket_fits_an_empty_one() {
    let plan = plan();
    let store = MemoryStore::default();
    let b = &plan.targets[1];
    assert_eq!(room_at(&store, b, 5000, T0), None);
    let r = reserve(&store, b, 5000, T0, || 0);
    assert!(
        matches!(r, Reserved::Charged(c) if c.tokens == 967),
        "{r:?}"
    );
    // It emptied the bucket: one token refills 60 ms after its second's end.
    assert_eq!(room_at(&store, b, 1, T0 + 1), Some(T0 + 1_060));
}

#[test]
fn with_etcd_away_each_replica_keeps_its_share() {
    let plan = plan();
    let store = MemoryStore::default();
    // Three replicas were seen; etcd is down: `a`'s 3 a minute is 1 each.
    let seen = crate::limits::replicas::seen_value(3, false);
    assert!(store.set(crate::limits::replicas::SEEN_SLOT, &seen, 0));
    let a = &plan.targets[0];
    let r = reserve(&store, a, 10, T0, || 0);
    assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
    assert!(matches!(
        reserve(&store, a, 10, T0 + 1, || 0),
        Reserved::Full { .. }
    ));
}

#[test]
fn the_peers_published_counts_fill_the_minute_as_the_replicas_add_them_up() {
    let plan = plan();
    let store = MemoryStore::default();
    let a = &plan.targets[0];
    let slot = slot(a);
    // Two peers each sent one request this second; the holder's view of
    // their sum sits beside the slot.
    let peer = crate::limits::Counts {
        day: T0 / 86_400_000,
        day_tokens: 0,
        buckets: vec![crate::limits::Bucket {
            second: T0 / 1000,
            requests: 1,
            tokens: 10,
        }],
    }
    .encode();
    let peer = String::from_utf8(peer).unwrap();
    let sum = crate::replicas::summary::sum(&slot, &[&peer, &peer], T0);
    // As `View` writes it: `peers` newline `sum`.
    let view = format!("2\n{sum}");
    let peers = crate::replicas::counts::peers_slot(&slot);
    assert!(store.set(&peers, view.as_bytes(), 0));
    let r = reserve(&store, a, 10, T0 + 5, || 0);
    assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
    assert!(matches!(
        reserve(&store, a, 10, T0 + 6, || 0),
        Reserved::Full { .. }
    ));
}

#[test]
fn a_reported_limit_tightens_a_configured_one_and_never_raises_it() {
    let plan = plan();
    let store = MemoryStore::default();
    let a = &plan.targets[0];
    let headers = |rpm: &'static str, tpm: &'static str| {
        move |name: &str| match name {
            "x-ratelimit-limit-requests" => Some(rpm.to_string()),
            "x-ratelimit-limit-tokens" => Some(tpm.to_string()),
            _ => None,
        }
    };
    // `a` is configured at 3 a minute; its provider says 2.
    let quota = Quota::read(&headers("2", "90000"), T0);
    assert!(learn(&store, a, &quota));
    assert!(!learn(&store, a, &quota), "written again unchanged");
    let l = limits_of(&store, a).unwrap();
    assert_eq!(
        (l.requests_per_minute, l.tokens_per_minute),
        (Some(2), None)
    );
    for i in 0..2 {
        let r = reserve(&store, a, 10, T0 + i, || 0);
        assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
    }
    assert!(matches!(
        reserve(&store, a, 10, T0 + 5, || 0),
        Reserved::Full { .. }
    ));
    // It says 500 later: the configured 3 stands.
    assert!(learn(&store, a, &Quota::read(&headers("500", "90000"), T0)));
    let l = limits_of(&store, a).unwrap();
    assert_eq!(l.requests_per_minute, Some(3));
    // An unpaced target learns nothing: it stays unpaced.
    let mut unpaced = a.clone();
    unpaced.pace = None;
    assert!(!learn(&store, &unpaced, &quota));
    assert_eq!(limits_of(&store, &unpaced), None);
}

/// The bench's provider: a bucket of 600 requests and 60,000 tokens,
/// refilling continuously, full at the start; it takes a request when it
/// holds one request and the request's estimate, and spends its usage.
struct ProviderBucket {
    requests: f64,
    tokens: f64,
    at_ms: u64,
    refused: u64,
}

impl ProviderBucket {
    fn new(at_ms: u64) -> Self {
        ProviderBucket {
            requests: 600.0,
            tokens: 60_000.0,
            at_ms,
            refused: 0,
        }
    }

    fn take(&mut self, estimate: u64, usage: u64, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.requests = (self.requests + dt * 10.0).min(600.0);
        self.tokens = (self.tokens + dt * 1_000.0).min(60_000.0);
        self.at_ms = self.at_ms.max(now_ms);
        if self.requests >= 1.0 && self.tokens >= estimate as f64 {
            self.requests -= 1.0;
            self.tokens -= usage as f64;
        } else {
            self.refused += 1;
        }
    }
}

/// One deployment of 600 requests and 60,000 tokens a minute.
fn bench_plan() -> GatewayPlan {
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000}],
        "model_providers": [
            {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "default": true,
             "rpm": 600, "tpm": 60000},
        ],
    }))
    .unwrap();
    resolve(&config, &|_| None).0.unwrap().plan
}

/// Offers a request every 50 ms (twice the limit) for `seconds` to the
/// replicas' stores in turn, each request reserving 118 tokens and
/// settling at 100 at once; the replicas' counts reach each other every
/// second, as of up to 1.5 s before. Returns when each was sent (ms after
/// the start) and the provider's refusals.
fn offer_twice_the_limit(replicas: usize, seconds: u64) -> (Vec<u64>, u64) {
    let plan = bench_plan();
    let t = &plan.targets[0];
    let stores: Vec<MemoryStore> = (0..replicas).map(|_| MemoryStore::default()).collect();
    let slot = slot(t);
    let peers = crate::replicas::counts::peers_slot(&slot);
    let mut provider = ProviderBucket::new(T0);
    let mut sent = Vec::new();
    let mut published: Vec<String> = vec![String::new(); replicas];
    for i in 0..seconds * 20 {
        let now = T0 + i * 50;
        if replicas > 1 && now % 1000 == 500 {
            // What each replica publishes now reaches its peers a second on.
            for (r, store) in stores.iter().enumerate() {
                let others: Vec<&str> = (0..replicas)
                    .filter(|o| *o != r)
                    .map(|o| published[o].as_str())
                    .collect();
                let sum = crate::replicas::summary::sum(&slot, &others, now);
                let view = format!("{}\n{sum}", replicas - 1);
                let cas = store.get(&peers).map_or(0, |(_, cas)| cas);
                assert!(store.set(&peers, view.as_bytes(), cas));
            }
            published = stores
                .iter()
                .map(|s| String::from_utf8(s.get(&slot).unwrap_or_default().0).unwrap())
                .collect();
        }
        let store = &stores[i as usize % replicas];
        if let Reserved::Charged(charge) = reserve(store, t, 118, now, || 0) {
            provider.take(118, 100, now);
            settle(store, t, &charge, 100, now);
            sent.push(now - T0);
        }
    }
    (sent, provider.refused)
}

#[test]
fn at_twice_the_limit_the_bucket_sends_what_the_providers_takes_all_along() {
    let (sent, refused) = offer_twice_the_limit(1, 60);
    assert_eq!(refused, 0);
    // Its 580 and 10 a second: nothing waits until the bucket is empty,
    // near the end (a sliding minute sent 600 in the first 30 s, then
    // nothing).
    let late = sent.iter().filter(|at| **at >= 30_000).count();
    assert!(late > 280, "{late} sent in the second half");
    assert!(sent.len() >= 1_160, "{}", sent.len());
    let first_refused = (0..).find(|i| sent.get(*i) != Some(&(*i as u64 * 50)));
    assert!(first_refused.unwrap() >= 1_120, "{first_refused:?}");
}

#[test]
fn over_minutes_the_checkpoint_carries_the_bucket_past_its_counts() {
    // Five minutes at twice the limit: the counts hold one minute, the
    // checkpoint what came before; the provider still refuses nothing,
    // and each minute after the first sends its 600 and no more.
    let (sent, refused) = offer_twice_the_limit(1, 300);
    assert_eq!(refused, 0);
    for minute in 1..5 {
        let n = sent
            .iter()
            .filter(|at| (minute * 60_000..(minute + 1) * 60_000).contains(*at))
            .count();
        assert!((590..=601).contains(&n), "minute {minute}: {n}");
    }
}

#[test]
fn replicas_whose_counts_arrive_late_stay_within_the_providers_bucket() {
    // Three replicas, each seeing the others' counts up to 1.5 s late: the
    // bucket's two seconds' margin keeps what they send within the
    // provider's bucket (with a whole minute's capacity the provider
    // refused 12 of 1,792).
    let (sent, refused) = offer_twice_the_limit(3, 120);
    assert_eq!(refused, 0, "{refused} of {} refused", sent.len());
    assert!(sent.len() >= 1_700, "{}", sent.len());
}

#[test]
fn a_request_takes_room_only_beyond_what_the_waiters_before_it_take() {
    let plan = plan();
    let store = MemoryStore::default();
    let a = &plan.targets[0];
    // `a` holds 3: with 3 waiters before it a request is behind, with 2
    // it takes the third.
    assert_eq!(reserve(&store, a, 10, T0, || 3), Reserved::Behind);
    assert!(matches!(
        reserve(&store, a, 10, T0, || 2),
        Reserved::Charged(_)
    ));
    for _ in 0..2 {
        reserve(&store, a, 10, T0, || 0);
    }
    // With no room the queue is not read.
    let full = reserve(&store, a, 10, T0 + 1, || panic!("the queue was read"));
    assert!(matches!(full, Reserved::Full { .. }), "{full:?}");
}
