use super::*;
use crate::api::Api;
use crate::blocks::memory::MemoryStore;
use crate::config::GatewayConfig;
use crate::reach::Reach;
use crate::request::{Effects, Env, RequestState};
use crate::resolve::resolve;
use serde_json::json;
use std::collections::HashMap;

const T0: u64 = 1_700_000_000_000;

/// Keys of priorities 0, 5 and 10; gpt-4o falls back to claude.
fn plan() -> GatewayPlan {
    let key = |name: &str, priority: u32| json!({"name": name, "key": format!("{name}-key-0123456789abcdef"), "priority": priority});
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000,
                       "client_keys": [key("batch", 0), key("tools", 5), key("app", 10)]}],
        "model_providers": [
            {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "default": true,
             "retry_policy": {"fallback_models": ["anthropic/claude"]}},
            {"model": "anthropic/claude", "base_url": "http://127.0.0.1:9"},
        ],
    }))
    .unwrap();
    resolve(&config, &|_| None).0.unwrap().plan
}

fn quota(headers: &[(&str, &str)]) -> Quota {
    let map: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Quota::read(&|name| map.get(name).cloned(), T0)
}

fn kept_from(plan: &GatewayPlan, store: &MemoryStore, key: usize, now: u64) -> Vec<usize> {
    reserved(plan, store, Some(key), now)
        .iter()
        .map(|r| r.target)
        .collect()
}

#[test]
fn lower_priorities_lose_a_low_model_first() {
    let plan = plan();
    assert!(ranked(&plan));
    let store = MemoryStore::default();
    let openai = |remaining: &str| {
        quota(&[
            ("x-ratelimit-limit-requests", "100"),
            ("x-ratelimit-remaining-requests", remaining),
            ("x-ratelimit-reset-requests", "30s"),
        ])
    };
    note_left(&store, &plan.targets[0], &openai("15"), T0);
    // 15% left: under 2 x 10% for the key two priorities down only.
    assert_eq!(kept_from(&plan, &store, 0, T0 + 1), [0]);
    assert!(kept_from(&plan, &store, 1, T0 + 1).is_empty());
    note_left(&store, &plan.targets[0], &openai("5"), T0);
    assert_eq!(kept_from(&plan, &store, 0, T0 + 1), [0]);
    assert_eq!(kept_from(&plan, &store, 1, T0 + 1), [0]);
    // The highest priority keeps the model to its last request.
    assert!(kept_from(&plan, &store, 2, T0 + 1).is_empty());
    // The reading ends at the reset it stated.
    assert!(kept_from(&plan, &store, 0, T0 + 30_000).is_empty());
}

#[test]
fn the_lowest_share_of_requests_and_tokens_counts_and_a_bare_remaining_says_nothing() {
    let plan = plan();
    let store = MemoryStore::default();
    note_left(
        &store,
        &plan.targets[0],
        &quota(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "40"),
            ("anthropic-ratelimit-tokens-limit", "100000"),
            ("anthropic-ratelimit-tokens-remaining", "2000"),
        ]),
        T0,
    );
    let (share, until) = left(&store, &plan.targets[0], T0).expect("a reading");
    assert_eq!(share, 0.02);
    assert_eq!(until, T0 + UNSTATED_RESET_MS);
    note_left(
        &store,
        &plan.targets[1],
        &quota(&[("x-ratelimit-remaining-requests", "1")]),
        T0,
    );
    assert_eq!(left(&store, &plan.targets[1], T0), None);
}

#[test]
fn a_reserved_model_sends_the_request_to_its_fallback() {
    let plan = plan();
    let store = MemoryStore::default();
    let reach = Reach {
        estimate: 0,
        reserved: vec![0],
        ..Reach::anywhere(Api::ChatCompletions)
    };
    assert!(reach.any_allowed(&plan, 0));
    let env = Env {
        plan: &plan,
        store: &store,
        now_ms: T0,
        jitter: 0.0,
        choice: 0.0,
    };
    let (_, first) = RequestState::begin_within(&env, 0, reach, &mut Effects::default());
    assert_eq!(first, 1);
    // With claude kept too, nothing can serve it: the gateway's 429.
    let all = Reach {
        estimate: 0,
        reserved: vec![0, 1],
        ..Reach::anywhere(Api::ChatCompletions)
    };
    assert!(!all.any_allowed(&plan, 0));
}

#[test]
fn one_priority_for_all_ranks_nothing() {
    let mut plan = plan();
    for k in &mut plan.client_keys {
        k.priority = 3;
    }
    assert!(!ranked(&plan));
    let store = MemoryStore::default();
    assert!(store.set(
        &slot(&plan.targets[0]),
        format!("0.0,{}", T0 + 9).as_bytes(),
        0
    ));
    assert!(kept_from(&plan, &store, 0, T0).is_empty());
}
