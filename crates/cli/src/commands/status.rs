use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::runtime::{self, Mode};
use crate::{health, render};

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
    match health::get(render::STATUS_PORT, "/plano/blocks")
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
                    outln!(
                        "    {} for {secs} more s",
                        b["blocked"].as_str().unwrap_or("?")
                    )?;
                }
            }
        }
        _ => outln!("  blocks:  unknown (the gateway did not report them)")?,
    }
    if let Ok((200, stats)) = health::get(render::ADMIN_PORT, "/stats?filter=wasmcustom.plano") {
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
