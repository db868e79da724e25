//! Where a provider connection's HTTP/1.1 responses stand, read as their
//! bytes pass: so that a chunked event stream the provider cut (its
//! connection closed before the last chunk) can be ended cleanly. Envoy's
//! codec turns such a cut into a reset, which reaches the client as a broken
//! transfer; ended, the answer reaches the gateway filter as a stream that
//! lacks its terminator, and the client gets a last error event in its API's
//! format. A whole answer (JSON) has no terminator to miss: ended, a cut one
//! would pass for complete, so its cut stays a reset the client can tell.

/// What the next bytes of the connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum At {
    /// A response head, this much of it so far.
    Head(Vec<u8>),
    /// A chunk-size line, the size so far (`None` past its extensions).
    Size(u64, bool),
    /// Chunk data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data, this many bytes of it left.
    DataEnd(u8),
    /// The trailer section: whether the current line is empty so far.
    Trailers(bool),
    /// A body of known length, this many bytes left.
    Length(u64),
    /// A body read to the connection's close: the close ends it.
    ToClose,
}

/// One provider connection's responses.
#[derive(Debug, Clone)]
pub struct ChunkedTracker {
    at: At,
    /// Whether the response being read is an event stream.
    events: bool,
}

/// The content types of the streams the gateway ends with an error event:
/// server-sent events, and AWS's binary event stream (Bedrock).
const EVENT_STREAMS: [&str; 2] = ["text/event-stream", crate::eventstream::CONTENT_TYPE];

/// A response head larger than this is not tracked: the connection is left
/// as Envoy's codec reads it.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A cut chunk with more than this left is not padded (the cut stays a
/// reset): a chunk size is the provider's word, and padding costs memory.
const MAX_PAD_BYTES: u64 = 1024 * 1024;

impl Default for ChunkedTracker {
    fn default() -> Self {
        ChunkedTracker {
            at: At::Head(Vec::new()),
            events: false,
        }
    }
}

impl ChunkedTracker {
    /// Follows the connection's next bytes from the provider.
    pub fn feed(&mut self, mut data: &[u8]) {
        while let Some((&b, rest)) = data.split_first() {
            match &mut self.at {
                At::Head(head) => {
                    head.push(b);
                    if head.ends_with(b"\r\n\r\n") {
                        (self.at, self.events) = body_of(head);
                    } else if head.len() > MAX_HEAD_BYTES {
                        self.at = At::ToClose;
                    }
                }
                At::Size(size, in_extension) => match b {
                    b'\n' => {
                        self.at = match *size {
                            0 => At::Trailers(true),
                            n => At::Data(n),
                        }
                    }
                    b';' | b'\r' | b' ' | b'\t' => *in_extension = true,
                    _ if *in_extension => {}
                    _ => match (b as char).to_digit(16) {
                        Some(d) => *size = size.saturating_mul(16).saturating_add(u64::from(d)),
                        None => self.at = At::ToClose,
                    },
                },
                At::Data(left) => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    if *left == 0 {
                        self.at = At::DataEnd(2);
                    }
                    data = &data[take as usize..];
                    continue;
                }
                At::DataEnd(left) => {
                    *left -= 1;
                    if b == b'\n' || *left == 0 {
                        self.at = At::Size(0, false);
                    }
                }
                At::Trailers(empty) => match b {
                    b'\n' if *empty => self.at = At::Head(Vec::new()),
                    b'\n' => *empty = true,
                    b'\r' => {}
                    _ => *empty = false,
                },
                At::Length(left) => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    if *left == 0 {
                        self.at = At::Head(Vec::new());
                    }
                    data = &data[take as usize..];
                    continue;
                }
                At::ToClose => return,
            }
            data = rest;
        }
    }

    /// Follows `n` bytes without reading them, when they are all body bytes
    /// of known count (or a body read to close); false when they must be
    /// read (`feed`). Spares copying a large body only to count it.
    pub fn skip(&mut self, n: u64) -> bool {
        match &mut self.at {
            At::ToClose => true,
            At::Length(left) | At::Data(left) if *left > n => {
                *left -= n;
                true
            }
            _ => false,
        }
    }

    /// The bytes that end a chunked event stream cut where it stands now:
    /// the cut chunk padded with line ends (which end any cut event too),
    /// then the last chunk. `None` when no chunked event stream is open.
    pub fn ending(&self) -> Option<Vec<u8>> {
        if !self.events {
            return None;
        }
        let mut out = Vec::new();
        match &self.at {
            At::Size(n, _) | At::Data(n) if *n > MAX_PAD_BYTES => return None,
            At::Head(_) | At::Length(_) | At::ToClose => return None,
            At::Size(0, _) => {}
            At::Size(n, _) => {
                out.extend_from_slice(b"\r\n");
                pad(&mut out, *n);
                out.extend_from_slice(b"\r\n");
            }
            At::Data(left) => {
                pad(&mut out, *left);
                out.extend_from_slice(b"\r\n");
            }
            At::DataEnd(1) => out.push(b'\n'),
            At::DataEnd(_) => out.extend_from_slice(b"\r\n"),
            At::Trailers(_) => {
                out.extend_from_slice(b"\r\n\r\n");
                return Some(out);
            }
        }
        out.extend_from_slice(b"0\r\n\r\n");
        Some(out)
    }
}

fn pad(out: &mut Vec<u8>, n: u64) {
    out.resize(out.len() + n as usize, b'\n');
}

/// How the body after `head` is framed, and whether it is an event stream.
fn body_of(head: &[u8]) -> (At, bool) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return (At::Head(Vec::new()), false);
    }
    let (mut length, mut chunked, mut events) = (None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.len().checked_sub(7).and_then(|at| value.get(at..));
            chunked |= last.is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("content-type") {
            let essence = value.split(';').next().unwrap_or_default().trim();
            events = EVENT_STREAMS
                .iter()
                .any(|t| essence.eq_ignore_ascii_case(t));
        }
    }
    let body = match (chunked, length) {
        (true, _) => At::Size(0, false),
        (false, Some(0)) => At::Head(Vec::new()),
        (false, Some(n)) => At::Length(n),
        (false, None) => At::ToClose,
    };
    (body, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

    fn tracker(chunks: &[&[u8]]) -> ChunkedTracker {
        let mut t = ChunkedTracker::default();
        for c in chunks {
            t.feed(c);
        }
        t
    }

    #[test]
    fn a_body_cut_at_a_chunk_boundary_gets_the_last_chunk() {
        let t = tracker(&[HEAD, b"5\r\nhello\r\n", b"3\r\nabc\r\n"]);
        assert_eq!(t.ending().unwrap(), b"0\r\n\r\n");
    }

    #[test]
    fn a_body_cut_inside_a_chunk_is_padded_to_its_size() {
        let t = tracker(&[HEAD, b"a\r\nhel"]);
        assert_eq!(t.ending().unwrap(), b"\n\n\n\n\n\n\n\r\n0\r\n\r\n");
        let t = tracker(&[HEAD, b"5\r\nhello\r"]);
        assert_eq!(t.ending().unwrap(), b"\n0\r\n\r\n");
        let t = tracker(&[HEAD, b"1"]);
        assert_eq!(t.ending().unwrap(), b"\r\n\n\r\n0\r\n\r\n");
    }

    #[test]
    fn complete_bodies_and_other_framings_need_no_ending() {
        let whole = tracker(&[HEAD, b"5;ext=1\r\nhello\r\n0\r\n\r\n"]);
        assert_eq!(whole.ending(), None);
        let keep_alive = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".as_slice(),
            HEAD,
            b"2\r\nhi\r\n",
        ];
        assert_eq!(tracker(&keep_alive).ending().unwrap(), b"0\r\n\r\n");
        let length = tracker(&[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel"]);
        assert_eq!(length.ending(), None);
        let close = tracker(&[b"HTTP/1.0 200 OK\r\n\r\nhel"]);
        assert_eq!(close.ending(), None);
        let continued = tracker(&[b"HTTP/1.1 100 Continue\r\n\r\n", HEAD, b"2\r\nhi\r\n"]);
        assert_eq!(continued.ending().unwrap(), b"0\r\n\r\n");
    }

    #[test]
    fn skipped_body_bytes_track_as_read_ones() {
        let mut t = tracker(&[HEAD, b"a\r\n"]);
        assert!(t.skip(4));
        assert!(!t.skip(6));
        t.feed(b"abcdef\r\n");
        assert_eq!(t.ending().unwrap(), b"0\r\n\r\n");
        let mut t = tracker(&[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"]);
        assert!(t.skip(8));
        assert!(!t.skip(1));
        t.feed(b"x");
        t.feed(HEAD);
        assert_eq!(t.ending().unwrap(), b"0\r\n\r\n");
    }

    #[test]
    fn only_an_event_stream_is_ended() {
        // A whole answer cut short would pass for complete if ended.
        let json = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(tracker(&[json, b"5\r\n{\"a\":"]).ending(), None);
        let untyped = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(tracker(&[untyped, b"2\r\nhi\r\n"]).ending(), None);
        let bedrock = b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(
            tracker(&[bedrock, b"2\r\nhi\r\n"]).ending().unwrap(),
            b"0\r\n\r\n"
        );
        let with_charset = b"HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            tracker(&[with_charset, b"2\r\nhi\r\n"]).ending().unwrap(),
            b"0\r\n\r\n"
        );
        // The next response on the connection is judged by its own head.
        assert_eq!(
            tracker(&[HEAD, b"0\r\n\r\n", json, b"2\r\n{}"]).ending(),
            None
        );
    }

    #[test]
    fn a_cut_chunk_too_large_to_pad_is_left_as_it_is() {
        assert_eq!(tracker(&[HEAD, b"ffffffffffffffffff\r\nab"]).ending(), None);
        assert_eq!(tracker(&[HEAD, b"fffffffffff"]).ending(), None);
    }

    #[test]
    fn any_split_tracks_the_same() {
        let bytes = [
            HEAD,
            b"5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n4\r\nab",
        ]
        .concat();
        let whole = tracker(&[&bytes]).ending();
        for cut in 0..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(tracker(&[a, b]).ending(), whole, "cut at {cut}");
        }
    }
}
