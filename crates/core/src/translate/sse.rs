//! Server-sent events from bytes split anywhere: complete events out, the
//! rest kept for the next chunk.

/// One event: its `event:` name (empty when unnamed) and its `data:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Reader {
    pending: Vec<u8>,
    /// How far `pending` is known to hold no blank line: a long event that
    /// comes in many chunks is searched once, not again with every chunk.
    searched: usize,
}

impl Reader {
    /// The events `chunk` completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some((end, skip)) = boundary(&self.pending, self.searched.max(start)) {
            if let Some(event) = parse(&String::from_utf8_lossy(&self.pending[start..end])) {
                events.push(event);
            }
            start = end + skip;
        }
        self.pending.drain(..start);
        // A blank line may begin in the last 3 bytes and end in the next chunk.
        self.searched = self.pending.len().saturating_sub(3);
        events
    }
}

/// Where the first blank line at or after `from` is: (end of the event,
/// length of the blank).
fn boundary(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    (from..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if buf[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else {
            None
        }
    })
}

fn parse(text: &str) -> Option<Event> {
    let mut event = Event {
        name: String::new(),
        data: String::new(),
    };
    let mut any = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event.name = v.trim().to_string();
            any = true;
        } else if let Some(v) = line.strip_prefix("data:") {
            if !event.data.is_empty() {
                event.data.push('\n');
            }
            event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            any = true;
        }
    }
    any.then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_whole_however_the_bytes_split() {
        let stream = b"event: a\ndata: {\"x\":1}\n\n: comment\n\ndata: [DONE]\r\n\r\n";
        for cut in 0..stream.len() {
            let mut r = Reader::default();
            let mut got = r.feed(&stream[..cut]);
            got.extend(r.feed(&stream[cut..]));
            assert_eq!(
                got,
                vec![
                    Event {
                        name: "a".into(),
                        data: "{\"x\":1}".into()
                    },
                    Event {
                        name: String::new(),
                        data: "[DONE]".into()
                    },
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_event_fed_a_byte_at_a_time_comes_out_once() {
        let stream = b"data: 1\r\n\r\nevent: e\ndata: 2\n\ndata: 3\n\n";
        let mut r = Reader::default();
        let got: Vec<String> = stream
            .iter()
            .flat_map(|b| r.feed(&[*b]))
            .map(|e| e.data)
            .collect();
        assert_eq!(got, ["1", "2", "3"]);
    }
}
