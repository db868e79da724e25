//! A closed-loop load generator on hyper: `connections` keep-alive
//! connections each send one request after another until the deadline.
//! Latencies go to an HDR histogram with coordinated-omission correction
//! (`record_correct`, expected interval = the run's mean service time).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Run {
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
    /// Microseconds.
    pub latency: Histogram<u64>,
}

impl Run {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

async fn connect(port: u16) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The chat completions endpoint, where every row but the per-API ones goes.
pub const CHAT_PATH: &str = "/v1/chat/completions";

fn chat_request(port: u16, body: &Bytes) -> Result<Request<Full<Bytes>>> {
    api_request(port, CHAT_PATH, body)
}

/// The client key every row but the client keys' sends.
const CLIENT_KEY: &str = "bench-client";

fn api_request(port: u16, path: &str, body: &Bytes) -> Result<Request<Full<Bytes>>> {
    keyed_request(port, path, CLIENT_KEY, body)
}

fn keyed_request(port: u16, path: &str, key: &str, body: &Bytes) -> Result<Request<Full<Bytes>>> {
    Ok(Request::post(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(body.clone()))?)
}

/// One request to `path`: the answer's status and whole body.
pub async fn one(port: u16, path: &str, body: &Bytes) -> Result<(u16, Bytes)> {
    let mut sender = connect(port).await?;
    let resp = sender.send_request(api_request(port, path, body)?).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

pub async fn closed_loop(
    port: u16,
    body: Bytes,
    connections: usize,
    duration: Duration,
) -> Result<Run> {
    closed_loop_to(port, CHAT_PATH, body, connections, duration).await
}

/// [`closed_loop`] to the endpoint at `path`.
pub async fn closed_loop_to(
    port: u16,
    path: &'static str,
    body: Bytes,
    connections: usize,
    duration: Duration,
) -> Result<Run> {
    closed_loop_keyed(port, path, CLIENT_KEY, body, connections, duration).await
}

/// [`closed_loop`] with the client key `key`.
pub async fn closed_loop_as(
    port: u16,
    key: &'static str,
    body: Bytes,
    connections: usize,
    duration: Duration,
) -> Result<Run> {
    closed_loop_keyed(port, CHAT_PATH, key, body, connections, duration).await
}

async fn closed_loop_keyed(
    port: u16,
    path: &'static str,
    key: &'static str,
    body: Bytes,
    connections: usize,
    duration: Duration,
) -> Result<Run> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples: Vec<u64> = Vec::new();
            let mut failed = 0u64;
            let mut sender = connect(port).await?;
            while Instant::now() < deadline {
                let start = Instant::now();
                let resp = match sender
                    .send_request(keyed_request(port, path, key, &body)?)
                    .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        failed += 1;
                        sender = connect(port).await?;
                        continue;
                    }
                };
                let ok = resp.status() == 200;
                resp.into_body().collect().await?;
                if ok {
                    samples.push(start.elapsed().as_micros() as u64);
                } else {
                    failed += 1;
                }
            }
            anyhow::Ok((samples, failed))
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (samples, f) = t.await.context("load task")??;
        all.extend(samples);
        failed += f;
    }
    let seconds = started.elapsed().as_secs_f64().max(duration.as_secs_f64());
    let mean = all.iter().sum::<u64>() / (all.len() as u64).max(1);
    let mut latency = Histogram::<u64>::new(3)?;
    for s in &all {
        latency.record_correct(*s, mean.max(1))?;
    }
    Ok(Run {
        ok: all.len() as u64,
        failed,
        seconds,
        latency,
    })
}

/// Time to the first body byte of `samples` sequential streamed requests.
pub async fn first_byte(port: u16, samples: usize) -> Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new(3)?;
    let body = Bytes::from_static(
        br#"{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    for _ in 0..samples {
        let mut sender = connect(port).await?;
        let start = Instant::now();
        let resp = sender.send_request(chat_request(port, &body)?).await?;
        let mut body = resp.into_body();
        let first = body.frame().await;
        hist.record(start.elapsed().as_micros() as u64)?;
        anyhow::ensure!(matches!(first, Some(Ok(_))), "stream ended without data");
        while body.frame().await.is_some() {}
    }
    Ok(hist)
}

/// Sends `count` requests at once, each on its own connection, and waits for
/// every answer. Returns how many got any answer.
pub async fn burst(port: u16, count: usize) -> Result<usize> {
    let body = Bytes::from_static(
        br#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let mut tasks = Vec::new();
    for _ in 0..count {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(port).await?;
            let resp = sender.send_request(chat_request(port, &body)?).await?;
            resp.into_body().collect().await?;
            anyhow::Ok(())
        }));
    }
    let mut answered = 0;
    for t in tasks {
        if matches!(t.await, Ok(Ok(()))) {
            answered += 1;
        }
    }
    Ok(answered)
}

/// How each of a fixed number of requests ended.
#[derive(Default, Debug)]
pub struct Tally {
    pub ok: u64,
    pub exhausted: u64,
    /// Anything else: another status, a broken connection, a timeout.
    pub other: u64,
}

/// Sends exactly `total` requests over `connections` keep-alive connections,
/// each bounded by `timeout`. A connection that breaks (as one answered twice
/// would) counts its request as `other` and is replaced.
pub async fn fixed_count(
    port: u16,
    body: Bytes,
    connections: usize,
    total: u64,
    timeout: Duration,
) -> Result<Tally> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (body, next) = (body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut sender = connect(port).await?;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let exchange = async {
                    let resp = sender.send_request(chat_request(port, &body)?).await?;
                    let status = resp.status().as_u16();
                    let bytes = resp.into_body().collect().await?.to_bytes();
                    anyhow::Ok((status, bytes))
                };
                match tokio::time::timeout(timeout, exchange).await {
                    Ok(Ok((200, _))) => tally.ok += 1,
                    Ok(Ok((_, b))) if b.windows(15).any(|w| w == b"retry_exhausted") => {
                        tally.exhausted += 1
                    }
                    _ => {
                        tally.other += 1;
                        sender = connect(port).await?;
                    }
                }
            }
            anyhow::Ok(tally)
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.context("soak task")??;
        all.ok += t.ok;
        all.exhausted += t.exhausted;
        all.other += t.other;
    }
    Ok(all)
}

/// How each of a fixed number of streamed requests ended.
#[derive(Default, Debug)]
pub struct StreamTally {
    /// A 200 whose body arrived whole.
    pub complete: u64,
    /// The client left after the first bytes, on purpose.
    pub left: u64,
    /// Anything else: another status, a cut stream, a timeout.
    pub broken: u64,
}

/// Sends exactly `total` streamed requests over `connections` connections;
/// every `leave_every`-th client leaves after the first frame of its answer
/// (and reconnects). Each request is bounded by `timeout`.
pub async fn streamed_count(
    port: u16,
    connections: usize,
    total: u64,
    leave_every: u64,
    timeout: Duration,
) -> Result<StreamTally> {
    let body = Bytes::from_static(
        br#"{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (body, next) = (body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = StreamTally::default();
            let mut sender = connect(port).await?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let leave = n % leave_every == leave_every - 1;
                let exchange = async {
                    let resp = sender.send_request(chat_request(port, &body)?).await?;
                    let status = resp.status().as_u16();
                    let mut body = resp.into_body();
                    if leave {
                        let first = body.frame().await;
                        return anyhow::Ok((status, matches!(first, Some(Ok(_)))));
                    }
                    let bytes = body.collect().await?.to_bytes();
                    let whole = bytes.ends_with(b"data: [DONE]\n\n") || bytes.ends_with(b"}");
                    anyhow::Ok((status, whole))
                };
                match tokio::time::timeout(timeout, exchange).await {
                    Ok(Ok((200, true))) if leave => {
                        tally.left += 1;
                        sender = connect(port).await?;
                    }
                    Ok(Ok((200, true))) => tally.complete += 1,
                    _ => {
                        tally.broken += 1;
                        sender = connect(port).await?;
                    }
                }
            }
            anyhow::Ok(tally)
        }));
    }
    let mut all = StreamTally::default();
    for t in tasks {
        let t = t.await.context("soak task")??;
        all.complete += t.complete;
        all.left += t.left;
        all.broken += t.broken;
    }
    Ok(all)
}

/// An open-loop run: requests sent on a fixed schedule whatever the answers.
pub struct OpenRun {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Sends that left more than 1 ms after their scheduled time.
    pub late: u64,
    /// Microseconds from the send to the whole answer.
    pub service: Histogram<u64>,
    /// Microseconds from the scheduled send to the whole answer
    /// (latency-corrected: a backlog counts against the target).
    pub corrected: Histogram<u64>,
}

/// Sends `rate` requests a second for `duration`, open loop: the schedule is
/// fixed in advance (wrk2/oha style), spread over `rate / 100` keep-alive
/// connections that each send one request every 10 ms, staggered. A
/// connection still waiting for an answer when its next send is due sends
/// late, and the wait counts in `corrected`.
pub async fn open_loop(port: u16, body: Bytes, rate: u64, duration: Duration) -> Result<OpenRun> {
    const GAP: Duration = Duration::from_millis(10);
    let connections = (rate / 100).max(1);
    let per_conn = duration.as_millis() as u64 / 10;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for k in 0..connections {
        let body = body.clone();
        let offset = GAP * k as u32 / connections as u32;
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(port).await?;
            let mut service = Histogram::<u64>::new(3)?;
            let mut corrected = Histogram::<u64>::new(3)?;
            let (mut ok, mut failed, mut late) = (0u64, 0u64, 0u64);
            for j in 0..per_conn {
                let due = start + offset + GAP * j as u32;
                tokio::time::sleep_until(due).await;
                let sent = tokio::time::Instant::now();
                if sent.duration_since(due) > Duration::from_millis(1) {
                    late += 1;
                }
                match sender.send_request(chat_request(port, &body)?).await {
                    Ok(resp) => {
                        let good = resp.status() == 200;
                        resp.into_body().collect().await?;
                        if good {
                            ok += 1;
                            service.record(sent.elapsed().as_micros() as u64)?;
                            corrected.record(due.elapsed().as_micros() as u64)?;
                        } else {
                            failed += 1;
                        }
                    }
                    Err(_) => {
                        failed += 1;
                        sender = connect(port).await?;
                    }
                }
            }
            anyhow::Ok((ok, failed, late, service, corrected))
        }));
    }
    let mut run = OpenRun {
        sent: connections * per_conn,
        ok: 0,
        failed: 0,
        late: 0,
        service: Histogram::<u64>::new(3)?,
        corrected: Histogram::<u64>::new(3)?,
    };
    for t in tasks {
        let (ok, failed, late, service, corrected) = t.await.context("open-loop task")??;
        run.ok += ok;
        run.failed += failed;
        run.late += late;
        run.service.add(service)?;
        run.corrected.add(corrected)?;
    }
    Ok(run)
}

/// Holds `count` streamed requests open at once, each on its own connection,
/// and reads every chunk. Returns once `ready` of them have their first
/// chunk (or `ready_by` passes) through `opened`, then runs to the end.
/// Returns (streams whole, streams broken).
pub async fn hold_streams(
    port: u16,
    count: usize,
    timeout: Duration,
    opened: tokio::sync::mpsc::UnboundedSender<()>,
    events: Arc<AtomicU64>,
    body: Bytes,
) -> Result<(u64, u64)> {
    let mut tasks = Vec::new();
    for i in 0..count {
        let (body, opened, events) = (body.clone(), opened.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the connects over about a second.
            tokio::time::sleep(Duration::from_micros((i as u64 * 1_000_000) / count as u64)).await;
            let exchange = async {
                let mut sender = connect(port).await?;
                let resp = sender.send_request(chat_request(port, &body)?).await?;
                anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
                let mut body = resp.into_body();
                let mut first = true;
                let mut tail = Vec::new();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame?.into_data() {
                        if first {
                            first = false;
                            let _ = opened.send(());
                        }
                        // Events, not frames: a client that lags gets
                        // several events in one frame.
                        let ends = data.windows(2).filter(|w| w == b"\n\n").count();
                        events.fetch_add(ends as u64, Ordering::Relaxed);
                        tail = data.to_vec();
                    }
                }
                anyhow::Ok(tail.ends_with(b"data: [DONE]\n\n"))
            };
            let outcome = tokio::time::timeout(timeout, exchange).await;
            if std::env::var_os("PLANO_BENCH_DEBUG").is_some() && !matches!(outcome, Ok(Ok(true))) {
                eprintln!("stream {i}: {outcome:?}");
            }
            matches!(outcome, Ok(Ok(true)))
        }));
    }
    drop(opened);
    let (mut whole, mut broken) = (0, 0);
    for t in tasks {
        if t.await.unwrap_or(false) {
            whole += 1;
        } else {
            broken += 1;
        }
    }
    Ok((whole, broken))
}
