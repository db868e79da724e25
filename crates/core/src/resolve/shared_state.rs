//! `shared_state`: the etcd endpoints and key prefix, checked at their
//! fields.

use super::endpoint::parse_base_url;
use super::Checker;
use crate::blocks::BlockKey;
use crate::config::{BlockApplyTo, SharedStateConfig};
use crate::plan::{ClientKey, Target};
use crate::replicas::SharedStatePlan;

pub const DEFAULT_KEY_PREFIX: &str = "/plano/";
pub const DEFAULT_MAX_QUEUED_WRITES: usize = 1024;

/// One etcd member as Envoy's cluster names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdEndpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SharedState {
    pub endpoints: Vec<EtcdEndpoint>,
    /// TLS to etcd (`https://` endpoints); files as written in the config.
    pub tls: Option<EtcdTls>,
    pub plan: SharedStatePlan,
}

/// TLS to etcd: where the CA (none: the system's) and this gateway's
/// certificate and key are, as written (relative to the config's directory
/// unless absolute).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdTls {
    pub ca_file: Option<String>,
    pub client: Option<(String, String)>,
}

pub(super) fn resolve_shared_state(
    c: &mut Checker,
    s: &SharedStateConfig,
    targets: &[Target],
    client_keys: &[ClientKey],
) -> SharedState {
    let at = "shared_state";
    if s.etcd_endpoints.is_empty() {
        c.error(
            format!("{at}.etcd_endpoints"),
            "at least one etcd endpoint is required (`http://HOST:PORT`)",
        );
    }
    let mut endpoints = Vec::new();
    let mut schemes = Vec::new();
    for (i, url) in s.etcd_endpoints.iter().enumerate() {
        let field = format!("{at}.etcd_endpoints[{i}]");
        match parse_base_url(url) {
            Ok(e) if schemes.first().is_some_and(|tls| *tls != e.tls) => c.error(
                field,
                format!(
                    "`{url}`: every endpoint is http:// or every one https:// (one Envoy cluster)"
                ),
            ),
            Ok(e) if !e.path_prefix.is_empty() || !e.query.is_empty() => c.error(
                field,
                format!("`{url}` must be http://HOST:PORT, without a path"),
            ),
            Ok(e) => {
                schemes.push(e.tls);
                endpoints.push(EtcdEndpoint {
                    host: e.host,
                    port: e.port,
                })
            }
            Err(why) => c.error(field, format!("`{url}` {why}")),
        }
    }
    let prefix = s
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string());
    if prefix.is_empty() || prefix.chars().any(char::is_control) {
        c.error(
            format!("{at}.key_prefix"),
            "must be non-empty, without control characters",
        );
    }
    let max_queued_writes = s.max_queued_writes.unwrap_or(DEFAULT_MAX_QUEUED_WRITES);
    if max_queued_writes == 0 {
        c.error(format!("{at}.max_queued_writes"), "must be greater than 0");
    }
    let tls = resolve_tls(c, s, schemes.first().copied().unwrap_or(false));
    SharedState {
        endpoints,
        tls,
        plan: SharedStatePlan {
            cluster: crate::envoy_names::ETCD_CLUSTER.into(),
            prefix,
            probe_lease_ms: targets.iter().map(|t| t.timeout_ms).max().unwrap_or(0),
            max_queued_writes,
            published_slots: published_slots(targets, client_keys),
            max_block_ms: max_block_ms(targets),
        },
    }
}

fn resolve_tls(c: &mut Checker, s: &SharedStateConfig, https: bool) -> Option<EtcdTls> {
    let at = "shared_state.tls";
    let Some(t) = &s.tls else {
        return https.then(EtcdTls::default);
    };
    if !https {
        c.error(
            at,
            "TLS needs https:// endpoints (`shared_state.etcd_endpoints`)",
        );
    }
    let client = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => {
            c.error(format!("{at}.key_file"), "`cert_file` needs its `key_file`");
            None
        }
        (None, Some(_)) => {
            c.error(
                format!("{at}.cert_file"),
                "`key_file` needs its `cert_file`",
            );
            None
        }
    };
    for (name, file) in [
        ("ca_file", &t.ca_file),
        ("cert_file", &t.cert_file),
        ("key_file", &t.key_file),
    ] {
        if file
            .as_ref()
            .is_some_and(|f| f.is_empty() || f.chars().any(char::is_control))
        {
            c.error(format!("{at}.{name}"), "must be a file's path");
        }
    }
    Some(EtcdTls {
        ca_file: t.ca_file.clone(),
        client,
    })
}

/// The longest block any request can write: a policy's Retry-After cap or
/// its latency block (the default cap without a policy).
fn max_block_ms(targets: &[Target]) -> u64 {
    targets
        .iter()
        .filter_map(|t| t.retry_policy.as_ref())
        .map(|p| {
            let latency = p.high_latency.as_ref().map_or(0, |hl| hl.block_ms);
            p.retry_after.max_ms.max(latency)
        })
        .max()
        .unwrap_or(crate::plan::DEFAULT_MAX_RETRY_AFTER_SECONDS * 1000)
}

/// The local slots whose counts the replicas add up: the retry budget of
/// every model, when a policy has a budget, and the latency events of every
/// target at each scope a global `min_triggers` above 1 counts them at (one
/// event is a block, shared as blocks are). A few more than a request may
/// reach: a slot no request writes is never published. And the counts of
/// every client key with limits, and of every paced target.
fn published_slots(targets: &[Target], client_keys: &[ClientKey]) -> Vec<String> {
    let policies = || targets.iter().filter_map(|t| t.retry_policy.as_ref());
    let mut slots = Vec::new();
    if policies().any(|p| p.retry_budget.is_some()) {
        slots.extend(
            targets
                .iter()
                .map(|t| BlockKey::Model(t.model.clone()).budget_slot()),
        );
    }
    for hl in policies().filter_map(|p| p.high_latency.as_ref()) {
        if hl.apply_to == BlockApplyTo::Global && hl.min_triggers > 1 {
            slots.extend(
                targets
                    .iter()
                    .map(|t| BlockKey::for_target(t, hl.scope).latency_slot()),
            );
        }
    }
    slots.extend(
        client_keys
            .iter()
            .filter(|k| k.limits.is_some())
            .map(|k| crate::limits::slot(&k.name)),
    );
    slots.extend(
        targets
            .iter()
            .filter(|t| t.pace.is_some())
            .map(crate::pacing::slot),
    );
    slots.sort();
    slots.dedup();
    slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EtcdTlsConfig;

    fn check(endpoints: &[&str], prefix: Option<&str>) -> (SharedState, Vec<String>) {
        let mut c = Checker { issues: Vec::new() };
        let config = SharedStateConfig {
            etcd_endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            key_prefix: prefix.map(str::to_string),
            max_queued_writes: None,
            tls: None,
        };
        let s = resolve_shared_state(&mut c, &config, &[], &[]);
        (s, c.issues.into_iter().map(|i| i.path).collect())
    }

    #[test]
    fn endpoints_and_defaults_resolve() {
        let (s, issues) = check(&["http://127.0.0.1:2379", "http://etcd-1:2379"], None);
        assert!(issues.is_empty());
        assert_eq!(
            s.endpoints[1],
            EtcdEndpoint {
                host: "etcd-1".into(),
                port: 2379
            }
        );
        assert_eq!(s.plan.prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(s.plan.max_queued_writes, DEFAULT_MAX_QUEUED_WRITES);
    }

    #[test]
    fn each_bad_field_is_named() {
        let (_, issues) = check(
            &[
                "http://etcd:2379",
                "https://etcd:2379",
                "etcd:2379",
                "http://e:1/path",
            ],
            Some(""),
        );
        assert_eq!(
            issues,
            [
                "shared_state.etcd_endpoints[1]",
                "shared_state.etcd_endpoints[2]",
                "shared_state.etcd_endpoints[3]",
                "shared_state.key_prefix"
            ]
        );
        assert_eq!(check(&[], None).1, ["shared_state.etcd_endpoints"]);
    }

    #[test]
    fn tls_needs_https_and_a_certificate_needs_its_key() {
        let tls = |endpoint: &str, t: EtcdTlsConfig| {
            let mut c = Checker { issues: Vec::new() };
            let config = SharedStateConfig {
                etcd_endpoints: vec![endpoint.into()],
                key_prefix: None,
                max_queued_writes: None,
                tls: Some(t),
            };
            let s = resolve_shared_state(&mut c, &config, &[], &[]);
            (
                s.tls,
                c.issues.into_iter().map(|i| i.path).collect::<Vec<_>>(),
            )
        };
        let files = |ca: Option<&str>, cert: Option<&str>, key: Option<&str>| EtcdTlsConfig {
            ca_file: ca.map(Into::into),
            cert_file: cert.map(Into::into),
            key_file: key.map(Into::into),
        };
        let (t, issues) = tls(
            "https://e:2379",
            files(Some("ca.pem"), Some("c.pem"), Some("k.pem")),
        );
        assert!(issues.is_empty());
        assert_eq!(
            t,
            Some(EtcdTls {
                ca_file: Some("ca.pem".into()),
                client: Some(("c.pem".into(), "k.pem".into()))
            })
        );
        assert_eq!(
            tls("http://e:2379", files(None, None, None)).1,
            ["shared_state.tls"]
        );
        assert_eq!(
            tls("https://e:2379", files(None, Some("c.pem"), None)).1,
            ["shared_state.tls.key_file"]
        );
        assert_eq!(
            tls("https://e:2379", files(Some(""), None, Some("k.pem"))).1,
            ["shared_state.tls.cert_file", "shared_state.tls.ca_file"]
        );
        // https:// alone: the system's CAs, no certificate of ours.
        let (s, issues) = check(&["https://e:2379"], None);
        assert!(issues.is_empty());
        assert_eq!(s.tls, Some(EtcdTls::default()));
    }

    /// The holder's plan of a config whose first model has `policy`.
    fn plan_with(policy: serde_json::Value) -> SharedStatePlan {
        let config: crate::config::GatewayConfig = serde_json::from_value(serde_json::json!({
            "version": "v0.3.0",
            "listeners": [{"type": "model", "name": "l", "port": 12000}],
            "model_providers": [
                {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "retry_policy": policy},
                {"model": "anthropic/claude", "base_url": "http://127.0.0.1:9"},
            ],
            "shared_state": {"etcd_endpoints": ["http://127.0.0.1:2379"]},
        }))
        .unwrap();
        let (r, issues) = crate::resolve::resolve(&config, &|_| None);
        assert!(issues.is_empty(), "{issues:?}");
        r.unwrap().shared_state.unwrap().plan
    }

    #[test]
    fn a_learned_block_is_capped_at_the_longest_block_a_policy_writes() {
        let longest = |policy| plan_with(policy).max_block_ms;
        assert_eq!(longest(serde_json::json!({})), 300_000);
        assert_eq!(
            longest(serde_json::json!({"retry_after_handling": {"max_retry_after_seconds": 7}})),
            7_000
        );
    }

    #[test]
    fn budgets_and_latency_events_counted_across_replicas_are_published() {
        let resolved = |policy| plan_with(policy).published_slots;
        assert_eq!(
            resolved(serde_json::json!({"retry_budget": {"ratio": 0.2}})),
            [
                "plano.budget.model.anthropic/claude",
                "plano.budget.model.openai/gpt-4o"
            ]
        );
        let latency = |min_triggers: u32| {
            serde_json::json!({"on_high_latency": {
                "threshold_ms": 100, "min_triggers": min_triggers,
                "trigger_window_seconds": 60, "scope": "provider"}})
        };
        assert_eq!(
            resolved(latency(3)),
            [
                "plano.latency.provider.anthropic",
                "plano.latency.provider.openai"
            ]
        );
        // One event is a block, and blocks are shared as they are.
        assert!(resolved(latency(1)).is_empty());
        // Each limited client key's counts.
        let config: crate::config::GatewayConfig = serde_json::from_value(serde_json::json!({
            "version": "v0.3.0",
            "listeners": [{"type": "model", "name": "l", "port": 12000, "client_keys": [
                {"name": "batch", "key": "batch-key-0123456789ab", "limits": {"requests_per_minute": 5}},
                {"name": "app", "key": "app-key-0123456789abcd"}]}],
            "model_providers": [{"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9"},
                {"model": "openai/o1", "base_url": "http://127.0.0.1:9", "rpm": 5}],
            "shared_state": {"etcd_endpoints": ["http://127.0.0.1:2379"]},
        }))
        .unwrap();
        let r = crate::resolve::resolve(&config, &|_| None).0.unwrap();
        // ...and each paced target's.
        let o1 = crate::pacing::slot(&r.plan.targets[1]);
        assert_eq!(
            r.shared_state.unwrap().plan.published_slots,
            ["plano.limit.batch", o1.as_str()]
        );
    }
}
