//! `stall_timeout_ms` as the resolver reads it: opt-in (none unless set,
//! decision 023), never under the entry's `timeout_ms`, and an error at its
//! field when it is under `timeout_ms` or past 290 s.

mod resolving;

use plano_core::resolve::{Issue, Resolved};
use resolving::{errors, resolve_config};
use serde_json::{json, Value};

fn resolve_providers(providers: Value) -> (Option<Resolved>, Vec<Issue>) {
    resolve_config(json!({}), providers, &|_| None)
}

#[test]
fn each_target_gets_its_stall_bound_or_none() {
    let (resolved, issues) = resolve_providers(json!([
        {"model": "openai/a", "base_url": "http://127.0.0.1:9", "stall_timeout_ms": 60000},
        {"model": "openai/b", "base_url": "http://127.0.0.1:9"},
        {"model": "openai/c", "base_url": "http://127.0.0.1:9", "timeout_ms": 285000},
    ]));
    assert!(errors(&issues).is_empty(), "{issues:?}");
    let plan = resolved.expect("resolved").plan;
    let stalls: Vec<Option<u64>> = plan.targets.iter().map(|t| t.stall_timeout_ms).collect();
    assert_eq!(stalls, [Some(60000), None, None]);
}

#[test]
fn a_stall_bound_under_timeout_ms_or_past_290_s_is_an_error_at_its_field() {
    let (_, issues) = resolve_providers(json!([
        {"model": "openai/a", "base_url": "http://127.0.0.1:9", "timeout_ms": 5000, "stall_timeout_ms": 4000},
        {"model": "openai/b", "base_url": "http://127.0.0.1:9", "stall_timeout_ms": 300000},
    ]));
    assert_eq!(
        errors(&issues),
        [
            "model_providers[0].stall_timeout_ms",
            "model_providers[1].stall_timeout_ms"
        ]
    );
}
