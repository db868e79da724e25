//! `plano-bench hostcalls`: the filter's host calls per request on the 1 KB
//! success path, streamed and not. The release filter is rewritten so that
//! every call to an imported `proxy_*` function first adds one to the stat
//! `wasmcustom.hostcall.<name>`; the gateway runs that build, and each
//! stat's rise over a fixed number of requests, less its rise over the same
//! time with no requests (the ticks'), divided by the requests, is the calls
//! per request. The counting itself adds a host call per host call, so this
//! build is for counting only, never for timing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use walrus::ir::{BinaryOp, Call, LoadKind, MemArg, UnaryOp, Value, VisitorMut};
use walrus::{ConstExpr, DataKind, FunctionBuilder, FunctionId, ImportKind, Module, ValType};

use crate::mock::{self, Answer};
use crate::rig::{self, Lever};
use crate::{body_of, load, provider, streamed_body_of, warm, FAILOVER};

const REQUESTS: u64 = 2000;
const PORT: u16 = 12450;
const ADMIN: u16 = 9970;

/// Calls to an import are sent through its counting wrapper instead.
struct Redirect<'a>(&'a BTreeMap<FunctionId, FunctionId>);

impl VisitorMut for Redirect<'_> {
    fn visit_call_mut(&mut self, call: &mut Call) {
        if let Some(&wrapper) = self.0.get(&call.func) {
            call.func = wrapper;
        }
    }
}

/// The filter with every `proxy_*` import counted in a stat of its own.
/// The stats are defined on the first host call: their names go into a
/// page of the VM's memory grown for them, out of the allocator's way.
pub fn counted(wasm: &[u8]) -> Result<Vec<u8>> {
    let mut m = Module::from_buffer(wasm).context("the filter's wasm")?;
    let imports: Vec<(FunctionId, String)> = m
        .imports
        .iter()
        .filter_map(|i| match i.kind {
            ImportKind::Function(f) if i.name.starts_with("proxy_") => Some((f, i.name.clone())),
            _ => None,
        })
        .collect();
    let import = |name: &str| {
        imports
            .iter()
            .find(|(_, n)| n == name)
            .map(|(f, _)| *f)
            .with_context(|| format!("the filter imports no {name}"))
    };
    let (define, increment) = (
        import("proxy_define_metric")?,
        import("proxy_increment_metric")?,
    );
    let memory = m
        .memories
        .iter()
        .next()
        .context("the filter has no memory")?
        .id();

    let mut names = Vec::new();
    let mut spans = Vec::new();
    for (_, name) in &imports {
        let stat = format!("hostcall.{name}");
        spans.push((names.len() as i32, stat.len() as i32));
        names.extend_from_slice(stat.as_bytes());
    }
    // Where define_metric writes each id, after the names.
    let slots = (names.len() as i32 + 3) & !3;
    let data = m.data.add(DataKind::Passive, names.clone());
    let zero = || ConstExpr::Value(Value::I32(0));
    let ready = m.globals.add_local(ValType::I32, true, false, zero());
    let ids: Vec<_> = imports
        .iter()
        .map(|_| m.globals.add_local(ValType::I32, true, false, zero()))
        .collect();

    let base = m.locals.add(ValType::I32);
    let mut init = FunctionBuilder::new(&mut m.types, &[], &[]);
    let mut body = init.func_body();
    body.i32_const(1)
        .memory_grow(memory)
        .i32_const(65536)
        .binop(BinaryOp::I32Mul)
        .local_set(base)
        .local_get(base)
        .i32_const(0)
        .i32_const(names.len() as i32)
        .memory_init(memory, data);
    for (i, (at, len)) in spans.iter().enumerate() {
        let slot = slots + 4 * i as i32;
        body.i32_const(0) // a counter
            .local_get(base)
            .i32_const(*at)
            .binop(BinaryOp::I32Add)
            .i32_const(*len)
            .local_get(base)
            .i32_const(slot)
            .binop(BinaryOp::I32Add)
            .call(define)
            .drop()
            .local_get(base)
            .load(
                memory,
                LoadKind::I32 { atomic: false },
                MemArg {
                    align: 4,
                    offset: slot as u64,
                },
            )
            .global_set(ids[i]);
    }
    body.i32_const(1).global_set(ready);
    let init = init.finish(vec![], &mut m.funcs);

    let mut wrappers = BTreeMap::new();
    for (i, (f, _)) in imports.iter().enumerate() {
        let ty = m.types.get(m.funcs.get(*f).ty()).clone();
        let args: Vec<_> = ty.params().iter().map(|t| m.locals.add(*t)).collect();
        let mut w = FunctionBuilder::new(&mut m.types, ty.params(), ty.results());
        let mut body = w.func_body();
        body.global_get(ready).unop(UnaryOp::I32Eqz).if_else(
            None,
            |then| {
                then.call(init);
            },
            |_| {},
        );
        body.global_get(ids[i]).i64_const(1).call(increment).drop();
        for a in &args {
            body.local_get(*a);
        }
        body.call(*f);
        wrappers.insert(*f, w.finish(args, &mut m.funcs));
    }
    let ours: Vec<FunctionId> = wrappers.values().copied().chain([init]).collect();
    for (id, func) in m.funcs.iter_local_mut() {
        if !ours.contains(&id) {
            let entry = func.entry_block();
            walrus::ir::dfs_pre_order_mut(&mut Redirect(&wrappers), func, entry);
        }
    }
    Ok(m.emit_wasm())
}

/// Every `wasmcustom.hostcall.*` stat.
fn counts() -> Result<BTreeMap<String, u64>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", ADMIN))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /stats?filter=%5Ewasmcustom%5C.hostcall HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (name, n) = l.split_once(": ")?;
            let name = name.strip_prefix("wasmcustom.hostcall.")?;
            Some((name.to_string(), n.trim().parse().ok()?))
        })
        .collect())
}

/// Each host call's count per request over `REQUESTS` requests of `body`,
/// the idle ticks' share taken off.
async fn per_request(body: &Bytes) -> Result<BTreeMap<String, f64>> {
    let idle_from = counts()?;
    let idle_time = Duration::from_secs(2);
    tokio::time::sleep(idle_time).await;
    let start = counts()?;
    let begun = Instant::now();
    let tally = load::fixed_count(PORT, body.clone(), 1, REQUESTS, Duration::from_secs(5)).await?;
    let took = begun.elapsed().as_secs_f64();
    let end = counts()?;
    anyhow::ensure!(
        tally.ok == REQUESTS,
        "only {} of {REQUESTS} requests answered 200",
        tally.ok
    );
    let get = |m: &BTreeMap<String, u64>, k: &str| *m.get(k).unwrap_or(&0) as f64;
    Ok(end
        .keys()
        .map(|k| {
            let idle = (get(&start, k) - get(&idle_from, k)) / idle_time.as_secs_f64() * took;
            let n = (get(&end, k) - get(&start, k) - idle).max(0.0) / REQUESTS as f64;
            (k.clone(), n)
        })
        .filter(|(_, n)| *n >= 0.005)
        .collect())
}

pub async fn run(home: &Path, wasm: &Path) -> Result<()> {
    let counted_wasm = home.join("counted.wasm");
    std::fs::write(&counted_wasm, counted(&std::fs::read(wasm)?)?)?;
    let ok = mock::serve(Answer::Ok).await?;
    let stream = mock::serve(Answer::Stream {
        chunks: 5,
        gap_ms: 0,
    })
    .await?;
    let config = |port: u16| {
        format!(
            "version: v0.3.0\nlisteners: [{{type: model, name: l, port: {PORT}}}]\nmodel_providers:\n{}{}",
            provider("openai/gpt-4o", port, FAILOVER),
            provider("anthropic/c", ok, "")
        )
    };
    let lever = [Lever::Wasm(counted_wasm.display().to_string())];
    let mut columns = Vec::new();
    for (name, mock_port, body) in [
        ("1 KB", ok, body_of(1024)),
        ("1 KB streamed", stream, streamed_body_of(1024)),
    ] {
        let envoy = rig::rendered(
            home,
            "hostcalls",
            &config(mock_port),
            PORT,
            ADMIN,
            96,
            &lever,
        )?;
        warm([PORT], &body).await?;
        columns.push((name, per_request(&body).await?));
        drop(envoy);
    }
    println!("\nHost calls per request on the success path ({REQUESTS} requests each, idle ticks taken off):\n");
    println!("| host call | {} | {} |", columns[0].0, columns[1].0);
    println!("|---|---:|---:|");
    let mut names: Vec<&String> = columns.iter().flat_map(|(_, c)| c.keys()).collect();
    names.sort();
    names.dedup();
    let cell =
        |c: &BTreeMap<String, f64>, n: &str| c.get(n).map_or("0".into(), |v| format!("{v:.2}"));
    for n in names {
        println!(
            "| `{n}` | {} | {} |",
            cell(&columns[0].1, n),
            cell(&columns[1].1, n)
        );
    }
    let total = |c: &BTreeMap<String, f64>| c.values().sum::<f64>();
    println!(
        "| **all** | **{:.1}** | **{:.1}** |",
        total(&columns[0].1),
        total(&columns[1].1)
    );
    Ok(())
}
