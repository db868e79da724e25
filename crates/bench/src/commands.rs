//! `plano-bench NAME ...`: one part of the bench alone, for a quick check
//! or for profiling by hand. `make bench` runs them all but `mock`, `load`
//! and `soak`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::mock::{self, Answer};
use crate::{
    apis, baselines, body_of, hostcalls, levers, limits, load, open_rounds, replicas, report, soak,
    streams, traces, warm, Row, Trio,
};

/// The `n`th argument as a number, or `default`.
fn arg<T: std::str::FromStr>(args: &[String], n: usize, default: T) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(args
        .get(n)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(default))
}

/// `SECONDS ROUNDS` of a rows command.
fn round_args(args: &[String], rounds: usize) -> Result<(Duration, usize)> {
    Ok((Duration::from_secs(arg(args, 0, 2)?), arg(args, 1, rounds)?))
}

fn print_rows(rows: &[Row]) {
    for row in rows {
        let spread = row
            .spread
            .map_or(String::new(), |(lo, hi)| format!(" [{lo:.0}..{hi:.0}]"));
        println!(
            "{}: {:.0} req/s{spread}, p50 {:.2} ms, p99 {:.2} ms, {} failed",
            row.name,
            row.run.rps(),
            row.run.ms(0.5),
            row.run.ms(0.99),
            row.run.failed
        );
        if let Some(cpu) = row.cpu_us {
            println!("  gateway CPU {cpu:.0} us per request");
        }
    }
    for line in apis::translation_costs(rows) {
        println!("translation cost, {line}");
    }
}

pub async fn run(name: &str, args: &[String], home: &Path) -> Result<()> {
    match name {
        // `pace [SECONDS]`: `make bench-pace`, 60 s a row by default.
        "pace" => crate::pace::run(home, Duration::from_secs(arg(args, 0, 60)?)).await,
        "mock" => {
            let port = args
                .first()
                .context("usage: plano-bench mock PORT")?
                .parse()?;
            mock::serve_on(port, Answer::Ok).await?;
            println!("mock provider on 127.0.0.1:{port}");
            std::future::pending().await
        }
        // `streams [COUNT] [--levers] [--body-kb K]`: each request's size
        // (default: a short prompt).
        "streams" => {
            let body_kb = args
                .iter()
                .position(|a| a == "--body-kb")
                .and_then(|i| args.get(i + 1))
                .map(|k| k.parse())
                .transpose()?
                .unwrap_or(0);
            let count = arg(args, 0, 10_000)?;
            streams::run(count, home, args.iter().any(|a| a == "--levers"), body_kb).await
        }
        // `load PORT SECONDS`: 32 connections of 1 KB requests, closed loop.
        "load" => {
            let port = args
                .first()
                .context("usage: plano-bench load PORT SECONDS")?
                .parse()?;
            let secs = arg(args, 1, 10)?;
            let run = load::closed_loop(port, body_of(1024), 32, Duration::from_secs(secs)).await?;
            println!(
                "{:.0} req/s, p50 {:.2} ms, {} failed",
                run.rps(),
                run.ms(0.5),
                run.failed
            );
            Ok(())
        }
        // `cost [ROUNDS]`: the open-loop rows at 2,000 req/s, for measuring
        // a change to the filter quickly.
        "cost" => {
            let (ok, ok2) = (
                mock::serve(Answer::Ok).await?,
                mock::serve(Answer::Ok).await?,
            );
            let trio = Trio::up(ok, ok2, home)?;
            let body = body_of(1024);
            warm(trio.targets().map(|t| t.port), &body).await?;
            let open = open_rounds(&trio.targets(), &[2000], arg(args, 0, 5)?, &body).await?;
            report::print_open(&open);
            Ok(())
        }
        // `apis|clouds|limits|replicas|tracing [SECONDS [ROUNDS]]`: those
        // rows only (`clouds`: the cloud targets' translations beside chat).
        "apis" | "clouds" => {
            let (round, rounds) = round_args(args, 1)?;
            let (ok, ok2) = (
                mock::serve(Answer::Ok).await?,
                mock::serve(Answer::Ok).await?,
            );
            let which = match name {
                "apis" => apis::Which::All,
                _ => apis::Which::Clouds,
            };
            print_rows(&apis::rows(home, ok, ok2, rounds, round, which).await?);
            Ok(())
        }
        "paced" => {
            let (round, rounds) = round_args(args, 3)?;
            let ok = mock::serve(Answer::Ok).await?;
            print_rows(&crate::paced::rows(home, ok, rounds, round).await?);
            Ok(())
        }
        "limits" => {
            let (round, rounds) = round_args(args, 3)?;
            let ok = mock::serve(Answer::Ok).await?;
            print_rows(&limits::rows(home, ok, rounds, round).await?);
            Ok(())
        }
        "replicas" => {
            let (round, rounds) = round_args(args, 1)?;
            let (ok, ok2) = (
                mock::serve(Answer::Ok).await?,
                mock::serve(Answer::Ok).await?,
            );
            print_rows(&replicas::rows(home, ok, ok2, rounds, round).await?);
            Ok(())
        }
        "tracing" => {
            let (round, rounds) = round_args(args, 3)?;
            let ok = mock::serve(Answer::Ok).await?;
            print_rows(&traces::rows(home, ok, rounds, round).await?);
            Ok(())
        }
        // A failover's own added time.
        "failover" => {
            let limited = mock::serve(Answer::RateLimited).await?;
            let ok = mock::serve(Answer::Ok).await?;
            let pair = baselines::failover_pair(limited, ok, home, &body_of(1024)).await?;
            println!(
                "failover, 1 connection: p50 {:.3} ms through the gateway, {:.3} ms through bare Envoy making the same two calls: {:+.3} ms the gateway's own (same-round median)",
                pair.gateway_ms, pair.bare_ms, pair.added_ms
            );
            Ok(())
        }
        // The waiters and their bare baseline.
        "waiters" => {
            let limited = mock::serve(Answer::RateLimited).await?;
            let ok2 = mock::serve(Answer::Ok).await?;
            let done = baselines::waiters(home, &body_of(1024), limited, ok2).await?;
            println!("{}", serde_json::to_string_pretty(&done)?);
            Ok(())
        }
        "hostcalls" => {
            let wasm = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/wasm32-wasip1/release/plano_filter.wasm");
            hostcalls::run(home, &wasm).await
        }
        "levers" => levers::run(home, args).await,
        // The first-byte cost of holding a stream until its first output.
        "hold" => {
            let stream = mock::serve(Answer::Stream {
                chunks: 5,
                gap_ms: 20,
            })
            .await?;
            let ok2 = mock::serve(Answer::Ok).await?;
            println!("{}", streams::hold_cost(home, stream, ok2).await?);
            Ok(())
        }
        "soak" => match soak::run(arg(args, 0, 20_000)?, home).await? {
            true => Ok(()),
            false => bail!("soak failed"),
        },
        other => bail!("plano-bench: no part named {other:?}"),
    }
}
