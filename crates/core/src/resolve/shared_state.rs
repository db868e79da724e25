//! `shared_state`: the etcd endpoints and key prefix, checked at their
//! fields.

use super::endpoint::parse_base_url;
use super::Checker;
use crate::config::SharedStateConfig;
use crate::plan::Target;
use crate::replicas::SharedStatePlan;

pub const DEFAULT_KEY_PREFIX: &str = "/plano/";
pub const DEFAULT_MAX_QUEUED_WRITES: usize = 1024;
/// Envoy's cluster of the etcd endpoints.
pub const ETCD_CLUSTER: &str = "plano_etcd";

/// One etcd member as Envoy's cluster names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdEndpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SharedState {
    pub endpoints: Vec<EtcdEndpoint>,
    pub plan: SharedStatePlan,
}

pub(super) fn resolve_shared_state(
    c: &mut Checker,
    s: &SharedStateConfig,
    targets: &[Target],
) -> SharedState {
    let at = "shared_state";
    if s.etcd_endpoints.is_empty() {
        c.error(
            format!("{at}.etcd_endpoints"),
            "at least one etcd endpoint is required (`http://HOST:PORT`)",
        );
    }
    let mut endpoints = Vec::new();
    for (i, url) in s.etcd_endpoints.iter().enumerate() {
        let field = format!("{at}.etcd_endpoints[{i}]");
        match parse_base_url(url) {
            Ok(e) if e.tls => c.error(
                field,
                format!("`{url}`: TLS to etcd is not supported yet; use http:// (a member on this host or a private network)"),
            ),
            Ok(e) if !e.path_prefix.is_empty() || !e.query.is_empty() => {
                c.error(field, format!("`{url}` must be http://HOST:PORT, without a path"))
            }
            Ok(e) => endpoints.push(EtcdEndpoint {
                host: e.host,
                port: e.port,
            }),
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
    SharedState {
        endpoints,
        plan: SharedStatePlan {
            cluster: ETCD_CLUSTER.into(),
            prefix,
            probe_lease_ms: targets.iter().map(|t| t.timeout_ms).max().unwrap_or(0),
            max_queued_writes,
        },
    }
}
