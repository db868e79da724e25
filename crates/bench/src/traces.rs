//! The success path with tracing off and on (sampling 1.0), in interleaved
//! rounds: each round brings the gateway up with one config, then the
//! other. The collector is a sink written here on plain HTTP/2 frames: it
//! answers every OTLP `Export` with an empty `ExportTraceServiceResponse`
//! and counts them (so a row with tracing on is known to have exported).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{body_of, load, provider, rss_mb, Gateway, Row, GATEWAY_PORT};

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Starts the sink on a free loopback port: its port, and its export count.
pub async fn collector() -> Result<(u16, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let exports = Arc::new(AtomicU64::new(0));
    let count = exports.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, count.clone()));
        }
    });
    Ok((port, exports))
}

async fn frame(
    conn: &mut TcpStream,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    conn.write_all(&out).await?;
    Ok(())
}

async fn serve(mut conn: TcpStream, exports: Arc<AtomicU64>) -> Result<()> {
    let mut preface = [0u8; 24];
    conn.read_exact(&mut preface).await?;
    if &preface[..3] != b"PRI" {
        bail!("not HTTP/2");
    }
    frame(&mut conn, SETTINGS, 0, 0, &[]).await?;
    loop {
        let mut head = [0u8; 9];
        conn.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await?;
        match kind {
            SETTINGS if flags & ACK == 0 => frame(&mut conn, SETTINGS, ACK, 0, &[]).await?,
            PING if flags & ACK == 0 => frame(&mut conn, PING, ACK, 0, &payload).await?,
            DATA => {
                // Give back what was read, so large exports keep flowing.
                if len > 0 {
                    let credit = (len as u32).to_be_bytes();
                    frame(&mut conn, WINDOW_UPDATE, 0, 0, &credit).await?;
                    if flags & END_STREAM == 0 {
                        frame(&mut conn, WINDOW_UPDATE, 0, stream, &credit).await?;
                    }
                }
                if flags & END_STREAM != 0 {
                    exports.fetch_add(1, Ordering::Relaxed);
                    answer(&mut conn, stream).await?;
                }
            }
            HEADERS if flags & END_STREAM != 0 => answer(&mut conn, stream).await?,
            _ => {}
        }
    }
}

/// `:status 200`, `content-type: application/grpc`, an empty message, and
/// the `grpc-status: 0` trailer (HPACK literals, no table).
async fn answer(conn: &mut TcpStream, stream: u32) -> Result<()> {
    let mut headers = vec![0x88, 0x0f, 0x10, 16];
    headers.extend_from_slice(b"application/grpc");
    frame(conn, HEADERS, END_HEADERS, stream, &headers).await?;
    frame(conn, DATA, 0, stream, &[0, 0, 0, 0, 0]).await?;
    let mut trailers = vec![0x00, 11];
    trailers.extend_from_slice(b"grpc-status");
    trailers.extend_from_slice(&[1, b'0']);
    frame(conn, HEADERS, END_HEADERS | END_STREAM, stream, &trailers).await
}

/// Two rows, tracing off and on, each the median of `rounds` closed-loop
/// runs of `round` at 32 connections.
pub async fn rows(home: &Path, ok: u16, rounds: usize, round: Duration) -> Result<Vec<Row>> {
    let (port, exports) = collector().await?;
    let providers = provider("openai/gpt-4o", ok, "    default: true\n");
    let traced =
        format!("{providers}tracing:\n  endpoint: http://127.0.0.1:{port}\n  sampling: 1.0\n");
    let body = body_of(1024);
    let mut runs: [Vec<load::Run>; 2] = [Vec::new(), Vec::new()];
    let mut rss = [None, None];
    for r in 0..rounds {
        // Each round starts with the other one: the order costs a little.
        for k in 0..2 {
            let on = (r + k) % 2;
            let config = if on == 1 { &traced } else { &providers };
            let gw = Gateway::up(home, "tracing", config)?;
            load::closed_loop(GATEWAY_PORT, body.clone(), 8, Duration::from_millis(300)).await?;
            runs[on].push(load::closed_loop(GATEWAY_PORT, body.clone(), 32, round).await?);
            rss[on] = rss_mb(gw.pid);
        }
    }
    if exports.load(Ordering::Relaxed) == 0 {
        bail!("tracing on, but the collector got no export");
    }
    Ok(runs
        .into_iter()
        .zip(["off", "on (sampling 1.0)"])
        .zip(rss)
        .map(|((rounds, name), rss_mb)| {
            Row::median(
                format!("gateway, success, tracing {name}, 1 KB"),
                rounds,
                rss_mb,
            )
        })
        .collect())
}
