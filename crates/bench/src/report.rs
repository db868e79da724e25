//! `make bench`'s report: the side-by-side table (medians of interleaved
//! rounds, with their spread), the open-loop added latency, the failover,
//! streaming and waiter lines, and the goals of issue 19, met or missed.
//! Everything also goes to `target/bench.json`.

use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use crate::baselines::FailoverPair;
use crate::load::{OpenRun, Run};
use crate::Row;

pub struct OpenRow {
    pub rate: u64,
    pub round: usize,
    pub target: String,
    pub run: OpenRun,
    /// The target Envoy's CPU time (all threads) per answered request, in
    /// microseconds: what the request cost it, whatever else the box ran.
    pub cpu_us: f64,
}

fn size_of(name: &str) -> &str {
    name.rsplit(", ").next().unwrap_or(name)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// `a` against `b` round by round (both ran in the same rounds): the
/// median of `a`'s req/s over `b`'s, and of `a`'s p50 minus `b`'s.
pub fn same_round(a: &Row, b: &Row) -> Option<(f64, f64)> {
    if a.rounds.is_empty() || a.rounds.len() != b.rounds.len() {
        return None;
    }
    let pairs = || a.rounds.iter().zip(&b.rounds);
    Some((
        median(pairs().map(|(x, y)| x.0 / y.0).collect()),
        median(pairs().map(|(x, y)| x.1 - y.1).collect()),
    ))
}

/// Per rate and target: medians of p50 and p99 over the rounds, and the
/// round-by-round difference to bare Envoy (median, min, max).
fn open_summary(open: &[OpenRow]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut rates: Vec<u64> = open.iter().map(|o| o.rate).collect();
    rates.dedup();
    let mut targets: Vec<&str> = Vec::new();
    for o in open {
        if !targets.contains(&o.target.as_str()) {
            targets.push(&o.target);
        }
    }
    for rate in rates {
        for target in &targets {
            let mine: Vec<&OpenRow> = open
                .iter()
                .filter(|o| o.rate == rate && o.target == *target)
                .collect();
            // `value` of each round minus bare Envoy's in the same round.
            let over_bare = |value: &dyn Fn(&OpenRow) -> f64| -> Vec<f64> {
                mine.iter()
                    .filter_map(|o| {
                        let bare = open.iter().find(|b| {
                            b.rate == rate && b.round == o.round && b.target.starts_with("bare")
                        })?;
                        Some(value(o) - value(bare))
                    })
                    .collect()
            };
            let added = |q: f64, corrected: bool| {
                over_bare(&|o: &OpenRow| {
                    if corrected {
                        ms(&o.run.corrected, q)
                    } else {
                        ms(&o.run.service, q)
                    }
                })
            };
            let added_cpu = over_bare(&|o: &OpenRow| o.cpu_us);
            let range = |v: Vec<f64>| {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                json!({"median": median(v), "min": lo, "max": hi})
            };
            let (a50, a99, c50, c99) = (
                added(0.5, false),
                added(0.99, false),
                added(0.5, true),
                added(0.99, true),
            );
            out.push(json!({
                "rate": rate, "target": target, "rounds": mine.len(),
                "sent": mine.iter().map(|o| o.run.sent).sum::<u64>(),
                "ok": mine.iter().map(|o| o.run.ok).sum::<u64>(),
                "late_sends": mine.iter().map(|o| o.run.late).sum::<u64>(),
                "p50_ms": median(mine.iter().map(|o| ms(&o.run.service, 0.5)).collect()),
                "p99_ms": median(mine.iter().map(|o| ms(&o.run.service, 0.99)).collect()),
                "p50_ms_corrected": median(mine.iter().map(|o| ms(&o.run.corrected, 0.5)).collect()),
                "p99_ms_corrected": median(mine.iter().map(|o| ms(&o.run.corrected, 0.99)).collect()),
                "cpu_us_per_request": median(mine.iter().map(|o| o.cpu_us).collect()),
                "added_cpu_us_per_request": range(added_cpu),
                "added_p50_ms": range(a50), "added_p99_ms": range(a99),
                "added_p50_ms_corrected": range(c50), "added_p99_ms_corrected": range(c99),
            }));
        }
    }
    out
}

pub fn print(
    rows: &[Row],
    open: &[OpenRow],
    direct_one: &Run,
    failover_one: &FailoverPair,
    ttfb: [&hdrhistogram::Histogram<u64>; 3],
    waiters: &Value,
) -> Result<()> {
    let find = |prefix: &str, r: &Row| {
        rows.iter().find(|o| {
            o.name.starts_with(prefix)
                && o.connections == r.connections
                && size_of(&o.name) == size_of(&r.name)
        })
    };
    println!("| scenario | conns | req/s | req/s range | p50 ms | p99 ms | p99.9 ms | Envoy RSS MB | req/s vs bare, same round | p50 vs bare, same round | req/s vs floor, same round | req/s vs direct |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut json_rows = Vec::new();
    for r in rows {
        let vs = |other: Option<&Row>| {
            other.map_or("".into(), |o| format!("{:.2}", r.run.rps() / o.run.rps()))
        };
        let vs_same_round = |other: Option<&Row>| {
            other
                .and_then(|o| same_round(r, o))
                .map_or("".into(), |(ratio, _)| format!("{ratio:.2}"))
        };
        let bare = find("bare Envoy", r);
        let p50_vs_bare = bare
            .and_then(|b| same_round(r, b))
            .map_or("".into(), |(_, p50)| format!("{p50:+.2} ms"));
        println!(
            "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
            r.name,
            r.connections,
            r.run.rps(),
            r.spread
                .map_or("".into(), |(lo, hi)| format!("{lo:.0}-{hi:.0}")),
            r.run.ms(0.5),
            r.run.ms(0.99),
            r.run.ms(0.999),
            r.rss_mb.map_or("".into(), |m| format!("{m:.0}")),
            vs_same_round(bare),
            p50_vs_bare,
            vs_same_round(find("floor filter", r)),
            vs(find("direct", r)),
        );
        json_rows.push(json!({
            "scenario": r.name, "connections": r.connections, "ok": r.run.ok, "failed": r.run.failed,
            "rps": r.run.rps(), "rps_range": r.spread.map(|(lo, hi)| [lo, hi]),
            "p50_ms": r.run.ms(0.5), "p99_ms": r.run.ms(0.99), "p999_ms": r.run.ms(0.999),
            "rss_mb": r.rss_mb, "cpu_us_per_request": r.cpu_us,
        }));
    }

    // The cloud targets' translations, each against its plain row.
    let translations = crate::apis::translation_costs(rows);
    if !translations.is_empty() {
        println!();
        for line in &translations {
            println!("translation cost, {line}");
        }
    }

    println!();
    let open_json = print_open(open);

    // Against bare Envoy making the same two calls: Envoy's own two hops
    // are not the gateway's.
    let added = failover_one.added_ms;
    println!();
    println!(
        "failover, 1 connection (p50, medians of interleaved rounds): {:.2} ms; bare Envoy making the same two calls (a 429, retried on the next priority) {:.2} ms; two direct mock answers {:.2} ms; the gateway's own added time, same round {:.2} ms",
        failover_one.gateway_ms,
        failover_one.bare_ms,
        2.0 * direct_one.ms(0.5),
        added
    );
    println!(
        "streaming time to first byte (p50 / p99 ms, 30 each): direct {:.2} / {:.2}; gateway first attempt {:.2} / {:.2}; after a failover {:.2} / {:.2} (a 429, then the fallback's 5-chunk, 100 ms stream through the router)",
        ms(ttfb[0], 0.5), ms(ttfb[0], 0.99), ms(ttfb[1], 0.5), ms(ttfb[1], 0.99), ms(ttfb[2], 0.5), ms(ttfb[2], 0.99)
    );
    let f = |k: &str| waiters[k].as_f64().unwrap_or(0.0);
    println!(
        "{} waiters in a 2 s backoff: all parked after {:.2} s, {} answered in {:.1} s; Envoy RSS {:.0} MB idle, {:.0} MB with all parked (+{:.1} MB); CPU while parked {:.1}% of a core",
        waiters["requests"], f("all_parked_after_s"), waiters["answered"], f("seconds"),
        f("rss_idle_mb"), f("rss_waiting_mb"), f("extra_rss_mb"), f("cpu_percent_while_waiting")
    );
    println!(
        "baseline: bare Envoy holding all {} requests open at once (its downstream_rq_active says so) grew {:.1} MB; the gateway's own share of the waiters' growth is the difference",
        waiters["requests"],
        f("bare_envoy_holding_same_extra_rss_mb")
    );
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let streams: Option<Value> = std::fs::read(target.join("bench-streams.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match &streams {
        Some(s) => println!(
            "long-lived streams (the last `make bench-streams`): {}",
            s["summary"].as_str().unwrap_or("")
        ),
        None => {
            println!("long-lived streams: not measured here; `make bench-streams` measures them")
        }
    }

    // The goals of issues 19 and 31.
    let row = |name: &str, c: usize| rows.iter().find(|r| r.name == name && r.connections == c);
    let ratio = |a: &str, b: &str, c: usize| Some(same_round(row(a, c)?, row(b, c)?)?.0);
    let p50_over = |a: &str, b: &str, c: usize| Some(same_round(row(a, c)?, row(b, c)?)?.1);
    // The median of an open-loop figure over the rounds, for one target.
    let open_median = |target: &str, rate: u64, figure: &str| {
        open_json
            .iter()
            .find(|o| o["rate"] == rate && o["target"].as_str().unwrap_or("").starts_with(target))
            .and_then(|o| o[figure]["median"].as_f64())
    };
    let open_added = |rate: u64| open_median("gateway", rate, "added_p50_ms");
    let added_cpu = |target: &str| open_median(target, 1000, "added_cpu_us_per_request");
    let gw_waiters = f("extra_rss_mb") - f("bare_envoy_holding_same_extra_rss_mb");
    let pct = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{:.0}%", v * 100.0));
    let plus = |v: Option<f64>, unit: &str| v.map_or("n/a".into(), |v| format!("{v:+.2} {unit}"));
    let goals: Vec<(String, String, Option<bool>)> = vec![
        (
            "success req/s at least 85% of bare Envoy, 32 conns".into(),
            pct(ratio("gateway, success, 1 KB", "bare Envoy, 1 KB", 32)),
            ratio("gateway, success, 1 KB", "bare Envoy, 1 KB", 32).map(|v| v >= 0.85),
        ),
        (
            "success req/s at least 85% of bare Envoy, 256 conns".into(),
            pct(ratio("gateway, success, 1 KB", "bare Envoy, 1 KB", 256)),
            ratio("gateway, success, 1 KB", "bare Envoy, 1 KB", 256).map(|v| v >= 0.85),
        ),
        (
            "success p50 within +0.2 ms of bare Envoy, 32 conns".into(),
            plus(
                p50_over("gateway, success, 1 KB", "bare Envoy, 1 KB", 32),
                "ms",
            ),
            p50_over("gateway, success, 1 KB", "bare Envoy, 1 KB", 32).map(|v| v <= 0.2),
        ),
        (
            "100 KB requests: at least 70% of bare Envoy's req/s at 100 KB".into(),
            pct(ratio("gateway, success, 100 KB", "bare Envoy, 100 KB", 32)),
            ratio("gateway, success, 100 KB", "bare Envoy, 100 KB", 32).map(|v| v >= 0.70),
        ),
        (
            "1 MB requests: at least 60% of bare Envoy's req/s at 1 MB".into(),
            pct(ratio("gateway, success, 1 MB", "bare Envoy, 1 MB", 32)),
            ratio("gateway, success, 1 MB", "bare Envoy, 1 MB", 32).map(|v| v >= 0.60),
        ),
        (
            "added CPU per request at 1,000 req/s at most twice the floor filter's".into(),
            match (added_cpu("gateway"), added_cpu("floor")) {
                (Some(g), Some(f)) => format!("+{g:.0} us against the floor's +{f:.0} us"),
                _ => "n/a".into(),
            },
            added_cpu("gateway")
                .zip(added_cpu("floor"))
                .map(|(g, f)| g <= 2.0 * f),
        ),
        (
            "5,000 waiters: at most +50 MB RSS over bare Envoy holding them".into(),
            format!("{gw_waiters:+.0} MB"),
            Some(gw_waiters <= 50.0),
        ),
        (
            "a failover's own added time at most 0.5 ms (1 connection)".into(),
            format!("{added:.2} ms"),
            Some(added <= 0.5),
        ),
        (
            "added p50 at 1,000 req/s open loop at most 0.05 ms".into(),
            plus(open_added(1000), "ms"),
            open_added(1000).map(|v| v <= 0.05),
        ),
        (
            "added p50 at 5,000 req/s open loop at most 0.05 ms".into(),
            plus(open_added(5000), "ms"),
            open_added(5000).map(|v| v <= 0.05),
        ),
        (
            "long-lived streams: RSS and CPU against bare Envoy (measured, no number set)".into(),
            streams
                .as_ref()
                .and_then(|s| s["summary"].as_str())
                .unwrap_or("`make bench-streams`")
                .to_string(),
            None,
        ),
    ];
    println!();
    println!("Against the goals of issues 19 and 31:");
    println!();
    println!("| goal | measured | |");
    println!("|---|---|---|");
    for (goal, measured, met) in &goals {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "measured",
        };
        println!("| {goal} | {measured} | {verdict} |");
    }
    let report = json!({
        "rows": json_rows,
        "open_loop": open_json,
        "translation_costs": translations,
        "failover_added_ms_p50": added,
        "failover_ms_p50": {"gateway": failover_one.gateway_ms, "bare_envoy_two_calls": failover_one.bare_ms, "two_direct": 2.0 * direct_one.ms(0.5)},
        "ttfb_ms_p50": {"direct": ms(ttfb[0], 0.5), "gateway_first_attempt": ms(ttfb[1], 0.5), "after_failover": ms(ttfb[2], 0.5)},
        "waiters": waiters,
        "streams": streams,
        "goals": goals.iter().map(|(g, m, met)| json!({"goal": g, "measured": m, "met": met})).collect::<Vec<_>>(),
    });
    std::fs::write(
        target.join("bench.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    println!("\nwritten: target/bench.json");
    Ok(())
}

/// The added-latency table of the open-loop rows; returns its JSON.
pub fn print_open(open: &[OpenRow]) -> Vec<Value> {
    let open_json = open_summary(open);
    println!("Added latency at a fixed open-loop rate (1 KB; p50 / p99 of send-to-answer, median of {} interleaved rounds; added = minus bare Envoy in the same round, median [min..max]; CPU: Envoy's, with the gateway's log writer, per answered request):", open.iter().map(|o| o.round + 1).max().unwrap_or(0));
    println!();
    println!("| rate req/s | target | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU us/request | added CPU us | sent late (>1 ms) |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for o in &open_json {
        let r = |v: &Value| {
            format!(
                "{:+.3} [{:+.3}..{:+.3}]",
                v["median"].as_f64().unwrap_or(0.0),
                v["min"].as_f64().unwrap_or(0.0),
                v["max"].as_f64().unwrap_or(0.0)
            )
        };
        let bare = o["target"].as_str().unwrap_or("").starts_with("bare");
        println!(
            "| {} | {} | {:.3} | {:.3} | {} | {} | {:.1} | {} | {} of {} |",
            o["rate"],
            o["target"].as_str().unwrap_or(""),
            o["p50_ms"].as_f64().unwrap_or(0.0),
            o["p99_ms"].as_f64().unwrap_or(0.0),
            if bare {
                "".into()
            } else {
                r(&o["added_p50_ms"])
            },
            if bare {
                "".into()
            } else {
                r(&o["added_p99_ms"])
            },
            o["cpu_us_per_request"].as_f64().unwrap_or(0.0),
            if bare {
                "".into()
            } else {
                r(&o["added_cpu_us_per_request"])
            },
            o["late_sends"],
            o["sent"],
        );
    }
    open_json
}
