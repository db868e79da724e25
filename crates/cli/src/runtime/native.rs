//! The gateway as a native process: Envoy and its log writer.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::state::{clear_state, now_secs, write_state, write_summary, Launch, Mode, State};
use super::{envoy_args, prepare_run_dir, startup_wait, tail, write_config_dir};
use crate::health;
use crate::interrupt;
use crate::live;
use crate::load::Loaded;
use crate::logfile;
use crate::paths;
use crate::render::{self, Rendered};

/// Starts Envoy on `rendered`, checked beforehand (`super::render_checked`).
pub fn start(loaded: &Loaded, launch: Launch, rendered: &Rendered, foreground: bool) -> Result<()> {
    let dir = prepare_run_dir()?;
    let wasm = dir.join("plano_filter.wasm");
    let source = paths::filter_wasm()?;
    fs::copy(&source, &wasm).with_context(|| format!("cannot copy {}", source.display()))?;
    write_config_dir(rendered)?;
    write_summary(loaded)?;
    let config = fs::canonicalize(&loaded.path).unwrap_or_else(|_| loaded.path.clone());
    spawn(&config, &paths::envoy_binary()?, launch, foreground)
}

/// Runs Envoy on the files in the run directory (written by [`start`], or
/// put back by a restart that failed) and waits until it answers.
pub fn spawn(config: &Path, envoy: &Path, launch: Launch, foreground: bool) -> Result<()> {
    let workers = launch.workers;
    let (address, port) = launch.address_port()?;
    let cap = launch.cap();
    let dir = prepare_run_dir()?;
    let envoy_yaml = live::config_dir().join("envoy.yaml");
    let log = dir.join("envoy.log");
    for old in logfile::files(&log) {
        fs::remove_file(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    render::write_private(&log, b"")?;

    // Envoy's output goes through a pipe to a log writer that keeps it under `cap`.
    let (log_out, log_in) = std::io::pipe().context("cannot make a pipe for Envoy's log")?;
    let mut cmd = Command::new(envoy);
    cmd.args(envoy_args(&envoy_yaml.display().to_string(), workers))
        .stdin(Stdio::null())
        .stdout(log_in.try_clone()?)
        .stderr(log_in);
    // Vertex AI's service account keys reach the token minter through
    // Envoy's environment (its config names only the variables).
    cmd.envs(crate::render::google::key_env(
        &live::config_dir().join(crate::render::KEY_DIR),
        crate::render::KEY_SUFFIX,
    ));
    let mut writer = Command::new(this_executable()?);
    writer
        .arg0("planoai")
        .arg("log-writer")
        .arg(&log)
        .args(["--max-bytes", &cap.max_bytes.to_string()])
        .args(["--files", &cap.files.to_string()])
        .stdin(log_out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !foreground {
        // Their own process group: the gateway outlives this shell and its Ctrl-C.
        cmd.process_group(0);
        writer.process_group(0);
    }
    // Attached, Ctrl-C must stop Envoy and let us clean up, even during
    // start-up: Envoy shares our process group, and is told again here in
    // case only we got the signal.
    let envoy_pid = Arc::new(AtomicU32::new(0));
    let _on_interrupt = foreground.then(|| {
        let pid = envoy_pid.clone();
        interrupt::on_interrupt(move || match pid.load(Ordering::SeqCst) {
            0 => {}
            p => signal(p, "-TERM"),
        })
    });
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", envoy.display()))?;
    envoy_pid.store(child.id(), Ordering::SeqCst);
    // `cmd` holds the pipe's write end; once it is gone, Envoy's exit ends the writer.
    drop(cmd);
    let log_writer = match writer.spawn() {
        Ok(w) => w.id(),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e).context("cannot start the log writer");
        }
    };
    let state = State {
        mode: Mode::Native,
        config: config.to_path_buf(),
        port,
        pid: Some(child.id()),
        started_at: now_secs(),
        log: log.clone(),
        log_writer: Some(log_writer),
        launch: Some(launch),
    };
    write_state(&state)?;
    let listener = health::reach(&address, port);
    let wait = startup_wait(super::clusters_in(&live::config_dir()));
    if let Err(e) = health::wait_healthy(listener, wait, || matches!(child.try_wait(), Ok(None))) {
        let _ = child.kill();
        let _ = child.wait();
        wait_gone(log_writer);
        clear_state();
        bail!(
            "{e}\n--- last lines of {} ---\n{}",
            log.display(),
            tail(&log, 30)
        );
    }
    let listening = outln!(
        "gateway listening on http://{address}:{port} (pid {}, {} workers)",
        child.id(),
        workers
    );
    if foreground {
        // Attached, this process stays to stop Envoy and clean up, even when
        // its output's reader has gone.
        let _ = outln!("stop it with Ctrl-C");
        // Started: others may change it now (`up` again, `down`).
        super::lock::release();
        let status = child.wait()?;
        wait_gone(log_writer);
        clear_state();
        let _ = outln!("gateway stopped ({status})");
        return Ok(());
    }
    listening?;
    outln!("logs: planoai logs -f    stop: planoai down")
}

/// Waits (2 s at most) for the log writer to copy Envoy's last lines and exit
/// at the pipe's end, so a new gateway's log is not rotated by the old writer.
/// The running planoai, to start its log writer. On Linux through
/// `/proc/self/exe`, which runs this very program even after an upgrade
/// replaced its file (an `up --watch` started before it restarts after).
fn this_executable() -> Result<PathBuf> {
    let running = Path::new("/proc/self/exe");
    if running.exists() {
        return Ok(running.to_path_buf());
    }
    std::env::current_exe().context("cannot find planoai itself")
}

pub fn wait_gone(log_writer: u32) {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(2)
        && fs::read(format!("/proc/{log_writer}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("log-writer"))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}
