//! The rows measured against bare Envoy doing the same work: a failover's
//! two calls, and 5,000 requests held open at once.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use serde_json::json;

use crate::mock::{self, Answer};
use crate::{
    cpu_ticks, load, plano_stat, provider, rig, rss_mb, start_bare_envoy, waiting_gauge, Gateway,
    BARE_PORT, FAILOVER, GATEWAY_PORT, ROUND, WAITERS,
};

/// One connection's failovers (a 429, then the fallback's 200), through
/// the gateway and through bare Envoy making the same two calls, in
/// interleaved rounds: medians of each p50 and of the same round's
/// difference (the gateway's own added time).
pub struct FailoverPair {
    pub gateway_ms: f64,
    pub bare_ms: f64,
    pub added_ms: f64,
}

pub async fn failover_pair(
    limited: u16,
    ok: u16,
    home: &Path,
    body: &Bytes,
) -> Result<FailoverPair> {
    const ROUNDS: usize = 5;
    let _gw = Gateway::up(
        home,
        "failover-one",
        &(provider("openai/gpt-4o", limited, FAILOVER) + &provider("anthropic/c", ok, "")),
    )?;
    let _bare = rig::failover(limited, ok, home, BARE_PORT, 9913, 73)?;
    let (mut gateway, mut bare, mut added) = (Vec::new(), Vec::new(), Vec::new());
    let (mut answered, mut failed) = ([0u64; 2], 0);
    for _ in 0..ROUNDS {
        let g = load::closed_loop(GATEWAY_PORT, body.clone(), 1, ROUND / 2).await?;
        let b = load::closed_loop(BARE_PORT, body.clone(), 1, ROUND / 2).await?;
        (answered[0], answered[1], failed) = (
            answered[0] + g.ok,
            answered[1] + b.ok,
            failed + g.failed + b.failed,
        );
        gateway.push(g.ms(0.5));
        bare.push(b.ms(0.5));
        added.push(g.ms(0.5) - b.ms(0.5));
    }
    // Every answer took both calls, on either side.
    let retried = [
        plano_stat("retries.status").await,
        tokio::task::spawn_blocking(|| {
            rig::admin_stat(9913, "cluster.mock.upstream_rq_retry_success")
        })
        .await?
        .unwrap_or(0),
    ];
    anyhow::ensure!(
        failed == 0 && retried[0] >= answered[0] && retried[1] >= answered[1],
        "failovers: {failed} failed; retried {retried:?} of {answered:?} answered (gateway, bare Envoy)"
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(FailoverPair {
        gateway_ms: median(gateway),
        bare_ms: median(bare),
        added_ms: median(added),
    })
}

/// 5,000 requests parked in a 2 s backoff: the gateway's RSS and CPU while
/// they wait, and bare Envoy holding as many open as the baseline.
pub async fn waiters(
    home: &Path,
    small: &Bytes,
    limited: u16,
    ok2: u16,
) -> Result<serde_json::Value> {
    eprintln!("bare Envoy holding {WAITERS} requests at once ...");
    let (bare_held, bare_active) = {
        // The baseline for the waiters: the same number of requests held open
        // by bare Envoy, with a provider that answers after 4 s (time enough
        // for every request of the burst to arrive before the first answer).
        let slow = mock::serve(Answer::SometimesSlow {
            every: 1,
            delay_ms: 4000,
        })
        .await?;
        let bare = start_bare_envoy(slow, home)?;
        load::closed_loop(BARE_PORT, small.clone(), 8, Duration::from_secs(1)).await?;
        let idle = rss_mb(bare.pid()).unwrap_or(0.0);
        let burst = tokio::spawn(load::burst(BARE_PORT, WAITERS));
        // Measured once Envoy itself holds every request.
        let all_held = Instant::now();
        let mut active = 0;
        while active < WAITERS as u64 && all_held.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let read = || rig::admin_stat(9911, "http.bare.downstream_rq_active");
            active = active.max(tokio::task::spawn_blocking(read).await?.unwrap_or(0));
        }
        let held = rss_mb(bare.pid()).unwrap_or(0.0);
        burst.await??;
        drop(bare);
        if active < WAITERS as u64 {
            bail!("bare Envoy held {active} of {WAITERS} requests at most: no baseline for the waiters");
        }
        (held - idle, active)
    };

    eprintln!("{WAITERS} waiters in a 2 s backoff ...");
    let waiters = {
        let policy = "    default: true\n    retry_policy:\n      default_strategy: same_model\n      default_max_attempts: 1\n      backoff: {apply_to: same_model, base_ms: 2000, jitter: false}\n";
        let gw = Gateway::up(
            home,
            "waiters",
            &(provider("openai/gpt-4o", limited, policy) + &provider("anthropic/c", ok2, "")),
        )?;
        load::closed_loop(GATEWAY_PORT, small.clone(), 8, Duration::from_secs(1)).await?;
        let rss_idle = rss_mb(gw.pid).unwrap_or(0.0);
        let started = Instant::now();
        let burst = tokio::spawn(load::burst(GATEWAY_PORT, WAITERS));
        // Measure once every request is parked in its backoff (the filter's
        // own gauge says so), for as long as they all stay parked.
        let all_waiting = Instant::now();
        while waiting_gauge().await < WAITERS as u64
            && all_waiting.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let parked_after = started.elapsed().as_secs_f64();
        let ticks_before = cpu_ticks(gw.pid);
        let window = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu_pct = (cpu_ticks(gw.pid) - ticks_before) as f64 / window.elapsed().as_secs_f64();
        let still_waiting = waiting_gauge().await;
        let rss_waiting = rss_mb(gw.pid).unwrap_or(0.0);
        let answered = burst.await??;
        json!({
            "requests": WAITERS, "answered": answered, "seconds": started.elapsed().as_secs_f64(),
            "rss_idle_mb": rss_idle, "rss_waiting_mb": rss_waiting, "extra_rss_mb": rss_waiting - rss_idle,
            "cpu_percent_while_waiting": cpu_pct, "all_parked_after_s": parked_after,
            "bare_envoy_holding_same_extra_rss_mb": bare_held, "bare_envoy_held": bare_active,
            "waiting_at_end_of_window": still_waiting,
        })
    };
    Ok(waiters)
}
