//! Token counts for chat completions streams the client sent without
//! `stream_options.include_usage`: the gateway asks the provider for usage
//! all the same (chat completions' one way to get it in a stream), and takes
//! the usage-only event it then sends out of the client's stream. The
//! Responses API reports usage in `response.completed` unasked.

use serde_json::Value;

use crate::body::RequestBody;
use crate::sse::{Events, Lines, Piece, Read};

const ASK: &[u8] = br#","stream_options":{"include_usage":true}"#;

/// `raw` (a streamed chat request's body, read as `body`) asking for usage,
/// or `None` when the client already decided: it asked for usage (it gets
/// the event), or it set `stream_options` otherwise (its choice is left as
/// it is). The field is added before the object's closing brace, so every
/// byte before it, the `model` value's span included, stays where it was.
pub fn ask_for_usage(raw: &[u8], body: &RequestBody) -> Option<Vec<u8>> {
    if body.sets_stream_options {
        return None;
    }
    let close = raw.iter().rposition(|&b| b == b'}')?;
    let mut asked = Vec::with_capacity(raw.len() + ASK.len());
    asked.extend_from_slice(raw.get(..close)?);
    asked.extend_from_slice(ASK);
    asked.extend_from_slice(raw.get(close..)?);
    Some(asked)
}

/// Whether a chat completions stream's last bytes are its `[DONE]` event:
/// its usage has come, and a client may close now, before the stream's end
/// reaches the gateway.
pub fn done(tail: &[u8]) -> bool {
    let end = tail
        .get(tail.len().saturating_sub(32)..)
        .unwrap_or_default();
    find(end, b"data: [DONE]").is_some() || find(end, b"data:[DONE]").is_some()
}

/// Takes the usage-only event out of a stream, event by event, in one scan
/// of each byte: an event is held until its end (its blank line), then
/// passes unless it is the usage event. An event longer than
/// [`HOLD_BYTES`] is no usage event: it passes as it comes.
#[derive(Debug, Default)]
pub struct UsageStrip {
    lines: Lines,
    /// The current event's bytes, while it is held.
    event: Vec<u8>,
    /// The current line has begun.
    line_begun: bool,
    /// The current event is past [`HOLD_BYTES`]: its bytes pass as they come.
    passing: bool,
    /// An event has just ended, and whether it was taken out: the `\n` of
    /// its `\r\n` may still come, first in the next chunk.
    ended: Option<bool>,
}

/// What the strip holds of one event at most: a usage event is a few hundred bytes.
pub const HOLD_BYTES: usize = 16 * 1024;

impl UsageStrip {
    /// What of `chunk` goes to the client now; at the stream's end, all
    /// that is left.
    pub fn pass(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + self.event.len());
        let mut lines = std::mem::take(&mut self.lines);
        lines.split(chunk, |piece| self.piece(piece, &mut out));
        self.lines = lines;
        if end_of_stream {
            out.append(&mut self.event);
        }
        out
    }

    fn piece(&mut self, piece: Piece, out: &mut Vec<u8>) {
        let ended = self.ended.take();
        match piece {
            Piece::EndTail(tail) => match ended {
                Some(true) => {}
                Some(false) => out.extend_from_slice(tail),
                None => self.hold(tail, out),
            },
            Piece::Text(text) => {
                self.line_begun = true;
                self.hold(text, out);
            }
            Piece::End(text, end) => {
                let blank = text.is_empty() && !self.line_begun;
                self.line_begun = false;
                self.hold(text, out);
                self.hold(end, out);
                if blank {
                    let usage = !self.passing && usage_only(&self.event);
                    if usage {
                        self.event.clear();
                    } else {
                        out.append(&mut self.event);
                    }
                    self.passing = false;
                    self.ended = Some(usage);
                }
            }
        }
    }

    fn hold(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.passing {
            out.extend_from_slice(bytes);
            return;
        }
        self.event.extend_from_slice(bytes);
        if self.event.len() > HOLD_BYTES {
            out.append(&mut self.event);
            self.passing = true;
        }
    }
}

/// A chunk with no choices and a `usage` object: the one include_usage adds.
fn usage_only(event: &[u8]) -> bool {
    // Content chunks carry `delta`; only a candidate is parsed.
    if find(event, b"\"usage\"").is_none() || find(event, b"\"delta\"").is_some() {
        return false;
    }
    let mut events = Events::default();
    let Some(Read::Event(e)) = events.feed(event).into_iter().next() else {
        return false;
    };
    let Ok(chunk) = serde_json::from_str::<Value>(e.data()) else {
        return false;
    };
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && chunk.get("usage").is_some_and(Value::is_object)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Api;

    #[test]
    fn usage_is_asked_for_after_every_byte_of_the_client() {
        let raw = br#"{"model": "openai/gpt-4o", "stream": true, "messages": []} "#;
        let body = RequestBody::parse(raw, Api::ChatCompletions.spec()).unwrap();
        let asked = ask_for_usage(raw, &body).unwrap();
        assert_eq!(
            asked,
            br#"{"model": "openai/gpt-4o", "stream": true, "messages": [],"stream_options":{"include_usage":true}} "#
        );
        // The model's span still holds: the rewrite for a target works on it.
        let sent: Value = serde_json::from_slice(&body.with_model(&asked, "gpt-4o")).unwrap();
        assert_eq!(sent["model"], "gpt-4o");
        assert_eq!(sent["stream_options"]["include_usage"], true);
    }

    #[test]
    fn a_clients_own_stream_options_are_left_alone() {
        for raw in [
            &br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#[..],
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#,
            br#"{"model":"m","stream":true,"stream_options":null}"#,
            br#"{"model":"m","stream":true,"stream\u005foptions":{}}"#,
        ] {
            let body = RequestBody::parse(raw, Api::ChatCompletions.spec()).unwrap();
            assert_eq!(ask_for_usage(raw, &body), None);
        }
    }

    const CONTENT: &str =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
    const USAGE: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    #[test]
    fn the_usage_event_is_taken_out_and_the_rest_passes() {
        let mut strip = UsageStrip::default();
        let stream = format!("{CONTENT}{USAGE}{DONE}");
        assert_eq!(
            strip.pass(stream.as_bytes(), true),
            format!("{CONTENT}{DONE}").as_bytes()
        );
    }

    #[test]
    fn an_event_cut_across_chunks_waits_for_its_end() {
        let stream = format!("{CONTENT}{USAGE}{DONE}");
        for cut in 1..stream.len() {
            let mut strip = UsageStrip::default();
            let (a, b) = stream.as_bytes().split_at(cut);
            let mut out = strip.pass(a, false);
            out.extend(strip.pass(b, true));
            assert_eq!(out, format!("{CONTENT}{DONE}").as_bytes(), "cut at {cut}");
        }
    }

    #[test]
    fn done_is_the_last_event() {
        assert!(done(format!("{USAGE}{DONE}").as_bytes()));
        assert!(done(b"data:[DONE]\r\n\r\n"));
        assert!(!done(USAGE.as_bytes()));
    }

    #[test]
    fn crlf_events_and_an_unterminated_tail_pass() {
        let mut strip = UsageStrip::default();
        let usage = USAGE.replace("\n\n", "\r\n\r\n");
        assert_eq!(strip.pass(usage.as_bytes(), false), b"");
        assert_eq!(strip.pass(b"{\"error\":1}", false), b"");
        assert_eq!(strip.pass(b"", true), b"{\"error\":1}");
    }
}
