//! Properties that hold for any policy and any sequence of failures.

use plano_core::attempt::{classify, decide, Decision, Ledger, Outcome, RuleId};
use plano_core::config::{GatewayConfig, Strategy as RetryStrategy};
use plano_core::plan::GatewayPlan;
use plano_core::resolve::resolve;
use proptest::prelude::*;
use serde_json::json;

const T0: u64 = 1_700_000_000_000;
const STRATEGIES: [&str; 3] = ["same_model", "same_provider", "different_provider"];
const MODELS: [&str; 5] = [
    "openai/a",
    "openai/b",
    "anthropic/c",
    "mistral/d",
    "anthropic/e",
];

#[derive(Debug, Clone)]
struct Policy {
    strategies: [usize; 3],
    budgets: [u32; 3],
    max_duration: Option<u64>,
    base_ms: u64,
}

fn policies() -> impl Strategy<Value = Policy> {
    (
        [0..3usize, 0..3usize, 0..3usize],
        [0..4u32, 0..4u32, 0..4u32],
        prop::option::of(0..5_000u64),
        1..2_000u64,
    )
        .prop_map(|(strategies, budgets, max_duration, base_ms)| Policy {
            strategies,
            budgets,
            max_duration,
            base_ms,
        })
}

fn outcomes() -> impl Strategy<Value = Vec<(Outcome, u64, Option<usize>)>> {
    let outcome = prop_oneof![
        Just(Outcome::Status(429)),
        Just(Outcome::Status(503)),
        Just(Outcome::Status(500)),
        Just(Outcome::Timeout),
        Just(Outcome::ConnectFailure),
    ];
    // (how the attempt failed, how long it took, which target, tried or
    // not, some request blocked meanwhile)
    let blocked = prop::option::of(0..MODELS.len());
    prop::collection::vec((outcome, 0..3_000u64, blocked), 1..20)
}

fn plan(p: &Policy) -> GatewayPlan {
    let providers: Vec<_> = MODELS
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut v = json!({"model": m, "base_url": "http://127.0.0.1:9"});
            if i == 0 {
                v["retry_policy"] = json!({
                    "fallback_models": ["mistral/d"],
                    "default_strategy": STRATEGIES[p.strategies[0]],
                    "default_max_attempts": p.budgets[0],
                    "on_status_codes": [{"codes": [429], "strategy": STRATEGIES[p.strategies[1]], "max_attempts": p.budgets[1]}],
                    "on_timeout": {"strategy": STRATEGIES[p.strategies[2]], "max_attempts": p.budgets[2]},
                    "max_retry_duration_ms": p.max_duration,
                    "backoff": {"apply_to": "global", "base_ms": p.base_ms, "max_ms": 4_000},
                });
            }
            v
        })
        .collect();
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 1}],
        "model_providers": providers,
    }))
    .unwrap();
    resolve(&config, &|_| None).0.unwrap().plan
}

/// One decision of a run: what was decided, when, after which target
/// failed how, and which targets were blocked at that moment.
#[derive(Debug)]
struct Step {
    decision: Decision,
    at: u64,
    failed: usize,
    outcome: Outcome,
    blocked: Vec<usize>,
}

/// Runs a request through the failures; returns the ledger and each decision.
fn run(
    plan: &GatewayPlan,
    failures: &[(Outcome, u64, Option<usize>)],
    jitter: f64,
) -> (Ledger, Vec<Step>) {
    let mut ledger = Ledger::default();
    let mut now = T0;
    let mut blocked: Vec<(usize, u64)> = Vec::new();
    ledger.start(0, now);
    let mut steps = Vec::new();
    for (outcome, took, block) in failures {
        now += took;
        let failed = ledger.current().unwrap().target;
        if let Some(t) = block {
            blocked.push((*t, now + 1_500));
        }
        ledger.finish(Some(*outcome), now);
        let view = |t: usize| {
            blocked
                .iter()
                .filter(|(b, u)| *b == t && *u > now)
                .map(|(_, u)| *u)
                .max()
        };
        let d = decide(plan, 0, &ledger, outcome, now, &view, jitter);
        steps.push(Step {
            decision: d,
            at: now,
            failed,
            outcome: *outcome,
            blocked: (0..plan.targets.len())
                .filter(|&t| view(t).is_some())
                .collect(),
        });
        match d {
            Decision::Retry {
                target,
                wait_ms,
                rule,
            } => {
                ledger.charge(rule);
                now += wait_ms;
                ledger.start(target, now);
            }
            _ => break,
        }
    }
    (ledger, steps)
}

proptest! {
    #[test]
    fn no_rule_exceeds_its_budget(p in policies(), failures in outcomes(), jitter in 0.0..1.0f64) {
        let plan = plan(&p);
        let (ledger, _) = run(&plan, &failures, jitter);
        for (id, budget) in [(RuleId::Default, p.budgets[0]), (RuleId::Status(0), p.budgets[1]), (RuleId::Timeout, p.budgets[2])] {
            prop_assert!(ledger.spent(id) <= budget, "{id:?} spent {} of {budget}", ledger.spent(id));
        }
        prop_assert!(ledger.attempts.len() as u32 <= 1 + p.budgets.iter().sum::<u32>());
    }

    #[test]
    fn no_target_is_tried_twice_except_by_same_model(p in policies(), failures in outcomes()) {
        let plan = plan(&p);
        let (ledger, _) = run(&plan, &failures, 0.5);
        for (i, a) in ledger.attempts.iter().enumerate().skip(1) {
            let previous = &ledger.attempts[i - 1];
            if ledger.attempts[..i].iter().any(|b| b.target == a.target) {
                // Only a same_model retry repeats a target, and only the one that just failed.
                prop_assert_eq!(a.target, previous.target);
            }
        }
    }

    #[test]
    fn every_retry_fits_its_rules_strategy(p in policies(), failures in outcomes(), jitter in 0.0..1.0f64) {
        let plan = plan(&p);
        let policy = plan.targets[0].retry_policy.as_ref().unwrap();
        let (_, steps) = run(&plan, &failures, jitter);
        for s in &steps {
            if let Decision::Retry { target, rule, .. } = s.decision {
                let (id, r) = classify(policy, &s.outcome).expect("a retried outcome falls under a rule");
                prop_assert_eq!(id, rule);
                let (to, from) = (&plan.targets[target].provider, &plan.targets[s.failed].provider);
                match r.strategy {
                    RetryStrategy::SameModel => prop_assert_eq!(target, s.failed),
                    RetryStrategy::SameProvider => prop_assert!(to == from && target != s.failed, "{from} -> {to}"),
                    RetryStrategy::DifferentProvider => prop_assert_ne!(to, from),
                }
            }
        }
    }

    #[test]
    fn a_blocked_candidate_is_never_picked(p in policies(), failures in outcomes(), jitter in 0.0..1.0f64) {
        let plan = plan(&p);
        let policy = plan.targets[0].retry_policy.as_ref().unwrap();
        let (_, steps) = run(&plan, &failures, jitter);
        for s in &steps {
            if let Decision::Retry { target, .. } = s.decision {
                // same_model waits out its own block instead (SPEC: the wait covers it).
                let same_model = classify(policy, &s.outcome).unwrap().1.strategy == RetryStrategy::SameModel;
                prop_assert!(same_model || !s.blocked.contains(&target), "picked blocked {target}; blocked {:?}", s.blocked);
            }
        }
    }

    #[test]
    fn waits_never_end_past_max_retry_duration(p in policies(), failures in outcomes(), jitter in 0.0..1.0f64) {
        let plan = plan(&p);
        let (_, steps) = run(&plan, &failures, jitter);
        if let (Some(limit), Some(first)) = (p.max_duration, steps.first()) {
            for s in &steps {
                if let Decision::Retry { wait_ms, .. } = s.decision {
                    prop_assert!(s.at + wait_ms <= first.at + limit);
                }
            }
        }
    }
}
