//! `make bench-streams` (`plano-bench streams [N]`): N concurrent SSE
//! streams (default 10,000), each one chunk every 100 ms for 30 s, held by
//! bare Envoy and then by the gateway: RSS and CPU of each while holding
//! them. Writes `target/bench-streams.json`; `make bench` shows its summary.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use serde_json::json;

use crate::mock::{self, Answer};
use crate::{
    cpu_ticks, load, provider, rss_mb, start_bare_envoy, streamed_body_of, Gateway, BARE_PORT,
    FAILOVER, GATEWAY_PORT, ROUNDS,
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
    /// Events the client read a second in the window.
    events_per_s: f64,
    /// Events the mock sent a second in the window.
    sent_per_s: f64,
    /// This process's CPU (the client and the mock) in the window, % of a core.
    bench_cpu_pct: f64,
}

impl Held {
    /// Envoy's CPU per event delivered, in microseconds.
    fn us_per_event(&self) -> f64 {
        self.cpu_pct * 10_000.0 / self.events_per_s.max(1.0)
    }

    /// Whether the client read what the mock sent as fast as it was sent.
    /// Short of it, events queue in Envoy and are written in batches, which
    /// costs less per event than a stream read as it comes.
    fn kept_up(&self) -> bool {
        self.events_per_s >= 0.98 * self.sent_per_s
    }

    fn extra_mb(&self) -> f64 {
        self.rss_held - self.rss_idle
    }

    /// Memory per stream actually held: a stream that never opened holds
    /// nothing, so it must not thin out the figure.
    fn kb_per_stream(&self) -> f64 {
        self.extra_mb() * 1024.0 / self.opened.max(1) as f64
    }
}

async fn hold(port: u16, pid: u32, count: usize, body: &Bytes) -> Result<Held> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_mb(pid).unwrap_or(0.0);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let events = Arc::new(AtomicU64::new(0));
    let held = tokio::spawn(load::hold_streams(
        port,
        count,
        Duration::from_secs(120),
        tx,
        events.clone(),
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
    let own_ticks = cpu_ticks(std::process::id());
    let events_before = events.load(Ordering::Relaxed);
    let sent_before = mock::STREAM_EVENTS_SENT.load(Ordering::Relaxed);
    let window = Instant::now();
    let mut rss_held: f64 = 0.0;
    while window.elapsed() < Duration::from_secs(10) {
        while rx.try_recv().is_ok() {
            opened += 1;
        }
        rss_held = rss_held.max(rss_mb(pid).unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seconds = window.elapsed().as_secs_f64();
    let cpu_pct = (cpu_ticks(pid) - ticks) as f64 / seconds;
    let bench_cpu_pct = (cpu_ticks(std::process::id()) - own_ticks) as f64 / seconds;
    let events_per_s = (events.load(Ordering::Relaxed) - events_before) as f64 / seconds;
    let sent_per_s =
        (mock::STREAM_EVENTS_SENT.load(Ordering::Relaxed) - sent_before) as f64 / seconds;
    let (whole, broken) = held.await??;
    Ok(Held {
        rss_idle,
        rss_held,
        cpu_pct,
        opened,
        whole,
        broken,
        events_per_s,
        sent_per_s,
        bench_cpu_pct,
    })
}

/// With `lever`, also the gateway without its framing hop
/// (`rig::Lever::NoFramingHop`) and, to compare it with, the gateway as
/// rendered, both started by the bench: what that hop costs a stream. Each
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
    // The lever's row against the same gateway started the same way (by
    // the bench, from `planoai render`), not against `planoai up`'s.
    let mut levered = Vec::new();
    if lever {
        let config = format!(
            "version: v0.3.0\nlisteners: [{{type: model, name: l, port: {GATEWAY_PORT}}}]\nmodel_providers:\n{}{}",
            provider("openai/gpt-4o", stream, FAILOVER),
            provider("anthropic/c", ok, "")
        );
        for (row, levers) in [
            ("gateway as rendered, bench-started", vec![]),
            (
                "gateway, no framing hop, bench-started",
                vec![crate::rig::Lever::NoFramingHop],
            ),
        ] {
            eprintln!("{row} holding {count} streams ...");
            let envoy = crate::rig::rendered(
                home,
                "streams-rendered",
                &config,
                GATEWAY_PORT,
                9931,
                81,
                &levers,
            )?;
            levered.push((row, hold(GATEWAY_PORT, envoy.pid(), count, &body).await?));
        }
    }
    println!("| {count} SSE streams, 1 chunk / {GAP_MS} ms, {} s, {body_kb} KB requests | opened | whole | broken | RSS idle MB | RSS holding MB | extra MB | KB per stream opened | CPU % of a core | events sent /s | events read /s | client kept up | bench's own CPU % | Envoy CPU us per event |", CHUNKS as u64 * GAP_MS / 1000);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    let mut held = vec![("bare Envoy", &bare), ("gateway", &gw)];
    held.extend(levered.iter().map(|(row, h)| (*row, h)));
    for (name, h) in held {
        println!(
            "| {name} | {} | {} | {} | {:.0} | {:.0} | {:+.0} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.1} |",
            h.opened,
            h.whole,
            h.broken,
            h.rss_idle,
            h.rss_held,
            h.extra_mb(),
            h.kb_per_stream(),
            h.cpu_pct,
            h.sent_per_s,
            h.events_per_s,
            if h.kept_up() { "yes" } else { "NO: not Envoy's figure" },
            h.bench_cpu_pct,
            h.us_per_event()
        );
    }
    let over = gw.extra_mb() - bare.extra_mb();
    // What a core serves: events a second at the gateway's cost per event,
    // and streams of 50 tokens a second (one event each).
    let per_event = gw.us_per_event() - bare.us_per_event();
    let capacity = if gw.kept_up() && bare.kept_up() {
        format!(
            "; Envoy's CPU per event: gateway {:.1} us, bare Envoy {:.1} us ({per_event:+.1} us), so a core serves about {:.0} events a second through the gateway, {:.0} streams at 50 tokens a second",
            gw.us_per_event(),
            bare.us_per_event(),
            1e6 / gw.us_per_event(),
            1e6 / gw.us_per_event() / 50.0
        )
    } else {
        "; the client did not keep up, so no CPU per event is given (try fewer streams)".to_string()
    };
    let over_kb = gw.kb_per_stream() - bare.kb_per_stream();
    let summary = format!(
        "{count} streams (1 chunk / 100 ms): gateway {:+.0} MB RSS and {:.0}% CPU holding {} opened, bare Envoy {:+.0} MB and {:.0}% holding {}: the gateway's own share {:+.0} MB ({over_kb:.1} KB a stream opened), {:+.0} points of a core; {} of {} gateway streams whole",
        gw.extra_mb(), gw.cpu_pct, gw.opened, bare.extra_mb(), bare.cpu_pct, bare.opened,
        over, gw.cpu_pct - bare.cpu_pct, gw.whole, count
    ) + &capacity;
    println!("\n{summary}");
    let json = json!({
        "streams": count, "chunk_gap_ms": GAP_MS, "chunks": CHUNKS, "request_kb": body_kb,
        "bare": {"opened": bare.opened, "whole": bare.whole, "broken": bare.broken, "rss_idle_mb": bare.rss_idle, "rss_held_mb": bare.rss_held, "cpu_percent": bare.cpu_pct},
        "gateway": {"opened": gw.opened, "whole": gw.whole, "broken": gw.broken, "rss_idle_mb": gw.rss_idle, "rss_held_mb": gw.rss_held, "cpu_percent": gw.cpu_pct},
        "gateway_extra_over_bare_mb": over,
        "gateway_extra_over_bare_kb_per_stream_opened": over_kb,
        "bare_us_per_event": bare.us_per_event(), "gateway_us_per_event": gw.us_per_event(),
        "kept_up": gw.kept_up() && bare.kept_up(),
        "summary": summary,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-streams.json");
    std::fs::write(out, serde_json::to_vec_pretty(&json)?)?;
    println!("written: target/bench-streams.json");
    Ok(())
}

/// Time to first byte of a stream on the success path, with the hold (a
/// retry policy: headers and events wait for the first output) against
/// without (no policy: nothing to retry, nothing held), in interleaved
/// rounds of 30 requests each.
pub async fn hold_cost(home: &Path, stream: u16, other: u16) -> Result<String> {
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
