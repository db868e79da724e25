use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use plano_core::envoy_names::BLOCKS_PATH;

use crate::health;
use crate::runtime::{self, Mode};

pub fn run() -> Result<i32> {
    let Some(state) = runtime::read_state() else {
        outln!("not running")?;
        return Ok(3);
    };
    if !runtime::is_running(&state) {
        outln!(
            "not running (the last gateway, for {}, has exited)",
            state.config.display()
        )?;
        return Ok(3);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let up = now.saturating_sub(state.started_at);
    outln!("running")?;
    outln!(
        "  mode:    {}",
        match state.mode {
            Mode::Native => "native",
            Mode::Docker => "docker",
        }
    )?;
    outln!("  listen:  http://localhost:{}", state.port)?;
    outln!("  config:  {}", state.config.display())?;
    match state.mode {
        Mode::Native => outln!("  pid:     {}", state.pid.unwrap_or(0))?,
        Mode::Docker => outln!("  container: {}", runtime::CONTAINER)?,
    }
    outln!(
        "  uptime:  {}h {:02}m {:02}s",
        up / 3600,
        up / 60 % 60,
        up % 60
    )?;
    match health::get(runtime::admin_ports().1, BLOCKS_PATH)
        .map(|(_, body)| serde_json::from_str::<serde_json::Value>(&body))
    {
        Ok(Ok(report)) => {
            let blocks = report["blocks"].as_array().cloned().unwrap_or_default();
            if blocks.is_empty() {
                outln!("  blocks:  none")?;
            } else {
                outln!("  blocks:")?;
                for b in blocks {
                    let secs = b["remaining_ms"].as_u64().unwrap_or(0).div_ceil(1000);
                    let blocked = b["blocked"].as_str().unwrap_or("?");
                    match b["reason"].as_str() {
                        // A spent quota lasts hours: when it ends says more.
                        Some(reason) => {
                            let until = std::time::UNIX_EPOCH
                                + std::time::Duration::from_millis(
                                    b["until_ms"].as_u64().unwrap_or(0),
                                );
                            outln!(
                                "    {blocked}: {reason} until {} (for {secs} more s)",
                                httpdate::fmt_http_date(until)
                            )?
                        }
                        None => outln!("    {blocked} for {secs} more s")?,
                    }
                }
            }
            let clients = report["clients"].as_array().cloned().unwrap_or_default();
            if !clients.is_empty() {
                outln!("  client limits:")?;
                for c in clients {
                    outln!("    {}", client_line(&c))?;
                }
            }
            let paced = report["paced"].as_array().cloned().unwrap_or_default();
            if !paced.is_empty() {
                outln!("  paced deployments:")?;
                for p in paced {
                    outln!("    {}", paced_line(&p))?;
                }
                outln!("  queue:   {}", queue_line(&report["queue"]))?;
            }
        }
        _ => outln!("  blocks:  unknown (the gateway did not report them)")?,
    }

    if let Ok((200, stats)) =
        health::get(runtime::admin_ports().0, "/stats?filter=wasmcustom.plano")
    {
        if let Some(line) = shared_state_line(&stats) {
            outln!("  shared:  {line}")?;
        }
        outln!("  counters:")?;
        // Series by model, deployment or key (`key=.=value;.;` in their
        // names) are for `planoai top` and `/stats/prometheus`.
        for line in stats
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("=.="))
        {
            outln!("    {}", line.trim_start_matches("wasmcustom."))?;
        }
    }
    Ok(0)
}

/// A limited key's spending against its limits, by its name: `batch: 12/60
/// requests, 3400/40000 tokens this minute; 120000/2000000 tokens today`.
fn client_line(c: &serde_json::Value) -> String {
    let of = |spent: &str, limit: &str| {
        let spent = c[spent].as_u64().unwrap_or(0);
        match c[limit].as_u64() {
            Some(limit) => format!("{spent}/{limit}"),
            None => spent.to_string(),
        }
    };
    format!(
        "{}: {} requests, {} tokens this minute; {} tokens today",
        c["name"].as_str().unwrap_or("?"),
        of("minute_requests", "requests_per_minute"),
        of("minute_tokens", "tokens_per_minute"),
        of("day_tokens", "tokens_per_day"),
    )
}

/// The queue for paced targets' room: `3 waiting, the oldest for 2.4 s`.
pub(crate) fn queue_line(q: &serde_json::Value) -> String {
    let waiting = q["waiting"].as_u64().unwrap_or(0);
    match q["oldest_wait_ms"].as_u64() {
        Some(ms) if waiting > 0 => {
            format!(
                "{waiting} waiting, the oldest for {:.1} s",
                ms as f64 / 1000.0
            )
        }
        _ => "none waiting".into(),
    }
}

/// A paced target's minute against its limits, each limit's source said
/// when its provider reported it lower: `openai/gpt-4o[a]: 3/5 requests
/// (learned), 900/60000 tokens this minute`.
pub(crate) fn paced_line(p: &serde_json::Value) -> String {
    let of = |used: &str, limit: &str, source: &str, unit: &str| {
        let used = p[used].as_u64().unwrap_or(0);
        let learned = if p[source] == "learned" {
            " (learned)"
        } else {
            ""
        };
        match p[limit].as_u64() {
            Some(limit) => format!("{used}/{limit} {unit}{learned}"),
            None => format!("{used} {unit}"),
        }
    };
    format!(
        "{}: {}, {} this minute",
        p["target"].as_str().unwrap_or("?"),
        of(
            "minute_requests",
            "requests_per_minute",
            "requests_source",
            "requests"
        ),
        of(
            "minute_tokens",
            "tokens_per_minute",
            "tokens_source",
            "tokens"
        ),
    )
}

/// etcd's state from the holder's stats, when `shared_state` is on.
fn shared_state_line(stats: &str) -> Option<String> {
    let stat = |name: &str| {
        stats.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == format!("wasmcustom.plano.shared_state.{name}"))
                .then(|| v.trim().parse::<u64>().ok())
                .flatten()
        })
    };
    let up = stat("up")?;
    Some(format!(
        "etcd {} (sync lag {} ms, {} peers counted, {} blocks learned, {} writes, {} writes dropped, {} resyncs)",
        if up == 1 {
            "up"
        } else {
            "down: blocks and budgets are local only"
        },
        stat("sync_lag_ms").unwrap_or(0),
        stat("peers").unwrap_or(0),
        stat("blocks_learned").unwrap_or(0),
        stat("writes").unwrap_or(0),
        stat("writes_dropped").unwrap_or(0),
        stat("resyncs").unwrap_or(0),
    ))
}
