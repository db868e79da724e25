//! The listener's access rules: client keys become digests in the plan, and
//! a listener other machines can reach needs keys or an explicit opt-out.

mod resolving;

use plano_core::clients::{digest, to_hex};
use plano_core::resolve::{Issue, Resolved, Severity};
use resolving::{one_provider, resolve_config};
use serde_json::{json, Value};

const KEY: &str = "ci-key-0123456789abcdef";

fn resolve_listener(listener: Value) -> (Option<Resolved>, Vec<Issue>) {
    let env = |name: &str| (name == "PLANO_CI_KEY").then(|| KEY.to_string());
    resolve_config(listener, one_provider(), &env)
}

fn errors(issues: &[Issue]) -> Vec<&Issue> {
    issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .collect()
}

#[test]
fn binds_loopback_by_default_and_needs_no_key_there() {
    let (resolved, issues) = resolve_listener(json!({}));
    assert!(issues.is_empty(), "{issues:?}");
    let r = resolved.expect("resolved");
    assert_eq!(r.listener_address, "127.0.0.1");
    assert!(r.plan.client_keys.is_empty());
    assert_eq!(r.max_connections, 10_000);
    for address in ["127.0.0.2", "::1", "localhost"] {
        let (resolved, issues) = resolve_listener(json!({"address": address}));
        assert!(issues.is_empty(), "{address}: {issues:?}");
        assert!(resolved.is_some());
    }
}

#[test]
fn refuses_an_open_listener_without_keys_and_says_how_to_fix_it() {
    for address in ["0.0.0.0", "::", "192.168.1.10"] {
        let (resolved, issues) = resolve_listener(json!({"address": address}));
        assert!(resolved.is_none(), "{address}");
        let e = errors(&issues);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "listeners[0].address");
        let hint = e[0].hint.as_deref().unwrap_or_default();
        for fix in ["client_keys", "127.0.0.1", "allow_unauthenticated: true"] {
            assert!(hint.contains(fix), "{hint}");
        }
    }
}

#[test]
fn the_opt_out_serves_it_open_with_a_warning() {
    let (resolved, issues) =
        resolve_listener(json!({"address": "0.0.0.0", "allow_unauthenticated": true}));
    assert!(resolved.is_some());
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].severity, Severity::Warning);
    assert_eq!(issues[0].path, "listeners[0].allow_unauthenticated");
}

#[test]
fn keys_become_digests_from_literals_and_the_environment() {
    let (resolved, issues) = resolve_listener(json!({
        "address": "0.0.0.0",
        "client_keys": [
            {"name": "ci", "key": "$PLANO_CI_KEY"},
            {"name": "app-2", "key": "app-key-0123456789abcdef"},
        ],
    }));
    assert!(issues.is_empty(), "{issues:?}");
    let plan = resolved.expect("resolved").plan;
    assert_eq!(plan.client_keys.len(), 2);
    assert_eq!(plan.client_keys[0].name, "ci");
    assert_eq!(plan.client_keys[0].sha256, to_hex(&digest(KEY)));
    assert_eq!(
        plan.client_keys[1].sha256,
        to_hex(&digest("app-key-0123456789abcdef"))
    );
    let json = serde_json::to_string(&plan).expect("json");
    assert!(!json.contains(KEY) && !json.contains("app-key-0123456789abcdef"));
    plan.check().expect("a consistent plan");
}

#[test]
fn bad_keys_are_errors_at_their_field_and_never_echo_the_key() {
    let (resolved, issues) = resolve_listener(json!({
        "client_keys": [
            {"name": "ci", "key": "$MISSING_KEY"},
            {"name": "ci.prod", "key": "first-key-0123456789"},
            {"name": "dup", "key": "first-key-0123456789"},
            {"name": "dup", "key": "has space 0123456789"},
            {"name": "e", "key": ""},
        ],
    }));
    assert!(resolved.is_none());
    let at: Vec<&str> = errors(&issues).iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        at,
        [
            "listeners[0].client_keys[0].key",
            "listeners[0].client_keys[1].name",
            "listeners[0].client_keys[2].key",
            "listeners[0].client_keys[3].name",
            "listeners[0].client_keys[3].key",
            "listeners[0].client_keys[4].key",
        ]
    );
    for i in &issues {
        assert!(!i.message.contains("first-key"), "{}", i.message);
    }
}

#[test]
fn a_short_key_is_a_warning() {
    let (resolved, issues) =
        resolve_listener(json!({"client_keys": [{"name": "ci", "key": "short"}]}));
    assert!(resolved.is_some());
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].severity, Severity::Warning);
    assert_eq!(issues[0].path, "listeners[0].client_keys[0].key");
}

#[test]
fn other_listener_problems() {
    let (_, issues) = resolve_listener(json!({"address": "gateway.local", "max_connections": 0}));
    let at: Vec<&str> = errors(&issues).iter().map(|i| i.path.as_str()).collect();
    assert_eq!(at, ["listeners[0].address", "listeners[0].max_connections"]);
}
