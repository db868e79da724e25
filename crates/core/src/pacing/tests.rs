//! Pacing against a fake clock and an in-memory store: reservations fill a
//! deployment's minute, a full one is skipped for one with room, and with
//! every one full the request is told when room comes.

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

/// gpt-4o with two deployments: `a` 3 requests a minute, `b` 1000 tokens.
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
fn a_minutes_requests_are_reserved_then_refused_until_the_first_leaves() {
    let plan = plan();
    let store = MemoryStore::default();
    let a = &plan.targets[0];
    for i in 0..3 {
        let r = reserve(&store, a, 10, T0 + i * 1000);
        assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
    }
    // The first request's second leaves the window 61 s after it began.
    let full = reserve(&store, a, 10, T0 + 5000);
    assert_eq!(full, Reserved::Full { at_ms: T0 + 61_000 });
    assert_eq!(room_at(&store, a, 10, T0 + 5000), Some(T0 + 61_000));
    assert_eq!(room_at(&store, a, 10, T0 + 61_000), None);
    let r = reserve(&store, a, 10, T0 + 61_000);
    assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
}

#[test]
fn an_unpaced_target_is_never_full() {
    let mut plan = plan();
    plan.targets[0].pace = None;
    let store = MemoryStore::default();
    for i in 0..100 {
        assert_eq!(
            reserve(&store, &plan.targets[0], 10, T0 + i),
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
    let Reserved::Charged(charge) = reserve(&store, b, 900, T0) else {
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
        reserve(&store, &plan.targets[0], 10, T0 + i);
    }
    assert_eq!(first(&plan, &store, T0 + 10, 10), 1);
    // Too many tokens for `b`'s minute with 900 of it reserved, and `a`
    // full: the soonest room is chosen (`a`'s, at T0 + 61 s), and the
    // state says when.
    reserve(&store, &plan.targets[1], 900, T0 + 10);
    let e = env(&plan, &store, T0 + 20);
    let (state, first) = RequestState::begin_within(&e, 0, reach(500), &mut Effects::default());
    assert_eq!(first, 0);
    assert_eq!(state.blocked_until(&e, 0), Some(T0 + 61_000));
    assert_eq!(state.blocked_until(&e, 1), Some(T0 + 61_000));
}

#[test]
fn a_request_larger_than_the_minute_fits_an_empty_one() {
    let plan = plan();
    let store = MemoryStore::default();
    let b = &plan.targets[1];
    assert_eq!(room_at(&store, b, 5000, T0), None);
    let r = reserve(&store, b, 5000, T0);
    assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
    assert_eq!(room_at(&store, b, 1, T0 + 1), Some(T0 + 61_000));
}

#[test]
fn with_etcd_away_each_replica_keeps_its_share() {
    let plan = plan();
    let store = MemoryStore::default();
    // Three replicas were seen; etcd is down: `a`'s 3 a minute is 1 each.
    let seen = crate::limits::replicas::seen_value(3, false);
    assert!(store.set(crate::limits::replicas::SEEN_SLOT, &seen, 0));
    let a = &plan.targets[0];
    let r = reserve(&store, a, 10, T0);
    assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
    assert!(matches!(
        reserve(&store, a, 10, T0 + 1),
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
    let r = reserve(&store, a, 10, T0 + 5);
    assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
    assert!(matches!(
        reserve(&store, a, 10, T0 + 6),
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
        let r = reserve(&store, a, 10, T0 + i);
        assert!(matches!(r, Reserved::Charged(_)), "{r:?}");
    }
    assert!(matches!(
        reserve(&store, a, 10, T0 + 5),
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
