//! A provider's server-sent events, as they arrive in byte chunks split
//! anywhere: each complete event is classified by its API's own rules
//! (`api::*::classify_event`, Gemini's in `providers::gemini`) as neutral,
//! output, an error or the stream's terminator. The filter holds a streamed
//! answer back until its first output, and after that watches for an error
//! or a missing terminator.

use crate::sse::{Events, Read};

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

/// What the gateway reads and writes in one API's streams.
#[derive(Debug)]
pub struct StreamEvents {
    pub classify: Classify,
    /// The last event of a stream the provider broke after output had
    /// reached the client, saying so (`message` explains).
    pub broken: fn(message: &str) -> String,
}

/// Reads one stream's events across chunks (`crate::sse`), classifying each.
#[derive(Debug, Clone)]
pub struct EventReader {
    classify: Classify,
    events: Events,
}

impl EventReader {
    pub fn new(classify: Classify) -> EventReader {
        EventReader {
            classify,
            events: Events::default(),
        }
    }

    /// The events that `chunk` completes, in order. An event too large to
    /// read counts as output: the hold ends.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<StreamEvent> {
        self.events
            .feed(chunk)
            .into_iter()
            .map(|read| match read {
                Read::Event(e) => (self.classify)(e.name.as_deref(), e.data()),
                Read::TooLarge => StreamEvent::Output,
            })
            .collect()
    }

    /// Whether an event has begun and not ended: a stream cut here.
    pub fn mid_event(&self) -> bool {
        self.events.mid_event()
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
    fn an_event_past_the_limit_counts_as_output() {
        let big = vec![b'x'; crate::sse::MAX_EVENT_BYTES + 1];
        let events = read(&[b"data: ", &big, b"\n\nevent: ping\ndata: 1\n\n"]);
        assert_eq!(events, vec![StreamEvent::Output, StreamEvent::Neutral]);
    }
}
