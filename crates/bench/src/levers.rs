//! `plano-bench levers [NAME ...]`: each lever of issue 19 measured as a
//! bench-local variation, all Envoys up at once and measured in interleaved
//! rounds: the rendered gateway with one rewrite of its envoy.yaml, one
//! logging setting or another build of the filter (`PLANO_BENCH_WASM`), and
//! the floor filter with one added cost (see `plano-floor`). The measure is
//! Envoy's CPU time per request at a fixed open-loop rate well below
//! saturation: unlike req/s under a closed loop, it does not move with what
//! else the two cores run. Prints medians with their spread, each against
//! the unchanged gateway (or floor) of the same round.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use serde_json::json;

use crate::mock::{self, Answer};
use crate::rig::{self, Lever};
use crate::{body_of, costed_open_loop, provider, warm, FAILOVER};

const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_millis(1500);
/// Open-loop rate: well below saturation, so the Envoy CPU time each
/// request costs is measured, not queueing.
const RATE: u64 = 2000;

struct Variant {
    name: String,
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

/// How a variant's Envoy is made.
enum Make {
    Bare,
    /// The floor filter with these knobs (see `plano-floor`).
    Floor(&'static str),
    /// The rendered gateway with this `logging:` and these levers.
    Gateway(&'static str, Vec<Lever>),
}

/// Every variant: (name, the row it is compared with, how it is made).
fn variants() -> Vec<(String, &'static str, Make)> {
    let no_logs = "logging: {access_log: false, first_attempt_success: false}\n";
    let mut all = vec![
        ("bare Envoy".into(), "bare Envoy", Make::Bare),
        ("floor".into(), "bare Envoy", Make::Floor("")),
        (
            "floor + whole body written back".into(),
            "floor",
            Make::Floor("rewrite"),
        ),
        (
            "floor + 1 request header set".into(),
            "floor",
            Make::Floor("header"),
        ),
        (
            "floor + 30 host calls (header reads)".into(),
            "floor",
            Make::Floor("calls=30"),
        ),
        (
            "floor + 1 info log line".into(),
            "floor",
            Make::Floor("log"),
        ),
        (
            "gateway as rendered".into(),
            "gateway as rendered",
            Make::Gateway("", vec![]),
        ),
        (
            "gateway, no framing hop".into(),
            "gateway as rendered",
            Make::Gateway("", vec![Lever::NoFramingHop]),
        ),
        (
            "gateway, no stall hop".into(),
            "gateway as rendered",
            Make::Gateway("", vec![Lever::NoStallHop]),
        ),
        (
            "gateway, no header_mutation upstream filter".into(),
            "gateway as rendered",
            Make::Gateway(
                "",
                vec![Lever::Drop("- name: envoy.filters.http.header_mutation")],
            ),
        ),
        (
            "gateway, no access log".into(),
            "gateway as rendered",
            Make::Gateway("logging: {access_log: false}\n", vec![]),
        ),
        (
            "gateway, no attempt log line".into(),
            "gateway as rendered",
            Make::Gateway("logging: {first_attempt_success: false}\n", vec![]),
        ),
        (
            "gateway, no logs, no framing hop".into(),
            "gateway as rendered",
            Make::Gateway(no_logs, vec![Lever::NoFramingHop]),
        ),
        (
            "gateway, no upstream filters (no key injected)".into(),
            "gateway as rendered",
            Make::Gateway("", vec![Lever::Drop("typed_extension_protocol_options:")]),
        ),
        (
            "gateway, no overload manager".into(),
            "gateway as rendered",
            Make::Gateway("", vec![Lever::Drop("overload_manager:")]),
        ),
    ];
    // Other builds of the filter against this one, for a change in the
    // filter's own code: PLANO_BENCH_WASM=a.wasm,b.wasm
    let others = std::env::var("PLANO_BENCH_WASM").unwrap_or_default();
    for wasm in others.split(',').filter(|w| !w.is_empty()) {
        let stem = Path::new(wasm)
            .file_stem()
            .map_or(wasm.into(), |s| s.to_string_lossy());
        all.push((
            format!("gateway, {stem}.wasm"),
            "gateway as rendered",
            Make::Gateway("", vec![Lever::Wasm(wasm.to_string())]),
        ));
    }
    all
}

/// `only`: substrings of the variants to measure (with their bases); all
/// when empty.
pub async fn run(home: &Path, only: &[String]) -> Result<()> {
    let ok = mock::serve(Answer::Ok).await?;
    let ok2 = mock::serve(Answer::Ok).await?;
    let all = variants();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    let bases: Vec<&str> = all
        .iter()
        .filter(|v| wanted(&v.0))
        .flat_map(|v| [v.1, "bare Envoy"])
        .collect();
    let mut variants = Vec::new();
    for (i, (name, base, make)) in all.into_iter().enumerate() {
        if !wanted(&name) && !bases.contains(&name.as_str()) {
            continue;
        }
        let i = i as u16;
        let envoy = match make {
            Make::Bare => rig::plain(ok, home, "bare", 12100, 9911, 71, None)?,
            Make::Floor(knobs) => rig::plain(
                ok,
                home,
                &format!("floor{i}"),
                12200 + i,
                9920 + i,
                72 + i as u32,
                Some(("v8", knobs)),
            )?,
            Make::Gateway(logging, levers) => rig::rendered(
                home,
                &format!("gw{i}"),
                &gateway_config(12300 + i, ok, ok2, logging),
                12300 + i,
                9940 + 2 * i,
                90 + i as u32,
                &levers,
            )?,
        };
        variants.push(Variant { name, base, envoy });
    }
    let body: Bytes = body_of(1024);
    warm(variants.iter().map(|v| v.envoy.port), &body).await?;
    // results[variant][round] = (Envoy CPU us per request, p50 ms)
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
            let envoy = &variants[i].envoy;
            let (run, cpu_us) =
                costed_open_loop(envoy.port, &[envoy.pid()], body.clone(), RATE, ROUND).await?;
            results[i].push((cpu_us, run.service.value_at_quantile(0.5) as f64 / 1000.0));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let m = v[v.len() / 2];
        (m, v[0], v[v.len() - 1])
    };
    println!("| variant | Envoy CPU us/request, median [min..max] | CPU us vs its base, same round: median [min..max] | p50 ms | p50 vs base ms |");
    println!("|---|---:|---:|---:|---:|");
    let mut out = Vec::new();
    let index = |name: &str| variants.iter().position(|v| v.name == name).unwrap_or(0);
    for (i, v) in variants.iter().enumerate() {
        let b = index(v.base);
        let (cpu, lo, hi) = median(results[i].iter().map(|r| r.0).collect());
        let (p50, _, _) = median(results[i].iter().map(|r| r.1).collect());
        let paired = |f: fn(&(f64, f64)) -> f64| {
            median(
                results[i]
                    .iter()
                    .zip(&results[b])
                    .map(|(r, s)| f(r) - f(s))
                    .collect(),
            )
        };
        let (added, alo, ahi) = paired(|r| r.0);
        let (dp50, _, _) = paired(|r| r.1);
        println!(
            "| {} | {cpu:.1} [{lo:.1}..{hi:.1}] | {} | {p50:.3} | {} |",
            v.name,
            if b == i {
                "(base)".to_string()
            } else {
                format!("{added:+.1} [{alo:+.1}..{ahi:+.1}] over {}", v.base)
            },
            if b == i {
                "".to_string()
            } else {
                format!("{dp50:+.3}")
            },
        );
        out.push(json!({"variant": v.name, "base": v.base, "cpu_us_per_request": cpu, "cpu_us_min": lo, "cpu_us_max": hi, "p50_ms": p50, "cpu_us_over_base": added, "cpu_us_over_base_min": alo, "cpu_us_over_base_max": ahi, "p50_vs_base_ms": dp50}));
    }
    variants.clear();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-levers.json");
    std::fs::write(
        path,
        serde_json::to_vec_pretty(&json!({"rounds": ROUNDS, "rate": RATE, "variants": out}))?,
    )?;
    println!("\nwritten: target/bench-levers.json");
    Ok(())
}
