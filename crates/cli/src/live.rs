//! Changing the running gateway with Envoy's own machinery. Its listeners and
//! clusters come from lds.yaml and cds.yaml in a watched directory: a new
//! file renamed in is applied at once; a changed listener drains (its open
//! requests and streams finish under the config they started with, new
//! connections get the new one), and the filter's shared data (the blocks
//! it learned) lives on in the same Envoy process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use plano_core::envoy_names;

use crate::health;
use crate::paths;
use crate::redact::redact;
use crate::render::{self, Rendered};

/// How long Envoy gets to take a new config before `up` gives up on it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the rendered files live on this machine (watched by Envoy, or
/// mounted into the container as a directory, which sees renames).
pub fn config_dir() -> PathBuf {
    paths::run_dir().join("config")
}

/// Checks every listener and cluster with `envoy --mode validate` (which
/// does not read the watched files themselves), in `scratch`.
pub fn envoy_validate(rendered: &Rendered, scratch: &Path) -> Result<()> {
    let file = scratch.join("static.yaml");
    render::write_private(&file, rendered.static_equivalent()?.as_bytes())?;
    let envoy = paths::envoy_binary()?;
    let out = Command::new(&envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "--log-level",
            "error",
            "-c",
        ])
        .arg(&file)
        .output()
        .with_context(|| format!("cannot run {}", envoy.display()))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        bail!(
            "Envoy rejects the rendered config:\n{}",
            redact(text.trim())
        );
    }
    Ok(())
}

/// Envoy's admin stats whose names match `filter` (a regex), as text.
fn stats(admin: u16, filter: &str) -> Result<HashMap<String, String>> {
    let (status, body) = health::get(admin, &format!("/stats?filter={filter}"))?;
    if status != 200 {
        bail!("Envoy's admin answered {status}");
    }
    Ok(body
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect())
}

/// The `version_info` a rendered DiscoveryResponse starts with.
fn version_of(text: &str) -> &str {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("version_info: "))
        .unwrap_or_default()
        .trim_matches('"')
}

const REJECTED: &str = "^(listener_manager.lds|cluster_manager.cds).update_rejected$";
const VERSIONS: &str = "^(listener_manager.lds|cluster_manager.cds).version_text$|^listener_manager.total_listeners_warming$";

/// Swaps the rendered files into `dir` and waits until Envoy runs them:
/// both versions taken and every new listener warm, so the next request
/// gets the new config. `admin` is the running gateway's admin port (the
/// caller reads it from the run state, which this module does not know).
pub fn apply(rendered: &Rendered, dir: &Path, admin: u16) -> Result<()> {
    let rejected_before = stats(admin, REJECTED).context("cannot reach the gateway's admin")?;
    rendered.write(dir)?;
    let want_lds = version_of(&rendered.lds_yaml);
    let want_cds = version_of(&rendered.cds_yaml);
    let start = Instant::now();
    while start.elapsed() < APPLY_TIMEOUT {
        // A busy admin (a large config being applied) may not answer one
        // read in time: that says nothing about the config, so ask again.
        if let Ok(now) = stats(admin, VERSIONS) {
            let is = |k: &str, v: &str| now.get(k).is_some_and(|x| x == v);
            if is("listener_manager.lds.version_text", want_lds)
                && is("cluster_manager.cds.version_text", want_cds)
                && is("listener_manager.total_listeners_warming", "0")
            {
                return Ok(());
            }
        }
        if stats(admin, REJECTED).is_ok_and(|now| now != rejected_before) {
            bail!("Envoy rejected the new config (its log says why: planoai logs --envoy); it keeps running the previous one");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "Envoy did not take the new config within {}s",
        APPLY_TIMEOUT.as_secs()
    )
}

/// Requests the gateway listener is serving now.
fn active_requests(admin: u16) -> Result<u64> {
    let stat = format!(
        "http.{}.downstream_rq_active",
        envoy_names::CLIENT_STAT_PREFIX
    );
    let active = stats(admin, &format!("^{stat}$"))?;
    Ok(active.get(&stat).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Stops the gateway listener taking connections (it is removed from
/// lds.yaml; Envoy drains it) and waits, at most `bound`, for the requests
/// and streams it is serving to finish. Returns how many were still open.
/// `admin` is the running gateway's admin port, as for [`apply`].
pub fn drain(dir: &Path, admin: u16, bound: Duration, mut on_wait: impl FnMut(u64)) -> Result<u64> {
    let lds = dir.join("lds.yaml");
    let text = std::fs::read_to_string(&lds)?;
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text)?;
    if let Some(list) = doc
        .get_mut("resources")
        .and_then(serde_yaml::Value::as_sequence_mut)
    {
        list.retain(|l| l["name"].as_str() != Some(envoy_names::CLIENT_LISTENER));
    }
    doc["version_info"] = "draining".into();
    render::write_atomic(&lds, serde_yaml::to_string(&doc)?.as_bytes())?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let now = stats(admin, VERSIONS)?;
        if now
            .get("listener_manager.lds.version_text")
            .map(String::as_str)
            == Some("draining")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut open = active_requests(admin)?;
    if open > 0 {
        on_wait(open);
    }
    while open > 0 && start.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(100));
        open = active_requests(admin)?;
    }
    Ok(open)
}
