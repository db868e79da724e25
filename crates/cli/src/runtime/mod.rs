//! Starting and stopping the gateway, natively or in Docker: everything
//! that can be checked is checked before a running gateway is touched.

mod docker;
mod engine;
mod image;
pub mod lock;
mod logs;
mod native;
mod restart;
mod state;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use docker::ensure_image;
pub use image::build_image;
pub use logs::{print_logs, LogFormat};
pub use restart::Previous;
pub use state::{
    admin_ports, is_running, read_state, read_summary, write_state, write_summary, Launch, Mode,
    State,
};

use crate::interrupt;
use crate::live;
use crate::load::Loaded;
use crate::logfile;
use crate::paths;
use crate::redact::redact;
use crate::render::{self, Rendered};
use engine::{docker, remove_container};
use native::{signal, wait_gone};
use state::{clear_state, envoy_alive};

pub const CONTAINER: &str = "plano-gateway";
pub const IMAGE: &str = concat!("plano-gateway:", env!("CARGO_PKG_VERSION"));
const CONTAINER_WASM: &str = "/usr/local/share/plano/plano_filter.wasm";
/// Where the container finds envoy.yaml, lds.yaml, cds.yaml and the key files.
const CONTAINER_CONFIG: &str = "/etc/plano";
/// How long a new Envoy may take to answer: Envoy sets up each cluster
/// (a deployment is one) before it listens, about 30 ms each on a small
/// machine, so a large config gets longer than a small one.
fn startup_wait(clusters: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(60) * clusters as u32
}
const GRACE: Duration = Duration::from_secs(10);

/// Checks that a new gateway's listener is free, unless `running` holds it
/// and will let it go.
pub fn ensure_listener_free(
    loaded: &Loaded,
    launch: &Launch,
    running: Option<&State>,
) -> Result<()> {
    let old = running.and_then(|s| s.launch.as_ref());
    let r = &loaded.resolved;
    if old.is_none_or(|old| old.listener != launch.listener) {
        ensure_port_free(&r.listener_address, r.listener_port, "listeners[0].port")?;
    }
    // Another gateway on this host (another PLANO_HOME) may hold the defaults.
    let held = old.map(|old| old.admin_ports);
    for (port, field) in [
        (r.admin_port, "admin.port"),
        (r.status_port, "admin.status_port"),
    ] {
        if held.is_none_or(|(a, s)| port != a && port != s) {
            ensure_port_free("127.0.0.1", port, field)?;
        }
    }
    Ok(())
}

/// Whether `rendered`'s provider keys differ from those the running gateway
/// read at its start: Envoy reads them once, so new ones need a new Envoy.
pub fn keys_changed(rendered: &Rendered) -> bool {
    let dir = live::config_dir();
    let running = render::key_files(&dir);
    let same = running.len() == rendered.keys.len()
        && rendered.keys.iter().all(|(name, value)| {
            fs::read(dir.join(render::KEY_DIR).join(name)).is_ok_and(|v| v == value.as_bytes())
        });
    !same
}

/// Starts a gateway on `rendered` (checked by [`render_checked`]).
pub fn start(loaded: &Loaded, launch: Launch, rendered: &Rendered, foreground: bool) -> Result<()> {
    match launch.mode {
        Mode::Docker => docker::start(loaded, launch, rendered),
        Mode::Native => native::start(loaded, launch, rendered, foreground),
    }
}

/// The clusters in the config directory's cds.yaml.
fn clusters_in(config_dir: &Path) -> usize {
    fs::read_to_string(config_dir.join("cds.yaml"))
        .map(|t| t.matches("envoy.config.cluster.v3.Cluster").count())
        .unwrap_or(0)
}

fn prepare_run_dir() -> Result<PathBuf> {
    let dir = paths::run_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn ensure_port_free(address: &str, port: u16, field: &str) -> Result<()> {
    use std::io::ErrorKind;
    match std::net::TcpListener::bind((address, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => bail!(
            "address {address} is not on this host (none of its interfaces has it): set `listeners[0].address` to one of its addresses, 0.0.0.0 for all, or leave it out for 127.0.0.1"
        ),
        Err(e) if e.kind() == ErrorKind::AddrInUse => bail!(
            "port {port} is already in use by another program (another gateway?); free it or set `{field}`"
        ),
        Err(e) => bail!("cannot listen on {address} port {port}: {e}"),
    }
}

fn envoy_args(config: &str, workers: u32) -> Vec<String> {
    [
        "-c",
        config,
        "--concurrency",
        &workers.to_string(),
        "--disable-hot-restart",
        // A changed or removed listener drains: every open connection is told
        // to close after its current response (new requests go to the new
        // config at once), and one still open after 10 minutes (a stream
        // longer than any LLM answer) is closed.
        "--drain-strategy",
        "immediate",
        "--drain-time-s",
        "600",
        "--log-level",
        "warn",
        "--component-log-level",
        "wasm:info",
        // Envoy's own log through its buffered file writer, like the access
        // log: one write per flush instead of one per line (a line per
        // attempt is logged), at most this long after the line.
        "--log-path",
        "/dev/stderr",
        "--file-flush-interval-msec",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The last `lines` of a log, secrets redacted: Envoy echoes its whole
/// config, keys included, when it rejects it.
fn tail(path: &Path, lines: usize) -> String {
    redact(&logfile::tail(path, lines))
}

/// Where the running gateway's Envoy finds its config and filter.
fn envoy_paths(mode: Mode) -> (String, String) {
    match mode {
        Mode::Native => (
            live::config_dir().display().to_string(),
            paths::run_dir()
                .join("plano_filter.wasm")
                .display()
                .to_string(),
        ),
        Mode::Docker => (CONTAINER_CONFIG.into(), CONTAINER_WASM.into()),
    }
}

/// Renders `loaded` for the gateway running in `mode`, checked by Envoy
/// first: the same config with this machine's paths (the container's differ
/// only in them) in a private scratch directory, as Envoy's check opens the
/// filter and the key files.
pub fn render_checked(loaded: &Loaded, mode: Mode) -> Result<Rendered> {
    let scratch = std::env::temp_dir().join(format!("plano-check-{}", std::process::id()));
    let result = check_in(loaded, &scratch);
    let _ = fs::remove_dir_all(&scratch);
    result?;
    let (config_dir, wasm) = envoy_paths(mode);
    render::render(loaded, &wasm, &config_dir, None)
}

fn check_in(loaded: &Loaded, scratch: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let _ = fs::remove_dir_all(scratch);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let filter = paths::filter_wasm()?.display().to_string();
    let rendered = render::render(loaded, &filter, &scratch.display().to_string(), None)?;
    rendered.write(scratch)?;
    live::envoy_validate(&rendered, scratch)
}

/// A fresh config directory holding `rendered`, owner-only.
fn write_config_dir(rendered: &Rendered) -> Result<PathBuf> {
    let dir = live::config_dir();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    rendered.write(&dir)?;
    Ok(dir)
}

/// Stops whatever gateway the state file names, after letting it finish
/// what it serves (at most `drain`). True when one was stopped.
pub fn stop(also_docker: bool, drain: Duration) -> Result<bool> {
    let mut stopped = false;
    if let Some(state) = read_state() {
        // An interrupt during the drain puts the listener back: a gateway is
        // never left running without it. Once Envoy is told to stop, that
        // is too late (`up` then finishes its restart first).
        let lds = live::config_dir().join("lds.yaml");
        let _undo = fs::read(&lds).ok().map(|before| {
            interrupt::on_interrupt(move || {
                let _ = render::write_atomic(&lds, &before);
                let _ = errln!("interrupted: the gateway keeps serving its config");
                std::process::exit(130);
            })
        });
        if is_running(&state) && !drain.is_zero() {
            // Without an admin to ask (an Envoy still starting) there is
            // nothing to drain.
            let open = live::drain(&live::config_dir(), admin_ports().0, drain, |open| {
                let _ = outln!(
                    "draining: {open} request(s) in flight (waiting up to {}s)",
                    drain.as_secs()
                );
            });
            if let Ok(left @ 1..) = open {
                let _ = outln!("{left} request(s) still in flight after the drain; stopping");
            }
        }
        drop(_undo);
        match (state.mode, state.pid) {
            (Mode::Native, Some(pid)) if envoy_alive(pid) => {
                signal(pid, "-TERM");
                let start = std::time::Instant::now();
                while envoy_alive(pid) && start.elapsed() < GRACE {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if envoy_alive(pid) {
                    signal(pid, "-KILL");
                }
                if let Some(writer) = state.log_writer {
                    wait_gone(writer);
                }
                stopped = true;
            }
            (Mode::Docker, _) => {
                let _ = docker(&["stop", "-t", &GRACE.as_secs().to_string(), CONTAINER]);
                stopped = remove_container();
            }
            _ => {}
        }
        clear_state();
    }
    if also_docker && remove_container() {
        stopped = true;
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_larger_config_gets_longer_to_start() {
        assert_eq!(super::startup_wait(0), Duration::from_secs(30));
        // 1,000 deployments took 30.8 s on a 2-core machine.
        assert!(super::startup_wait(1_000) >= Duration::from_secs(60));
    }
}
