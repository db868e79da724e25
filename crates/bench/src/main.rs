//! `make bench`: the gateway's cost, side by side with bare Envoy and a
//! direct call to the mock, under the same closed-loop load on loopback.
//! Prints one table (markdown) and writes `target/bench.json`.
//!
//! `plano-bench mock PORT` serves the 200 mock alone, for profiling by hand;
//! `plano-bench failover` and `plano-bench waiters` run only those rows, and
//! `plano-bench replicas [SECONDS [ROUNDS]]` the `shared_state` on/off rows.
//!
//! `make soak` (`plano-bench soak [REQUESTS]`): three rounds of REQUESTS
//! (default 20,000) at 200 connections against a primary that answers 429 to
//! 30% and a fallback that is sometimes slow. Fails unless every request ends
//! in a 200 or a `retry_exhausted`, Envoy stays up, and its RSS after round
//! three is within 10% of after round one.

mod apis;
mod baselines;
mod levers;
mod limits;
mod load;
mod mock;
mod replicas;
mod report;
mod rig;
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
    if args.first().map(String::as_str) == Some("mock") {
        // A standalone 200 mock, for profiling the gateway by hand.
        let port = args
            .get(1)
            .context("usage: plano-bench mock PORT")?
            .parse()?;
        mock::serve_on(port, Answer::Ok).await?;
        println!("mock provider on 127.0.0.1:{port}");
        return std::future::pending().await;
    }
    if args.first().map(String::as_str) == Some("streams") {
        let count = args
            .get(1)
            .map(|n| n.parse())
            .transpose()?
            .unwrap_or(10_000);
        let lever = args.iter().any(|a| a == "--levers");
        // `--body-kb K`: each request's size (default: a short prompt).
        let body_kb = args
            .iter()
            .position(|a| a == "--body-kb")
            .and_then(|i| args.get(i + 1))
            .map(|k| k.parse())
            .transpose()?
            .unwrap_or(0);
        let done = streams::run(count, &home, lever, body_kb).await;
        let _ = std::fs::remove_dir_all(&home);
        return done;
    }
    if args.first().map(String::as_str) == Some("load") {
        // `plano-bench load PORT SECONDS`: 32 connections of 1 KB requests,
        // closed loop, for profiling by hand.
        let port = args
            .get(1)
            .context("usage: plano-bench load PORT SECONDS")?
            .parse()?;
        let secs = args.get(2).map(|n| n.parse()).transpose()?.unwrap_or(10);
        let run = load::closed_loop(port, body_of(1024), 32, Duration::from_secs(secs)).await?;
        println!(
            "{:.0} req/s, p50 {:.2} ms, {} failed",
            run.rps(),
            run.ms(0.5),
            run.failed
        );
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("cost") {
        // `plano-bench cost [ROUNDS]`: only the open-loop rows at 2,000
        // req/s, for measuring a change to the filter quickly.
        let rounds = args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(5);
        let ok = mock::serve(Answer::Ok).await?;
        let ok2 = mock::serve(Answer::Ok).await?;
        let trio = Trio::up(ok, ok2, &home)?;
        let body = body_of(1024);
        warm(trio.targets().map(|t| t.port), &body).await?;
        let open = open_rounds(&trio.targets(), &[2000], rounds, &body).await?;
        report::print_open(&open);
        drop(trio);
        let _ = std::fs::remove_dir_all(&home);
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("apis") {
        // `plano-bench apis [SECONDS [ROUNDS]]`: only the per-API success
        // rows, ROUNDS (default 1) of SECONDS (default 2), as a quick check.
        let secs = args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(2);
        let rounds = args.get(2).map(|n| n.parse()).transpose()?.unwrap_or(1);
        let ok = mock::serve(Answer::Ok).await?;
        let ok2 = mock::serve(Answer::Ok).await?;
        for row in apis::rows(&home, ok, ok2, rounds, Duration::from_secs(secs)).await? {
            println!(
                "{}: {:.0} req/s, p50 {:.2} ms, {} failed",
                row.name,
                row.run.rps(),
                row.run.ms(0.5),
                row.run.failed
            );
        }
        let _ = std::fs::remove_dir_all(&home);
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("limits") {
        // `plano-bench limits [SECONDS [ROUNDS]]`: only the client key rows.
        let secs = args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(2);
        let rounds = args.get(2).map(|n| n.parse()).transpose()?.unwrap_or(3);
        let ok = mock::serve(Answer::Ok).await?;
        let rows = limits::rows(&home, ok, rounds, Duration::from_secs(secs)).await;
        let _ = std::fs::remove_dir_all(&home);
        for row in rows? {
            println!(
                "{}: {:.0} req/s [{:.0}..{:.0}], p50 {:.2} ms, p99 {:.2} ms, {} failed",
                row.name,
                row.run.rps(),
                row.spread.map_or(0.0, |s| s.0),
                row.spread.map_or(0.0, |s| s.1),
                row.run.ms(0.5),
                row.run.ms(0.99),
                row.run.failed
            );
        }
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("replicas") {
        let secs = args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(2);
        let rounds = args.get(2).map(|n| n.parse()).transpose()?.unwrap_or(1);
        let ok = mock::serve(Answer::Ok).await?;
        let ok2 = mock::serve(Answer::Ok).await?;
        let rows = replicas::rows(&home, ok, ok2, rounds, Duration::from_secs(secs)).await;
        let _ = std::fs::remove_dir_all(&home);
        for row in rows? {
            println!(
                "{}: {:.0} req/s [{:.0}..{:.0}], p50 {:.2} ms, p99 {:.2} ms, {} failed",
                row.name,
                row.run.rps(),
                row.spread.map_or(0.0, |s| s.0),
                row.spread.map_or(0.0, |s| s.1),
                row.run.ms(0.5),
                row.run.ms(0.99),
                row.run.failed
            );
        }
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("tracing") {
        // `plano-bench tracing [SECONDS [ROUNDS]]`: only the tracing rows.
        let secs = args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(2);
        let rounds = args.get(2).map(|n| n.parse()).transpose()?.unwrap_or(3);
        let ok = mock::serve(Answer::Ok).await?;
        for row in traces::rows(&home, ok, rounds, Duration::from_secs(secs)).await? {
            println!(
                "{}: {:.0} req/s, p50 {:.2} ms, {} failed",
                row.name,
                row.run.rps(),
                row.run.ms(0.5),
                row.run.failed
            );
        }
        let _ = std::fs::remove_dir_all(&home);
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("failover") {
        // `plano-bench failover`: only a failover's own added time.
        let limited = mock::serve(Answer::RateLimited).await?;
        let ok = mock::serve(Answer::Ok).await?;
        let pair = baselines::failover_pair(limited, ok, &home, &body_of(1024)).await?;
        let _ = std::fs::remove_dir_all(&home);
        println!(
            "failover, 1 connection: p50 {:.3} ms through the gateway, {:.3} ms through bare Envoy making the same two calls: {:+.3} ms the gateway's own (same-round median)",
            pair.gateway_ms, pair.bare_ms, pair.added_ms
        );
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("waiters") {
        // `plano-bench waiters`: only the waiters and their bare baseline.
        let limited = mock::serve(Answer::RateLimited).await?;
        let ok2 = mock::serve(Answer::Ok).await?;
        let done = baselines::waiters(&home, &body_of(1024), limited, ok2).await;
        let _ = std::fs::remove_dir_all(&home);
        println!("{}", serde_json::to_string_pretty(&done?)?);
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("levers") {
        let done = levers::run(&home, &args[1..]).await;
        let _ = std::fs::remove_dir_all(&home);
        return done;
    }
    if args.first().map(String::as_str) == Some("hold") {
        // `plano-bench hold`: only the first-byte cost of holding a stream
        // until its first output.
        let stream = mock::serve(Answer::Stream {
            chunks: 5,
            gap_ms: 20,
        })
        .await?;
        let ok2 = mock::serve(Answer::Ok).await?;
        let line = hold_cost(&home, stream, ok2).await;
        let _ = std::fs::remove_dir_all(&home);
        println!("{}", line?);
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("soak") {
        let requests = args
            .get(1)
            .map(|n| n.parse())
            .transpose()?
            .unwrap_or(20_000);
        let passed = soak(requests, &home).await;
        let _ = std::fs::remove_dir_all(&home);
        return match passed? {
            true => Ok(()),
            false => bail!("soak failed"),
        };
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
            });
        }
        eprintln!("open loop, fixed rates ...");
        open_rows = open_rounds(&targets, &OPEN_RATES, ROUNDS, &small).await?;
    }

    eprintln!("gateway per API, {ROUNDS} interleaved rounds ...");
    rows.extend(apis::rows(&home, ok, ok2, ROUNDS, ROUND).await?);

    eprintln!("gateway, a client key with limits and one without, {ROUNDS} interleaved rounds ...");
    rows.extend(limits::rows(&home, ok, ROUNDS, ROUND).await?);

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
    let hold = hold_cost(&home, stream, ok2).await?;

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

/// Time to first byte of a stream on the success path, with the hold (a
/// retry policy: headers and events wait for the first output) against
/// without (no policy: nothing to retry, nothing held), in interleaved
/// rounds of 30 requests each.
async fn hold_cost(home: &Path, stream: u16, other: u16) -> Result<String> {
    let (mut held, mut passed) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for (policy, into) in [(FAILOVER, &mut held), ("    default: true\n", &mut passed)] {
            let _gw = Gateway::up(
                home,
                &format!("hold-{round}"),
                &(provider("openai/gpt-4o", stream, policy) + &provider("anthropic/c", other, "")),
            )?;
            into.push(load::first_byte(GATEWAY_PORT, 30).await?);
        }
    }
    let p = |hs: &[hdrhistogram::Histogram<u64>], q: f64| {
        let mut v: Vec<f64> = hs
            .iter()
            .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(format!(
        "streaming time to first byte, success path (median of {ROUNDS} rounds of 30, p50 / p99 ms): held until the first output {:.2} / {:.2}; not held (no retry policy) {:.2} / {:.2}",
        p(&held, 0.5),
        p(&held, 0.99),
        p(&passed, 0.5),
        p(&passed, 0.99)
    ))
}

async fn soak(requests: u64, home: &Path) -> Result<bool> {
    const RATE_LIMITED_PERCENT: u64 = 30;
    let flaky = mock::serve(Answer::Flaky {
        percent: RATE_LIMITED_PERCENT,
    })
    .await?;
    let sometimes_slow = mock::serve(Answer::SometimesSlow {
        every: 25,
        delay_ms: 100,
    })
    .await?;
    let gw = Gateway::up(
        home,
        "soak",
        &(provider("openai/gpt-4o", flaky, FAILOVER)
            + &provider("anthropic/c", sometimes_slow, "")),
    )?;
    let body = body_of(1024);
    println!("| round | sent | 200 | retry_exhausted | lost or broken | seconds | Envoy RSS MB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut rss = Vec::new();
    // The fallback always answers, so every request must end in a 200: a
    // retry_exhausted answer is a failure here too.
    let mut not_ok = 0;
    for round in 1..=3 {
        let start = Instant::now();
        let t = load::fixed_count(
            GATEWAY_PORT,
            body.clone(),
            200,
            requests,
            Duration::from_secs(30),
        )
        .await?;
        not_ok += requests.saturating_sub(t.ok);
        let r = rss_mb(gw.pid).unwrap_or(0.0);
        rss.push(r);
        println!(
            "| {round} | {requests} | {} | {} | {} | {:.1} | {r:.0} |",
            t.ok,
            t.exhausted,
            t.other,
            start.elapsed().as_secs_f64()
        );
    }
    let alive = std::net::TcpStream::connect(("127.0.0.1", GATEWAY_PORT)).is_ok()
        && rss_mb(gw.pid).is_some();
    let growth = (rss[2] - rss[0]) / rss[0];
    // Each 429 must have caused one failover, no more and no fewer: the
    // gateway's own counters against the share the mock rate-limits.
    let (handled, failovers) = (
        plano_stat("requests").await,
        plano_stat("retries.status").await,
    );
    // The log is capped (`planoai up`'s default: 3 files of 10 MiB) and,
    // rotated or not, still shows the latest failovers.
    let run = home.join("run");
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&run)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("envoy.log"))
        .map(|n| {
            (
                n.clone(),
                std::fs::metadata(run.join(&n)).map_or(0, |m| m.len()),
            )
        })
        .collect();
    files.sort();
    let log_bytes: u64 = files.iter().map(|f| f.1).sum();
    let newest = std::fs::read_to_string(run.join("envoy.log")).unwrap_or_default();
    let failover_logged = newest.contains("attempt 2: anthropic/c -> 200");
    const LOG_FILE_CAP: u64 = 10 << 20;
    println!(
        "log: {:.1} MiB in {} file(s) ({}), cap 3 x 10 MiB; latest failover logged: {failover_logged}",
        log_bytes as f64 / (1 << 20) as f64,
        files.len(),
        files.iter().map(|f| format!("{} {:.1} MiB", f.0, f.1 as f64 / (1 << 20) as f64)).collect::<Vec<_>>().join(", ")
    );
    let log_capped = files.len() <= 3 && files.iter().all(|f| f.1 <= LOG_FILE_CAP);
    drop(gw);
    let streamed = soak_streams(home, requests / 4).await?;
    let share = failovers as f64 / handled.max(1) as f64;
    let expected = RATE_LIMITED_PERCENT as f64 / 100.0;
    println!(
        "\nnot answered 200: {not_ok}; Envoy up after: {alive}; RSS after round 3 vs round 1: {:+.1}%; failovers {failovers} of {handled} requests ({:.1}%, {RATE_LIMITED_PERCENT}% rate-limited)",
        growth * 100.0,
        share * 100.0
    );
    let checks = [
        streamed,
        log_capped,
        failover_logged,
        not_ok == 0,
        handled == 3 * requests,
        (share - expected).abs() <= 0.05,
        alive,
        growth <= 0.10,
    ];
    let passed = checks.iter().filter(|c| **c).count();
    println!("soak: {passed} passed, {} failed", checks.len() - passed);
    Ok(passed == checks.len())
}

/// Streamed requests: the primary rate-limits 30% and is silent past its
/// `timeout_ms` for some more, the fallback streams; every 10th client leaves
/// mid-stream. Every other stream must arrive whole, Envoy must stay up, and
/// its RSS flat across the rounds.
async fn soak_streams(home: &Path, requests: u64) -> Result<bool> {
    const LEAVE_EVERY: u64 = 10;
    let unreliable = mock::serve(Answer::Unreliable {
        percent: 30,
        silent_every: 20,
        silent_ms: 400,
    })
    .await?;
    let streaming = mock::serve(Answer::Stream {
        chunks: 5,
        gap_ms: 20,
    })
    .await?;
    let policy = "    default: true\n    timeout_ms: 200\n    retry_policy: {default_strategy: different_provider, default_max_attempts: 1, on_timeout: {strategy: different_provider, max_attempts: 1}}\n";
    let gw = Gateway::up(
        home,
        "soak-streams",
        &(provider("openai/gpt-4o", unreliable, policy) + &provider("anthropic/c", streaming, "")),
    )?;
    println!("\n| streamed round | sent | whole | left on purpose | cut or failed | seconds | Envoy RSS MB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut rss = Vec::new();
    let mut broken = 0;
    let mut left = 0;
    for round in 1..=3 {
        let start = Instant::now();
        let t = load::streamed_count(
            GATEWAY_PORT,
            100,
            requests,
            LEAVE_EVERY,
            Duration::from_secs(30),
        )
        .await?;
        broken += t.broken;
        left += t.left;
        let r = rss_mb(gw.pid).unwrap_or(0.0);
        rss.push(r);
        println!(
            "| {round} | {requests} | {} | {} | {} | {:.1} | {r:.0} |",
            t.complete,
            t.left,
            t.broken,
            start.elapsed().as_secs_f64()
        );
    }
    let alive = std::net::TcpStream::connect(("127.0.0.1", GATEWAY_PORT)).is_ok()
        && rss_mb(gw.pid).is_some();
    let growth = (rss[2] - rss[0]) / rss[0];
    let (timeouts, failovers) = (
        plano_stat("retries.timeout").await,
        plano_stat("retries.status").await,
    );
    println!(
        "streams cut or failed: {broken}; left on purpose: {left}; failovers after a 429: {failovers}, after a timeout: {timeouts}; Envoy up after: {alive}; RSS round 3 vs 1: {:+.1}%\n",
        growth * 100.0
    );
    Ok(broken == 0 && timeouts > 0 && failovers > 0 && alive && growth <= 0.10)
}
