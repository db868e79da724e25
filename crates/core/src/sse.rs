//! Server-sent events from bytes split anywhere, read in one scan: every
//! byte is looked at once, whatever the chunks, and a line may end in `\n`,
//! `\r\n` or a bare `\r` (all three are SSE). [`Lines`] splits a chunk into
//! its pieces of lines, for a reader that passes the bytes on (the usage
//! strip); [`Events`] builds the events' fields, holding at most
//! [`MAX_EVENT_BYTES`] of one event.

/// An event larger than this is not read: the reader says so once and skips
/// to the next event. No provider event is near it; it bounds what one
/// stream may make the gateway keep.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// A piece of a chunk, in order: the pieces of a chunk are the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes of a line that has not ended in this chunk.
    Text(&'a [u8]),
    /// A line's last bytes (in this chunk), then its end.
    End(&'a [u8], &'a [u8]),
    /// The `\n` of a `\r\n` whose `\r` ended the last chunk: the end of
    /// the line already ended.
    EndTail(&'a [u8]),
}

/// Splits chunks into lines; all it keeps between chunks is whether the
/// last one ended in `\r`.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    after_cr: bool,
}

impl Lines {
    /// Calls `each` with the pieces of `chunk`, in order.
    pub fn split<'a>(&mut self, chunk: &'a [u8], mut each: impl FnMut(Piece<'a>)) {
        if chunk.is_empty() {
            return;
        }
        let mut rest = chunk;
        if std::mem::take(&mut self.after_cr) && rest.first() == Some(&b'\n') {
            each(Piece::EndTail(&rest[..1]));
            rest = &rest[1..];
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let cr = rest[end] == b'\r';
            let len = if cr && rest.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            self.after_cr = cr && end + 1 == rest.len();
            each(Piece::End(&rest[..end], &rest[end..end + len]));
            rest = &rest[end + len..];
        }
        if !rest.is_empty() {
            each(Piece::Text(rest));
        }
    }
}

/// One event's fields: its `event:` name and its `data:` lines, joined by `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: Option<String>,
}

impl Event {
    pub fn data(&self) -> &str {
        self.data.as_deref().unwrap_or("")
    }
}

/// What a blank line (or the size limit) completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Event(Event),
    /// An event past [`MAX_EVENT_BYTES`]: its bytes are skipped to its end.
    TooLarge,
}

/// Reads one stream's events across chunks.
#[derive(Debug, Clone, Default)]
pub struct Events {
    lines: Lines,
    /// The unfinished line (empty while skipping).
    line: Vec<u8>,
    /// The unfinished line has begun (in this chunk or an earlier one).
    line_begun: bool,
    event: Event,
    /// Bytes of the current event so far, and whether it is being skipped.
    size: usize,
    skipping: bool,
}

impl Events {
    /// The events that `chunk` completes, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Read> {
        let mut out = Vec::new();
        let mut lines = std::mem::take(&mut self.lines);
        lines.split(chunk, |piece| self.piece(piece, &mut out));
        self.lines = lines;
        out
    }

    /// Whether an event has begun and not ended: a stream cut here.
    pub fn mid_event(&self) -> bool {
        self.line_begun || self.skipping || self.event.name.is_some() || self.event.data.is_some()
    }

    fn piece(&mut self, piece: Piece, out: &mut Vec<Read>) {
        match piece {
            Piece::EndTail(_) => {}
            Piece::Text(text) => {
                self.size += text.len();
                self.line_begun = true;
                if !self.skipping {
                    self.line.extend_from_slice(text);
                }
                self.check_size(out);
            }
            Piece::End(text, end) => {
                self.size += text.len() + end.len();
                let blank = text.is_empty() && !self.line_begun;
                self.line_begun = false;
                if self.skipping {
                    if blank {
                        self.skipping = false;
                        self.size = 0;
                    }
                    return;
                }
                if blank {
                    self.size = 0;
                    let event = std::mem::take(&mut self.event);
                    // A blank line after comments only completes no event.
                    if event.name.is_some() || event.data.is_some() {
                        out.push(Read::Event(event));
                    }
                    return;
                }
                self.line.extend_from_slice(text);
                let line = std::mem::take(&mut self.line);
                self.field(&line);
                self.check_size(out);
            }
        }
    }

    fn field(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.event.name = Some(value.to_string()),
            "data" => match &mut self.event.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.event.data = Some(value.to_string()),
            },
            // Comments (`: keep-alive`), `id`, `retry`: nothing to read.
            _ => {}
        }
    }

    fn check_size(&mut self, out: &mut Vec<Read>) {
        if !self.skipping && self.size > MAX_EVENT_BYTES {
            self.skipping = true;
            self.line = Vec::new();
            self.event = Event::default();
            out.push(Read::TooLarge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            lines.split(c, |p| {
                out.push(match p {
                    Piece::Text(t) => format!("T{}", String::from_utf8_lossy(t)),
                    Piece::End(t, e) => format!("E{}|{:?}", String::from_utf8_lossy(t), e),
                    Piece::EndTail(_) => "N".to_string(),
                })
            });
        }
        out
    }

    #[test]
    fn every_line_end_ends_a_line_once() {
        assert_eq!(
            pieces(&[b"a\nb\r\nc\rd"]),
            ["Ea|[10]", "Eb|[13, 10]", "Ec|[13]", "Td"]
        );
        // `\r` last in a chunk, its `\n` first in the next: one line end.
        assert_eq!(
            pieces(&[b"a\r", b"\nb\r", b"c"]),
            ["Ea|[13]", "N", "Eb|[13]", "Tc"]
        );
        assert_eq!(pieces(&[b"a\r", b"", b"\n"]), ["Ea|[13]", "N"]);
    }

    fn data(chunks: &[&[u8]]) -> Vec<Option<String>> {
        let mut r = Events::default();
        chunks
            .iter()
            .flat_map(|c| r.feed(c))
            .map(|e| match e {
                Read::Event(e) => e.data,
                Read::TooLarge => Some("too large".into()),
            })
            .collect()
    }

    #[test]
    fn an_event_ends_at_its_blank_line_whatever_the_line_ends() {
        let want = vec![Some("1".into()), Some("2\n3".into())];
        assert_eq!(data(&[b"data: 1\n\ndata: 2\ndata:3\n\n"]), want);
        assert_eq!(data(&[b"data: 1\r\rdata: 2\rdata:3\r\r"]), want);
        assert_eq!(data(&[b"data: 1\r\n\r\ndata: 2\r\ndata:3\r\n\r\n"]), want);
        assert_eq!(data(&[b": c\n\nevent: e\n\n"]), vec![None]);
    }

    #[test]
    fn an_event_past_the_limit_is_said_once_and_skipped() {
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        let want = vec![Some("too large".into()), Some("1".into())];
        assert_eq!(data(&[b"data: ", &big, b"\n\ndata: 1\n\n"]), want);
        // A skipped line's end in a chunk of its own is no blank line.
        assert_eq!(
            data(&[b"data: ", &big, b"\n", b"data: more\n", b"\ndata: 1\n\n"]),
            want
        );
    }
}
