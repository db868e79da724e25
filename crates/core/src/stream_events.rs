//! A provider's server-sent events, as they arrive in byte chunks split
//! anywhere: each complete event is classified by its API's own rules
//! (`api::*::classify_event`, Gemini's in `providers::gemini`) as neutral,
//! output, an error or the stream's terminator. The filter holds a streamed
//! answer back until its first output, and after that watches for an error
//! or a missing terminator.

/// What one event of a streamed answer is to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// Carries no part of the answer (`ping`, `message_start`,
    /// `response.created`, a role-only chat chunk): held with the headers.
    Neutral,
    /// Carries part of the answer: from here on nothing can be retried.
    Output,
    /// The provider reports a failure, standing for this HTTP status.
    Error(u16),
    /// The provider's end of a whole answer (`[DONE]`, `message_stop`,
    /// `response.completed`).
    Terminator,
}

/// How one API names its events: from an event's `event:` name (if any) and
/// its `data:` text.
pub type Classify = fn(name: Option<&str>, data: &str) -> StreamEvent;

/// An event larger than this is not read: it counts as output (the hold
/// ends) and the reader skips to the next event. No provider event is near
/// it; it bounds what one stream may make the gateway keep.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Reads one stream's events across chunks.
#[derive(Debug, Clone)]
pub struct EventReader {
    classify: Classify,
    /// The unfinished line.
    line: Vec<u8>,
    /// The current event's name and data lines so far.
    name: Option<String>,
    data: Option<String>,
    /// Bytes of the current event so far, and whether it is being skipped.
    size: usize,
    skipping: bool,
    /// The previous chunk ended with `\r`: a `\n` first in the next is the
    /// same line end.
    after_cr: bool,
}

impl EventReader {
    pub fn new(classify: Classify) -> EventReader {
        EventReader {
            classify,
            line: Vec::new(),
            name: None,
            data: None,
            size: 0,
            skipping: false,
            after_cr: false,
        }
    }

    /// The events that `chunk` completes, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if rest.is_empty() {
            return events;
        }
        if self.after_cr && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        self.after_cr = false;
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
            if rest[end] == b'\r' && end + 1 == rest.len() {
                self.after_cr = true;
            }
            self.take_line(&rest[..end], &mut events);
            rest = &rest[end + if crlf { 2 } else { 1 }..];
        }
        self.size += rest.len();
        if !self.skipping {
            self.line.extend_from_slice(rest);
        } else if !rest.is_empty() {
            // Only that a line has begun matters to a skipped event.
            self.line.clear();
            self.line.push(b'-');
        }
        self.check_size(!rest.is_empty(), &mut events);
        events
    }

    /// Whether an event has begun and not ended: a stream cut here.
    pub fn mid_event(&self) -> bool {
        !self.line.is_empty() || self.name.is_some() || self.data.is_some() || self.skipping
    }

    fn take_line(&mut self, tail: &[u8], events: &mut Vec<StreamEvent>) {
        self.size += tail.len() + 1;
        if self.skipping {
            if tail.is_empty() && self.line.is_empty() {
                self.end_event();
            }
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(tail);
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if let Some(event) = self.dispatch() {
                events.push(event);
            }
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.name = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            // Comments (`: keep-alive`), `id`, `retry`: nothing to classify.
            _ => {}
        }
        self.check_size(false, events);
    }

    /// Past the limit, the event is skipped; `mid_line` says a line of it
    /// has begun (its end is then no blank line).
    fn check_size(&mut self, mid_line: bool, events: &mut Vec<StreamEvent>) {
        if !self.skipping && self.size > MAX_EVENT_BYTES {
            self.skipping = true;
            self.line.clear();
            if mid_line {
                self.line.push(b'-');
            }
            self.name = None;
            self.data = None;
            events.push(StreamEvent::Output);
        }
    }

    /// A blank line: the event so far is complete.
    fn dispatch(&mut self) -> Option<StreamEvent> {
        let name = self.name.take();
        let data = self.data.take();
        self.size = 0;
        if name.is_none() && data.is_none() {
            return None;
        }
        Some((self.classify)(
            name.as_deref(),
            data.as_deref().unwrap_or(""),
        ))
    }

    fn end_event(&mut self) {
        self.skipping = false;
        self.size = 0;
    }
}

/// A named event's type: its `event:` name, else its data's `type` (the
/// Responses and Messages APIs send both); the data is returned parsed.
pub fn event_kind(name: Option<&str>, data: &str) -> (String, serde_json::Value) {
    let parsed = serde_json::from_str::<serde_json::Value>(data).unwrap_or_default();
    let kind = name
        .filter(|n| !n.is_empty())
        .or_else(|| parsed.get("type").and_then(serde_json::Value::as_str))
        .unwrap_or("")
        .to_string();
    (kind, parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_name(name: Option<&str>, data: &str) -> StreamEvent {
        match (name, data) {
            (_, "[DONE]") => StreamEvent::Terminator,
            (Some("ping"), _) => StreamEvent::Neutral,
            (Some("error"), _) => StreamEvent::Error(529),
            _ => StreamEvent::Output,
        }
    }

    fn read(chunks: &[&[u8]]) -> Vec<StreamEvent> {
        let mut r = EventReader::new(by_name);
        chunks.iter().flat_map(|c| r.feed(c)).collect()
    }

    #[test]
    fn an_event_is_complete_at_its_blank_line_whatever_the_line_ends() {
        use StreamEvent::*;
        assert_eq!(read(&[b"event: ping\ndata: {}\n"]), vec![]);
        let mut r = EventReader::new(by_name);
        r.feed(b"data: x\n\ndata: par");
        assert!(r.mid_event());
        r.feed(b"t\n\n");
        assert!(!r.mid_event());
        assert_eq!(read(&[b"event: ping\ndata: {}\n\n"]), vec![Neutral]);
        assert_eq!(
            read(&[b"event: ping\r\ndata: {}\r\n\r\ndata: x\r\r"]),
            vec![Neutral, Output]
        );
        assert_eq!(read(&[b"event: ping\r", b"\n\r", b"\n"]), vec![Neutral]);
        assert_eq!(
            read(&[b": keep-alive\n\ndata: [DONE]\n\n"]),
            vec![Terminator]
        );
        assert_eq!(read(&[b"event:error\ndata:{}\n\n"]), vec![Error(529)]);
    }

    #[test]
    fn an_event_past_the_limit_counts_as_output_and_is_skipped() {
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        let mut r = EventReader::new(by_name);
        let mut events = r.feed(b"data: ");
        events.extend(r.feed(&big));
        events.extend(r.feed(b"\n\nevent: ping\ndata: 1\n\n"));
        assert_eq!(events, vec![StreamEvent::Output, StreamEvent::Neutral]);
        // A skipped line's end in a chunk of its own is no blank line.
        let mut r = EventReader::new(by_name);
        let mut events = r.feed(b"data: ");
        events.extend(r.feed(&big));
        events.extend(r.feed(b"\n"));
        events.extend(r.feed(b"data: more\n"));
        events.extend(r.feed(b"\nevent: ping\ndata: 1\n\n"));
        assert_eq!(events, vec![StreamEvent::Output, StreamEvent::Neutral]);
    }
}
