//! AWS's binary event stream (`application/vnd.amazon.eventstream`), the
//! framing of Bedrock's `converse-stream`, read from bytes split anywhere.
//! A frame (AWS calls it a message) is a prelude (total length u32, headers
//! length u32, the prelude's CRC32), its headers, its payload and the whole
//! message's CRC32, all big-endian. [`Decoder`] yields each frame as soon as
//! its last byte arrives, checks both CRCs and holds at most one frame of at
//! most [`MAX_FRAME_BYTES`]; after a broken frame it yields nothing more,
//! since nothing after a wrong length can be trusted to start a frame.

/// A frame longer than this is refused as broken: Bedrock's are a few
/// hundred bytes, and it bounds what one stream makes the gateway keep (as
/// `sse::MAX_EVENT_BYTES` does for SSE).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// The `content-type` of an event stream.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// Whether an answer of `content_type` is a stream: server-sent events, or
/// AWS's event stream (a Bedrock target's).
pub fn is_stream(content_type: &str) -> bool {
    content_type.starts_with("text/event-stream") || content_type.starts_with(CONTENT_TYPE)
}

/// Prelude (12) and message CRC (4).
const OVERHEAD: usize = 16;

/// One decoded frame: its string headers (the only type Bedrock sends that
/// the gateway reads) and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A string header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `:message-type` `exception` or `error`: the provider reports a failure.
    pub fn is_exception(&self) -> bool {
        matches!(self.header(":message-type"), Some("exception" | "error"))
    }

    /// The event's name: `:event-type`, `:exception-type` for an exception,
    /// `:error-code` for an error.
    pub fn name(&self) -> &str {
        self.header(":event-type")
            .or_else(|| self.header(":exception-type"))
            .or_else(|| self.header(":error-code"))
            .unwrap_or("")
    }
}

/// Why the stream can be read no further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The prelude's CRC is wrong: its lengths cannot be trusted.
    PreludeCrc,
    /// The message's CRC is wrong.
    MessageCrc,
    /// A length out of bounds (shorter than a frame, longer than
    /// [`MAX_FRAME_BYTES`], headers past the payload) or a malformed header.
    Malformed,
}

impl Broken {
    pub fn describe(self) -> &'static str {
        match self {
            Broken::PreludeCrc => "an event-stream frame with a wrong prelude CRC",
            Broken::MessageCrc => "an event-stream frame with a wrong message CRC",
            Broken::Malformed => "a malformed event-stream frame",
        }
    }
}

/// Reads frames across chunks.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
    broken: bool,
}

impl Decoder {
    /// The frames `chunk` completes, in order; a broken frame is the last
    /// item ever returned.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Result<Frame, Broken>> {
        let mut out = Vec::new();
        if self.broken {
            return out;
        }
        self.buffer.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            let rest = &self.buffer[at..];
            if rest.len() < 12 {
                break;
            }
            match frame_length(rest) {
                Err(b) => {
                    out.push(Err(b));
                    self.broken = true;
                    break;
                }
                Ok(total) if rest.len() < total => break,
                Ok(total) => {
                    let read = parse(&rest[..total]);
                    at += total;
                    let failed = read.is_err();
                    out.push(read);
                    if failed {
                        self.broken = true;
                        break;
                    }
                }
            }
        }
        if self.broken {
            self.buffer = Vec::new();
        } else {
            self.buffer.drain(..at);
        }
        out
    }

    /// Whether a frame has begun and not ended: a stream cut here.
    pub fn mid_frame(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Whether a broken frame was read.
    pub fn is_broken(&self) -> bool {
        self.broken
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The frame's total length from its checked prelude (`rest` has 12 bytes).
fn frame_length(rest: &[u8]) -> Result<usize, Broken> {
    let total = be32(&rest[0..4]) as usize;
    let headers = be32(&rest[4..8]) as usize;
    if crc32fast::hash(&rest[0..8]) != be32(&rest[8..12]) {
        return Err(Broken::PreludeCrc);
    }
    if !(OVERHEAD..=MAX_FRAME_BYTES).contains(&total) || headers > total - OVERHEAD {
        return Err(Broken::Malformed);
    }
    Ok(total)
}

/// One whole frame, its message CRC checked.
fn parse(frame: &[u8]) -> Result<Frame, Broken> {
    let (body, crc) = frame.split_at(frame.len() - 4);
    if crc32fast::hash(body) != be32(crc) {
        return Err(Broken::MessageCrc);
    }
    let headers_len = be32(&frame[4..8]) as usize;
    let headers = parse_headers(&body[12..12 + headers_len]).ok_or(Broken::Malformed)?;
    Ok(Frame {
        headers,
        payload: body[12 + headers_len..].to_vec(),
    })
}

/// The headers' string values; other value types are skipped by their size.
fn parse_headers(mut b: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let name_len = *b.first()? as usize;
        let name = std::str::from_utf8(b.get(1..1 + name_len)?).ok()?;
        let kind = *b.get(1 + name_len)?;
        b = &b[2 + name_len..];
        let size = match kind {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            6 | 7 => 2 + u16::from_be_bytes([*b.first()?, *b.get(1)?]) as usize,
            _ => return None,
        };
        let value = b.get(..size)?;
        if kind == 7 {
            let text = std::str::from_utf8(&value[2..]).ok()?;
            out.push((name.to_string(), text.to_string()));
        }
        b = &b[size..];
    }
    Some(out)
}

/// A frame with string `headers` and `payload`, as AWS encodes it: used for
/// the gateway's own last frame of a broken stream, and by tests.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = OVERHEAD + h.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// An event frame as Bedrock sends one (`:message-type: event`).
pub fn event(name: &str, payload: &str) -> Vec<u8> {
    encode(
        &[
            (":event-type", name),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.as_bytes(),
    )
}

/// An exception frame as Bedrock sends one (`:message-type: exception`).
pub fn exception(name: &str, payload: &str) -> Vec<u8> {
    encode(
        &[
            (":exception-type", name),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        payload.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Result<Frame, Broken>> {
        let mut d = Decoder::default();
        chunks.iter().flat_map(|c| d.feed(c)).collect()
    }

    #[test]
    fn a_frame_is_read_when_its_last_byte_arrives_however_split() {
        let one = event("messageStart", r#"{"role":"assistant"}"#);
        let two = exception("throttlingException", r#"{"message":"slow"}"#);
        let both = [one.clone(), two.clone()].concat();
        let whole = all(&[&both]);
        assert_eq!(whole.len(), 2);
        let f = whole[0].as_ref().unwrap();
        assert_eq!(f.name(), "messageStart");
        assert!(!f.is_exception());
        assert_eq!(f.payload, br#"{"role":"assistant"}"#);
        let e = whole[1].as_ref().unwrap();
        assert!(e.is_exception());
        assert_eq!(e.name(), "throttlingException");
        let mut d = Decoder::default();
        let bytewise: Vec<_> = both.iter().flat_map(|b| d.feed(&[*b])).collect();
        assert_eq!(bytewise, whole);
        let mut d = Decoder::default();
        assert!(d.feed(&one[..one.len() - 1]).is_empty());
        assert!(d.mid_frame());
        assert_eq!(d.feed(&one[one.len() - 1..]).len(), 1);
        assert!(!d.mid_frame());
    }

    #[test]
    fn a_wrong_crc_or_length_breaks_the_stream_for_good() {
        let one = event("contentBlockDelta", r#"{"delta":{"text":"hi"}}"#);
        let mut bad = one.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(all(&[&bad]), vec![Err(Broken::MessageCrc)]);
        let mut bad = one.clone();
        bad[20] ^= 1;
        assert_eq!(all(&[&bad]), vec![Err(Broken::MessageCrc)]);
        let mut bad = one.clone();
        bad[3] ^= 1;
        assert_eq!(all(&[&bad, &one]), vec![Err(Broken::PreludeCrc)]);
        // A length past the bound, with a right prelude CRC.
        let mut huge = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&huge);
        huge.extend_from_slice(&crc.to_be_bytes());
        let mut d = Decoder::default();
        assert_eq!(d.feed(&huge), vec![Err(Broken::Malformed)]);
        assert!(d.is_broken());
        assert!(d.feed(&one).is_empty());
    }
}
