//! Token counts from an answer's `usage`: a whole JSON body, or the tail of
//! a server-sent event stream whose last chunk carries them. The filter
//! keeps only the answer's last bytes, so this reads from the end.

use serde_json::Value;

pub mod stream;

/// How many of an answer's last bytes the filter keeps to read `usage` from:
/// `usage` is the last field of an OpenAI body and the last event of a
/// stream that asked for it.
pub const TAIL_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The last `usage` object in `tail` with token counts: OpenAI's
/// `prompt_tokens` / `completion_tokens` or Anthropic's and the Responses
/// API's `input_tokens` / `output_tokens`. A stream's earlier chunks carry
/// `"usage": null`, skipped.
pub fn read(tail: &[u8]) -> Option<Usage> {
    let mut end = tail.len();
    while let Some(at) = find_last(tail.get(..end)?, USAGE) {
        end = at;
        if let Some(usage) = usage_at(tail, at) {
            return Some(usage);
        }
    }
    None
}

const USAGE: &[u8] = b"\"usage\"";

/// The token counts of the `"usage"` field whose key starts at `at`, if it
/// is a field (`\"usage\"` inside a string is text) and has counts.
fn usage_at(bytes: &[u8], at: usize) -> Option<Usage> {
    if at > 0 && bytes.get(at - 1) == Some(&b'\\') {
        return None;
    }
    let rest = skip_ws(bytes.get(at + USAGE.len()..)?).strip_prefix(b":")?;
    let mut values = serde_json::Deserializer::from_slice(skip_ws(rest)).into_iter::<Value>();
    counts(&values.next()?.ok()?)
}

/// The first `usage` object with token counts in `head`, a stream's first
/// bytes: Anthropic's `message_start` says the input tokens there, and only
/// the output tokens at the end (`message_delta`).
pub fn first(head: &[u8]) -> Option<Usage> {
    let mut from = 0;
    while let Some(at) = head
        .get(from..)?
        .windows(USAGE.len())
        .position(|w| w == USAGE)
    {
        let at = from + at;
        from = at + USAGE.len();
        if let Some(usage) = usage_at(head, at) {
            return Some(usage);
        }
    }
    None
}

/// What a stream reported in all, from its first `usage` and its last:
/// each count the larger (a later event repeats or raises a count, never
/// lowers it).
pub fn combine(first: Option<Usage>, last: Option<Usage>) -> Option<Usage> {
    match (first, last) {
        (Some(a), Some(b)) => Some(Usage {
            input_tokens: a.input_tokens.max(b.input_tokens),
            output_tokens: a.output_tokens.max(b.output_tokens),
        }),
        (a, b) => a.or(b),
    }
}

/// What an answer the gateway read whole reported, start and end.
pub fn reported(body: &[u8]) -> Option<Usage> {
    let head = body.get(..body.len().min(TAIL_BYTES)).unwrap_or_default();
    let tail = body
        .get(body.len().saturating_sub(TAIL_BYTES)..)
        .unwrap_or_default();
    combine(first(head), read(tail))
}

impl Usage {
    /// Two attempts' usage, added (saturating).
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
        }
    }
}

/// The last `"model": "<name>"` in `tail`: the model that answered (every
/// chunk of a stream names it, and a whole body once).
pub fn last_model(tail: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"model\"";
    let mut end = tail.len();
    while let Some(at) = find_last(tail.get(..end)?, KEY) {
        end = at;
        if at > 0 && tail.get(at - 1) == Some(&b'\\') {
            continue;
        }
        let rest = skip_ws(tail.get(at + KEY.len()..)?);
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let mut values = serde_json::Deserializer::from_slice(skip_ws(rest)).into_iter::<Value>();
        if let Some(Ok(Value::String(model))) = values.next() {
            return Some(model);
        }
    }
    None
}

fn counts(value: &Value) -> Option<Usage> {
    let field = |names: [&str; 2]| names.iter().find_map(|n| value.get(n)?.as_u64());
    let input = field(["prompt_tokens", "input_tokens"]);
    let output = field(["completion_tokens", "output_tokens"]);
    (input.is_some() || output.is_some()).then(|| Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0),
    })
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Appends `chunk` to `tail`, keeping only the last [`TAIL_BYTES`]: only
/// the chunk's own last bytes are copied, so a long chunk costs no more.
pub fn keep_tail(tail: &mut Vec<u8>, chunk: &[u8]) {
    let chunk = chunk
        .get(chunk.len().saturating_sub(TAIL_BYTES)..)
        .unwrap_or_default();
    let over = (tail.len() + chunk.len()).saturating_sub(TAIL_BYTES);
    tail.drain(..over.min(tail.len()));
    tail.extend_from_slice(chunk);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_openai_body() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi \"usage\": {\"prompt_tokens\": 9}"}}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        assert_eq!(
            read(body),
            Some(Usage {
                input_tokens: 12,
                output_tokens: 5
            })
        );
    }

    #[test]
    fn a_stream_whose_last_chunk_has_usage() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
data: {\"choices\":[],\"usage\": {\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            read(stream),
            Some(Usage {
                input_tokens: 7,
                output_tokens: 3
            })
        );
    }

    #[test]
    fn anthropic_names() {
        let body = br#"{"usage":{"input_tokens":4,"output_tokens":2}}"#;
        assert_eq!(
            read(body),
            Some(Usage {
                input_tokens: 4,
                output_tokens: 2
            })
        );
    }

    #[test]
    fn an_anthropic_stream_says_input_at_its_start_and_output_at_its_end() {
        let head = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[],\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        let start = first(head);
        assert_eq!(
            start,
            Some(Usage {
                input_tokens: 25,
                output_tokens: 1
            })
        );
        let end = read(head);
        assert_eq!(
            end.map(|u| u.input_tokens),
            Some(0),
            "the end alone misses the prompt"
        );
        assert_eq!(
            combine(start, end),
            Some(Usage {
                input_tokens: 25,
                output_tokens: 15
            })
        );
        // An OpenAI stream's first chunk has none: its last usage stands.
        assert_eq!(first(b"data: {\"usage\":null}\n\n"), None);
        assert_eq!(combine(None, end), end);
    }

    #[test]
    fn a_failed_streams_reported_usage_adds_up_across_attempts() {
        let cut = b"event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":300,\"output_tokens\":1}}}\n\n\
event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n";
        let one = reported(cut).unwrap();
        assert_eq!(
            one,
            Usage {
                input_tokens: 300,
                output_tokens: 1
            }
        );
        assert_eq!(
            one.plus(one),
            Usage {
                input_tokens: 600,
                output_tokens: 2
            }
        );
        assert_eq!(reported(br#"{"error":{"message":"overloaded"}}"#), None);
    }

    #[test]
    fn no_usage_or_only_nulls() {
        assert_eq!(read(b"data: {\"usage\":null}\n\ndata: [DONE]\n\n"), None);
        assert_eq!(read(br#"{"choices":[]}"#), None);
        assert_eq!(read(b"\"usage\""), None);
    }

    #[test]
    fn the_answering_model_is_the_last_named() {
        let stream = b"data: {\"model\":\"gpt-4o-2024\",\"choices\":[]}\n\ndata: [DONE]\n\n";
        assert_eq!(last_model(stream).as_deref(), Some("gpt-4o-2024"));
        let body = br#"{"model":"m1","choices":[{"message":{"content":"say \"model\": 3"}}]}"#;
        assert_eq!(last_model(body).as_deref(), Some("m1"));
        assert_eq!(last_model(b"{\"choices\":[]}"), None);
    }

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut tail = Vec::new();
        keep_tail(&mut tail, &vec![b'a'; TAIL_BYTES]);
        keep_tail(&mut tail, b"xyz");
        assert_eq!(tail.len(), TAIL_BYTES);
        assert!(tail.ends_with(b"axyz"));
        let mut long = vec![b'b'; TAIL_BYTES];
        long.extend_from_slice(b"end");
        keep_tail(&mut tail, &long);
        assert_eq!(tail.len(), TAIL_BYTES);
        assert!(tail.starts_with(b"bbb") && tail.ends_with(b"bend"));
    }
}
