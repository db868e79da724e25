//! Renders Envoy's config from the resolved gateway with the template in
//! `envoy/`, and writes it where only its owner can read it: it holds keys.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use minijinja::{context, Environment};
use serde::Serialize;

use plano_core::envoy_names;

use crate::load::Loaded;

mod etcd;
pub mod google;
use etcd::shared_state;

const TEMPLATE: &str = include_str!("../../../envoy/envoy.yaml.j2");
const KUBERNETES: &str = include_str!("../../../envoy/kubernetes.yaml.j2");
/// Where the sidecar finds the filter (a ConfigMap mounted there).
pub const SIDECAR_WASM: &str = "/usr/local/share/plano/plano_filter.wasm";
/// Where the sidecar mounts the Secret with envoy.yaml and the key files.
pub const SIDECAR_CONFIG_DIR: &str = "/etc/plano";
pub use plano_core::resolve::guards::{ADMIN_PORT, PROBE_PORT, STATUS_PORT};
/// What every request the gateway does not serve gets: what it serves.
fn not_found() -> String {
    plano_core::api::ErrorShape::Openai.body(
        "not_found",
        &format!("the gateway serves {}", plano_core::api::served_list()),
    )
}
/// Internal redirects one streamed request may take: one per retry, and the
/// retry budgets end far sooner.
const MAX_REDIRECTS: u32 = 100;
/// Envoy's heap limit (the overload manager's `fixed_heap`). A stream in
/// flight costs the gateway about 150 KB (docs/performance.md): 4 GiB holds
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
    /// The longest silence on the provider's connection (`stall_timeout_ms`);
    /// without it, no stall listener.
    stall_timeout: Option<String>,
    /// The Unix socket of the listener that enforces it.
    stall_socket: String,
    /// How long a pooled connection may wait for its next request: half the
    /// stall bound, so the pool lets go of it before the stall listener
    /// closes it under a request just sent.
    pool_idle_timeout: Option<String>,
    /// The static secret holding the value of this cluster's key header.
    key_secret: Option<String>,
    /// The header the key goes in (`authorization`: `Bearer KEY`).
    key_header: String,
    /// The AWS region Envoy signs this cluster's requests for (SigV4), with
    /// credentials from AWS's default chain: Envoy reads them, never the plan.
    sigv4_region: Option<String>,
}

/// The Unix socket of provider cluster `n`'s stall listener: an abstract
/// name (no file, so a read-only config directory does), unique in the
/// network namespace by the gateway's own ports, which no other gateway
/// there can hold (Docker mode shares the host's).
fn stall_socket(listener_port: u16, admin_port: u16, n: usize) -> String {
    format!("@plano_stall_{listener_port}_{admin_port}_{n}")
}

/// A provider key as Envoy reads it: a static secret from an owner-only file.
#[derive(Serialize)]
struct Secret {
    name: String,
    file: String,
}

/// Envoy's config and the secret files it reads the provider keys from.
pub struct Rendered {
    /// The bootstrap: admin, node, extensions, and where the rest is.
    pub envoy_yaml: String,
    /// Every listener, as a DiscoveryResponse Envoy watches.
    pub lds_yaml: String,
    /// Every cluster, likewise.
    pub cds_yaml: String,
    /// (file name, contents): one file per distinct provider key.
    pub keys: Vec<(String, String)>,
}

impl Rendered {
    /// Writes the files into `dir`, owner-only. Each is renamed into place,
    /// so Envoy watching `dir` never reads half a file, in an order in which
    /// nothing names what is not there yet: keys, clusters, listeners.
    pub fn write(&self, dir: &Path) -> Result<()> {
        // Keys in a directory of their own: Envoy re-reads lds.yaml and
        // cds.yaml at every file moved into `dir`, and 500 keys are 500 moves.
        let keys = dir.join(KEY_DIR);
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&keys)
            .with_context(|| format!("cannot create {}", keys.display()))?;
        for (name, contents) in &self.keys {
            let path = keys.join(name);
            if fs::read(&path).ok().as_deref() != Some(contents.as_bytes()) {
                write_atomic(&path, contents.as_bytes())?;
            }
        }
        write_atomic(&dir.join("cds.yaml"), self.cds_yaml.as_bytes())?;
        write_atomic(&dir.join("lds.yaml"), self.lds_yaml.as_bytes())?;
        write_atomic(&dir.join("envoy.yaml"), self.envoy_yaml.as_bytes())?;
        // A removed provider's key file goes too.
        for name in key_files(dir) {
            if !self.keys.iter().any(|(k, _)| *k == name) {
                let _ = fs::remove_file(keys.join(name));
            }
        }
        Ok(())
    }
}

/// The names of the key files under `dir`.
pub fn key_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir.join(KEY_DIR))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(KEY_SUFFIX))
        .collect()
}

/// Where the key files are, in the config directory.
pub const KEY_DIR: &str = "keys";
pub const KEY_SUFFIX: &str = ".key";

impl Rendered {
    /// The same config with every listener and cluster static: what
    /// `envoy --mode validate` checks in full (it does not read the watched
    /// files a bootstrap names).
    pub fn static_equivalent(&self) -> Result<String> {
        let resources = |text: &str| -> Result<serde_yaml::Value> {
            let mut doc: serde_yaml::Value = serde_yaml::from_str(text)?;
            let mut list = doc
                .get_mut("resources")
                .map(std::mem::take)
                .unwrap_or_default();
            if let Some(items) = list.as_sequence_mut() {
                for item in items.iter_mut().filter_map(|i| i.as_mapping_mut()) {
                    item.remove("@type");
                }
            }
            Ok(list)
        };
        let mut bootstrap: serde_yaml::Mapping = serde_yaml::from_str(&self.envoy_yaml)?;
        bootstrap.remove("dynamic_resources");
        // The bootstrap's own static resources (the key secrets) stay.
        let mut statics = match bootstrap.remove("static_resources") {
            Some(serde_yaml::Value::Mapping(m)) => m,
            _ => serde_yaml::Mapping::new(),
        };
        statics.insert("listeners".into(), resources(&self.lds_yaml)?);
        // The bootstrap's own clusters (etcd's) stay too.
        let mut clusters = match statics.remove("clusters") {
            Some(serde_yaml::Value::Sequence(c)) => c,
            _ => Vec::new(),
        };
        if let serde_yaml::Value::Sequence(dynamic) = resources(&self.cds_yaml)? {
            clusters.extend(dynamic);
        }
        statics.insert("clusters".into(), clusters.into());
        bootstrap.insert("static_resources".into(), statics.into());
        Ok(serde_yaml::to_string(&bootstrap)?)
    }
}

/// `host.docker.internal` is "the machine the gateway runs on": natively
/// that is loopback, and the container runs on the host's network.
fn connect_address(host: &str) -> String {
    match host {
        "host.docker.internal" | "localhost" => "127.0.0.1".into(),
        h => h.trim_start_matches('[').trim_end_matches(']').to_string(),
    }
}

/// Renders Envoy's config for a run whose files sit in `config_dir` as Envoy
/// sees it (the bootstrap names the others there); `probe_port` adds the
/// Kubernetes probe listener.
pub fn render(
    loaded: &Loaded,
    wasm_path: &str,
    config_dir: &str,
    probe_port: Option<u16>,
) -> Result<Rendered> {
    let config_dir = config_dir.trim_end_matches('/');
    let r = &loaded.resolved;
    // One static secret per distinct key, read from its file once at start:
    // no file watch per key (each costs an inotify instance, and the system
    // allows 128), and no key in any config Envoy's admin shows.
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut secrets: Vec<Secret> = Vec::new();
    let mut clusters = Vec::new();
    for (t, e) in r.plan.targets.iter().zip(&r.endpoints) {
        let address = connect_address(&e.host);
        let key_secret = e.access_key.as_ref().map(|key| {
            // `Bearer KEY` in `authorization`, the bare key elsewhere (Azure's `api-key`).
            let value = if e.key_header == "authorization" {
                format!("Bearer {key}")
            } else {
                key.to_string()
            };
            let n = match keys.iter().position(|(_, v)| *v == value) {
                Some(n) => n,
                None => {
                    let file = format!("provider_{}{KEY_SUFFIX}", keys.len());
                    secrets.push(Secret {
                        name: format!("provider_key_{}", keys.len()),
                        file: format!("{config_dir}/{KEY_DIR}/{file}"),
                    });
                    keys.push((file, value));
                    keys.len() - 1
                }
            };
            secrets[n].name.clone()
        });
        clusters.push(Cluster {
            name: t.cluster.clone(),
            is_static: address.parse::<std::net::IpAddr>().is_ok(),
            address,
            port: e.port,
            host: e.host.clone(),
            tls: e.tls,
            connect_timeout: format!("{:.3}s", t.timeout_ms.min(10_000) as f64 / 1000.0),
            stall_timeout: t
                .stall_timeout_ms
                .map(|ms| format!("{:.3}s", ms as f64 / 1000.0)),
            stall_socket: stall_socket(r.listener_port, r.admin_port, clusters.len()),
            pool_idle_timeout: t
                .stall_timeout_ms
                .map(|ms| format!("{:.3}s", ms as f64 / 2000.0)),
            key_secret,
            key_header: e.key_header.clone(),
            sigv4_region: e.sigv4_region.clone(),
        });
    }
    let mut plan = r.plan.clone();
    let google = google::tokens(loaded, &mut plan, &mut keys, KEY_SUFFIX)?;
    plan.status_port = Some(r.status_port);
    plan.hop_token = hop_token(loaded);
    let plan_json = serde_json::to_string(&plan)?;
    let values = context! {
        source => loaded.path.display().to_string(),
        config_dir => config_dir,
        admin_port => r.admin_port,
        status_port => r.status_port,
        names => envoy_names::TEMPLATE.into_iter().collect::<BTreeMap<_, _>>(),
        listener_address => r.listener_address,
        listener_port => r.listener_port,
        access_log => r.access_log,
        buffer_limit => r.plan.max_request_body_bytes + 1024 * 1024,
        body_limit => r.plan.max_request_body_bytes,
        wasm_path => wasm_path,
        plan_json => plan_json,
        clusters => clusters,
        secrets => secrets,
        ca_bundle => crate::paths::ca_bundle(),
        not_found => not_found(),
        try_timeouts => try_timeouts(&r.plan),
        max_redirects => MAX_REDIRECTS,
        max_connections => r.max_connections,
        heap_bytes => HEAP_BYTES,
        probe_port => probe_port,
        shared_state => shared_state(loaded, config_dir, &mut keys)?,
        collector => collector(r),
        token_clusters => google.clusters,
        google_tokens => google.minter_json,
        google_env => google.env_names,
    };
    let part = |part: &str| render_yaml(TEMPLATE, context! { part, ..values.clone() });
    Ok(Rendered {
        envoy_yaml: part("bootstrap")? + "\n",
        lds_yaml: versioned(part("lds")?),
        cds_yaml: versioned(part("cds")?),
        keys,
    })
}

/// The trace collector's cluster, when `tracing` is set.
fn collector(r: &plano_core::resolve::Resolved) -> Option<minijinja::Value> {
    r.collector.as_ref().map(|e| {
        let address = connect_address(&e.host);
        minijinja::Value::from_serialize(serde_json::json!({
            "name": plano_core::envoy_names::TRACE_CLUSTER,
            "static": address.parse::<std::net::IpAddr>().is_ok(),
            "address": address,
            "port": e.port,
            "host": e.host,
            "tls": e.tls,
        }))
    })
}

/// The gateway's loop-detection token, from its listener and targets: the
/// same on every render of one config (a re-applied config changes nothing,
/// and a rendered manifest is reproducible), another for a gateway that
/// listens elsewhere or sends elsewhere, such as the next in a chain.
fn hop_token(loaded: &Loaded) -> String {
    let r = &loaded.resolved;
    let targets = serde_json::to_string(&r.plan.targets).unwrap_or_default();
    content_version(&format!(
        "{}:{}|{targets}",
        r.listener_address, r.listener_port
    ))
}

/// A DiscoveryResponse with its contents' hash as `version_info`: Envoy
/// reports the version it applied (`planoai up` waits for it).
fn versioned(resources: String) -> String {
    format!(
        "version_info: \"{}\"\n{resources}",
        content_version(&resources)
    )
}

/// FNV-1a of the text: stable across builds, unlike std's hasher.
pub fn content_version(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
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
            lds_yaml => indent(&rendered.lds_yaml),
            cds_yaml => indent(&rendered.cds_yaml),
            keys => keys,
            google_env => google::env_of_keys(&rendered.keys, KEY_SUFFIX),
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

/// Writes `contents` to a temporary file beside `path`, owner-only, and
/// renames it to `path`: a reader sees the old file or the new one.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_private(&tmp, contents)?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
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
