//! `make soak` (`plano-bench soak [REQUESTS]`): three rounds of REQUESTS
//! at 200 connections against a primary that answers 429 to 30% and a
//! fallback that is sometimes slow, then streamed rounds. Fails unless every
//! request ends in a 200 or a `retry_exhausted`, Envoy stays up, and its RSS
//! after round three is within 10% of after round one.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::mock::{self, Answer};
use crate::{body_of, load, plano_stat, provider, rss_mb, Gateway, FAILOVER, GATEWAY_PORT};

/// Whether the gateway still answers, and its RSS growth from the first
/// round to the last.
fn after_rounds(pid: u32, rss: &[f64]) -> (bool, f64) {
    let alive =
        std::net::TcpStream::connect(("127.0.0.1", GATEWAY_PORT)).is_ok() && rss_mb(pid).is_some();
    (alive, (rss[rss.len() - 1] - rss[0]) / rss[0])
}

pub async fn run(requests: u64, home: &Path) -> Result<bool> {
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
    let (alive, growth) = after_rounds(gw.pid, &rss);
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
    let (alive, growth) = after_rounds(gw.pid, &rss);
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
