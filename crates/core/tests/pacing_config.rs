//! Deployments' pacing limits and the queue's bounds as the resolver reads
//! them: an entry's `rpm`/`tpm` reach each of its deployments unless one
//! sets its own, and a 0 (which could only refuse everything) is an error
//! at its field.

mod resolving;

use plano_core::config::GatewayConfig;
use plano_core::plan::{KeyLimits, DEFAULT_MAX_QUEUED, DEFAULT_MAX_QUEUE_MS};
use plano_core::resolve::{Issue, Resolved};
use resolving::{errors, resolve_config};
use serde_json::{json, Value};

fn resolve_with(providers: Value, listener: Value) -> (Option<Resolved>, Vec<Issue>) {
    resolve_config(listener, providers, &|_| None)
}

fn limits(rpm: Option<u64>, tpm: Option<u64>) -> Option<KeyLimits> {
    Some(KeyLimits {
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        tokens_per_day: None,
    })
}

#[test]
fn an_entrys_limits_reach_each_deployment_unless_it_sets_its_own() {
    let providers = json!([
        {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "rpm": 600, "tpm": 60000,
         "deployments": [{"name": "a"}, {"name": "b", "rpm": 100}]},
        {"model": "openai/gpt-4o-mini", "base_url": "http://127.0.0.1:9", "tpm": 1000},
        {"model": "openai/o1", "base_url": "http://127.0.0.1:9"},
    ]);
    let (resolved, issues) =
        resolve_with(providers, json!({"max_queue_ms": 5000, "max_queued": 7}));
    assert!(issues.is_empty(), "{issues:?}");
    let plan = resolved.expect("resolved").plan;
    assert_eq!(plan.targets[0].pace, limits(Some(600), Some(60000)));
    assert_eq!(plan.targets[1].pace, limits(Some(100), Some(60000)));
    assert_eq!(plan.targets[2].pace, limits(None, Some(1000)));
    assert_eq!(plan.targets[3].pace, None);
    assert_eq!((plan.max_queue_ms, plan.max_queued), (5000, 7));
}

#[test]
fn the_queue_has_defaults() {
    let providers = json!([{"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9"}]);
    let (resolved, _) = resolve_with(providers, json!({}));
    let plan = resolved.expect("resolved").plan;
    assert_eq!(plan.max_queue_ms, DEFAULT_MAX_QUEUE_MS);
    assert_eq!(plan.max_queued, DEFAULT_MAX_QUEUED);
}

#[test]
fn a_zero_limit_is_an_error_at_its_field_once() {
    let providers = json!([
        {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "rpm": 0,
         "deployments": [{"name": "a"}, {"name": "b"}, {"name": "c", "tpm": 0}]},
        {"model": "openai/o1", "base_url": "http://127.0.0.1:9", "tpm": 0},
    ]);
    let (resolved, issues) = resolve_with(providers, json!({}));
    assert!(resolved.is_none());
    assert_eq!(
        errors(&issues),
        [
            "model_providers[0].rpm",
            "model_providers[0].deployments[2].tpm",
            "model_providers[1].tpm"
        ]
    );
}

#[test]
fn an_unknown_key_beside_them_is_still_refused() {
    let config = json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000}],
        "model_providers": [{"model": "openai/o1", "base_url": "http://127.0.0.1:9", "rpm": 5, "rph": 1}],
    });
    let err = serde_json::from_value::<GatewayConfig>(config).expect_err("unknown key");
    assert!(err.to_string().contains("rph"), "{err}");
}

#[test]
fn a_client_keys_own_queue_deadline_reaches_the_plan() {
    let providers = json!([{"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "rpm": 5}]);
    let keys = json!([
        {"name": "batch", "key": "batch-key-0123456789ab", "max_queue_ms": 60000},
        {"name": "app", "key": "app-key-0123456789abcd"},
    ]);
    let (resolved, issues) = resolve_with(
        providers,
        json!({"client_keys": keys, "max_queue_ms": 2000}),
    );
    assert!(issues.is_empty(), "{issues:?}");
    let plan = resolved.expect("resolved").plan;
    assert_eq!(plan.client_keys[0].max_queue_ms, Some(60000));
    assert_eq!(plan.client_keys[1].max_queue_ms, None);
    assert_eq!(plan.max_queue_ms, 2000);
}
