//! The request body: checked once, and its `model` value swapped per target
//! without touching any other byte.

mod scan;

use std::ops::Range;

use serde_json::Value;

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
    /// The cap the client set on the answer's tokens: the largest under any
    /// API's name for it, 0 not counted (a value that is not a whole number
    /// is the provider's to refuse).
    pub max_output_tokens: Option<u64>,
    /// `stream_options` is in the body, whatever its value (`null` too).
    pub sets_stream_options: bool,
    model_span: Range<usize>,
}

impl RequestBody {
    /// Checks `raw` is a JSON object, nested at most [`MAX_DEPTH`] deep, with
    /// a string `model` named once, in one pass that also finds where that
    /// value sits. Only the few values read are parsed further (tiny spans).
    pub fn parse(raw: &[u8], spec: &ApiSpec) -> Result<RequestBody, BodyError> {
        let members = match scan::scan(raw)? {
            scan::Document::Object(members) => members,
            scan::Document::NotAnObject => return Err(BodyError::NotAnObject),
        };
        // serde_json's rules for a value it keeps (a lone surrogate or a
        // number out of range refused), as a document would be read.
        let value = |span: &Option<Range<usize>>| -> Result<Option<Value>, BodyError> {
            span.as_ref()
                .map(|s| {
                    serde_json::from_slice::<Value>(&raw[s.clone()])
                        .map_err(|e| BodyError::NotJson(e.to_string()))
                })
                .transpose()
        };
        let (stream, previous_response_id, conversation, stream_options) = (
            value(&members.stream)?,
            value(&members.previous_response_id)?,
            value(&members.conversation)?,
            value(&members.stream_options)?,
        );
        let model = match value(&members.model)? {
            None | Some(Value::Null) => return Err(BodyError::NoModel),
            Some(Value::String(m)) => m,
            Some(_) => return Err(BodyError::ModelNotAString),
        };
        let model_span = members.model.ok_or(BodyError::NoModel)?;
        let stream = spec.framing != Framing::None && stream == Some(Value::Bool(true));
        let previous_response_id = match previous_response_id {
            Some(Value::String(id)) if spec.chained => Some(id),
            _ => None,
        };
        let names_conversation = spec.chained && conversation.is_some_and(|c| !c.is_null());
        let sets_stream_options = stream_options.is_some();
        let include_usage =
            stream_options.is_some_and(|o| o.get("include_usage") == Some(&Value::Bool(true)));
        let cap = |span: &Option<Range<usize>>| {
            span.as_ref().and_then(|s| {
                std::str::from_utf8(&raw[s.clone()])
                    .ok()?
                    .parse::<u64>()
                    .ok()
            })
        };
        // The largest: a provider may honour any one of them. 0 is not a cap
        // (providers refuse it or read it as unset).
        let max_output_tokens = [
            &members.max_tokens,
            &members.max_completion_tokens,
            &members.max_output_tokens,
        ]
        .into_iter()
        .filter_map(cap)
        .filter(|n| *n > 0)
        .max();
        Ok(RequestBody {
            model,
            stream,
            previous_response_id,
            names_conversation,
            include_usage,
            max_output_tokens,
            sets_stream_options,
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

impl RequestBody {
    /// The body's front up to the end of its model value, with `model` in
    /// place, and that end: all a host needs to rewrite, in the buffer that
    /// holds `raw`, to get [`RequestBody::with_model`]'s body. Nothing after
    /// the model is copied.
    pub fn front_with_model(&self, raw: &[u8], model: &str) -> (Vec<u8>, usize) {
        let quoted = quoted(model);
        let mut front = Vec::with_capacity(self.model_span.start + quoted.len());
        front.extend_from_slice(&raw[..self.model_span.start]);
        front.extend_from_slice(quoted.as_bytes());
        (front, self.model_span.end)
    }
}

/// `model` as a JSON string.
fn quoted(model: &str) -> String {
    serde_json::to_string(model).unwrap_or_else(|_| format!("\"{model}\""))
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
    fn the_front_and_the_rest_make_the_rewritten_body() {
        let raw = br#"{"messages":[],"model":"openai/gpt-4o","stream":true}"#;
        let body = RequestBody::parse(raw, &chat::SPEC).unwrap();
        let (front, end) = body.front_with_model(raw, "gpt-4o");
        assert_eq!(front, br#"{"messages":[],"model":"gpt-4o""#);
        assert_eq!(
            [&front[..], &raw[end..]].concat(),
            body.with_model(raw, "gpt-4o")
        );
    }

    #[test]
    fn the_answer_cap_is_the_largest_set_and_zero_is_none() {
        let cap = |raw: &[u8]| {
            RequestBody::parse(raw, &chat::SPEC)
                .unwrap()
                .max_output_tokens
        };
        assert_eq!(
            cap(br#"{"model":"m","max_tokens":1,"max_completion_tokens":500}"#),
            Some(500)
        );
        assert_eq!(
            cap(br#"{"model":"m","max_completion_tokens":7,"max_output_tokens":9}"#),
            Some(9)
        );
        assert_eq!(cap(br#"{"model":"m","max_tokens":0}"#), None);
        assert_eq!(
            cap(br#"{"model":"m","max_tokens":0,"max_completion_tokens":30}"#),
            Some(30)
        );
        assert_eq!(cap(br#"{"model":"m","max_tokens":"x"}"#), None);
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
