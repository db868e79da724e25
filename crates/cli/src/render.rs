//! Renders Envoy's config from the resolved gateway with the template in
//! `envoy/`, and writes it where only its owner can read it: it holds keys.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use minijinja::{context, Environment};
use serde::Serialize;

use crate::load::Loaded;

const TEMPLATE: &str = include_str!("../../../envoy/envoy.yaml.j2");
const KUBERNETES: &str = include_str!("../../../envoy/kubernetes.yaml.j2");
/// Where the sidecar finds the filter (a ConfigMap mounted there).
pub const SIDECAR_WASM: &str = "/usr/local/share/plano/plano_filter.wasm";
/// Where the sidecar mounts the Secret with envoy.yaml and the key files.
pub const SIDECAR_CONFIG_DIR: &str = "/etc/plano";
pub const ADMIN_PORT: u16 = 9901;
/// Loopback listener where the filter reports its blocks.
pub const STATUS_PORT: u16 = 9902;
/// Kubernetes only: the kubelet probes the pod's IP, which the gateway's
/// loopback listener does not serve, so a listener there answers `/healthz`
/// and nothing else.
pub const PROBE_PORT: u16 = 9903;
/// What every request the gateway does not serve gets.
const NOT_FOUND: &str = r#"{"error":{"type":"not_found","message":"the gateway serves POST /v1/chat/completions, GET /v1/models and GET /healthz"}}"#;
/// Internal redirects one streamed request may take: one per retry, and the
/// retry budgets end far sooner.
const MAX_REDIRECTS: u32 = 100;
/// Envoy's heap limit (the overload manager's `fixed_heap`). A stream in
/// flight costs the gateway about 150 KB (README, Performance): 4 GiB holds
/// the default 10,000 connections each streaming, with room to spare; a
/// 1 GiB limit refused streams past about 8,000 in the bench.
const HEAP_BYTES: u64 = 4 << 30;

#[derive(Serialize)]
struct Cluster {
    name: String,
    address: String,
    port: u16,
    host: String,
    tls: bool,
    #[serde(rename = "static")]
    is_static: bool,
    connect_timeout: String,
    /// Path of the SDS file holding this cluster's `Authorization` value.
    key_file: Option<String>,
}

/// Envoy's config and the secret files it reads the provider keys from.
pub struct Rendered {
    pub envoy_yaml: String,
    /// (file name, contents): one SDS secret per provider key.
    pub keys: Vec<(String, String)>,
}

impl Rendered {
    /// Writes envoy.yaml and the key files into `dir`, owner-only.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_private(&dir.join("envoy.yaml"), self.envoy_yaml.as_bytes())?;
        for (name, contents) in &self.keys {
            write_private(&dir.join(name), contents.as_bytes())?;
        }
        Ok(())
    }
}

/// An SDS file with one generic secret: what the credential injector sets.
fn key_secret(name: &str, key: &str) -> Result<String> {
    let doc = serde_json::json!({"resources": [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": name,
        "generic_secret": {"secret": {"inline_string": format!("Bearer {key}")}},
    }]});
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// `host.docker.internal` is "the machine the gateway runs on": natively
/// that is loopback, and the container runs on the host's network.
fn connect_address(host: &str) -> String {
    match host {
        "host.docker.internal" | "localhost" => "127.0.0.1".into(),
        h => h.trim_start_matches('[').trim_end_matches(']').to_string(),
    }
}

/// Renders Envoy's config for a run whose files sit in `keys_dir` as Envoy
/// sees it (the key files are named there); `probe_port` adds the Kubernetes
/// probe listener.
pub fn render(
    loaded: &Loaded,
    wasm_path: &str,
    keys_dir: &str,
    probe_port: Option<u16>,
) -> Result<Rendered> {
    let r = &loaded.resolved;
    let mut keys = Vec::new();
    let mut clusters = Vec::new();
    for (t, e) in r.plan.targets.iter().zip(&r.endpoints) {
        let address = connect_address(&e.host);
        let key_file = match &e.access_key {
            Some(key) => {
                let name = format!("{}.key.json", t.cluster);
                keys.push((name.clone(), key_secret(&t.cluster, key)?));
                Some(format!("{}/{name}", keys_dir.trim_end_matches('/')))
            }
            None => None,
        };
        clusters.push(Cluster {
            name: t.cluster.clone(),
            is_static: address.parse::<std::net::IpAddr>().is_ok(),
            address,
            port: e.port,
            host: e.host.clone(),
            tls: e.tls,
            connect_timeout: format!("{:.3}s", t.timeout_ms.min(10_000) as f64 / 1000.0),
            key_file,
        });
    }
    let mut plan = r.plan.clone();
    plan.status_port = Some(STATUS_PORT);
    let plan_json = serde_json::to_string(&plan)?;
    let envoy_yaml = render_yaml(
        TEMPLATE,
        context! {
            source => loaded.path.display().to_string(),
            admin_port => ADMIN_PORT,
            status_port => STATUS_PORT,
            listener_name => "model_listener",
            listener_address => r.listener_address,
            listener_port => r.listener_port,
            access_log => r.access_log,
            buffer_limit => r.plan.max_request_body_bytes + 1024 * 1024,
            body_limit => r.plan.max_request_body_bytes,
            wasm_path => wasm_path,
            plan_json => plan_json,
            clusters => clusters,
            ca_bundle => crate::paths::ca_bundle(),
            not_found => NOT_FOUND,
            try_timeouts => try_timeouts(&r.plan),
            max_redirects => MAX_REDIRECTS,
            max_connections => r.max_connections,
            heap_bytes => HEAP_BYTES,
            probe_port => probe_port,
        },
    )?;
    Ok(Rendered { envoy_yaml, keys })
}

/// Every time-to-headers limit a streamed attempt may have: each target's
/// `timeout_ms` and each `ttfb` threshold.
fn try_timeouts(plan: &plano_core::plan::GatewayPlan) -> Vec<u64> {
    let mut limits: Vec<u64> = plan
        .targets
        .iter()
        .flat_map(|t| {
            let ttfb = t
                .retry_policy
                .as_ref()
                .and_then(|p| p.high_latency.as_ref())
                .filter(|hl| hl.measure == plano_core::config::Measure::Ttfb)
                .map(|hl| hl.threshold_ms);
            std::iter::once(t.timeout_ms).chain(ttfb)
        })
        .collect();
    limits.sort_unstable();
    limits.dedup();
    limits
}

/// A Secret holding the rendered files and a Deployment running Envoy as a
/// sidecar.
pub fn kubernetes(rendered: &Rendered) -> Result<String> {
    let indent = |text: &str| -> String { text.lines().map(|l| format!("    {l}\n")).collect() };
    let keys: Vec<_> = rendered
        .keys
        .iter()
        .map(|(name, contents)| context! { name => name, contents => indent(contents) })
        .collect();
    render_yaml(
        KUBERNETES,
        context! {
            envoy_yaml => indent(&rendered.envoy_yaml),
            keys => keys,
            probe_port => PROBE_PORT,
        },
    )
}

/// Renders a YAML template. minijinja would JSON-escape every value of a
/// `.yaml` template; the templates quote with `tojson` where a value needs it.
fn render_yaml(template: &str, values: minijinja::Value) -> Result<String> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_template("template", template)?;
    Ok(env.get_template("template")?.render(values)?)
}

/// Writes `contents` to `path` readable by the owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents)?;
    Ok(())
}
