//! The success path with `shared_state` on against off (issue 28), in one
//! run: a real etcd on loopback, one gateway brought up each way in
//! interleaved rounds whose order alternates. On the success path nothing
//! touches etcd, so the two rows should agree within the noise. The model
//! has a retry budget both ways, so with `shared_state` on its counts are
//! published (once a second, off the request path) while the load runs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{body_of, load, provider, rss_mb, wait_listening, Gateway, Row, GATEWAY_PORT};

const ETCD_PORT: u16 = 22479;
/// The bench's failover policy with a retry budget.
const BUDGETED: &str = "    default: true\n    retry_policy: {default_strategy: different_provider, default_max_attempts: 1, retry_budget: {ratio: 0.2}}\n";
const ETCD_PEER_PORT: u16 = 22480;

/// etcd for the bench, killed when dropped.
pub(crate) struct Etcd(Child);

impl Etcd {
    pub(crate) fn port(&self) -> u16 {
        ETCD_PORT
    }

    pub(crate) fn start(home: &Path) -> Result<Etcd> {
        let url = format!("http://127.0.0.1:{ETCD_PORT}");
        let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
        let child = Command::new("etcd")
            .args(["--data-dir", &home.join("etcd").display().to_string()])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start etcd (`make setup` installs it)")?;
        let etcd = Etcd(child);
        wait_listening(ETCD_PORT)?;
        Ok(etcd)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two rows, `shared_state` off and on: the median of `rounds` closed-loop
/// runs of `round` at 32 connections each, 1 KB chat requests.
pub async fn rows(
    home: &Path,
    ok: u16,
    ok2: u16,
    rounds: usize,
    round: Duration,
) -> Result<Vec<Row>> {
    let _etcd = Etcd::start(home)?;
    let providers = provider("openai/gpt-4o", ok, BUDGETED) + &provider("anthropic/c", ok2, "");
    let shared = format!("shared_state:\n  etcd_endpoints: [http://127.0.0.1:{ETCD_PORT}]\n");
    let variants = [
        (
            "gateway, success, shared_state off, 1 KB",
            providers.clone(),
        ),
        (
            "gateway, success, shared_state on (etcd up), 1 KB",
            providers + &shared,
        ),
    ];
    let body = body_of(1024);
    let mut runs: Vec<Vec<(load::Run, Option<f64>)>> = vec![Vec::new(), Vec::new()];
    for r in 0..rounds {
        for k in 0..variants.len() {
            let i = (r + k) % variants.len();
            let gw = Gateway::up(home, &format!("replicas{i}"), &variants[i].1)?;
            load::closed_loop(GATEWAY_PORT, body.clone(), 8, Duration::from_millis(300)).await?;
            let run = load::closed_loop(GATEWAY_PORT, body.clone(), 32, round).await?;
            runs[i].push((run, rss_mb(gw.pid)));
        }
    }
    Ok(variants
        .iter()
        .zip(runs)
        .map(|((name, _), mut rounds)| {
            let in_order = rounds.iter().map(|(r, _)| (r.rps(), r.ms(0.5))).collect();
            rounds.sort_by(|a, b| a.0.rps().total_cmp(&b.0.rps()));
            let spread = (rounds[0].0.rps(), rounds[rounds.len() - 1].0.rps());
            let (run, rss) = rounds.swap_remove(rounds.len() / 2);
            Row {
                name: name.to_string(),
                connections: 32,
                run,
                rss_mb: rss,
                spread: Some(spread),
                rounds: in_order,
                cpu_us: None,
            }
        })
        .collect())
}
