//! Envoy's names are written once, in `plano_core::envoy_names`: the filter
//! uses the constants and the template gets them as `names`. This renders a
//! config that uses every part of the template and finds each name where
//! the filter's code expects it: a route's cluster header where the filter
//! sets it, a root id on the plugin that must answer to it, a cluster's
//! endpoint on the listener the name says.

mod common;

use std::fs;

use common::{planoai_in, said, scratch_dir};
use plano_core::envoy_names::*;
use serde_yaml::Value;

/// One of each: a hedge (the hedge cluster and finder), an HTTPS provider,
/// `shared_state` (etcd's cluster, the etcd holder) and `tracing` (the
/// collector's cluster).
const CONFIG: &str = "version: v0.3.0
listeners: [{type: model, name: model_listener, port: 12000}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:8001
    access_key: k1
    default: true
    stall_timeout_ms: 60000
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      hedge: { after_ms: 400 }
  - model: anthropic/claude-3-5-sonnet
    base_url: https://api.anthropic.com
    access_key: k2
shared_state:
  etcd_endpoints: [http://127.0.0.1:2379]
tracing:
  endpoint: http://127.0.0.1:4317
";

/// Every mapping under `v` (itself included) that has `key`.
fn with_key<'v>(v: &'v Value, key: &str, out: &mut Vec<&'v Value>) {
    match v {
        Value::Mapping(m) => {
            if m.contains_key(key) {
                out.push(v);
            }
            m.values().for_each(|x| with_key(x, key, out));
        }
        Value::Sequence(s) => s.iter().for_each(|x| with_key(x, key, out)),
        _ => {}
    }
}

fn all<'v>(v: &'v Value, key: &str) -> Vec<&'v Value> {
    let mut out = Vec::new();
    with_key(v, key, &mut out);
    out
}

/// The values of `key` anywhere under `v`, as text.
fn values(v: &Value, key: &str) -> Vec<String> {
    all(v, key)
        .into_iter()
        .map(|m| match &m[key] {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other).unwrap().trim().to_string(),
        })
        .collect()
}

/// The resource named `name` in a DiscoveryResponse's `resources`.
fn resource<'v>(doc: &'v Value, name: &str) -> &'v Value {
    doc["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no resource named {name}"))
}

/// The wasm plugins' (root id, vm id) under `v`.
fn plugins(v: &Value) -> Vec<(String, String)> {
    all(v, "root_id")
        .into_iter()
        .map(|c| {
            let root = c["root_id"].as_str().unwrap().to_string();
            let vm = c["vm_config"]["vm_id"].as_str().unwrap().to_string();
            (root, vm)
        })
        .collect()
}

fn names_of(v: &Value) -> Vec<String> {
    values(v, "name")
}

#[test]
fn the_rendered_config_carries_each_name_where_the_filter_expects_it() {
    let dir = scratch_dir("names", "render");
    fs::write(dir.join("gw.yaml"), CONFIG).unwrap();
    let out = planoai_in(&dir, &["render", "gw.yaml", "-o", "out"]);
    assert!(out.status.success(), "{}", said(&out));
    let read = |f: &str| -> Value {
        serde_yaml::from_str(&fs::read_to_string(dir.join("out").join(f)).unwrap()).unwrap()
    };
    let (bootstrap, lds, cds) = (read("envoy.yaml"), read("lds.yaml"), read("cds.yaml"));

    // The client listener: the gateway filter, the routes the filter's
    // headers pick, the redirect's route, the stats `planoai` reads.
    let client = resource(&lds, CLIENT_LISTENER);
    let wanted = (GATEWAY_ROOT_ID.to_string(), VM_ID.to_string());
    assert_eq!(plugins(client), [wanted]);
    assert_eq!(values(client, "stat_prefix"), [CLIENT_STAT_PREFIX]);
    let cluster_headers = values(client, "cluster_header");
    assert_eq!(cluster_headers, [CLUSTER_HEADER, STREAM_HEADER]);
    let next = all(client, "match")
        .into_iter()
        .find(|r| r["name"].as_str() == Some(NEXT_ATTEMPT_ROUTE))
        .expect("the next attempt's route");
    assert_eq!(next["match"]["prefix"].as_str(), Some(NEXT_ATTEMPT_PATH));
    assert_eq!(
        values(client, "allowed_route_names"),
        [format!("- {NEXT_ATTEMPT_ROUTE}")]
    );

    // The attempt listener: routes by the target header and the try
    // timeout header, marks its own replies, finds hedges.
    let attempt = resource(&lds, ATTEMPT_LISTENER);
    let wanted = (HEDGE_FINDER_ROOT_ID.to_string(), VM_ID.to_string());
    assert_eq!(plugins(attempt), [wanted]);
    let targets = values(attempt, "cluster_header");
    assert!(targets.len() >= 2 && targets.iter().all(|h| h == TARGET_HEADER));
    assert!(names_of(attempt).contains(&TRY_TIMEOUT_HEADER.to_string()));
    assert!(values(attempt, "key").contains(&LOCAL_REPLY_HEADER.to_string()));

    let status = resource(&lds, STATUS_LISTENER);
    let wanted = (STATUS_ROOT_ID.to_string(), VM_ID.to_string());
    assert_eq!(plugins(status), [wanted]);

    // The stream cluster leads to the attempt listener past the attempt
    // filter; the hedge cluster too, past no plugin.
    let stream = resource(&cds, STREAM_CLUSTER);
    assert_eq!(values(stream, "server_listener_name"), [ATTEMPT_LISTENER]);
    let wanted = (ATTEMPT_ROOT_ID.to_string(), VM_ID.to_string());
    assert_eq!(plugins(stream), [wanted]);
    let hedge = resource(&cds, HEDGE_CLUSTER);
    assert_eq!(values(hedge, "server_listener_name"), [ATTEMPT_LISTENER]);
    assert!(plugins(hedge).is_empty());

    // Each provider cluster: through its framing listener (the framing
    // repair) to its direct cluster, the attempt listener's mark taken off.
    let providers: Vec<&Value> = cds["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|c| !values(c, "remove").is_empty())
        .collect();
    assert_eq!(providers.len(), 2);
    let mut stalled = 0;
    for c in providers {
        let name = c["name"].as_str().unwrap();
        assert!(values(c, "remove").contains(&LOCAL_REPLY_HEADER.to_string()));
        let framing = format!("{name}{FRAMING_SUFFIX}");
        assert_eq!(values(c, "server_listener_name"), [framing.as_str()]);
        let listener = resource(&lds, &framing);
        let wanted = (FRAMING_ROOT_ID.to_string(), FRAMING_VM_ID.to_string());
        assert_eq!(plugins(listener), [wanted]);
        let direct = format!("{name}{DIRECT_SUFFIX}");
        resource(&cds, &direct);
        // With `stall_timeout_ms` (one entry), through the stall listener's
        // socket to the direct cluster; without it, straight there.
        let stall = format!("{name}{STALL_SUFFIX}");
        if values(listener, "cluster") == [stall.as_str()] {
            stalled += 1;
            assert_eq!(values(listener, "cluster"), [stall.as_str()]);
            let stall_listener = resource(&lds, &stall);
            let socket = values(stall_listener, "path");
            assert_eq!(socket.len(), 1);
            assert_eq!(values(resource(&cds, &stall), "path"), socket);
            assert_eq!(values(stall_listener, "cluster"), [direct.as_str()]);
        } else {
            assert_eq!(values(listener, "cluster"), [direct.as_str()]);
        }
    }
    assert_eq!(
        stalled, 1,
        "only the entry with stall_timeout_ms has a stall listener"
    );
    resource(&cds, TRACE_CLUSTER);

    // etcd's cluster and the etcd holder, in the bootstrap.
    let statics = &bootstrap["static_resources"]["clusters"];
    assert!(names_of(statics).contains(&ETCD_CLUSTER.to_string()));
    let extensions = &bootstrap["bootstrap_extensions"];
    let wanted = (SHARED_STATE_ROOT_ID.to_string(), VM_ID.to_string());
    assert_eq!(plugins(extensions), [wanted]);

    // The filter drops every `x-plano-*` header a client sends: each
    // internal header must be one.
    for h in [
        CLUSTER_HEADER,
        STREAM_HEADER,
        TARGET_HEADER,
        EXCHANGE_HEADER,
        TRY_TIMEOUT_HEADER,
        LOCAL_REPLY_HEADER,
        HEDGE_HEADER,
    ] {
        assert!(h.starts_with("x-plano-"), "{h}");
    }
}

#[test]
fn the_template_takes_its_names_from_core() {
    // Every name the template is given is used; no internal header, cluster
    // of the gateway's own or redirect path is written there as a literal
    // (a comment may mention one). Listeners' stat prefixes and route
    // configs' names, which no code reads, may share a listener's name.
    let template =
        fs::read_to_string(format!("{}/envoy/envoy.yaml.j2", common::WORKSPACE)).unwrap();
    let code: Vec<&str> = template
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim_start().starts_with("{#"))
        .collect();
    let code = code.join("\n");
    for (key, _) in TEMPLATE {
        assert!(code.contains(&format!("names.{key}")), "names.{key} unused");
    }
    let literals = [
        "x-plano-",
        STREAM_CLUSTER,
        HEDGE_CLUSTER,
        TRACE_CLUSTER,
        ETCD_CLUSTER,
        NEXT_ATTEMPT_PATH,
        NEXT_ATTEMPT_ROUTE,
    ];
    for literal in literals {
        assert!(!code.contains(literal), "{literal} written in the template");
    }
}
