//! The gateway as a container on the host's network.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::engine::{container_running, docker, image_exists, remove_container};
use super::image::build_image;
use super::state::{clear_state, now_secs, write_state, write_summary, Launch, Mode, State};
use super::{clusters_in, envoy_args, startup_wait};
use super::{
    prepare_run_dir, write_config_dir, CONTAINER, CONTAINER_CONFIG, CONTAINER_WASM, IMAGE,
};
use crate::health;
use crate::live;
use crate::load::Loaded;
use crate::paths;
use crate::redact::redact;
use crate::render::Rendered;

/// Builds the image when it is missing (before its identity is taken).
pub fn ensure_image() -> Result<()> {
    if !image_exists() {
        outln!("image {IMAGE} not found; building it")?;
        build_image("scratch")?;
    }
    Ok(())
}

/// Starts the container on `rendered`, checked beforehand (`super::render_checked`).
pub fn start(loaded: &Loaded, launch: Launch, rendered: &Rendered) -> Result<()> {
    remove_container();
    prepare_run_dir()?;
    // Keys stay in owner-only files in the run directory, mounted read-only:
    // not in the container's environment, so not in `docker inspect`. The
    // directory is mounted, not its files, so the container sees the new
    // files `up` renames in.
    write_config_dir(rendered)?;
    write_summary(loaded)?;
    let config = fs::canonicalize(&loaded.path).unwrap_or_else(|_| loaded.path.clone());
    run(&config, launch)
}

/// Runs the container on the files in the run directory (written by
/// [`start`], or put back by a restart that failed) and waits until it answers.
pub fn run(config_path: &Path, launch: Launch) -> Result<()> {
    let workers = launch.workers;
    let (address, port) = launch.address_port()?;
    let cap = launch.cap();
    let config = live::config_dir();
    let mount = format!("{}:{CONTAINER_CONFIG}:ro", config.display());
    // This planoai's own filter, not the one an older image was built with.
    let wasm = format!("{}:{CONTAINER_WASM}:ro", paths::filter_wasm()?.display());
    // Docker's json-file driver rotates the container's log under the same cap.
    let max_size = format!("max-size={}", cap.max_bytes);
    let max_file = format!("max-file={}", cap.files);
    let mut args = vec![
        "run",
        "-d",
        "--name",
        CONTAINER,
        "--network",
        "host",
        "--add-host",
        "host.docker.internal:127.0.0.1",
        "-v",
        &mount,
        "-v",
        &wasm,
        "--log-driver",
        "json-file",
        "--log-opt",
        &max_size,
        "--log-opt",
        &max_file,
        IMAGE,
    ];
    let envoy_args = envoy_args(&format!("{CONTAINER_CONFIG}/envoy.yaml"), workers);
    args.extend(envoy_args.iter().map(String::as_str));
    let out = docker(&args)?;
    if !out.status.success() {
        bail!(
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let state = State {
        mode: Mode::Docker,
        config: config_path.to_path_buf(),
        port,
        pid: None,
        started_at: now_secs(),
        log: PathBuf::new(),
        log_writer: None,
        launch: Some(launch),
    };
    write_state(&state)?;
    let listener = health::reach(&address, port);
    let wait = startup_wait(clusters_in(&crate::live::config_dir()));
    if let Err(e) = health::wait_healthy(listener, wait, container_running) {
        let logs = docker(&["logs", "--tail", "30", CONTAINER])
            .map(|o| {
                redact(&format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ))
            })
            .unwrap_or_default();
        remove_container();
        clear_state();
        bail!("{e}\n--- last lines of the container's log ---\n{logs}");
    }
    outln!("gateway listening on http://{address}:{port} (container {CONTAINER}, host network)")?;
    outln!("logs: planoai logs -f    stop: planoai down --docker")?;
    Ok(())
}
