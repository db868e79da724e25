//! Starting and stopping the gateway, natively or in Docker, and the state
//! file that says what runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::health;
use crate::live;
use crate::load::Loaded;
use crate::logfile::{self, LogCap};
use crate::logline;
use crate::output::Progress;
use crate::paths;
use crate::render;

pub const CONTAINER: &str = "plano-gateway";
pub const IMAGE: &str = concat!("plano-gateway:", env!("CARGO_PKG_VERSION"));
const CONTAINER_WASM: &str = "/usr/local/share/plano/plano_filter.wasm";
/// Where the container finds envoy.yaml, lds.yaml, cds.yaml and the key files.
const CONTAINER_CONFIG: &str = "/etc/plano";
const STARTUP: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(10);

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
        })
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

fn write_state(state: &State) -> Result<()> {
    fs::write(state_file(), serde_json::to_vec_pretty(state)?)
        .context("cannot write the state file")
}

fn clear_state() {
    let _ = fs::remove_file(state_file());
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `pid` is a live Envoy (not a recycled pid of something else).
fn envoy_alive(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("envoy"))
        .unwrap_or(false)
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
            .unwrap_or(false)
}

fn container_running() -> bool {
    Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", CONTAINER])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
        .unwrap_or(false)
}

pub fn is_running(state: &State) -> bool {
    match state.mode {
        Mode::Native => state.pid.is_some_and(envoy_alive),
        Mode::Docker => container_running(),
    }
}

fn prepare_run_dir() -> Result<PathBuf> {
    let dir = paths::run_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn ensure_port_free(address: &str, port: u16) -> Result<()> {
    if std::net::TcpListener::bind((address, port)).is_err() {
        bail!(
            "port {port} is already in use by another program; free it or set `listeners[0].port`"
        );
    }
    Ok(())
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

/// Replaces access keys, however quoted or escaped, and bearer tokens with
/// `[redacted]`.
pub fn redact(text: &str) -> String {
    // Between the marker and the secret: any quoting, escaping and `:`.
    let lead = |c: char| matches!(c, '\\' | '"' | '\'' | ':' | '=') || c.is_whitespace();
    let end = |c: char| matches!(c, '\\' | '"' | '\'' | ',' | '}') || c.is_whitespace();
    let mut out = text.to_string();
    for marker in ["access_key", "Bearer "] {
        let mut from = 0;
        while let Some(i) = out[from..].find(marker) {
            let after = from + i + marker.len();
            let start = out[after..]
                .find(|c| !lead(c))
                .map_or(out.len(), |s| after + s);
            let stop = out[start..].find(end).map_or(out.len(), |e| start + e);
            if stop == start {
                from = after;
                continue;
            }
            out.replace_range(start..stop, "[redacted]");
            from = start + "[redacted]".len();
        }
    }
    out
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
pub fn render_checked(loaded: &Loaded, mode: Mode) -> Result<render::Rendered> {
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
fn write_config_dir(rendered: &render::Rendered) -> Result<PathBuf> {
    let dir = live::config_dir();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    rendered.write(&dir)?;
    Ok(dir)
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

pub fn start_native(loaded: &Loaded, launch: Launch, foreground: bool, cap: LogCap) -> Result<()> {
    let r = &loaded.resolved;
    let workers = launch.workers;
    ensure_port_free(&r.listener_address, r.listener_port)?;
    let dir = prepare_run_dir()?;
    let rendered = render_checked(loaded, Mode::Native)?;
    let wasm = dir.join("plano_filter.wasm");
    let source = paths::filter_wasm()?;
    fs::copy(&source, &wasm).with_context(|| format!("cannot copy {}", source.display()))?;
    let envoy_yaml = write_config_dir(&rendered)?.join("envoy.yaml");
    write_summary(loaded)?;
    let log = dir.join("envoy.log");
    for old in logfile::files(&log) {
        fs::remove_file(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    render::write_private(&log, b"")?;
    let envoy = paths::envoy_binary()?;

    // Envoy's output goes through a pipe to a log writer that keeps it under `cap`.
    let (log_out, log_in) = std::io::pipe().context("cannot make a pipe for Envoy's log")?;
    let mut cmd = Command::new(&envoy);
    cmd.args(envoy_args(&envoy_yaml.display().to_string(), workers))
        .stdin(Stdio::null())
        .stdout(log_in.try_clone()?)
        .stderr(log_in);
    let mut writer = Command::new(std::env::current_exe().context("cannot find planoai itself")?);
    writer
        .arg("log-writer")
        .arg(&log)
        .args(["--max-bytes", &cap.max_bytes.to_string()])
        .args(["--files", &cap.files.to_string()])
        .stdin(log_out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !foreground {
        // Their own process group: the gateway outlives this shell and its Ctrl-C.
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        writer.process_group(0);
    }
    // Attached, Ctrl-C must stop Envoy and let us clean up, even during
    // start-up: Envoy shares our process group, and is told again here in
    // case only we got the signal.
    let envoy_pid = Arc::new(AtomicU32::new(0));
    if foreground {
        let pid = envoy_pid.clone();
        ctrlc::set_handler(move || match pid.load(Ordering::SeqCst) {
            0 => {}
            p => signal(p, "-TERM"),
        })
        .context("cannot handle Ctrl-C")?;
    }
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
        config: fs::canonicalize(&loaded.path).unwrap_or_else(|_| loaded.path.clone()),
        port: r.listener_port,
        pid: Some(child.id()),
        started_at: now_secs(),
        log: log.clone(),
        log_writer: Some(log_writer),
        launch: Some(launch),
    };
    write_state(&state)?;
    let listener = health::reach(&r.listener_address, r.listener_port);
    if let Err(e) = health::wait_healthy(listener, STARTUP, || matches!(child.try_wait(), Ok(None)))
    {
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
        "gateway listening on http://{}:{} (pid {}, {} workers)",
        r.listener_address,
        r.listener_port,
        child.id(),
        workers
    );
    if foreground {
        // Attached, this process stays to stop Envoy and clean up, even when
        // its output's reader has gone.
        let _ = outln!("stop it with Ctrl-C");
        let status = child.wait()?;
        wait_gone(log_writer);
        clear_state();
        let _ = outln!("gateway stopped ({status})");
        return Ok(());
    }
    listening?;
    outln!("logs: planoai logs -f    stop: planoai down")
}

fn docker(args: &[&str]) -> Result<std::process::Output> {
    Command::new("docker")
        .args(args)
        .output()
        .context("cannot run `docker`: is Docker installed?")
}

pub fn image_exists() -> bool {
    docker(&["image", "inspect", IMAGE]).is_ok_and(|o| o.status.success())
}

/// Builds the image when it is missing (before its identity is taken).
pub fn ensure_image() -> Result<()> {
    if !image_exists() {
        outln!("image {IMAGE} not found; building it")?;
        build_image("scratch")?;
    }
    Ok(())
}

pub fn start_docker(loaded: &Loaded, launch: Launch, cap: LogCap) -> Result<()> {
    let r = &loaded.resolved;
    let workers = launch.workers;
    remove_container();
    ensure_port_free(&r.listener_address, r.listener_port)?;
    prepare_run_dir()?;
    let rendered = render_checked(loaded, Mode::Docker)?;
    // Keys stay in owner-only files in the run directory, mounted read-only:
    // not in the container's environment, so not in `docker inspect`. The
    // directory is mounted, not its files, so the container sees the new
    // files `up` renames in.
    let config = write_config_dir(&rendered)?;
    write_summary(loaded)?;
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
        config: fs::canonicalize(&loaded.path).unwrap_or_else(|_| loaded.path.clone()),
        port: r.listener_port,
        pid: None,
        started_at: now_secs(),
        log: PathBuf::new(),
        log_writer: None,
        launch: Some(launch),
    };
    write_state(&state)?;
    let listener = health::reach(&r.listener_address, r.listener_port);
    if let Err(e) = health::wait_healthy(listener, STARTUP, container_running) {
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
    outln!(
        "gateway listening on http://{}:{} (container {CONTAINER}, host network)",
        r.listener_address,
        r.listener_port
    )?;
    outln!("logs: planoai logs -f    stop: planoai down --docker")?;
    Ok(())
}

/// Removes the gateway's container; true when there was one.
fn remove_container() -> bool {
    // `docker rm -f` succeeds for a container that does not exist, too.
    let exists = docker(&["container", "inspect", CONTAINER]).is_ok_and(|o| o.status.success());
    exists && docker(&["rm", "-f", CONTAINER]).is_ok_and(|o| o.status.success())
}

/// Waits (2 s at most) for the log writer to copy Envoy's last lines and exit
/// at the pipe's end, so a new gateway's log is not rotated by the old writer.
fn wait_gone(log_writer: u32) {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(2)
        && fs::read(format!("/proc/{log_writer}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("log-writer"))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Stops whatever gateway the state file names, after letting it finish
/// what it serves (at most `drain`). True when one was stopped.
pub fn stop(also_docker: bool, drain: Duration) -> Result<bool> {
    let mut stopped = false;
    if let Some(state) = read_state() {
        if is_running(&state) && !drain.is_zero() {
            // Without an admin to ask (an Envoy still starting) there is
            // nothing to drain.
            let open = live::drain(&live::config_dir(), drain, |open| {
                let _ = outln!(
                    "draining: {open} request(s) in flight (waiting up to {}s)",
                    drain.as_secs()
                );
            });
            if let Ok(left @ 1..) = open {
                let _ = outln!("{left} request(s) still in flight after the drain; stopping");
            }
        }
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

/// Builds the gateway image from this machine's Envoy, its glibc, the CA
/// bundle and the filter. `scratch` needs no registry; any other base (such
/// as envoyproxy/envoy) gets only the filter and keeps its own Envoy.
pub fn build_image(base_image: &str) -> Result<()> {
    let stage = std::env::temp_dir().join(format!("plano-image-{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    let result = stage_and_build(&stage, base_image);
    let _ = fs::remove_dir_all(&stage);
    result
}

fn stage_and_build(stage: &Path, base_image: &str) -> Result<()> {
    let staging = Progress::on_terminal();
    staging.show("staging Envoy, the libraries it links, the CA bundle and the filter");
    let full = stage.join("rootfs");
    let filter_only = stage.join("rootfs-filter");
    let envoy = fs::canonicalize(paths::envoy_binary()?)?;
    let wasm = paths::filter_wasm()?;
    for root in [&full, &filter_only] {
        copy_into(root, &wasm, Path::new(CONTAINER_WASM))?;
        fs::create_dir_all(root.join("etc/plano"))?;
        fs::create_dir_all(root.join("tmp"))?;
    }
    copy_into(&full, &envoy, Path::new("/usr/local/bin/envoy"))?;
    copy_into(
        &full,
        Path::new(paths::ca_bundle()),
        Path::new(paths::ca_bundle()),
    )?;
    let ldd = Command::new("ldd")
        .arg(&envoy)
        .output()
        .context("cannot run ldd")?;
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(library_path)
    {
        copy_into(&full, Path::new(&lib), Path::new(&lib))?;
    }
    fs::write(stage.join("Dockerfile"), paths::DOCKERFILE)?;
    let rootfs = if base_image == "scratch" {
        "rootfs"
    } else {
        "rootfs-filter"
    };
    // At a terminal, docker shows its own progress; elsewhere its output is
    // kept, and shown only if the build fails.
    drop(staging);
    let progress = Progress::on_terminal();
    let mut build = Command::new("docker");
    build
        .args(["build", "-t", IMAGE, "--build-arg"])
        .arg(format!("BASE_IMAGE={base_image}"))
        .arg("--build-arg")
        .arg(format!("ROOTFS={rootfs}"))
        .arg(stage);
    if progress.is_on() {
        let status = build.status().context("cannot run `docker build`")?;
        if !status.success() {
            bail!("docker build failed");
        }
    } else {
        let out = build.output().context("cannot run `docker build`")?;
        if !out.status.success() {
            bail!(
                "docker build failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let size = docker(&["image", "inspect", "-f", "{{.Size}}", IMAGE])?;
    let bytes: u64 = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    outln!("built {IMAGE} ({:.1} MB)", bytes as f64 / 1e6)?;
    Ok(())
}

/// The resolved path in one line of `ldd` output, if it names a file.
fn library_path(line: &str) -> Option<String> {
    let line = line.trim();
    let path = match line.split_once("=>") {
        Some((_, rest)) => rest.split_whitespace().next()?,
        None => line.split_whitespace().next()?,
    };
    path.starts_with('/').then(|| path.to_string())
}

fn copy_into(root: &Path, from: &Path, to: &Path) -> Result<()> {
    let dest = root.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, &dest)
        .with_context(|| format!("cannot copy {} into the image", from.display()))?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub enum LogFormat {
    /// The gateway's own lines, an attempt's as its fields.
    Gateway,
    /// The same as JSON lines.
    Json,
    /// Envoy's raw log.
    Envoy,
}

/// One line of Envoy's log as `format` shows it, redacted; `None` to skip it.
fn show(line: &str, format: LogFormat) -> Option<String> {
    let line = redact(line);
    match format {
        LogFormat::Envoy => Some(line),
        LogFormat::Gateway => logline::parse(&line).map(|l| l.text()),
        LogFormat::Json => logline::parse(&line).map(|l| l.json().to_string()),
    }
}

pub fn print_logs(follow: bool, lines: usize, format: LogFormat) -> Result<()> {
    let Some(state) = read_state() else {
        bail!("no gateway is running (start one with `planoai up CONFIG`)");
    };
    // Raw, the last `lines` are Envoy's; otherwise the gateway's, found among all kept.
    let raw_lines = match format {
        LogFormat::Envoy => lines,
        _ => usize::MAX,
    };
    match state.mode {
        Mode::Docker => {
            let n = match raw_lines {
                usize::MAX => "all".to_string(),
                n => n.to_string(),
            };
            let mut args = vec!["logs", "--tail", n.as_str()];
            if follow {
                args.push("-f");
            }
            // Both of the container's streams, in order.
            let (reader, writer) = std::io::pipe()?;
            let child = Command::new("docker")
                .args(&args)
                .arg(CONTAINER)
                .stdout(writer.try_clone()?)
                .stderr(writer)
                .spawn()
                .context("cannot run `docker logs`")?;
            // Stopped however this ends, a closed output included.
            let mut child = KillOnDrop(child);
            use std::io::BufRead;
            let reader = std::io::BufReader::new(reader).lines();
            if follow {
                for line in reader {
                    if let Some(l) = show(&line?, format) {
                        outln!("{l}")?;
                    }
                }
            } else {
                let mut shown = std::collections::VecDeque::new();
                for line in reader {
                    if let Some(l) = show(&line?, format) {
                        shown.push_back(l);
                        if shown.len() > lines {
                            shown.pop_front();
                        }
                    }
                }
                for l in shown {
                    outln!("{l}")?;
                }
            }
            child.0.wait()?;
        }
        Mode::Native => {
            let text = logfile::tail(&state.log, raw_lines);
            let shown: Vec<String> = text.lines().filter_map(|l| show(l, format)).collect();
            for l in &shown[shown.len().saturating_sub(lines)..] {
                outln!("{l}")?;
            }
            if follow {
                logfile::follow(
                    &state.log,
                    || read_state().is_some(),
                    |chunk| {
                        for l in chunk.lines().filter_map(|l| show(l, format)) {
                            outln!("{l}")?;
                        }
                        Ok(())
                    },
                )?;
            }
        }
    }
    Ok(())
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    const KEY: &str = "sk-proj-Ab3_x.Y9";

    #[test]
    fn redacts_a_key_in_every_form_envoy_prints_it() {
        for line in [
            // Envoy rejecting its config echoes it as JSON: the plan is a
            // JSON string inside it.
            format!(
                r#"error `Unable to parse JSON as proto (...): {{"value":"{{\"access_key\":\"{KEY}\",\"timeout_ms\":30000}}"}}"#
            ),
            // ... the same, escaped once more (a log shipped as JSON).
            format!(r#""msg":"{{\\\"access_key\\\":\\\"{KEY}\\\",\\\"t\\\":1}}""#),
            // The plan itself, and the YAML it came from, in any quoting.
            format!(r#"{{"access_key":"{KEY}","timeout_ms":1}}"#),
            format!(r#"{{"access_key": "{KEY}"}}"#),
            format!("access_key: {KEY}"),
            format!("    access_key: \"{KEY}\"  # comment"),
            format!("    access_key: '{KEY}'"),
            // A request header in Envoy's debug log, and at the very end.
            format!("'authorization', 'Bearer {KEY}'"),
            format!("authorization: Bearer {KEY}"),
        ] {
            let out = redact(&line);
            assert!(!out.contains(KEY), "{line} -> {out}");
            assert!(out.contains("[redacted]"), "{line} -> {out}");
        }
    }

    #[test]
    fn leaves_other_text_alone() {
        let line = "attempt 2: anthropic/claude-3-5-sonnet -> 200 (12 ms)";
        assert_eq!(redact(line), line);
        assert_eq!(
            redact(r#"{"access_key":"a","b":"access_key"}"#),
            r#"{"access_key":"[redacted]","b":"access_key"}"#
        );
    }
}
