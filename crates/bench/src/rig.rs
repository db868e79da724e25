//! Envoys the bench starts itself: bare Envoy, bare Envoy with the floor
//! filter, and the gateway rendered by `planoai render` with bench-local
//! rewrites of its envoy.yaml (the levers).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{envoy_binary, wait_listening};
use plano_core::envoy_names;

/// An Envoy the bench started; killed when dropped.
pub struct Envoy {
    pub child: Child,
    pub port: u16,
}

impl Envoy {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn floor_wasm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/wasm32-wasip1/release/plano_floor.wasm")
}

fn spawn(config: &str, dir: &Path, name: &str, port: u16, base_id: u32) -> Result<Envoy> {
    let path = dir.join(format!("{name}.envoy.yaml"));
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(dir.join(format!("{name}.envoy.log")))?;
    let child = Command::new(envoy_binary()?)
        .args(["-c", path.to_str().unwrap_or_default()])
        .args(["--concurrency", "2", "--disable-hot-restart"])
        .args(["--base-id", &base_id.to_string()])
        .args(["--log-level", "warn", "--component-log-level", "wasm:info"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start Envoy")?;
    let envoy = Envoy { child, port };
    if wait_listening(port).is_err() {
        let text =
            std::fs::read_to_string(dir.join(format!("{name}.envoy.log"))).unwrap_or_default();
        bail!(
            "{name}: Envoy did not start: {}",
            text.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(envoy)
}

/// Bare Envoy's listener and cluster; with `wasm` = (runtime, knobs), the
/// floor filter in front of the router.
pub fn plain(
    mock_port: u16,
    dir: &Path,
    name: &str,
    port: u16,
    admin: u16,
    base_id: u32,
    wasm: Option<(&str, &str)>,
) -> Result<Envoy> {
    let filter = match wasm {
        None => String::new(),
        Some((runtime, knobs)) => format!(
            r#"                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: floor
                        root_id: floor
                        allow_on_headers_stop_iteration: true
                        vm_config:
                          vm_id: floor
                          runtime: envoy.wasm.runtime.{runtime}
                          code: {{local: {{filename: {wasm}}}}}
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: "{knobs}"
"#,
            wasm = floor_wasm().display()
        ),
    };
    let route = "{cluster: mock, timeout: 0s}";
    let endpoints = format!("[{{lb_endpoints: [{}]}}]", endpoint(mock_port));
    let config = bare_config(port, admin, &filter, route, &endpoints);
    spawn(&config, dir, name, port, base_id)
}

/// Bare Envoy making a failover's two calls: the first to `limited` (a
/// 429), retried at once on `ok` (the next priority, as the gateway's
/// fallback is another cluster). What a failover costs without the gateway.
pub fn failover(
    limited: u16,
    ok: u16,
    dir: &Path,
    port: u16,
    admin: u16,
    base_id: u32,
) -> Result<Envoy> {
    // A 1 ms base back-off is no wait: Envoy's first one is a random
    // whole number of ms under the base.
    let route = r#"{cluster: mock, timeout: 0s, retry_policy: {retry_on: retriable-status-codes, retriable_status_codes: [429], num_retries: 1, retry_back_off: {base_interval: 0.001s, max_interval: 0.001s}, retry_priority: {name: envoy.retry_priorities.previous_priorities, typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig, update_frequency: 1}}}}"#;
    let endpoints = format!(
        "[{{priority: 0, lb_endpoints: [{}]}}, {{priority: 1, lb_endpoints: [{}]}}]",
        endpoint(limited),
        endpoint(ok)
    );
    let config = bare_config(port, admin, "", route, &endpoints);
    spawn(&config, dir, "bare-failover", port, base_id)
}

fn endpoint(port: u16) -> String {
    format!(
        "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}"
    )
}

/// Bare Envoy's listener, `filter` before the router, one route to the
/// cluster `mock` with these endpoints.
fn bare_config(port: u16, admin: u16, filter: &str, route: &str, endpoints: &str) -> String {
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
    - name: bare
      address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
      per_connection_buffer_limit_bytes: 11534336
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bare
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes: [{{match: {{prefix: /}}, route: {route}}}]
                http_filters:
{filter}                  - name: envoy.filters.http.router
                    typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
    - name: mock
      type: STATIC
      connect_timeout: 5s
      per_connection_buffer_limit_bytes: 11534336
      circuit_breakers: {{thresholds: [{{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000, max_retries: 100000}}]}}
      load_assignment:
        cluster_name: mock
        endpoints: {endpoints}
"#
    )
}

/// A rewrite of the rendered envoy.yaml: one lever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lever {
    /// Plain-HTTP providers' clusters go straight to the provider, without
    /// the internal listener and its framing wasm network filter.
    NoFramingHop,
    /// The framing listener's `tcp_proxy` goes straight to the provider,
    /// without the stall listener past it (decision 023).
    NoStallHop,
    /// Without the YAML block that a line starting with this opens.
    Drop(&'static str),
    /// The gateway's filters from this .wasm file.
    Wasm(String),
}

/// `planoai render` of `config`, each lever applied, ports moved to
/// `port` / `admin` / `admin + 1`, started by the bench.
pub fn rendered(
    dir: &Path,
    name: &str,
    config: &str,
    port: u16,
    admin: u16,
    base_id: u32,
    levers: &[Lever],
) -> Result<Envoy> {
    let out = dir.join(name);
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, config)?;
    let done = Command::new("planoai")
        .arg("render")
        .arg(&file)
        .arg("-o")
        .arg(&out)
        .env("PLANO_HOME", dir.join(format!("{name}.home")))
        .output()?;
    if !done.status.success() {
        bail!("planoai render: {}", String::from_utf8_lossy(&done.stderr));
    }
    // The admin and status ports moved wherever they are named (the status
    // listener is in lds.yaml), so several rendered gateways run at once.
    let moved = |text: String| {
        text.replace("port_value: 9901 }", &format!("port_value: {admin} }}"))
            .replace(
                "port_value: 9902 }",
                &format!("port_value: {} }}", admin + 1),
            )
    };
    // Listeners and clusters are in the files the bootstrap names.
    let names = ["envoy.yaml", "lds.yaml", "cds.yaml"];
    let mut files = Vec::new();
    for file in names {
        files.push(moved(std::fs::read_to_string(out.join(file))?));
    }
    for lever in levers {
        let changed = files
            .iter()
            .map(|text| apply(text, lever))
            .collect::<Result<Vec<_>>>()?;
        // A lever that matches nothing would measure the unchanged gateway
        // under the lever's name. (Line by line: a rewrite may end the last
        // line with a newline.)
        if changed
            .iter()
            .zip(&files)
            .all(|(a, b)| a.lines().eq(b.lines()))
        {
            bail!("{name}: the lever {lever:?} changes nothing in the rendered config");
        }
        files = changed;
    }
    for (file, text) in names.iter().zip(&files) {
        std::fs::write(out.join(file), text)?;
    }
    let envoy = spawn(&files[0], dir, name, port, base_id)?;
    accepted(name, admin)?;
    Ok(envoy)
}

/// Waits until Envoy has taken the listeners and clusters from lds.yaml and
/// cds.yaml: a rejected file, or a listener that could not be made (a port
/// taken), would leave the Envoy running without what is to be measured.
fn accepted(name: &str, admin: u16) -> Result<()> {
    let stat = |s: &str| admin_stat(admin, s).unwrap_or(0);
    let start = Instant::now();
    loop {
        for bad in [
            // A file Envoy cannot read or parse is a failure, not a rejection.
            "listener_manager.lds.update_rejected",
            "listener_manager.lds.update_failure",
            "cluster_manager.cds.update_rejected",
            "cluster_manager.cds.update_failure",
            "listener_manager.listener_create_failure",
        ] {
            if stat(bad) != 0 {
                bail!("{name}: Envoy's {bad} is {}", stat(bad));
            }
        }
        if stat("listener_manager.lds.update_success") > 0
            && stat("cluster_manager.cds.update_success") > 0
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{name}: Envoy took no lds.yaml or cds.yaml in 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One of Envoy's stats by its full name, read from the admin on `admin`.
pub fn admin_stat(admin: u16, name: &str) -> Option<u64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /stats?filter=%5E{name}%24 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let prefix = format!("{name}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

fn apply(yaml: &str, lever: &Lever) -> Result<String> {
    match lever {
        Lever::NoFramingHop => {
            // `envoy_internal_address: { server_listener_name: X_framing }`
            // becomes X_direct's socket address.
            let mut out = yaml.to_string();
            let marker = "envoy_internal_address: { server_listener_name: ";
            let mut from = 0;
            while let Some(i) = out[from..].find(marker) {
                let start = from + i;
                let name_at = start + marker.len();
                let end = name_at + out[name_at..].find(" }").context("framing name")?;
                let listener = out[name_at..end].to_string();
                let Some(cluster) = listener.strip_suffix("_framing") else {
                    from = end;
                    continue;
                };
                let direct = format!("- name: {cluster}_direct");
                let at = out.find(&direct).context("direct cluster")?;
                let sock = at + out[at..].find("socket_address:").context("socket")?;
                let sock_end = out[sock..].find('\n').map_or(out.len(), |e| sock + e);
                let socket = out[sock..sock_end].to_string();
                out.replace_range(start..end + 2, &socket);
                from = start + socket.len();
            }
            Ok(out)
        }
        Lever::NoStallHop => Ok(yaml
            .lines()
            .map(|line| match line.trim_start().strip_prefix("cluster: ") {
                Some(name) if name.ends_with(envoy_names::STALL_SUFFIX) => {
                    line.replace(envoy_names::STALL_SUFFIX, envoy_names::DIRECT_SUFFIX)
                }
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")),
        Lever::Wasm(path) => {
            let marker = "local: { filename: ";
            let Some(at) = yaml.find(marker).map(|i| i + marker.len()) else {
                return Ok(yaml.to_string());
            };
            let end = at + yaml[at..].find(" }").context("wasm file")?;
            Ok(yaml.replace(&yaml[at..end], path))
        }
        Lever::Drop(key) => {
            // The block a line starting with `key` opens: that line and the
            // lines indented deeper than it.
            let mut out = String::new();
            let mut dropping: Option<usize> = None;
            for line in yaml.lines() {
                let indent = line.len() - line.trim_start().len();
                if dropping.is_some_and(|d| indent <= d && !line.trim().is_empty()) {
                    dropping = None;
                }
                if dropping.is_none() && line.trim_start().starts_with(key) {
                    dropping = Some(indent);
                }
                if dropping.is_none() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            Ok(out)
        }
    }
}
