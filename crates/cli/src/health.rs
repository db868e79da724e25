//! A minimal HTTP/1.1 GET over loopback, enough to poll `/healthz` and read
//! Envoy's admin stats without an HTTP client dependency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("not an HTTP response")?;
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Polls `/healthz` until it answers 200; `alive` says whether the gateway
/// process is still there, so a crash is reported at once, not at timeout.
pub fn wait_healthy(port: u16, timeout: Duration, mut alive: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok((200, _)) = get(port, "/healthz") {
            return Ok(());
        }
        if !alive() {
            bail!("the gateway exited while starting");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the gateway did not answer /healthz on port {port} within {}s",
        timeout.as_secs()
    )
}
