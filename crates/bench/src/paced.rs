//! The success path to a paced model entry (`rpm`/`tpm` far above the
//! load, so nothing waits) against an unpaced one, on one gateway, in
//! interleaved rounds: each request to the paced entry reads the queue's
//! slot, reserves its target's minute (a compare-and-swap update), counts
//! its key's share, and settles the reservation from its usage.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Bytes;

use crate::{body_of, load, provider, rss_mb, Gateway, Row, GATEWAY_PORT};

pub async fn rows(home: &Path, ok: u16, rounds: usize, round: Duration) -> Result<Vec<Row>> {
    let providers = provider("openai/gpt-4o", ok, "    default: true\n")
        + &provider(
            "openai/gpt-4o-paced",
            ok,
            "    rpm: 1000000000\n    tpm: 1000000000000\n",
        );
    let gw = Gateway::up(home, "paced", &providers)?;
    let plain = body_of(1024);
    let paced = Bytes::from(String::from_utf8_lossy(&plain).replacen(
        "openai/gpt-4o",
        "openai/gpt-4o-paced",
        1,
    ));
    let bodies = [plain, paced];
    for body in &bodies {
        load::closed_loop(GATEWAY_PORT, body.clone(), 8, Duration::from_millis(300)).await?;
    }
    let mut runs: [Vec<load::Run>; 2] = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        // Each round starts with the other entry: the order costs a little.
        for k in 0..2 {
            let i = (r + k) % 2;
            let run = load::closed_loop(GATEWAY_PORT, bodies[i].clone(), 32, round).await?;
            ensure!(
                run.failed == 0,
                "{} requests of entry {i} failed",
                run.failed
            );
            runs[i].push(run);
        }
    }
    let rss = rss_mb(gw.pid);
    Ok(runs
        .into_iter()
        .zip(["not paced", "paced (rpm/tpm never binding)"])
        .map(|(rounds, name)| Row::median(format!("gateway, success, {name}, 1 KB"), rounds, rss))
        .collect())
}
