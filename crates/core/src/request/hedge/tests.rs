//! The hedge's decisions against a fake clock and an in-memory store.

use super::super::{Effects, Env, RequestState, Step};
use crate::attempt::Outcome;
use crate::blocks::memory::MemoryStore;
use crate::config::GatewayConfig;
use crate::plan::GatewayPlan;
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
             "retry_policy": policy},
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

fn begun(plan: &GatewayPlan, store: &MemoryStore, at: u64) -> RequestState {
    let (mut state, first) = RequestState::begin(&env(plan, store, at), 0);
    state.start(first, at);
    state
}

fn hedged(budget: Value) -> GatewayPlan {
    plan(
        json!({"fallback_models": ["mistral/large"], "hedge": {"after_ms": 400},
                "retry_budget": budget}),
    )
}

#[test]
fn a_hedge_starts_at_after_ms_once_to_the_next_target_in_the_order() {
    let plan = hedged(json!({"ratio": 1.0}));
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store, T0);
    assert_eq!(state.hedge_at_ms(&plan), Some(T0 + 400));
    let mut effects = Effects::default();
    assert_eq!(
        state.start_hedge(&env(&plan, &store, T0 + 399), &mut effects),
        None
    );
    // `fallback_models` first: mistral/large, not anthropic/claude.
    assert_eq!(
        state.start_hedge(&env(&plan, &store, T0 + 400), &mut effects),
        Some(2)
    );
    assert_eq!(state.hedge_in_flight().map(|a| a.target), Some(2));
    // The current attempt is still the primary's; one hedge per request.
    assert_eq!(
        (state.current_target(), state.ledger.number()),
        (Some(0), 1)
    );
    assert_eq!(
        state.start_hedge(&env(&plan, &store, T0 + 900), &mut effects),
        None
    );
    assert_eq!(state.hedge_at_ms(&plan), None);
}

#[test]
fn without_the_option_nothing_is_hedged() {
    let plan = plan(json!({"fallback_models": ["mistral/large"]}));
    let store = MemoryStore::default();
    let mut state = begun(&plan, &store, T0);
    assert_eq!(state.hedge_at_ms(&plan), None);
    let mut effects = Effects::default();
    assert_eq!(
        state.start_hedge(&env(&plan, &store, T0 + 10_000), &mut effects),
        None
    );
}

#[test]
fn the_first_with_output_wins_and_the_other_is_lost() {
    let plan = hedged(json!({"ratio": 1.0}));
    let store = MemoryStore::default();
    let mut effects = Effects::default();

    let mut state = begun(&plan, &store, T0);
    state.start_hedge(&env(&plan, &store, T0 + 400), &mut effects);
    state.hedge_won(T0 + 520);
    assert_eq!(
        (state.current_target(), state.ledger.number()),
        (Some(2), 2)
    );
    assert_eq!(state.ledger.attempts[0].outcome, Some(Outcome::HedgeLost));
    assert!(state.hedge_in_flight().is_none());

    let mut state = begun(&plan, &store, T0);
    state.start_hedge(&env(&plan, &store, T0 + 400), &mut effects);
    let lost = state.hedge_lost(T0 + 450).unwrap();
    assert_eq!((lost.target, lost.outcome), (2, Some(Outcome::HedgeLost)));
    assert_eq!(
        (state.current_target(), state.ledger.number()),
        (Some(0), 1)
    );
    assert!(state.hedge_in_flight().is_none());
}

#[test]
fn a_failure_with_a_hedge_in_flight_awaits_it_and_spends_the_budget_once() {
    // Two retries in the window: the hedge spends one, the failure none.
    let plan = hedged(json!({"ratio": 0.0, "min_retries_per_second": 1, "window_seconds": 2}));
    let store = MemoryStore::default();
    let mut effects = Effects::default();
    let mut state = begun(&plan, &store, T0);
    state.start_hedge(&env(&plan, &store, T0 + 400), &mut effects);
    let step = state.after_outcome(
        &env(&plan, &store, T0 + 500),
        Outcome::Status(503),
        None,
        &mut effects,
    );
    assert_eq!(step, Step::AwaitHedge);
    assert_eq!(
        state.current_target(),
        Some(0),
        "until the failure is written"
    );
    state.follow_hedge();
    assert_eq!(state.current_target(), Some(2));
    assert!(state.hedge_in_flight().is_none());
    assert_eq!(state.ledger.attempts[0].outcome, Some(Outcome::Status(503)));
    assert!(!effects.over_retry_budget);
    // One retry is left for another request, and only one.
    let mut other = begun(&plan, &store, T0 + 600);
    let step = other.after_outcome(
        &env(&plan, &store, T0 + 700),
        Outcome::Status(503),
        None,
        &mut effects,
    );
    assert!(matches!(step, Step::Retry { .. }), "{step:?}");
    let mut third = begun(&plan, &store, T0 + 800);
    assert_eq!(
        third.start_hedge(&env(&plan, &store, T0 + 1200), &mut effects),
        None
    );
    assert!(effects.over_retry_budget);
}

#[test]
fn a_final_answer_with_a_hedge_in_flight_is_delivered() {
    let plan = hedged(json!({"ratio": 1.0}));
    let store = MemoryStore::default();
    let mut effects = Effects::default();
    let mut state = begun(&plan, &store, T0);
    state.start_hedge(&env(&plan, &store, T0 + 400), &mut effects);
    let step = state.after_outcome(
        &env(&plan, &store, T0 + 500),
        Outcome::Status(400),
        None,
        &mut effects,
    );
    assert_eq!(step, Step::Deliver);
    assert!(state.hedge_in_flight().is_some(), "the filter drops it");
}

#[test]
fn a_failed_hedge_blocks_its_target_and_the_primary_goes_on() {
    let plan = hedged(json!({"ratio": 1.0}));
    let store = MemoryStore::default();
    let mut effects = Effects::default();
    let mut state = begun(&plan, &store, T0);
    state.start_hedge(&env(&plan, &store, T0 + 400), &mut effects);
    let e = env(&plan, &store, T0 + 450);
    let failed = state
        .hedge_failed(&e, Outcome::Status(429), Some(30_000), &mut effects)
        .unwrap();
    assert_eq!(
        (failed.target, failed.outcome),
        (2, Some(Outcome::Status(429)))
    );
    assert_eq!(state.blocked_until(&e, 2), Some(T0 + 450 + 30_000));
    assert_eq!(state.current_target(), Some(0));
    // The primary's own failure now fails over elsewhere: mistral was tried.
    let step = state.after_outcome(
        &env(&plan, &store, T0 + 600),
        Outcome::Status(503),
        None,
        &mut effects,
    );
    assert!(matches!(step, Step::Retry { target: 1, .. }), "{step:?}");
}
