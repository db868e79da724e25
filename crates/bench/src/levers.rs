//! `plano-bench levers`: each lever of issue 19 measured as a bench-local
//! variation, all Envoys up at once and measured in interleaved rounds
//! (closed loop, 1 KB, 32 connections): the rendered gateway with one
//! rewrite of its envoy.yaml or one logging setting, and the floor filter
//! with one added cost (see `plano-floor`). Prints medians with their
//! spread, each against the unchanged gateway (or floor) of the same round.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use serde_json::json;

use crate::mock::{self, Answer};
use crate::rig::{self, Lever};
use crate::{body_of, load, provider, FAILOVER};

const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_millis(1500);
const CONNS: usize = 32;

struct Variant {
    name: &'static str,
    /// The row it is compared with.
    base: &'static str,
    envoy: rig::Envoy,
}

fn gateway_config(port: u16, ok: u16, ok2: u16, logging: &str) -> String {
    format!(
        "version: v0.3.0\nlisteners: [{{type: model, name: l, port: {port}}}]\nmodel_providers:\n{}{}{logging}",
        provider("openai/gpt-4o", ok, FAILOVER),
        provider("anthropic/c", ok2, "")
    )
}

pub async fn run(home: &Path) -> Result<()> {
    let ok = mock::serve(Answer::Ok).await?;
    let ok2 = mock::serve(Answer::Ok).await?;
    let no_access = "logging: {access_log: false}\n";
    let no_attempt = "logging: {first_attempt_success: false}\n";
    let no_logs = "logging: {access_log: false, first_attempt_success: false}\n";
    let gw = |i: u16, name: &str, logging: &str, levers: &[Lever]| {
        rig::rendered(
            home,
            name,
            &gateway_config(12300 + i, ok, ok2, logging),
            12300 + i,
            9930 + 2 * i,
            80 + i as u32,
            levers,
        )
    };
    let floor = |i: u16, name: &str, knobs: &str| {
        rig::plain(
            ok,
            home,
            name,
            12200 + i,
            9920 + i,
            72 + i as u32,
            Some(("v8", knobs)),
        )
    };
    let mut variants = vec![
        Variant {
            name: "bare Envoy",
            base: "bare Envoy",
            envoy: rig::plain(ok, home, "bare", 12100, 9911, 71, None)?,
        },
        Variant {
            name: "floor",
            base: "bare Envoy",
            envoy: floor(0, "floor", "")?,
        },
        Variant {
            name: "floor + whole body written back",
            base: "floor",
            envoy: floor(1, "floor-rewrite", "rewrite")?,
        },
        Variant {
            name: "floor + 1 request header set",
            base: "floor",
            envoy: floor(2, "floor-header", "header")?,
        },
        Variant {
            name: "floor + 30 host calls (header reads)",
            base: "floor",
            envoy: floor(3, "floor-calls", "calls=30")?,
        },
        Variant {
            name: "floor + 1 info log line",
            base: "floor",
            envoy: floor(4, "floor-log", "log")?,
        },
        Variant {
            name: "gateway as rendered",
            base: "gateway as rendered",
            envoy: gw(0, "gw", "", &[])?,
        },
        Variant {
            name: "gateway, no framing hop",
            base: "gateway as rendered",
            envoy: gw(1, "gw-noframing", "", &[Lever::NoFramingHop])?,
        },
        Variant {
            name: "gateway, no header_mutation upstream filter",
            base: "gateway as rendered",
            envoy: gw(2, "gw-nomutation", "", &[Lever::NoHeaderMutation])?,
        },
        Variant {
            name: "gateway, no access log",
            base: "gateway as rendered",
            envoy: gw(3, "gw-noaccess", no_access, &[])?,
        },
        Variant {
            name: "gateway, no attempt log line",
            base: "gateway as rendered",
            envoy: gw(4, "gw-noattempt", no_attempt, &[])?,
        },
        Variant {
            name: "gateway, no logs, no framing hop",
            base: "gateway as rendered",
            envoy: gw(5, "gw-lean", no_logs, &[Lever::NoFramingHop])?,
        },
    ];
    let body: Bytes = body_of(1024);
    for v in &variants {
        load::closed_loop(v.envoy.port, body.clone(), 8, Duration::from_millis(300)).await?;
    }
    // results[variant][round] = (req/s, p50 ms)
    let mut results: Vec<Vec<(f64, f64)>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        eprintln!("levers: round {} of {ROUNDS} ...", round + 1);
        // Alternate the order each round so no variant always runs first.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..variants.len()).collect()
        } else {
            (0..variants.len()).rev().collect()
        };
        for i in order {
            let run = load::closed_loop(variants[i].envoy.port, body.clone(), CONNS, ROUND).await?;
            results[i].push((run.rps(), run.ms(0.5)));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let m = v[v.len() / 2];
        (m, v[0], v[v.len() - 1])
    };
    println!("| variant | req/s median [min..max] | p50 ms | req/s vs its base, same round: median [min..max] | p50 vs base ms | vs bare |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut out = Vec::new();
    let index = |name: &str| variants.iter().position(|v| v.name == name).unwrap_or(0);
    for (i, v) in variants.iter().enumerate() {
        let b = index(v.base);
        let bare = index("bare Envoy");
        let (rps, lo, hi) = median(results[i].iter().map(|r| r.0).collect());
        let (p50, _, _) = median(results[i].iter().map(|r| r.1).collect());
        let (ratio, rlo, rhi) = median(
            results[i]
                .iter()
                .zip(&results[b])
                .map(|(r, s)| r.0 / s.0)
                .collect(),
        );
        let (dp50, _, _) = median(
            results[i]
                .iter()
                .zip(&results[b])
                .map(|(r, s)| r.1 - s.1)
                .collect(),
        );
        let (vs_bare, _, _) = median(
            results[i]
                .iter()
                .zip(&results[bare])
                .map(|(r, s)| r.0 / s.0)
                .collect(),
        );
        println!(
            "| {} | {rps:.0} [{lo:.0}..{hi:.0}] | {p50:.2} | {} | {} | {vs_bare:.2} |",
            v.name,
            if b == i {
                "(base)".to_string()
            } else {
                format!("{ratio:.3} [{rlo:.3}..{rhi:.3}] of {}", v.base)
            },
            if b == i {
                "".to_string()
            } else {
                format!("{dp50:+.3}")
            },
        );
        out.push(json!({"variant": v.name, "base": v.base, "rps": rps, "rps_min": lo, "rps_max": hi, "p50_ms": p50, "rps_vs_base": ratio, "rps_vs_base_min": rlo, "rps_vs_base_max": rhi, "p50_vs_base_ms": dp50, "rps_vs_bare": vs_bare}));
    }
    variants.clear();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-levers.json");
    std::fs::write(
        path,
        serde_json::to_vec_pretty(
            &json!({"rounds": ROUNDS, "connections": CONNS, "variants": out}),
        )?,
    )?;
    println!("\nwritten: target/bench-levers.json");
    Ok(())
}
