//! Repair of a faulty HTTP/1.0 response head. An HTTP/1.0 response that
//! carries `Transfer-Encoding` has faulty framing (RFC 9112 §6.1); common
//! clients (hyper, curl, browsers) then read the body to connection close,
//! while Envoy's codec rejects it. Dropping the header gives Envoy the
//! close-delimited body those clients see.

/// The response head with `Transfer-Encoding` removed, when `data` starts
/// with a complete HTTP/1.0 head that has one; `None` when nothing changes.
pub fn repair_http10_head(data: &[u8]) -> Option<Vec<u8>> {
    if !data.starts_with(b"HTTP/1.0 ") {
        return None;
    }
    let head_end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 2;
    let head = &data[..head_end];
    let mut out = Vec::with_capacity(data.len());
    let mut removed = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if line.contains(&b':') && name.eq_ignore_ascii_case(b"transfer-encoding") {
            removed = true;
            continue;
        }
        out.extend_from_slice(line);
    }
    if !removed {
        return None;
    }
    out.extend_from_slice(&data[head_end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::repair_http10_head;

    #[test]
    fn drops_transfer_encoding_from_an_http10_head_only() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\ndata: 1\n\n";
        assert_eq!(
            repair_http10_head(raw).unwrap(),
            b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n"
        );
    }

    #[test]
    fn leaves_everything_else_alone() {
        assert_eq!(
            repair_http10_head(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            ),
            None
        );
        assert_eq!(
            repair_http10_head(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
            None
        );
        // An incomplete head is passed on unchanged.
        assert_eq!(repair_http10_head(b"HTTP/1.0 200 OK\r\nTransfer-Enc"), None);
        // A body line that looks like the header is not touched.
        let raw = b"HTTP/1.0 200 OK\r\n\r\nTransfer-Encoding: chunked\r\n";
        assert_eq!(repair_http10_head(raw), None);
    }
}
