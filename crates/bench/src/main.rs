//! `make bench`: the gateway's cost, side by side with bare Envoy and a
//! direct call to the mock, under the same closed-loop load on loopback.
//! Prints one table (markdown) and writes `target/bench.json`.
//!
//! `plano-bench NAME ...` runs one part alone (see `commands`), `make soak`
//! is `plano-bench soak` (see `soak`).

mod apis;
mod baselines;
mod commands;
mod hostcalls;
mod levers;
mod limits;
mod load;
mod mock;
mod pace;
mod paced;
mod replicas;
mod report;
mod rig;
mod soak;
mod streams;
mod traces;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use mock::Answer;

const DURATION: Duration = Duration::from_secs(5);
const GATEWAY_PORT: u16 = 12000;
const BARE_PORT: u16 = 12100;
const FLOOR_PORT: u16 = 12200;
/// Interleaved rounds of the side-by-side rows: medians and their spread.
const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(2);
const WAITERS: usize = 5000;
/// Fixed open-loop rates (req/s) for the added-latency rows.
const OPEN_RATES: [u64; 2] = [1000, 5000];

struct Row {
    name: String,
    connections: usize,
    run: load::Run,
    rss_mb: Option<f64>,
    /// Slowest and fastest round's req/s, where rows ran in rounds.
    spread: Option<(f64, f64)>,
    /// Each round's (req/s, p50 ms) in round order, where rows ran in
    /// rounds: compared round by round with the other rows of that round.
    rounds: Vec<(f64, f64)>,
    /// The gateway's CPU time per answered request, in microseconds
    /// (median of the rounds), where a row measures it.
    cpu_us: Option<f64>,
}

impl Row {
    /// The median of interleaved `rounds` of one closed-loop row (32
    /// connections), with the slowest and fastest round's req/s and every
    /// round in the order run.
    fn median(name: String, mut rounds: Vec<load::Run>, rss_mb: Option<f64>) -> Row {
        let in_order = rounds.iter().map(|r| (r.rps(), r.ms(0.5))).collect();
        rounds.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
        let spread = (rounds[0].rps(), rounds[rounds.len() - 1].rps());
        Row {
            name,
            connections: 32,
            run: rounds.swap_remove(rounds.len() / 2),
            rss_mb,
            spread: Some(spread),
            rounds: in_order,
            cpu_us: None,
        }
    }
}

fn envoy_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PLANO_ENVOY") {
        return Ok(p.into());
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    std::fs::read_dir(&lib)
        .context("no .venv: run `make setup`")?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
        .context("no Envoy in .venv: run `make setup`")
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_mb(pid: u32) -> Option<f64> {
    proc_field(pid, "status", "VmRSS:").map(|kb| kb as f64 / 1024.0)
}

/// User plus system CPU time of `pid`, in clock ticks (100 per second here).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    num(11) + num(12)
}

/// CPU time of every thread of `pid` so far, in nanoseconds (schedstat:
/// finer than the clock ticks of `/proc/PID/stat`).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// An open-loop run against `port`, with the CPU time the processes `pids`
/// spent per answered request in it, in microseconds.
async fn costed_open_loop(
    port: u16,
    pids: &[u32],
    body: Bytes,
    rate: u64,
    duration: Duration,
) -> Result<(load::OpenRun, f64)> {
    let cpu = || pids.iter().map(|&p| cpu_ns(p)).sum::<u64>();
    let before = cpu();
    let run = load::open_loop(port, body, rate, duration).await?;
    let cpu_us = (cpu() - before) as f64 / 1000.0 / run.ok.max(1) as f64;
    Ok((run, cpu_us))
}

/// A few requests to each port first, so no measured round pays for warm-up.
async fn warm(ports: impl IntoIterator<Item = u16>, body: &Bytes) -> Result<()> {
    for port in ports {
        load::closed_loop(port, body.clone(), 8, Duration::from_millis(300)).await?;
    }
    Ok(())
}

/// Bare Envoy: the same listener and cluster, no wasm filter.
fn start_bare_envoy(mock_port: u16, dir: &Path) -> Result<rig::Envoy> {
    rig::plain(mock_port, dir, "bare", BARE_PORT, 9911, 71, None)
}

/// Bare Envoy with the floor filter (V8): what any wasm design costs.
fn start_floor(mock_port: u16, dir: &Path) -> Result<rig::Envoy> {
    rig::plain(
        mock_port,
        dir,
        "floor",
        FLOOR_PORT,
        9921,
        72,
        Some(("v8", "")),
    )
}

/// One of the gateway's own stats, `wasmcustom.plano.<name>` (0 if unread).
async fn plano_stat(name: &'static str) -> u64 {
    let read = move || rig::admin_stat(9901, &format!("wasmcustom.plano.{name}"));
    tokio::task::spawn_blocking(read)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// The gateway's `plano.waiting` gauge: requests parked in a backoff.
async fn waiting_gauge() -> u64 {
    plano_stat("waiting").await
}

fn wait_listening(port: u16) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {port}")
}

struct Gateway {
    home: PathBuf,
    pid: u32,
    /// `planoai log-writer`, which takes Envoy's output: part of the cost.
    log_writer: Option<u32>,
}

impl Gateway {
    fn up(home: &Path, name: &str, providers: &str) -> Result<Gateway> {
        let listener = format!("[{{type: model, name: l, port: {GATEWAY_PORT}}}]");
        Gateway::up_listening(home, name, &listener, providers)
    }

    /// A gateway whose `listeners` are `listeners` (YAML).
    fn up_listening(home: &Path, name: &str, listeners: &str, providers: &str) -> Result<Gateway> {
        let config = home.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!("version: v0.3.0\nlisteners: {listeners}\nmodel_providers:\n{providers}"),
        )?;
        let out = Command::new("planoai")
            .arg("up")
            .arg(&config)
            .env("PLANO_HOME", home)
            .output()?;
        if !out.status.success() {
            bail!(
                "planoai up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(home.join("run/state.json"))?)?;
        let pid = state["pid"].as_u64().context("no pid")? as u32;
        Ok(Gateway {
            home: home.to_path_buf(),
            pid,
            log_writer: state["log_writer"].as_u64().map(|p| p as u32),
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("planoai")
            .arg("down")
            .env("PLANO_HOME", &self.home)
            .output();
    }
}

fn provider(model: &str, port: u16, policy: &str) -> String {
    format!("  - model: {model}\n    base_url: http://127.0.0.1:{port}\n    access_key: bench-key\n{policy}")
}

const FAILOVER: &str = "    default: true\n    retry_policy: {default_strategy: different_provider, default_max_attempts: 1}\n";

/// A streamed chat request of about `size` bytes.
fn streamed_body_of(size: usize) -> Bytes {
    chat_body(size, r#""stream":true,"#)
}

fn body_of(size: usize) -> Bytes {
    chat_body(size, "")
}

/// A chat request of about `size` bytes, with `fields` (`"name":value,`)
/// before its messages.
fn chat_body(size: usize, fields: &str) -> Bytes {
    let pad = size.saturating_sub(80 + fields.len());
    Bytes::from(format!(
        r#"{{"model":"openai/gpt-4o",{fields}"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(pad)
    ))
}

/// Bare Envoy, the floor filter and the gateway, up at once on the same
/// mocks, for rows measured side by side.
struct Trio {
    bare: rig::Envoy,
    floor: rig::Envoy,
    gateway: Gateway,
}

impl Trio {
    fn up(ok: u16, ok2: u16, home: &Path) -> Result<Trio> {
        Ok(Trio {
            bare: start_bare_envoy(ok, home)?,
            floor: start_floor(ok, home)?,
            gateway: Gateway::up(
                home,
                "success",
                &(provider("openai/gpt-4o", ok, FAILOVER) + &provider("anthropic/c", ok2, "")),
            )?,
        })
    }

    fn targets(&self) -> [Target; 3] {
        [
            Target {
                name: "bare Envoy",
                port: BARE_PORT,
                pid: self.bare.pid(),
                helper: None,
            },
            Target {
                name: "floor filter",
                port: FLOOR_PORT,
                pid: self.floor.pid(),
                helper: None,
            },
            Target {
                name: "gateway, success",
                port: GATEWAY_PORT,
                pid: self.gateway.pid,
                helper: self.gateway.log_writer,
            },
        ]
    }
}

/// One of the side-by-side targets.
#[derive(Clone, Copy)]
struct Target {
    name: &'static str,
    port: u16,
    /// Envoy's pid.
    pid: u32,
    /// Another process serving it (the gateway's log writer).
    helper: Option<u32>,
}

impl Target {
    /// Envoy and its helper.
    fn processes(&self) -> Vec<u32> {
        std::iter::once(self.pid).chain(self.helper).collect()
    }
}

/// Open-loop runs at each rate, `rounds` times, the targets interleaved in
/// every round; each with its Envoy's CPU time per answered request.
async fn open_rounds(
    targets: &[Target],
    rates: &[u64],
    rounds: usize,
    body: &Bytes,
) -> Result<Vec<report::OpenRow>> {
    let mut open = Vec::new();
    for &rate in rates {
        for round in 0..rounds {
            for t in targets {
                let (run, cpu_us) =
                    costed_open_loop(t.port, &t.processes(), body.clone(), rate, ROUND).await?;
                open.push(report::OpenRow {
                    rate,
                    round,
                    target: t.name.to_string(),
                    run,
                    cpu_us,
                });
            }
        }
    }
    Ok(open)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let home = std::env::temp_dir().join(format!("plano-bench-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(name) = args.first() {
        // A mock to profile against never returns.
        let done = commands::run(name, &args[1..], &home).await;
        let _ = std::fs::remove_dir_all(&home);
        return done;
    }
    let ok = mock::serve(Answer::Ok).await?;
    let ok2 = mock::serve(Answer::Ok).await?;
    let limited = mock::serve(Answer::RateLimited).await?;
    let stream = mock::serve(Answer::Stream {
        chunks: 5,
        gap_ms: 20,
    })
    .await?;
    let small = body_of(1024);
    let large = body_of(100 * 1024);
    let huge = body_of(1024 * 1024);
    let mut rows: Vec<Row> = Vec::new();

    eprintln!("direct ...");
    for c in [32, 256] {
        let run = load::closed_loop(ok, small.clone(), c, DURATION).await?;
        rows.push(Row {
            name: "direct to mock, 1 KB".into(),
            connections: c,
            run,
            rss_mb: None,
            spread: None,
            rounds: Vec::new(),
            cpu_us: None,
        });
    }
    let direct_one = load::closed_loop(ok, small.clone(), 1, Duration::from_secs(2)).await?;

    eprintln!("bare Envoy, floor filter and gateway side by side, {ROUNDS} interleaved rounds ...");
    let open_rows;
    {
        let trio = Trio::up(ok, ok2, &home)?;
        warm(trio.targets().map(|t| t.port), &small).await?;
        let targets = trio.targets();
        let scenarios: [(&str, &Bytes, usize); 4] = [
            ("1 KB", &small, 32),
            ("1 KB", &small, 256),
            ("100 KB", &large, 32),
            ("1 MB", &huge, 32),
        ];
        let mut runs: Vec<Vec<(load::Run, Option<f64>)>> = (0..targets.len() * scenarios.len())
            .map(|_| Vec::new())
            .collect();
        for _ in 0..ROUNDS {
            for (s, (_, body, conns)) in scenarios.iter().enumerate() {
                for (i, t) in targets.iter().enumerate() {
                    let run = load::closed_loop(t.port, (*body).clone(), *conns, ROUND).await?;
                    runs[s * targets.len() + i].push((run, rss_mb(t.pid)));
                }
            }
        }
        for (i, mut rounds) in runs.into_iter().enumerate() {
            let (s, t) = (i / targets.len(), i % targets.len());
            let in_order = rounds.iter().map(|r| (r.0.rps(), r.0.ms(0.5))).collect();
            rounds.sort_by(|a, b| a.0.rps().total_cmp(&b.0.rps()));
            let spread = (rounds[0].0.rps(), rounds[rounds.len() - 1].0.rps());
            let (run, rss) = rounds.swap_remove(rounds.len() / 2);
            rows.push(Row {
                name: format!("{}, {}", targets[t].name, scenarios[s].0),
                connections: scenarios[s].2,
                run,
                rss_mb: rss,
                spread: Some(spread),
                rounds: in_order,
                cpu_us: None,
            });
        }
        eprintln!("open loop, fixed rates ...");
        open_rows = open_rounds(&targets, &OPEN_RATES, ROUNDS, &small).await?;
    }

    eprintln!("gateway per API, {ROUNDS} interleaved rounds ...");
    rows.extend(apis::rows(&home, ok, ok2, ROUNDS, ROUND, apis::Which::All).await?);

    eprintln!("gateway, a client key with limits and one without, {ROUNDS} interleaved rounds ...");
    rows.extend(limits::rows(&home, ok, ROUNDS, ROUND).await?);

    eprintln!("gateway, a paced model entry and one not paced, {ROUNDS} interleaved rounds ...");
    rows.extend(paced::rows(&home, ok, ROUNDS, ROUND).await?);

    eprintln!("gateway with shared_state on and off, {ROUNDS} interleaved rounds ...");
    rows.extend(replicas::rows(&home, ok, ok2, ROUNDS, ROUND).await?);
    eprintln!("gateway, tracing off and on, {ROUNDS} interleaved rounds ...");
    rows.extend(traces::rows(&home, ok, ROUNDS, ROUND).await?);

    eprintln!("gateway, failover path ...");
    {
        let gw = Gateway::up(
            &home,
            "failover",
            &(provider("openai/gpt-4o", limited, FAILOVER) + &provider("anthropic/c", ok2, "")),
        )?;
        let run = load::closed_loop(GATEWAY_PORT, small.clone(), 32, DURATION).await?;
        rows.push(Row {
            name: "gateway, failover 429 -> 200, 1 KB".into(),
            connections: 32,
            run,
            rss_mb: rss_mb(gw.pid),
            spread: None,
            rounds: Vec::new(),
            cpu_us: None,
        });
    }
    let failover_one = baselines::failover_pair(limited, ok2, &home, &small).await?;

    eprintln!("streaming, time to first byte ...");
    let ttfb_direct = load::first_byte(stream, 30).await?;
    let (ttfb_first, ttfb_failover) = {
        let _gw = Gateway::up(
            &home,
            "stream",
            &(provider("openai/gpt-4o", stream, FAILOVER) + &provider("anthropic/c", ok2, "")),
        )?;
        let first = load::first_byte(GATEWAY_PORT, 30).await?;
        drop(_gw);
        let _gw = Gateway::up(
            &home,
            "stream-failover",
            &(provider("openai/gpt-4o", limited, FAILOVER) + &provider("anthropic/c", stream, "")),
        )?;
        (first, load::first_byte(GATEWAY_PORT, 30).await?)
    };

    let waiters = baselines::waiters(&home, &small, limited, ok2).await?;
    let hold = streams::hold_cost(&home, stream, ok2).await?;

    report::print(
        &rows,
        &open_rows,
        &direct_one,
        &failover_one,
        [&ttfb_direct, &ttfb_first, &ttfb_failover],
        &waiters,
    )?;
    println!("{hold}");
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}
