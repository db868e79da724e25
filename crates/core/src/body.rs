//! The request body: checked once, and its `model` value swapped per target
//! without touching any other byte.

use std::ops::Range;

use crate::api::{ApiSpec, Framing};

/// Deepest nesting accepted, as serde_json's own recursion limit.
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    NotJson(String),
    TooDeep,
    NotAnObject,
    NoModel,
    ModelNotAString,
}

impl BodyError {
    pub fn message(&self) -> String {
        match self {
            BodyError::NotJson(e) => format!("the request body is not valid JSON: {e}"),
            BodyError::TooDeep => format!("the request body nests deeper than {MAX_DEPTH} levels"),
            BodyError::NotAnObject => "the request body must be a JSON object".into(),
            BodyError::NoModel => "the request body has no `model` field".into(),
            BodyError::ModelNotAString => "`model` must be a string".into(),
        }
    }
}

/// A validated request to one of the served APIs: the raw bytes and where
/// the `model` string (quotes included) sits in them. Every API served names
/// its model in the body's top-level `model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    pub model: String,
    /// `"stream": true` to an API that streams: the answer comes as
    /// server-sent events.
    pub stream: bool,
    /// `previous_response_id`, to an API whose requests may chain.
    pub previous_response_id: Option<String>,
    /// A stored `conversation` is named, to an API whose requests may chain.
    pub names_conversation: bool,
    /// `stream_options.include_usage`: a chat stream's client wants the usage chunk.
    pub include_usage: bool,
    model_span: Range<usize>,
}

impl RequestBody {
    /// Checks `raw` is a JSON object, nested at most [`MAX_DEPTH`] deep, with
    /// a string `model`; a small scanner then finds that value's byte span.
    pub fn parse(raw: &[u8], spec: &ApiSpec) -> Result<RequestBody, BodyError> {
        // Only these fields are kept; serde_json still validates the rest
        // while skipping it, without building a document.
        #[derive(serde::Deserialize)]
        struct Probe {
            model: Option<serde_json::Value>,
            stream: Option<serde_json::Value>,
            previous_response_id: Option<serde_json::Value>,
            conversation: Option<serde_json::Value>,
            stream_options: Option<serde_json::Value>,
        }
        let not_json = |e: serde_json::Error| BodyError::NotJson(e.to_string());
        // serde_json skips the strings it ignores without checking their
        // UTF-8, which JSON requires (RFC 8259 §8.1).
        std::str::from_utf8(raw).map_err(|e| BodyError::NotJson(e.to_string()))?;
        if depth(raw) > MAX_DEPTH {
            return Err(BodyError::TooDeep);
        }
        let first = raw.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            serde_json::from_slice::<serde::de::IgnoredAny>(raw).map_err(not_json)?;
            return Err(BodyError::NotAnObject);
        }
        let probe: Probe = serde_json::from_slice(raw).map_err(not_json)?;
        let model = match probe.model {
            None => return Err(BodyError::NoModel),
            Some(serde_json::Value::String(m)) => m,
            Some(_) => return Err(BodyError::ModelNotAString),
        };
        let model_span = find_top_level_value(raw, "model").ok_or(BodyError::NoModel)?;
        let stream =
            spec.framing != Framing::None && probe.stream == Some(serde_json::Value::Bool(true));
        let previous_response_id = match probe.previous_response_id {
            Some(serde_json::Value::String(id)) if spec.chained => Some(id),
            _ => None,
        };
        let names_conversation = spec.chained && probe.conversation.is_some_and(|c| !c.is_null());
        let include_usage = probe
            .stream_options
            .is_some_and(|o| o.get("include_usage") == Some(&serde_json::Value::Bool(true)));
        Ok(RequestBody {
            model,
            stream,
            previous_response_id,
            names_conversation,
            include_usage,
            model_span,
        })
    }

    /// `raw` with the model value replaced by `model`, every other byte kept.
    pub fn with_model(&self, raw: &[u8], model: &str) -> Vec<u8> {
        let quoted = quoted(model);
        let mut out = Vec::with_capacity(raw.len() + quoted.len());
        out.extend_from_slice(&raw[..self.model_span.start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&raw[self.model_span.end..]);
        out
    }
}

/// `model` as a JSON string.
fn quoted(model: &str) -> String {
    serde_json::to_string(model).unwrap_or_else(|_| format!("\"{model}\""))
}

/// Byte span of the value of `key` in the top-level object of a document
/// already known to be valid JSON. The last occurrence wins, as it does for
/// serde_json.
fn find_top_level_value(raw: &[u8], key: &str) -> Option<Range<usize>> {
    let mut i = skip_ws(raw, 0);
    if raw.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut found = None;
    loop {
        i = skip_ws(raw, i);
        match raw.get(i)? {
            b'}' => return found,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = string_end(raw, i)?;
        let this_key: String = serde_json::from_slice(&raw[i..key_end]).ok()?;
        i = skip_ws(raw, key_end);
        if raw.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(raw, i + 1);
        let value_end = value_end(raw, i)?;
        if this_key == key {
            found = Some(i..value_end);
        }
        i = value_end;
    }
}

/// The deepest nesting of objects and arrays in `raw`, strings skipped.
fn depth(raw: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in raw {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn skip_ws(raw: &[u8], mut i: usize) -> usize {
    while matches!(raw.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// End (exclusive) of the string starting with the quote at `start`.
fn string_end(raw: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match raw.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// End (exclusive) of the value starting at `start`, without recursion.
fn value_end(raw: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    loop {
        match raw.get(i)? {
            b'"' => {
                i = string_end(raw, i)?;
                if depth == 0 {
                    return Some(i);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b',' if depth == 0 => return Some(i),
            b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{chat, embeddings, responses};

    #[test]
    fn swaps_only_the_model_value() {
        let raw = br#"{ "messages": [{"role":"user","content":"model: \"x\""}], "model" :  "openai/gpt-4o" , "temperature":0.7}"#;
        let body = RequestBody::parse(raw, &chat::SPEC).unwrap();
        assert_eq!(body.model, "openai/gpt-4o");
        let out = body.with_model(raw, "claude-3-5-sonnet");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "messages": [{"role":"user","content":"model: \"x\""}], "model" :  "claude-3-5-sonnet" , "temperature":0.7}"#
        );
    }

    #[test]
    fn a_repeated_model_key_is_refused() {
        assert!(matches!(
            RequestBody::parse(br#"{"model":"a","model":"b"}"#, &chat::SPEC),
            Err(BodyError::NotJson(_))
        ));
    }

    #[test]
    fn nested_model_keys_are_not_the_model() {
        let raw = br#"{"metadata":{"model":"inner"},"model":"outer","stream":true}"#;
        let body = RequestBody::parse(raw, &chat::SPEC).unwrap();
        let out = body.with_model(raw, "m");
        assert_eq!(
            out,
            br#"{"metadata":{"model":"inner"},"model":"m","stream":true}"#
        );
    }

    #[test]
    fn escapes_survive() {
        let raw = br#"{"model":"a\"b"}"#;
        let body = RequestBody::parse(raw, &chat::SPEC).unwrap();
        assert_eq!(body.model, "a\"b");
        assert_eq!(body.with_model(raw, "q\"z"), br#"{"model":"q\"z"}"#);
    }

    #[test]
    fn bad_bodies_are_named() {
        assert!(matches!(
            RequestBody::parse(b"nope", &chat::SPEC),
            Err(BodyError::NotJson(_))
        ));
        assert_eq!(
            RequestBody::parse(b"[1]", &chat::SPEC),
            Err(BodyError::NotAnObject)
        );
        assert!(matches!(
            RequestBody::parse(b"{\"model\":\"m\",\"x\":\"\xf0\x90\x80\"}", &chat::SPEC),
            Err(BodyError::NotJson(_))
        ));
        assert_eq!(
            RequestBody::parse(b"{}", &chat::SPEC),
            Err(BodyError::NoModel)
        );
        assert_eq!(
            RequestBody::parse(br#"{"model":3}"#, &chat::SPEC),
            Err(BodyError::ModelNotAString)
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep = format!(r#"{{"model":"m","x":{deep}}}"#);
        assert_eq!(
            RequestBody::parse(deep.as_bytes(), &chat::SPEC),
            Err(BodyError::TooDeep)
        );
        let fine = format!(
            r#"{{"model":"m","x":{}{}, "s":"[[[[{{{{"}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(RequestBody::parse(fine.as_bytes(), &chat::SPEC).is_ok());
    }

    #[test]
    fn what_an_api_reads_from_its_body() {
        let raw = br#"{"model":"m","stream":true,"previous_response_id":"resp_1"}"#;
        let chat = RequestBody::parse(raw, &chat::SPEC).unwrap();
        assert_eq!((chat.stream, chat.previous_response_id), (true, None));
        let r = RequestBody::parse(raw, &responses::SPEC).unwrap();
        assert_eq!(r.previous_response_id.as_deref(), Some("resp_1"));
        assert!(!r.names_conversation);
        let c = br#"{"model":"m","conversation":{"id":"conv_1"}}"#;
        assert!(
            RequestBody::parse(c, &responses::SPEC)
                .unwrap()
                .names_conversation
        );
        assert!(
            !RequestBody::parse(c, &chat::SPEC)
                .unwrap()
                .names_conversation
        );
        // Embeddings never stream, whatever the body says.
        assert!(!RequestBody::parse(raw, &embeddings::SPEC).unwrap().stream);
    }
}
