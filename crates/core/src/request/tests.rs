//! The decisions of `request`, each against a fake clock and an in-memory store.

use super::*;
use crate::blocks::memory::MemoryStore;
use crate::config::GatewayConfig;
use crate::providers::{ErrorKind, Failure};
use crate::quota::Quota;
use crate::resolve::resolve;
use serde_json::{json, Value};

const T0: u64 = 1_700_000_000_000;

/// openai/gpt-4o (primary, with `policy`), anthropic/claude, mistral/large.
fn plan(policy: Value) -> GatewayPlan {
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000}],
        "model_providers": [
            {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "default": true,
             "timeout_ms": 5000, "retry_policy": policy},
            {"model": "anthropic/claude", "base_url": "http://127.0.0.1:9"},
            {"model": "mistral/large", "base_url": "http://127.0.0.1:9"},
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

fn begun(plan: &GatewayPlan, store: &MemoryStore) -> RequestState {
    let (mut state, first) = RequestState::begin(&env(plan, store, T0), 0);
    state.start(first, T0);
    state
}

#[test]
fn a_429_with_retry_after_blocks_globally_and_moves_on() {
    let plan = plan(json!({"default_strategy": "different_provider"}));
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store);
    let mut effects = Effects::default();
    let e = env(&plan, &store, T0 + 5);
    let step = state.after_outcome(&e, Outcome::Status(429), Some(30_000), &mut effects);
    assert!(
        matches!(
            step,
            Step::Retry {
                target: 1,
                wait_ms: 0,
                ..
            }
        ),
        "{step:?}"
    );
    let (key, until) = effects.retry_after_block.unwrap();
    assert_eq!(
        (key.describe(), until),
        ("model openai/gpt-4o".into(), T0 + 30_005)
    );
    // The next request starts elsewhere, and the primary again once it ends.
    let (_, first) = RequestState::begin(&env(&plan, &store, T0 + 29_000), 0);
    assert_eq!(first, 1);
    let (_, first) = RequestState::begin(&env(&plan, &store, T0 + 30_006), 0);
    assert_eq!(first, 0);
}

#[test]
fn a_final_status_is_delivered_and_budgets_end_in_the_exhausted_error() {
    let plan = plan(json!({"default_strategy": "different_provider", "default_max_attempts": 1}));
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store);
    let mut effects = Effects::default();
    let e = env(&plan, &store, T0 + 5);
    assert_eq!(
        state
            .clone()
            .after_outcome(&e, Outcome::Status(400), None, &mut effects),
        Step::Deliver
    );
    let Step::Retry { target, .. } =
        state.after_outcome(&e, Outcome::Status(503), None, &mut effects)
    else {
        panic!("expected a retry");
    };
    state.start(target, T0 + 5);
    let e = env(&plan, &store, T0 + 9);
    let Step::Exhausted(x) = state.after_outcome(&e, Outcome::Timeout, None, &mut effects) else {
        panic!("expected exhaustion");
    };
    assert_eq!(x.status, 504);
    let body: Value = serde_json::from_str(&x.body).unwrap();
    assert_eq!(body["error"]["total_attempts"], 2);
    assert_eq!(body["error"]["retry_budget_exhausted"], true);
    assert_eq!(x.retry_after_secs, None);
}

#[test]
fn a_slow_first_byte_is_abandoned_only_while_the_rule_gives_a_retry() {
    let plan = plan(json!({
        "on_high_latency": {"threshold_ms": 1000, "measure": "ttfb", "strategy": "different_provider",
                            "max_attempts": 1, "block_duration_seconds": 60}
    }));
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store);
    assert!(state.may_abandon_slow(&env(&plan, &store, T0)));
    let mut effects = Effects::default();
    let step = state.after_slow_first_byte(&env(&plan, &store, T0 + 1000), &mut effects);
    assert!(
        matches!(step, Some(Step::Retry { target: 1, .. })),
        "{step:?}"
    );
    // min_triggers 1: the event blocks the primary for 60 s.
    assert_eq!(effects.latency_block.map(|b| b.1), Some(T0 + 61_000));
    state.start(1, T0 + 1000);
    // The rule's one retry is spent: the next slow attempt keeps waiting.
    assert!(!state.may_abandon_slow(&env(&plan, &store, T0 + 1000)));
    let mut effects = Effects::default();
    assert_eq!(
        state.after_slow_first_byte(&env(&plan, &store, T0 + 2000), &mut effects),
        None
    );
    assert!(effects.latency_event);
    assert_eq!(state.ledger.attempts.len(), 2);
}

#[test]
fn late_headers_of_an_attempt_not_abandoned_are_a_latency_event() {
    let plan = plan(json!({
        "on_high_latency": {"threshold_ms": 1000, "measure": "ttfb", "max_attempts": 0}
    }));
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store);
    let mut effects = Effects::default();
    state.after_first_byte(&env(&plan, &store, T0 + 900), &mut effects);
    assert!(!effects.latency_event);
    state.after_first_byte(&env(&plan, &store, T0 + 1500), &mut effects);
    assert!(effects.latency_event);
}

#[test]
fn a_same_model_retry_waits_out_a_request_scoped_retry_after() {
    let plan = plan(json!({
        "default_strategy": "same_model",
        "retry_after_handling": {"scope": "model", "apply_to": "request"}
    }));
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store);
    let mut effects = Effects::default();
    let step = state.after_outcome(
        &env(&plan, &store, T0 + 10),
        Outcome::Status(429),
        Some(2000),
        &mut effects,
    );
    assert!(
        matches!(
            step,
            Step::Retry {
                target: 0,
                wait_ms: 2000,
                ..
            }
        ),
        "{step:?}"
    );
    assert_eq!(effects.retry_after_block, None);
    assert!(RequestState::begin(&env(&plan, &store, T0 + 20), 0).1 == 0);
}

#[test]
fn one_request_probes_an_ended_block_and_its_answer_clears_or_renews_it() {
    let plan = plan(json!({"default_strategy": "different_provider"}));
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store);
    let mut effects = Effects::default();
    let e = env(&plan, &store, T0);
    state.after_outcome(&e, Outcome::Status(429), Some(2000), &mut effects);
    // Blocked: everyone goes to the fallback.
    assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 1999), 0).1, 1);
    // Ended: the first request probes, the others keep to the fallback.
    let mut probe_effects = Effects::default();
    let (mut probe, first) = begin_noting(&env(&plan, &store, T0 + 2001), 0, &mut probe_effects);
    assert_eq!((first, probe_effects.probe), (0, true));
    for n in 0..5 {
        let mut other = Effects::default();
        let (_, first) = begin_noting(&env(&plan, &store, T0 + 2002 + n), 0, &mut other);
        assert_eq!((first, other.probe), (1, false));
    }
    // The probe is limited again: the block is renewed, still no one else.
    probe.start(0, T0 + 2001);
    let e = env(&plan, &store, T0 + 2010);
    probe.after_outcome(
        &e,
        Outcome::Status(429),
        Some(2000),
        &mut Effects::default(),
    );
    assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 3000), 0).1, 1);
    // After the renewed block a probe answers 200: the block is cleared.
    let (mut probe, first) = RequestState::begin(&env(&plan, &store, T0 + 4011), 0);
    assert_eq!(first, 0);
    probe.start(0, T0 + 4011);
    let step = probe.after_outcome(
        &env(&plan, &store, T0 + 4020),
        Outcome::Status(200),
        None,
        &mut Effects::default(),
    );
    assert_eq!(step, Step::Deliver);
    for n in 0..3 {
        let mut other = Effects::default();
        let (_, first) = begin_noting(&env(&plan, &store, T0 + 4021 + n), 0, &mut other);
        assert_eq!((first, other.probe), (0, false));
    }
}

#[test]
fn a_probe_that_never_answers_frees_its_lease_after_timeout_ms() {
    let plan = plan(json!({"default_strategy": "different_provider"}));
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store);
    state.after_outcome(
        &env(&plan, &store, T0),
        Outcome::Status(429),
        Some(1000),
        &mut Effects::default(),
    );
    assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 1001), 0).1, 0);
    // timeout_ms is 5000: the lease holds that long, then another may probe.
    assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 6000), 0).1, 1);
    assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 6002), 0).1, 0);
}

#[test]
fn a_low_quota_on_a_success_blocks_before_any_429() {
    let plan = plan(json!({"rate_limit_headers": {"min_remaining_requests": 0}}));
    let store = MemoryStore::default();
    let state = begun(&plan, &store);
    let quota = |remaining: &str| {
        let remaining = remaining.to_string();
        Quota::read(
            &move |name| match name {
                "x-ratelimit-remaining-requests" => Some(remaining.clone()),
                "x-ratelimit-reset-requests" => Some("2s".into()),
                _ => None,
            },
            T0,
        )
    };
    let mut effects = Effects::default();
    state.note_quota(&env(&plan, &store, T0 + 10), &quota("3"), &mut effects);
    assert_eq!(effects.preemptive_block, None);
    state.note_quota(&env(&plan, &store, T0 + 10), &quota("0"), &mut effects);
    assert_eq!(effects.preemptive_block.map(|b| b.1), Some(T0 + 2010));
    assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 2000), 0).1, 1);
    assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 2011), 0).1, 0);
}

#[test]
fn retries_over_the_budget_end_at_once_with_a_reason() {
    let plan = plan(json!({"default_strategy": "different_provider",
                           "retry_budget": {"ratio": 0.2, "min_retries_per_second": 0}}));
    let store = MemoryStore::default();
    let mut outcomes = Vec::new();
    for n in 0..50 {
        let e = env(&plan, &store, T0 + n);
        let (mut state, first) = RequestState::begin(&e, 0);
        state.start(first, T0 + n);
        let mut effects = Effects::default();
        let step = state.after_outcome(&e, Outcome::Status(503), None, &mut effects);
        outcomes.push((step, effects.over_retry_budget));
    }
    let retried = outcomes
        .iter()
        .filter(|(s, _)| matches!(s, Step::Retry { .. }))
        .count();
    assert_eq!(retried, 10, "20% of 50");
    let refused: Vec<_> = outcomes.iter().filter(|(_, over)| *over).collect();
    assert_eq!(refused.len(), 40);
    let Step::Exhausted(x) = &refused[0].0 else {
        panic!("expected exhaustion")
    };
    assert_eq!(x.status, 503);
    assert!(
        x.body.contains("retry budget of openai/gpt-4o is spent"),
        "{}",
        x.body
    );
}

/// openai/gpt-4o as a pool of a (1), b (1), c (2), with `policy`; then
/// anthropic/claude as its fallback.
fn pool(policy: Value) -> GatewayPlan {
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000}],
        "model_providers": [
            {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "default": true,
             "retry_policy": policy,
             "deployments": [{"name": "a", "access_key": "ka"}, {"name": "b", "access_key": "kb"},
                             {"name": "c", "access_key": "kc", "weight": 2}]},
            {"model": "anthropic/claude", "base_url": "http://127.0.0.1:9"},
        ],
    }))
    .unwrap();
    resolve(&config, &|_| None).0.unwrap().plan
}

fn env_sampled<'a>(
    plan: &'a GatewayPlan,
    store: &'a MemoryStore,
    now_ms: u64,
    jitter: f64,
) -> Env<'a> {
    Env {
        plan,
        store,
        now_ms,
        jitter,
        choice: jitter,
    }
}

#[test]
fn weighted_choice_converges_to_the_weights() {
    let plan = pool(json!({}));
    assert_eq!(plan.targets.len(), 4);
    let store = MemoryStore::default();
    let mut counts = [0usize; 3];
    for i in 0..4000 {
        let sample = (i as f64 + 0.5) / 4000.0;
        let (_, first) = RequestState::begin(&env_sampled(&plan, &store, T0, sample), 0);
        counts[first] += 1;
    }
    assert_eq!(counts, [1000, 1000, 2000]);
}

#[test]
fn a_blocked_deployment_is_never_chosen_while_another_is_free_and_its_block_expires() {
    let plan = pool(json!({"default_strategy": "different_provider"}));
    let store = MemoryStore::default();
    let (mut state, first) = RequestState::begin(&env_sampled(&plan, &store, T0, 0.9), 0);
    assert_eq!(first, 2);
    state.start(2, T0);
    let mut effects = Effects::default();
    // c answers 429 with Retry-After 30: the retry goes to a or b at once,
    // without charging the rule, and only c is blocked.
    let step = state.after_outcome(
        &env(&plan, &store, T0 + 5),
        Outcome::Status(429),
        Some(30_000),
        &mut effects,
    );
    assert!(
        matches!(
            step,
            Step::Retry {
                target: 0 | 1,
                wait_ms: 0
            }
        ),
        "{step:?}"
    );
    assert_eq!(
        effects.retry_after_block.unwrap().0.describe(),
        "deployment openai/gpt-4o[c]"
    );
    for i in 0..200 {
        let sample = i as f64 / 200.0;
        let (_, first) = RequestState::begin(&env_sampled(&plan, &store, T0 + 10, sample), 0);
        assert!(
            first == 0 || first == 1,
            "chose blocked c at sample {sample}"
        );
    }
    // After its 30 s, c is chosen again (its probe first).
    let (_, first) = RequestState::begin(&env_sampled(&plan, &store, T0 + 30_006, 0.9), 0);
    assert_eq!(first, 2);
}

#[test]
fn every_deployment_limited_then_the_fallback_model_takes_over() {
    let plan = pool(json!({"default_strategy": "different_provider", "default_max_attempts": 1}));
    let store = MemoryStore::default();
    let (mut state, first) = RequestState::begin(&env_sampled(&plan, &store, T0, 0.0), 0);
    state.start(first, T0);
    let mut tried = vec![first];
    loop {
        let mut effects = Effects::default();
        let e = env_sampled(&plan, &store, T0 + 1, 0.3);
        match state.after_outcome(&e, Outcome::Status(429), None, &mut effects) {
            Step::Retry { target, wait_ms } => {
                assert_eq!(wait_ms, 0);
                tried.push(target);
                state.start(target, T0 + 1);
                if target == 3 {
                    break;
                }
            }
            other => panic!("{other:?} after {tried:?}"),
        }
    }
    // All three deployments, then the fallback: the one retry the rule
    // allows went to it, the rotations cost nothing.
    let mut pool_tried = tried[..3].to_vec();
    pool_tried.sort();
    assert_eq!((pool_tried, tried[3]), (vec![0, 1, 2], 3));
}

fn begin_noting(env: &Env, primary: usize, effects: &mut Effects) -> (RequestState, usize) {
    RequestState::begin_within(env, primary, Reach::anywhere(Api::ChatCompletions), effects)
}

#[test]
fn embeddings_rotate_within_the_pool_and_stop_where_a_rule_would_change_model() {
    let plan = pool(json!({"default_strategy": "different_provider", "default_max_attempts": 2}));
    let store = MemoryStore::default();
    let reach = Reach {
        estimate: 0,
        api: Api::Embeddings,
        own_model: true,
        only: None,
        untranslatable: Vec::new(),
        reserved: Vec::new(),
        no_token: Vec::new(),
    };
    let mut effects = Effects::default();
    let (mut state, first) =
        RequestState::begin_within(&env(&plan, &store, T0), 0, reach, &mut effects);
    state.start(first, T0);
    let mut tried = vec![first];
    loop {
        match state.after_outcome(
            &env(&plan, &store, T0 + 1),
            Outcome::Status(429),
            None,
            &mut effects,
        ) {
            Step::Retry { target, .. } => {
                tried.push(target);
                state.start(target, T0 + 1);
            }
            Step::Exhausted(x) => {
                let body: Value = serde_json::from_str(&x.body).unwrap();
                let attempts = body["error"]["attempts"].as_array().unwrap();
                let skipped = attempts.last().unwrap();
                assert_eq!(skipped["model"], "anthropic/claude");
                assert!(skipped["skipped"]
                    .as_str()
                    .unwrap()
                    .contains("embeddings never move"));
                break;
            }
            Step::Deliver | Step::AwaitHedge => panic!("delivered a 429"),
        }
    }
    tried.sort();
    assert_eq!(tried, vec![0, 1, 2], "every deployment, no other model");
}

#[test]
fn a_chained_request_goes_only_to_the_deployment_that_holds_its_state() {
    let plan = pool(json!({"default_strategy": "different_provider", "default_max_attempts": 2}));
    let store = MemoryStore::default();
    let reach = Reach {
        estimate: 0,
        api: Api::Responses,
        own_model: false,
        only: Some(1),
        untranslatable: Vec::new(),
        reserved: Vec::new(),
        no_token: Vec::new(),
    };
    let mut effects = Effects::default();
    for sample in [0.0, 0.5, 0.99] {
        let e = Env {
            choice: sample,
            ..env(&plan, &store, T0)
        };
        let (_, first) = RequestState::begin_within(&e, 0, reach.clone(), &mut effects);
        assert_eq!(first, 1);
    }
    let (mut state, first) =
        RequestState::begin_within(&env(&plan, &store, T0), 0, reach, &mut effects);
    state.start(first, T0);
    let Step::Exhausted(x) = state.after_outcome(
        &env(&plan, &store, T0 + 1),
        Outcome::Status(503),
        None,
        &mut effects,
    ) else {
        panic!("a chained request moved");
    };
    assert!(x.body.contains("does not hold the state"), "{}", x.body);
}

#[test]
fn a_model_that_does_not_serve_the_endpoint_is_skipped() {
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000}],
        "model_providers": [
            {"model": "anthropic/claude", "default": true, "retry_policy": {"default_strategy": "different_provider"}},
            {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "endpoints": ["responses"]},
        ],
    }))
    .unwrap();
    let plan = resolve(&config, &|_| None).0.unwrap().plan;
    let reach = Reach::anywhere(Api::Responses);
    assert!(reach.any_allowed(&plan, 0));
    let (_, first) = RequestState::begin_within(
        &env(&plan, &MemoryStore::default(), T0),
        0,
        reach,
        &mut Effects::default(),
    );
    assert_eq!(first, 1);
    let embeddings = Reach::anywhere(Api::Embeddings);
    assert!(!embeddings.any_allowed(&plan, 0));
    assert!(embeddings
        .refusal(&plan, 0)
        .contains("anthropic/claude does not serve /v1/embeddings"));
}

#[test]
fn a_target_that_cannot_carry_the_request_is_skipped_with_why() {
    let mut plan =
        plan(json!({"default_strategy": "different_provider", "default_max_attempts": 2}));
    plan.targets[1].format = crate::api::Format::Anthropic;
    let store = MemoryStore::default();
    let reach = Reach {
        estimate: 0,
        untranslatable: vec![(crate::api::Format::Anthropic, "`logprobs` has none".into())],
        ..Reach::anywhere(Api::ChatCompletions)
    };
    let mut effects = Effects::default();
    let (mut state, first) =
        RequestState::begin_within(&env(&plan, &store, T0), 0, reach, &mut effects);
    state.start(first, T0);
    let e = env(&plan, &store, T0 + 1);
    let step = state.after_outcome(&e, Outcome::Status(503), None, &mut effects);
    assert!(matches!(step, Step::Retry { target: 2, .. }), "{step:?}");
    state.start(2, T0 + 1);
    let step = state.after_outcome(&e, Outcome::Status(503), None, &mut effects);
    let Step::Exhausted(x) = step else {
        panic!("{step:?}")
    };
    let body: Value = serde_json::from_str(&x.body).unwrap();
    let skipped = &body["error"]["attempts"][2];
    assert_eq!(skipped["model"], "anthropic/claude");
    assert_eq!(
        skipped["skipped"],
        "cannot be translated: `logprobs` has none"
    );
}

fn kind(kind: ErrorKind, wait_ms: Option<u64>) -> Failure {
    Failure {
        kind: Some(kind),
        wait_ms,
    }
}

#[test]
fn a_spent_quota_blocks_its_key_for_an_hour_and_another_key_serves_at_once() {
    // A rule that would wait on the same model: a spent key is never waited on.
    let plan = pool(json!({"default_strategy": "same_model"}));
    let store = MemoryStore::default();
    let (mut state, first) = RequestState::begin(&env_sampled(&plan, &store, T0, 0.9), 0);
    assert_eq!(first, 2);
    state.start(2, T0);
    let mut effects = Effects::default();
    let e = env_sampled(&plan, &store, T0 + 5, 0.0);
    let step = state.after_failure(
        &e,
        Outcome::Status(429),
        kind(ErrorKind::QuotaSpent, None),
        &mut effects,
    );
    assert_eq!(
        step,
        Step::Retry {
            target: 0,
            wait_ms: 0
        }
    );
    let (key, until) = effects.quota_spent_block.clone().unwrap();
    assert_eq!(
        (key.describe(), until),
        ("deployment openai/gpt-4o[c]".into(), T0 + 5 + 3_600_000)
    );
    assert_eq!(blocks::spent_until(&store, &key, T0 + 10), Some(until));
    assert!(effects.retry_after_block.is_none());
    // No later request goes to c while its quota is spent.
    for i in 0..100 {
        let sample = i as f64 / 100.0;
        let (_, first) =
            RequestState::begin(&env_sampled(&plan, &store, T0 + 3_000_000, sample), 0);
        assert_ne!(first, 2, "chose the spent key at sample {sample}");
    }
}

#[test]
fn a_spent_quota_with_a_stated_reset_blocks_until_it_and_same_model_moves_on() {
    let plan = plan(json!({"default_strategy": "same_model", "quota_spent_block_seconds": 60}));
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store);
    let mut effects = Effects::default();
    let e = env(&plan, &store, T0);
    let step = state.after_failure(
        &e,
        Outcome::Status(429),
        kind(ErrorKind::QuotaSpent, Some(9_000)),
        &mut effects,
    );
    assert_eq!(
        step,
        Step::Retry {
            target: 1,
            wait_ms: 0
        }
    );
    assert_eq!(effects.quota_spent_block.unwrap().1, T0 + 9_000);
    // Without a stated reset, the policy's time.
    let mut state = begun(&plan, &store);
    let mut effects = Effects::default();
    state.after_failure(
        &e,
        Outcome::Status(429),
        kind(ErrorKind::QuotaSpent, None),
        &mut effects,
    );
    assert_eq!(effects.quota_spent_block.unwrap().1, T0 + 60_000);
}

#[test]
fn a_prompt_too_long_goes_to_the_larger_window_in_one_hop_or_back_to_the_client() {
    let with = plan(json!({"default_strategy": "same_model",
        "on_status_codes": [{"codes": [400], "strategy": "same_model", "max_attempts": 3}],
        "context_window_fallbacks": ["mistral/large"]}));
    let store = MemoryStore::default();
    let mut state = begun(&with, &store);
    let mut effects = Effects::default();
    let e = env(&with, &store, T0);
    let too_long = kind(ErrorKind::TooLong, None);
    let step = state.after_failure(&e, Outcome::Status(400), too_long, &mut effects);
    assert_eq!(
        step,
        Step::Retry {
            target: 2,
            wait_ms: 0
        }
    );
    // Too long there as well: no fallback is left, and the primary is never
    // retried though a rule would retry 400 on it.
    state.start(2, T0);
    let step = state.after_failure(&e, Outcome::Status(400), too_long, &mut effects);
    assert_ne!(
        step,
        Step::Retry {
            target: 0,
            wait_ms: 0
        }
    );
    assert_eq!(step, Step::Deliver);
    // Without a fallback, the 400 is the client's.
    let without = plan(json!({}));
    let mut state = begun(&without, &store);
    let e = env(&without, &store, T0);
    let step = state.after_failure(&e, Outcome::Status(400), too_long, &mut effects);
    assert_eq!(step, Step::Deliver);
}

#[test]
fn an_overload_is_retried_as_a_503_is() {
    let plan = plan(
        json!({"on_status_codes": [{"codes": [503], "strategy": "same_model", "max_attempts": 1}]}),
    );
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store);
    let mut effects = Effects::default();
    let e = env(&plan, &store, T0);
    let step = state.after_failure(
        &e,
        Outcome::Status(529),
        kind(ErrorKind::Overloaded, None),
        &mut effects,
    );
    assert!(matches!(step, Step::Retry { target: 0, .. }), "{step:?}");
    // The same 529 unread falls to the default rule, which moves on.
    let mut state = begun(&plan, &store);
    let step = state.after_outcome(&e, Outcome::Status(529), None, &mut effects);
    assert!(matches!(step, Step::Retry { target: 1, .. }), "{step:?}");
}
