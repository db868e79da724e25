//! Client keys' limits and priorities as the resolver checks them: what a
//! key may spend reaches the plan, and a limit that could only refuse
//! everything, or a reserve that is not a share, is an error at its field.

mod resolving;

use plano_core::plan::KeyLimits;
use plano_core::resolve::{Issue, Resolved, Severity};
use resolving::{one_provider, paths_at, resolve_config};
use serde_json::{json, Value};

const KEY: &str = "ci-key-0123456789abcdef";

fn resolve_keys(keys: Value, mut extra: Value) -> (Option<Resolved>, Vec<Issue>) {
    extra["client_keys"] = keys;
    resolve_config(extra, one_provider(), &|_| None)
}

fn key(name: &str, n: usize, more: Value) -> Value {
    let mut k = json!({"name": name, "key": format!("{KEY}{n}")});
    if let (Some(k), Some(more)) = (k.as_object_mut(), more.as_object()) {
        k.extend(more.clone());
    }
    k
}

#[test]
fn limits_and_priority_reach_the_plan() {
    let keys = json!([
        key(
            "batch",
            1,
            json!({"limits": {"requests_per_minute": 60, "tokens_per_day": 5000}})
        ),
        key("app", 2, json!({"priority": 5})),
    ]);
    let (resolved, issues) = resolve_keys(keys, json!({"priority_reserve": 0.2}));
    assert!(issues.is_empty(), "{issues:?}");
    let plan = resolved.expect("resolved").plan;
    assert_eq!(
        plan.client_keys[0].limits,
        Some(KeyLimits {
            requests_per_minute: Some(60),
            tokens_per_minute: None,
            tokens_per_day: Some(5000),
        })
    );
    assert_eq!(plan.client_keys[0].priority, 0);
    assert_eq!(plan.client_keys[1].limits, None);
    assert_eq!(plan.client_keys[1].priority, 5);
    assert_eq!(plan.priority_reserve, 0.2);
}

#[test]
fn a_zero_limit_is_an_error_at_its_field_and_an_empty_one_a_warning() {
    let keys = json!([
        key("a", 1, json!({"limits": {"tokens_per_minute": 0}})),
        key("b", 2, json!({"limits": {}})),
    ]);
    let (resolved, issues) = resolve_keys(keys, json!({}));
    assert!(resolved.is_none());
    assert_eq!(
        paths_at(&issues, Severity::Error),
        ["listeners[0].client_keys[0].limits.tokens_per_minute"]
    );
    assert_eq!(
        paths_at(&issues, Severity::Warning),
        ["listeners[0].client_keys[1].limits"]
    );
}

#[test]
fn the_reserve_is_a_share_and_needs_two_priorities() {
    for bad in [0.0, 1.0, 1.5, -0.1] {
        let keys = json!([key("a", 1, json!({"priority": 1})), key("b", 2, json!({}))]);
        let (resolved, issues) = resolve_keys(keys, json!({"priority_reserve": bad}));
        assert!(resolved.is_none(), "{bad}");
        assert_eq!(
            paths_at(&issues, Severity::Error),
            ["listeners[0].priority_reserve"]
        );
    }
    let keys = json!([key("a", 1, json!({"priority": 1}))]);
    let (resolved, issues) = resolve_keys(keys, json!({"priority_reserve": 0.1}));
    assert!(resolved.is_some());
    assert_eq!(
        paths_at(&issues, Severity::Warning),
        ["listeners[0].priority_reserve"]
    );
}
