//! The success path for a client key with limits against one without, on
//! one gateway, in interleaved rounds: each request of the limited key is
//! charged in shared data when it starts and settled from its usage when it
//! ends (two compare-and-swap updates), and its answer states its limits in
//! headers. Its limits are far above the load, so nothing is refused.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::{body_of, load, provider, rss_mb, Gateway, Row, GATEWAY_PORT};

const LIMITED_KEY: &str = "bench-limited-key-0123456789";
const FREE_KEY: &str = "bench-free-key-0123456789ab";

pub async fn rows(home: &Path, ok: u16, rounds: usize, round: Duration) -> Result<Vec<Row>> {
    let listener = format!(
        "[{{type: model, name: l, port: {GATEWAY_PORT}, client_keys: [\
         {{name: limited, key: {LIMITED_KEY}, limits: {{requests_per_minute: 1000000000, tokens_per_minute: 1000000000000, tokens_per_day: 1000000000000000}}}}, \
         {{name: free, key: {FREE_KEY}}}]}}]"
    );
    let gw = Gateway::up_listening(
        home,
        "limits",
        &listener,
        &provider("openai/gpt-4o", ok, "    default: true\n"),
    )?;
    let body = body_of(1024);
    let keys = [FREE_KEY, LIMITED_KEY];
    for key in keys {
        load::closed_loop_as(
            GATEWAY_PORT,
            key,
            body.clone(),
            8,
            Duration::from_millis(300),
        )
        .await?;
    }
    let mut runs: [Vec<load::Run>; 2] = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        // Each round starts with the other key: the order costs a little.
        for k in 0..2 {
            let i = (r + k) % 2;
            let run = load::closed_loop_as(GATEWAY_PORT, keys[i], body.clone(), 32, round).await?;
            ensure!(run.failed == 0, "{} requests of key {i} failed", run.failed);
            runs[i].push(run);
        }
    }
    let rss = rss_mb(gw.pid);
    Ok(runs
        .into_iter()
        .zip(["no limits", "limited (charged and settled)"])
        .map(|(rounds, name)| {
            Row::median(
                format!("gateway, success, client key {name}, 1 KB"),
                rounds,
                rss,
            )
        })
        .collect())
}
