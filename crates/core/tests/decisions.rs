//! Every retry rule of SPEC §3-§7, decided by the core with a fake clock.

use plano_core::api::ErrorShape;
use plano_core::attempt::{
    classify, decide, exhausted_error, first_target, Decision, Ledger, Outcome, RuleId,
};
use plano_core::config::GatewayConfig;
use plano_core::plan::GatewayPlan;
use plano_core::resolve::{resolve, Severity};
use serde_json::{json, Value};

const T0: u64 = 1_700_000_000_000;

fn plan_from(providers: Value) -> GatewayPlan {
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000}],
        "model_providers": providers,
    }))
    .expect("config");
    let (resolved, issues) = resolve(&config, &|_| None);
    let errors: Vec<_> = issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    resolved.expect("resolved").plan
}

fn provider(model: &str) -> Value {
    json!({"model": model, "base_url": "http://127.0.0.1:9"})
}

/// openai/gpt-4o (primary, with `policy`), openai/gpt-4o-mini,
/// anthropic/claude, mistral/large.
fn four(policy: Value) -> GatewayPlan {
    let mut primary = provider("openai/gpt-4o");
    primary["retry_policy"] = policy;
    primary["default"] = json!(true);
    plan_from(json!([
        primary,
        provider("openai/gpt-4o-mini"),
        provider("anthropic/claude"),
        provider("mistral/large")
    ]))
}

fn never_blocked(_: usize) -> Option<u64> {
    None
}

/// Fails the current attempt with `outcome` at `now` and decides.
fn fail(plan: &GatewayPlan, ledger: &mut Ledger, outcome: Outcome, now: u64) -> Decision {
    fail_with(plan, ledger, outcome, now, &never_blocked)
}

fn fail_with(
    plan: &GatewayPlan,
    ledger: &mut Ledger,
    outcome: Outcome,
    now: u64,
    blocked: &dyn Fn(usize) -> Option<u64>,
) -> Decision {
    ledger.finish(Some(outcome), now);
    let d = decide(plan, 0, ledger, &outcome, now, blocked, 0.0);
    if let Decision::Retry {
        target,
        wait_ms,
        rule,
    } = d
    {
        ledger.charge(rule);
        ledger.start(target, now + wait_ms);
    }
    d
}

fn started(target: usize) -> Ledger {
    let mut l = Ledger::default();
    l.start(target, T0);
    l
}

#[test]
fn status_rules_match_first_then_the_default_set() {
    let plan = four(json!({
        "default_strategy": "same_model", "default_max_attempts": 5,
        "on_status_codes": [
            {"codes": [429], "strategy": "different_provider", "max_attempts": 1},
            {"codes": ["502-504", 429], "strategy": "same_provider", "max_attempts": 2},
            {"codes": [400], "max_attempts": 1}
        ],
    }));
    let policy = plan.targets[0].retry_policy.as_ref().unwrap();
    assert_eq!(
        classify(policy, &Outcome::Status(429)).unwrap().0,
        RuleId::Status(0)
    );
    assert_eq!(
        classify(policy, &Outcome::Status(503)).unwrap().0,
        RuleId::Status(1)
    );
    // Listed explicitly: a 400 becomes retriable, with the default strategy.
    let (id, rule) = classify(policy, &Outcome::Status(400)).unwrap();
    assert_eq!((id, rule.max_attempts), (RuleId::Status(2), 1));
    assert_eq!(
        classify(policy, &Outcome::Status(500)).unwrap().0,
        RuleId::Default
    );
    for final_status in [200, 201, 401, 404, 422, 501] {
        assert_eq!(
            classify(policy, &Outcome::Status(final_status)),
            None,
            "{final_status}"
        );
    }
    assert_eq!(
        classify(policy, &Outcome::Timeout).unwrap().0,
        RuleId::Default
    );
    assert_eq!(
        classify(policy, &Outcome::ConnectFailure).unwrap().0,
        RuleId::Default
    );
    assert_eq!(classify(policy, &Outcome::SlowTtfb), None);
}

#[test]
fn without_a_policy_nothing_is_retried() {
    let plan = plan_from(json!([
        provider("openai/gpt-4o"),
        provider("anthropic/claude")
    ]));
    let mut ledger = started(0);
    assert_eq!(
        fail(&plan, &mut ledger, Outcome::Status(429), T0),
        Decision::Final
    );
    assert_eq!(
        fail(&plan, &mut ledger, Outcome::Timeout, T0),
        Decision::Final
    );
}

#[test]
fn max_attempts_counts_retries_not_the_original_attempt() {
    // IT-5: max_attempts 1 means one retry.
    let plan = four(json!({"on_status_codes": [{"codes": [429], "max_attempts": 1}]}));
    let mut ledger = started(0);
    assert!(matches!(
        fail(&plan, &mut ledger, Outcome::Status(429), T0),
        Decision::Retry { target: 2, .. }
    ));
    assert_eq!(
        fail(&plan, &mut ledger, Outcome::Status(429), T0 + 5),
        Decision::Exhausted {
            budget_exhausted: true
        }
    );
    assert_eq!(ledger.attempts.len(), 2);
}

#[test]
fn max_attempts_zero_never_retries() {
    let plan = four(json!({"on_status_codes": [{"codes": [429], "max_attempts": 0}]}));
    let mut ledger = started(0);
    assert_eq!(
        fail(&plan, &mut ledger, Outcome::Status(429), T0),
        Decision::Exhausted {
            budget_exhausted: true
        }
    );
}

#[test]
fn each_rule_has_its_own_budget() {
    let plan = four(json!({
        "on_status_codes": [{"codes": [429], "strategy": "same_model", "max_attempts": 1}],
        "on_timeout": {"strategy": "same_model", "max_attempts": 1},
    }));
    let mut ledger = started(0);
    assert!(matches!(
        fail(&plan, &mut ledger, Outcome::Status(429), T0),
        Decision::Retry { .. }
    ));
    assert!(matches!(
        fail(&plan, &mut ledger, Outcome::Timeout, T0),
        Decision::Retry { .. }
    ));
    assert!(matches!(
        fail(&plan, &mut ledger, Outcome::Status(429), T0),
        Decision::Exhausted { .. }
    ));
}

#[test]
fn fallback_models_come_first_in_their_order_then_config_order() {
    // IT-7
    let plan = four(json!({
        "fallback_models": ["mistral/large", "anthropic/claude"],
        "default_strategy": "different_provider", "default_max_attempts": 5,
    }));
    let mut ledger = started(0);
    let mut order = Vec::new();
    while let Decision::Retry { target, .. } = fail(&plan, &mut ledger, Outcome::Status(503), T0) {
        order.push(plan.targets[target].model.clone());
    }
    // different_provider is relative to the model that just failed: after
    // mistral fails, anthropic differs; after anthropic, openai-mini differs.
    assert_eq!(
        order,
        ["mistral/large", "anthropic/claude", "openai/gpt-4o-mini"]
    );
}

#[test]
fn strategies_choose_by_provider() {
    let same_provider = four(json!({"default_strategy": "same_provider"}));
    let mut ledger = started(0);
    assert!(matches!(
        fail(&same_provider, &mut ledger, Outcome::Status(429), T0),
        Decision::Retry { target: 1, .. }
    ));
    // No other untried openai model left.
    assert_eq!(
        fail(&same_provider, &mut ledger, Outcome::Status(429), T0),
        Decision::Exhausted {
            budget_exhausted: false
        }
    );

    let different = four(json!({"default_strategy": "different_provider"}));
    let mut ledger = started(0);
    assert!(matches!(
        fail(&different, &mut ledger, Outcome::Status(429), T0),
        Decision::Retry { target: 2, .. }
    ));

    let same_model = four(json!({"default_strategy": "same_model", "default_max_attempts": 3}));
    let mut ledger = started(0);
    for _ in 0..3 {
        assert!(matches!(
            fail(&same_model, &mut ledger, Outcome::Status(429), T0),
            Decision::Retry { target: 0, .. }
        ));
    }
}

#[test]
fn blocked_candidates_are_skipped_on_retry() {
    let plan = four(json!({"default_strategy": "different_provider", "default_max_attempts": 3}));
    let mut ledger = started(0);
    let anthropic_blocked = |t: usize| (t == 2).then_some(T0 + 60_000);
    assert!(matches!(
        fail_with(
            &plan,
            &mut ledger,
            Outcome::Status(429),
            T0,
            &anthropic_blocked
        ),
        Decision::Retry {
            target: 3,
            wait_ms: 0,
            ..
        }
    ));
}

#[test]
fn a_blocked_primary_is_skipped_for_the_first_attempt() {
    // IT-9 / IT-11
    let plan = four(json!({"fallback_models": ["anthropic/claude"]}));
    assert_eq!(first_target(&plan, 0, &never_blocked, 0.0), 0);
    assert_eq!(
        first_target(&plan, 0, &|t| (t == 0).then_some(T0 + 1), 0.0),
        2
    );
    // Every target blocked: fail open to the block that ends first.
    let ends = [T0 + 50, T0 + 40, T0 + 10, T0 + 30];
    assert_eq!(first_target(&plan, 0, &|t| Some(ends[t]), 0.0), 2);
    // Without a policy there are no candidates: the primary it is.
    let bare = plan_from(json!([provider("a/x"), provider("b/y")]));
    assert_eq!(first_target(&bare, 0, &|_| Some(T0 + 1), 0.0), 0);
}

#[test]
fn backoff_doubles_within_its_scope() {
    // IT-6: base 500, no jitter: 500 ms, then 1000 ms.
    let plan = four(json!({
        "default_strategy": "same_model", "default_max_attempts": 3,
        "backoff": {"apply_to": "same_model", "base_ms": 500, "max_ms": 5000, "jitter": false},
    }));
    let mut ledger = started(0);
    let waits: Vec<u64> = (0..3)
        .map(
            |_| match fail(&plan, &mut ledger, Outcome::Status(429), T0) {
                Decision::Retry { wait_ms, .. } => wait_ms,
                d => panic!("{d:?}"),
            },
        )
        .collect();
    assert_eq!(waits, [500, 1000, 2000]);
}

#[test]
fn same_model_backoff_does_not_delay_a_failover() {
    let plan = four(json!({
        "default_strategy": "different_provider",
        "backoff": {"apply_to": "same_model", "base_ms": 500, "jitter": false},
    }));
    let mut ledger = started(0);
    assert!(matches!(
        fail(&plan, &mut ledger, Outcome::Status(429), T0),
        Decision::Retry { wait_ms: 0, .. }
    ));

    let global = four(json!({
        "default_strategy": "different_provider",
        "backoff": {"apply_to": "global", "base_ms": 500, "jitter": false},
    }));
    let mut ledger = started(0);
    assert!(matches!(
        fail(&global, &mut ledger, Outcome::Status(429), T0),
        Decision::Retry { wait_ms: 500, .. }
    ));
}

#[test]
fn jitter_stays_between_half_and_all_of_the_delay() {
    let plan = four(json!({
        "default_strategy": "same_model",
        "backoff": {"apply_to": "global", "base_ms": 1000},
    }));
    for (sample, expected) in [(0.0, 500), (0.5, 750), (0.99, 995)] {
        let mut ledger = started(0);
        ledger.finish(Some(Outcome::Status(429)), T0);
        let d = decide(
            &plan,
            0,
            &ledger,
            &Outcome::Status(429),
            T0,
            &never_blocked,
            sample,
        );
        assert!(
            matches!(d, Decision::Retry { wait_ms, .. } if wait_ms == expected),
            "{d:?}"
        );
    }
}

#[test]
fn a_same_model_retry_waits_out_its_block() {
    // IT-8: Retry-After 2 s with no backoff: the retry waits 2 s.
    let plan = four(json!({"default_strategy": "same_model"}));
    let mut ledger = started(0);
    let blocked = |t: usize| (t == 0).then_some(T0 + 2_000);
    assert!(matches!(
        fail_with(&plan, &mut ledger, Outcome::Status(429), T0, &blocked),
        Decision::Retry {
            target: 0,
            wait_ms: 2_000,
            ..
        }
    ));
    // The larger of backoff and block.
    let plan = four(json!({
        "default_strategy": "same_model",
        "backoff": {"apply_to": "same_model", "base_ms": 3000, "jitter": false},
    }));
    let mut ledger = started(0);
    assert!(matches!(
        fail_with(&plan, &mut ledger, Outcome::Status(429), T0, &blocked),
        Decision::Retry { wait_ms: 3_000, .. }
    ));
}

#[test]
fn max_retry_duration_bounds_waits_from_the_first_failure() {
    let plan = four(json!({
        "default_strategy": "same_model", "default_max_attempts": 10,
        "max_retry_duration_ms": 2500,
        "backoff": {"apply_to": "global", "base_ms": 1000, "jitter": false},
    }));
    let mut ledger = started(0);
    // Waits 1000 (ends at +1000), then 2000 (would end at +3000 > +2500).
    assert!(matches!(
        fail(&plan, &mut ledger, Outcome::Status(500), T0),
        Decision::Retry { wait_ms: 1000, .. }
    ));
    assert_eq!(
        fail(&plan, &mut ledger, Outcome::Status(500), T0 + 1000),
        Decision::Exhausted {
            budget_exhausted: false
        }
    );
}

#[test]
fn timeouts_use_on_timeout() {
    // IT-10
    let plan = four(json!({
        "on_timeout": {"strategy": "different_provider", "max_attempts": 1},
        "default_max_attempts": 0,
    }));
    let mut ledger = started(0);
    assert!(matches!(
        fail(&plan, &mut ledger, Outcome::Timeout, T0),
        Decision::Retry {
            target: 2,
            rule: RuleId::Timeout,
            ..
        }
    ));
    assert_eq!(
        fail(&plan, &mut ledger, Outcome::ConnectFailure, T0),
        Decision::Exhausted {
            budget_exhausted: true
        }
    );
}

#[test]
fn high_latency_retries_only_under_its_rule() {
    let plan = four(json!({
        "on_high_latency": {"threshold_ms": 100, "strategy": "different_provider", "max_attempts": 1},
    }));
    let mut ledger = started(0);
    assert!(matches!(
        fail(&plan, &mut ledger, Outcome::SlowTtfb, T0),
        Decision::Retry {
            rule: RuleId::HighLatency,
            ..
        }
    ));
}

#[test]
fn the_exhausted_error_lists_every_attempt() {
    // SPEC §7 / IT-3
    let plan = four(json!({"default_strategy": "different_provider", "default_max_attempts": 1}));
    let mut ledger = started(0);
    fail(&plan, &mut ledger, Outcome::Status(429), T0 + 3);
    let d = fail(&plan, &mut ledger, Outcome::Timeout, T0 + 30_004);
    assert_eq!(
        d,
        Decision::Exhausted {
            budget_exhausted: true
        }
    );
    let (status, body) = exhausted_error(&plan, &ledger, true, ErrorShape::Openai);
    assert_eq!(status, 504);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "type": "retry_exhausted",
            "message": "all 2 attempts failed; last: anthropic/claude timed out",
            "total_attempts": 2,
            "attempts": [
                {"attempt": 1, "model": "openai/gpt-4o", "error_type": "http_429", "status": 429, "latency_ms": 3},
                {"attempt": 2, "model": "anthropic/claude", "error_type": "timeout", "latency_ms": 30001}
            ],
            "retry_budget_exhausted": true
        }})
    );
}

#[test]
fn the_exhausted_status_is_the_last_attempts() {
    let plan = four(json!({"default_max_attempts": 0}));
    let mut ledger = started(0);
    fail(&plan, &mut ledger, Outcome::Status(503), T0);
    assert_eq!(
        exhausted_error(&plan, &ledger, true, ErrorShape::Openai).0,
        503
    );
    let mut ledger = started(0);
    fail(&plan, &mut ledger, Outcome::ConnectFailure, T0);
    assert_eq!(
        exhausted_error(&plan, &ledger, true, ErrorShape::Openai).0,
        502
    );
}

#[test]
fn the_exhausted_error_of_a_messages_request_is_anthropic_shaped() {
    let plan = four(json!({"default_max_attempts": 0}));
    let mut ledger = started(0);
    fail(&plan, &mut ledger, Outcome::Status(529), T0 + 2);
    let (status, body) = exhausted_error(&plan, &ledger, true, ErrorShape::Anthropic);
    assert_eq!(status, 529);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "retry_exhausted");
    assert_eq!(body["error"]["attempts"][0]["status"], 529);
}

#[test]
fn a_529_overload_is_retried_by_default_like_a_503() {
    let plan = four(json!({"default_max_attempts": 1}));
    let mut ledger = started(0);
    let d = fail(&plan, &mut ledger, Outcome::Status(529), T0);
    assert!(matches!(d, Decision::Retry { .. }), "{d:?}");
}
