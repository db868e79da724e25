//! What a re-applied config changes, in words: providers added or removed,
//! and each changed setting of a provider or of the gateway, old -> new. The
//! running gateway's resolved config is kept as JSON in the run directory to
//! compare with.

use serde_json::{json, Map, Value};

use crate::load::Loaded;

/// The resolved config as compared: each provider by model (its plan and
/// where it is reached; never its key), and the gateway-wide settings.
pub fn summary(loaded: &Loaded) -> Value {
    let r = &loaded.resolved;
    let providers: Map<String, Value> = r
        .plan
        .targets
        .iter()
        .zip(&r.endpoints)
        .map(|(t, e)| {
            let mut target = serde_json::to_value(t).unwrap_or_default();
            if let Some(fields) = target.as_object_mut() {
                // Internal names, derived from the model and its position.
                fields.remove("cluster");
                fields.remove("model_name");
                // The fallback order by model, not by index.
                if let Some(policy) = fields
                    .get_mut("retry_policy")
                    .and_then(Value::as_object_mut)
                {
                    let names: Vec<Value> = policy
                        .remove("candidates")
                        .and_then(|c| c.as_array().cloned())
                        .into_iter()
                        .flatten()
                        .filter_map(|i| r.plan.targets.get(i.as_u64()? as usize))
                        .map(|t| t.label().into())
                        .collect();
                    policy.insert("fallback_models".into(), names.into());
                }
                let scheme = if e.tls { "https" } else { "http" };
                fields.insert(
                    "base_url".into(),
                    format!("{scheme}://{}:{}{}", e.host, e.port, e.path_prefix).into(),
                );
            }
            (t.label(), target)
        })
        .collect();
    let default = r
        .plan
        .default_target
        .map(|i| r.plan.targets[i].model.clone());
    json!({
        "providers": providers,
        "gateway": {
            "default": default,
            "max_request_body_bytes": r.plan.max_request_body_bytes,
            "log_first_success": r.plan.log_first_success,
            "access_log": r.access_log,
            "listener": format!("{}:{}", r.listener_address, r.listener_port),
            // By name: what each key may spend, never the key or its digest.
            "client_keys": r.plan.client_keys.iter().map(|k| (k.name.clone(), json!({
                "priority": k.priority,
                "limits": k.limits.map(|l| json!({
                    "requests_per_minute": l.requests_per_minute,
                    "tokens_per_minute": l.tokens_per_minute,
                    "tokens_per_day": l.tokens_per_day,
                })),
            }))).collect::<Map<String, Value>>(),
            "priority_reserve": r.plan.priority_reserve,
            "tracing": r.plan.tracing.as_ref().zip(r.collector.as_ref()).map(|(t, e)| json!({
                "endpoint": format!("{}://{}:{}", if e.tls { "https" } else { "http" }, e.host, e.port),
                "sampling": t.sampling,
                "service_name": t.service_name,
            })),
        },
    })
}

/// One line per difference between two summaries; empty when equal.
pub fn describe(old: &Value, new: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let providers = |v: &Value| v["providers"].as_object().cloned().unwrap_or_default();
    let (before, after) = (providers(old), providers(new));
    for model in after.keys().filter(|m| !before.contains_key(*m)) {
        lines.push(format!("+ provider {model}"));
    }
    for model in before.keys().filter(|m| !after.contains_key(*m)) {
        lines.push(format!("- provider {model}"));
    }
    for (model, new_target) in &after {
        if let Some(old_target) = before.get(model) {
            leaves(
                &format!("~ {model}: "),
                "",
                old_target,
                new_target,
                &mut lines,
            );
        }
    }
    leaves(
        "~ gateway: ",
        "",
        &old["gateway"],
        &new["gateway"],
        &mut lines,
    );
    lines
}

/// Each differing leaf under `path`, as `prefix path: old -> new`.
fn leaves(prefix: &str, path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let none = Value::Null;
                leaves(
                    prefix,
                    &sub,
                    a.get(k).unwrap_or(&none),
                    b.get(k).unwrap_or(&none),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(format!("{prefix}{path}: {a} -> {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(models: &[(&str, Value)]) -> Value {
        let providers: Map<String, Value> = models
            .iter()
            .map(|(m, v)| (m.to_string(), v.clone()))
            .collect();
        json!({"providers": providers, "gateway": {"default": "a/x"}})
    }

    #[test]
    fn names_added_removed_and_changed_settings() {
        let old = summary(&[
            (
                "a/x",
                json!({"timeout_ms": 30000, "retry_policy": {"fallback_models": ["b/y", "c/z"]}}),
            ),
            ("b/y", json!({"timeout_ms": 1000})),
        ]);
        let new = summary(&[
            (
                "a/x",
                json!({"timeout_ms": 20000, "retry_policy": {"fallback_models": ["c/z", "b/y"]}}),
            ),
            ("c/z", json!({"timeout_ms": 1000})),
        ]);
        assert_eq!(
            describe(&old, &new),
            [
                "+ provider c/z",
                "- provider b/y",
                r#"~ a/x: retry_policy.fallback_models: ["b/y","c/z"] -> ["c/z","b/y"]"#,
                "~ a/x: timeout_ms: 30000 -> 20000",
            ]
        );
        assert!(describe(&new, &new).is_empty());
    }

    #[test]
    fn a_policy_added_is_a_change_from_null() {
        let old = summary(&[("a/x", json!({"retry_policy": null}))]);
        let new = summary(&[("a/x", json!({"retry_policy": {"max_retry_duration_ms": 5}}))]);
        assert_eq!(
            describe(&old, &new),
            ["~ a/x: retry_policy: null -> {\"max_retry_duration_ms\":5}"]
        );
    }

    #[test]
    fn a_client_keys_limit_is_named_by_the_key_and_the_limit() {
        let gateway = |rpm: u64| {
            json!({"providers": {}, "gateway": {"client_keys": {"batch": {
                "priority": 0, "limits": {"requests_per_minute": rpm}}}}})
        };
        assert_eq!(
            describe(&gateway(60), &gateway(30)),
            ["~ gateway: client_keys.batch.limits.requests_per_minute: 60 -> 30"]
        );
    }
}
