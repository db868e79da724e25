//! A minimal HTTP/1.1 GET over loopback, enough to poll `/healthz` and read
//! Envoy's admin stats without an HTTP client dependency.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub fn get(port: u16, path: &str) -> Result<(u16, String)> {
    get_at(SocketAddr::from(([127, 0, 0, 1], port)), path)
}

/// Where this machine reaches a listener bound to `address`: the address
/// itself, or loopback of its family for a wildcard (`0.0.0.0`, `::`).
pub fn reach(address: &str, port: u16) -> SocketAddr {
    let ip = match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Ok(IpAddr::V6(v6)) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Ok(ip) => ip,
        Err(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    SocketAddr::new(ip, port)
}

fn get_at(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    // Read up to the answer's end, not to the connection's: Envoy closes a
    // connection it answered on after its delayed-close timeout (1 s).
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !complete(&bytes) {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("not an HTTP response")?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// Whether `raw` holds a whole answer: headers and as much body as they say.
fn complete(raw: &[u8]) -> bool {
    let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(raw.get(..at).unwrap_or_default()).to_ascii_lowercase();
    let body = raw.get(at + 4..).unwrap_or_default();
    for line in head.lines() {
        if let Some(n) = line.strip_prefix("content-length:") {
            return n.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body == b"0\r\n\r\n" || body.ends_with(b"\r\n0\r\n\r\n");
        }
    }
    false
}

/// The payload of a chunked body: each chunk is `<hex size>\r\n<data>\r\n`.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `/healthz` until it answers 200; `alive` says whether the gateway
/// process is still there, so a crash is reported at once, not at timeout.
pub fn wait_healthy(
    listener: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<()> {
    let port = listener.port();
    let start = Instant::now();
    let progress = crate::output::Progress::on_terminal();
    while start.elapsed() < timeout {
        progress.show(&format!(
            "waiting for the gateway to answer /healthz on port {port} ({:.1}s)",
            start.elapsed().as_secs_f64()
        ));
        if let Ok((200, _)) = get_at(listener, "/healthz") {
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_wildcard_listener_is_reached_on_loopback_of_its_family() {
        assert_eq!(super::reach("0.0.0.0", 1).to_string(), "127.0.0.1:1");
        assert_eq!(super::reach("::", 1).to_string(), "[::1]:1");
        assert_eq!(super::reach("::1", 1).to_string(), "[::1]:1");
        assert_eq!(super::reach("127.0.0.2", 1).to_string(), "127.0.0.2:1");
    }

    #[test]
    fn an_answer_is_complete_at_its_length_or_last_chunk() {
        assert!(super::complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        ));
        assert!(!super::complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"
        ));
        assert!(super::complete(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        ));
        assert!(!super::complete(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n"
        ));
        assert!(!super::complete(b"HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            super::dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
