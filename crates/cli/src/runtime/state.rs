//! The state file that says what runs, and what a running gateway was
//! started with.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::engine::{container_running, docker};
use super::IMAGE;
use crate::load::Loaded;
use crate::logfile::LogCap;
use crate::paths;
use crate::render;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Native,
    Docker,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub mode: Mode,
    pub config: PathBuf,
    pub port: u16,
    pub pid: Option<u32>,
    pub started_at: u64,
    pub log: PathBuf,
    /// The `planoai log-writer` copying Envoy's output into `log`.
    #[serde(default)]
    pub log_writer: Option<u32>,
    /// What Envoy was started with; a config that changes none of it is
    /// applied to the running gateway.
    #[serde(default)]
    pub launch: Option<Launch>,
}

/// What only a new Envoy process can change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub mode: Mode,
    pub listener: String,
    pub workers: u32,
    /// The Envoy binary (or image) and the filter, by identity.
    pub envoy: String,
    pub filter: String,
    pub log_cap: (u64, u32),
    /// `shared_state` as resolved: etcd is reached from the bootstrap.
    #[serde(default)]
    pub shared_state: String,
    /// Envoy's admin port and the status listener's.
    #[serde(default = "default_admin_ports")]
    pub admin_ports: (u16, u16),
    /// Vertex AI's credentials: their token minter is in the bootstrap.
    #[serde(default)]
    pub google_credentials: String,
}

/// A gateway started before the ports could be set has the defaults.
fn default_admin_ports() -> (u16, u16) {
    (render::ADMIN_PORT, render::STATUS_PORT)
}

/// The running gateway's admin port and status port (the defaults when
/// none runs).
pub fn admin_ports() -> (u16, u16) {
    read_state()
        .and_then(|s| s.launch)
        .map_or_else(default_admin_ports, |l| l.admin_ports)
}

impl Launch {
    pub fn new(mode: Mode, loaded: &Loaded, workers: u32, cap: LogCap) -> Result<Launch> {
        let r = &loaded.resolved;
        let envoy = match mode {
            Mode::Native => identity(&paths::envoy_binary()?),
            Mode::Docker => docker(&["image", "inspect", "-f", "{{.Id}}", IMAGE])
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default(),
        };
        Ok(Launch {
            mode,
            listener: format!("{}:{}", r.listener_address, r.listener_port),
            workers,
            envoy,
            filter: identity(&paths::filter_wasm()?),
            log_cap: (cap.max_bytes, cap.files),
            shared_state: r
                .shared_state
                .as_ref()
                .map(|s| format!("{s:?}"))
                .unwrap_or_default(),
            admin_ports: (r.admin_port, r.status_port),
            google_credentials: format!("{:?}", r.plan.google_credentials),
        })
    }

    /// The listener's address and port.
    pub fn address_port(&self) -> Result<(String, u16)> {
        self.listener
            .rsplit_once(':')
            .and_then(|(a, p)| Some((a.to_string(), p.parse().ok()?)))
            .with_context(|| format!("`{}` is not an address and port", self.listener))
    }

    /// The Envoy binary this launch ran (its identity starts with its path).
    pub fn envoy_path(&self) -> PathBuf {
        PathBuf::from(self.envoy.rsplitn(3, ' ').nth(2).unwrap_or_default())
    }

    pub fn cap(&self) -> LogCap {
        LogCap {
            max_bytes: self.log_cap.0,
            files: self.log_cap.1,
        }
    }

    /// What differs from `old`, in words.
    pub fn differences(&self, old: &Launch) -> Vec<String> {
        let mut out = Vec::new();
        if self.mode != old.mode {
            out.push(format!("mode {:?} -> {:?}", old.mode, self.mode).to_lowercase());
        }
        if self.listener != old.listener {
            out.push(format!("listener {} -> {}", old.listener, self.listener));
        }
        if self.workers != old.workers {
            out.push(format!("workers {} -> {}", old.workers, self.workers));
        }
        if self.envoy != old.envoy {
            out.push("a new Envoy binary or image".into());
        }
        if self.filter != old.filter {
            out.push("a new filter (.wasm)".into());
        }
        if self.log_cap != old.log_cap {
            out.push("the log cap".into());
        }
        if self.admin_ports != old.admin_ports {
            out.push(format!(
                "admin ports {}/{} -> {}/{}",
                old.admin_ports.0, old.admin_ports.1, self.admin_ports.0, self.admin_ports.1
            ));
        }
        if self.shared_state != old.shared_state {
            out.push("shared_state".into());
        }
        if self.google_credentials != old.google_credentials {
            out.push("the Vertex AI credentials".into());
        }
        out
    }
}

/// A file's identity for telling a new build from the running one.
fn identity(path: &Path) -> String {
    let meta = fs::metadata(path).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!(
        "{} {} {modified}",
        path.display(),
        meta.map_or(0, |m| m.len())
    )
}

fn state_file() -> PathBuf {
    paths::run_dir().join("state.json")
}

pub fn read_state() -> Option<State> {
    let text = fs::read_to_string(state_file()).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn write_state(state: &State) -> Result<()> {
    fs::write(state_file(), serde_json::to_vec_pretty(state)?)
        .context("cannot write the state file")
}

pub fn clear_state() {
    let _ = fs::remove_file(state_file());
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `pid` is a live Envoy (not a recycled pid of something else).
pub fn envoy_alive(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("envoy"))
        .unwrap_or(false)
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
            .unwrap_or(false)
}

pub fn is_running(state: &State) -> bool {
    match state.mode {
        Mode::Native => state.pid.is_some_and(envoy_alive),
        Mode::Docker => container_running(),
    }
}

/// The resolved config the running gateway has, to tell what a new one changes.
fn plan_file() -> PathBuf {
    paths::run_dir().join("plan.json")
}

pub fn write_summary(loaded: &Loaded) -> Result<()> {
    let summary = serde_json::to_vec_pretty(&crate::changes::summary(loaded))?;
    render::write_private(&plan_file(), &summary)
}

pub fn read_summary() -> serde_json::Value {
    fs::read(plan_file())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
