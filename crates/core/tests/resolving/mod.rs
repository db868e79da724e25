//! A config resolved as `planoai validate` resolves it, for the tests of
//! what the resolver accepts and where it points at a wrong field.

// Each test binary includes this module and uses part of it.
#![allow(dead_code)]

use plano_core::config::GatewayConfig;
use plano_core::resolve::{resolve, Issue, Resolved, Severity};
use serde_json::{json, Value};

/// One model listener on port 12000 with `listener`'s fields added, and
/// `providers`; `env` answers the config's environment references.
pub fn resolve_config(
    listener: Value,
    providers: Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<Resolved>, Vec<Issue>) {
    let mut l = json!({"type": "model", "name": "l", "port": 12000});
    if let (Some(l), Some(extra)) = (l.as_object_mut(), listener.as_object()) {
        l.extend(extra.clone());
    }
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [l],
        "model_providers": providers,
    }))
    .expect("config");
    resolve(&config, env)
}

/// One provider on a closed port, for tests of the listener's fields.
pub fn one_provider() -> Value {
    json!([{"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9"}])
}

/// Where each issue of `severity` points (its field path).
pub fn paths_at(issues: &[Issue], severity: Severity) -> Vec<&str> {
    issues
        .iter()
        .filter(|i| i.severity == severity)
        .map(|i| i.path.as_str())
        .collect()
}

/// Where each error points.
pub fn errors(issues: &[Issue]) -> Vec<&str> {
    paths_at(issues, Severity::Error)
}
