//! `make bench-streams` (`plano-bench streams [N]`): N concurrent SSE
//! streams (default 10,000), each one chunk every 100 ms for 30 s, held by
//! bare Envoy and then by the gateway: RSS and CPU of each while holding
//! them. Writes `target/bench-streams.json`; `make bench` shows its summary.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use serde_json::json;

use crate::mock::{self, Answer};
use crate::{
    cpu_ticks, load, provider, rss_mb, start_bare_envoy, streamed_body_of, Gateway, BARE_PORT,
    FAILOVER, GATEWAY_PORT,
};

const CHUNKS: usize = 300;
const GAP_MS: u64 = 100;

struct Held {
    rss_idle: f64,
    rss_held: f64,
    cpu_pct: f64,
    opened: usize,
    whole: u64,
    broken: u64,
}

async fn hold(port: u16, pid: u32, count: usize, body: &Bytes) -> Result<Held> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_mb(pid).unwrap_or(0.0);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let held = tokio::spawn(load::hold_streams(
        port,
        count,
        Duration::from_secs(120),
        tx,
        body.clone(),
    ));
    let start = Instant::now();
    let mut opened = 0;
    while opened < count && start.elapsed() < Duration::from_secs(15) {
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(())) => opened += 1,
            Ok(None) => break,
            Err(_) => {}
        }
    }
    // Let the last connections settle, then measure for 10 s of streaming.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks = cpu_ticks(pid);
    let window = Instant::now();
    let mut rss_held: f64 = 0.0;
    while window.elapsed() < Duration::from_secs(10) {
        while rx.try_recv().is_ok() {
            opened += 1;
        }
        rss_held = rss_held.max(rss_mb(pid).unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu_pct = (cpu_ticks(pid) - ticks) as f64 / window.elapsed().as_secs_f64();
    let (whole, broken) = held.await??;
    Ok(Held {
        rss_idle,
        rss_held,
        cpu_pct,
        opened,
        whole,
        broken,
    })
}

/// With `lever`, also the gateway without its framing hop (rendered by the
/// bench, `rig::Lever::NoFramingHop`): what that hop costs a stream. Each
/// request body is `body_kb` KB.
pub async fn run(count: usize, home: &Path, lever: bool, body_kb: usize) -> Result<()> {
    let body = streamed_body_of(body_kb * 1024);
    let stream = mock::serve(Answer::Stream {
        chunks: CHUNKS,
        gap_ms: GAP_MS,
    })
    .await?;
    let ok = mock::serve(Answer::Ok).await?;
    eprintln!("bare Envoy holding {count} streams ...");
    let bare = {
        let envoy = start_bare_envoy(stream, home)?;
        hold(BARE_PORT, envoy.pid(), count, &body).await?
    };
    eprintln!("gateway holding {count} streams ...");
    let gw = {
        let gw = Gateway::up(
            home,
            "streams",
            &(provider("openai/gpt-4o", stream, FAILOVER) + &provider("anthropic/c", ok, "")),
        )?;
        hold(GATEWAY_PORT, gw.pid, count, &body).await?
    };
    let lean = if lever {
        eprintln!("gateway without the framing hop holding {count} streams ...");
        let config = format!(
            "version: v0.3.0\nlisteners: [{{type: model, name: l, port: {GATEWAY_PORT}}}]\nmodel_providers:\n{}{}",
            provider("openai/gpt-4o", stream, FAILOVER),
            provider("anthropic/c", ok, "")
        );
        let envoy = crate::rig::rendered(
            home,
            "streams-lean",
            &config,
            GATEWAY_PORT,
            9931,
            81,
            &[crate::rig::Lever::NoFramingHop],
        )?;
        Some(hold(GATEWAY_PORT, envoy.pid(), count, &body).await?)
    } else {
        None
    };
    println!("| {count} SSE streams, 1 chunk / {GAP_MS} ms, {} s, {body_kb} KB requests | opened | whole | broken | RSS idle MB | RSS holding MB | extra MB | KB per stream | CPU % of a core |", CHUNKS as u64 * GAP_MS / 1000);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut held = vec![("bare Envoy", &bare), ("gateway", &gw)];
    if let Some(l) = &lean {
        held.push(("gateway, no framing hop", l));
    }
    for (name, h) in held {
        let extra = h.rss_held - h.rss_idle;
        println!(
            "| {name} | {} | {} | {} | {:.0} | {:.0} | {:+.0} | {:.1} | {:.0} |",
            h.opened,
            h.whole,
            h.broken,
            h.rss_idle,
            h.rss_held,
            extra,
            extra * 1024.0 / count as f64,
            h.cpu_pct
        );
    }
    let over = (gw.rss_held - gw.rss_idle) - (bare.rss_held - bare.rss_idle);
    let summary = format!(
        "{count} streams (1 chunk / 100 ms): gateway {:+.0} MB RSS and {:.0}% CPU holding them, bare Envoy {:+.0} MB and {:.0}%: the gateway's own share {:+.0} MB ({:.1} KB a stream), {:+.0} points of a core; {} of {} gateway streams whole",
        gw.rss_held - gw.rss_idle, gw.cpu_pct, bare.rss_held - bare.rss_idle, bare.cpu_pct,
        over, over * 1024.0 / count as f64, gw.cpu_pct - bare.cpu_pct, gw.whole, count
    );
    println!("\n{summary}");
    let json = json!({
        "streams": count, "chunk_gap_ms": GAP_MS, "chunks": CHUNKS, "request_kb": body_kb,
        "bare": {"opened": bare.opened, "whole": bare.whole, "broken": bare.broken, "rss_idle_mb": bare.rss_idle, "rss_held_mb": bare.rss_held, "cpu_percent": bare.cpu_pct},
        "gateway": {"opened": gw.opened, "whole": gw.whole, "broken": gw.broken, "rss_idle_mb": gw.rss_idle, "rss_held_mb": gw.rss_held, "cpu_percent": gw.cpu_pct},
        "gateway_extra_over_bare_mb": over,
        "summary": summary,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-streams.json");
    std::fs::write(out, serde_json::to_vec_pretty(&json)?)?;
    println!("written: target/bench-streams.json");
    Ok(())
}
