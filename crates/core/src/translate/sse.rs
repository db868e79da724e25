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
}

impl Reader {
    /// The events `chunk` completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some((end, skip)) = boundary(&self.pending) {
            let raw: Vec<u8> = self.pending.drain(..end + skip).collect();
            if let Some(event) = parse(&String::from_utf8_lossy(&raw[..end])) {
                events.push(event);
            }
        }
        events
    }
}

/// Where the first blank line is: (end of the event, length of the blank).
fn boundary(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
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
}
