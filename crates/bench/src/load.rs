//! A closed-loop load generator on hyper: `connections` keep-alive
//! connections each send one request after another until the deadline.
//! Latencies go to an HDR histogram with coordinated-omission correction
//! (`record_correct`, expected interval = the run's mean service time).

use std::net::SocketAddr;
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

fn chat_request(port: u16, body: &Bytes) -> Result<Request<Full<Bytes>>> {
    Ok(Request::post("/v1/chat/completions")
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer bench-client")
        .body(Full::new(body.clone()))?)
}

pub async fn closed_loop(
    port: u16,
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
                let resp = match sender.send_request(chat_request(port, &body)?).await {
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
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
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
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
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
