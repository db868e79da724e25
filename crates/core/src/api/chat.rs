//! `POST /v1/chat/completions`: OpenAI's chat completions.

use serde_json::{json, Value};

use super::{Api, ApiSpec, ErrorShape, Format, Framing, StreamEvents};
use crate::providers::openai;
use crate::stream_events::StreamEvent;

pub const SPEC: ApiSpec = ApiSpec {
    api: Api::ChatCompletions,
    path: "/v1/chat/completions",
    model_pinned: false,
    chained: false,
    framing: Framing::DataOnly,
    stream_events: Some(StreamEvents {
        classify: classify_event,
        broken: broken_event,
        frames: None,
    }),
    errors: ErrorShape::Openai,
    format: Format::Openai,
};

/// A chat stream is `data:` lines only: `[DONE]` ends it, `{"error": ...}`
/// reports a failure, and a chunk is output once a choice carries content,
/// a tool call, a refusal, reasoning or a finish reason. A role-only chunk
/// or one with only `usage` is neutral; what cannot be read, or is no chat
/// chunk, is output (it is not held back on a guess).
pub fn classify_event(_name: Option<&str>, data: &str) -> StreamEvent {
    if data.trim() == "[DONE]" {
        return StreamEvent::Terminator;
    }
    let Ok(chunk) = serde_json::from_str::<Value>(data) else {
        return StreamEvent::Output;
    };
    if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
        return StreamEvent::Error(openai::error_status(error));
    }
    let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
        // Usage alone is neutral; a chunk of no shape known is output.
        return match chunk.get("usage") {
            Some(_) => StreamEvent::Neutral,
            None => StreamEvent::Output,
        };
    };
    let carries = |c: &Value| {
        let delta = c.get("delta").unwrap_or(&Value::Null);
        let filled = |field: &str| match delta.get(field) {
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(_)) => true,
            _ => false,
        };
        [
            "content",
            "tool_calls",
            "function_call",
            "refusal",
            "reasoning_content",
            "reasoning",
        ]
        .iter()
        .any(|f| filled(f))
            || c.get("finish_reason").is_some_and(|f| !f.is_null())
    };
    if choices.iter().any(carries) {
        StreamEvent::Output
    } else {
        StreamEvent::Neutral
    }
}

/// The chat API's own error chunk; OpenAI's SDKs raise on it.
pub fn broken_event(message: &str) -> String {
    let error = json!({"error": {"type": "stream_broken", "message": message}});
    format!("data: {error}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use StreamEvent::*;

    #[test]
    fn chat_chunks_are_classified() {
        let c = |d| classify_event(None, d);
        assert_eq!(c("[DONE]"), Terminator);
        assert_eq!(
            c(
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#
            ),
            Neutral
        );
        assert_eq!(c(r#"{"choices":[],"usage":{"prompt_tokens":3}}"#), Neutral);
        assert_eq!(c(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#), Output);
        assert_eq!(
            c(r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#),
            Output
        );
        assert_eq!(
            c(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#),
            Output
        );
        assert_eq!(
            c(r#"{"error":{"type":"server_error","message":"x"}}"#),
            Error(500)
        );
        assert_eq!(
            c(r#"{"error":{"code":"rate_limit_exceeded","message":"x"}}"#),
            Error(429)
        );
        assert_eq!(c("not json"), Output);
        assert_eq!(c(r#"{"usage":{"prompt_tokens":3}}"#), Neutral);
        assert_eq!(c(r#"{"n":0}"#), Output);
    }

    #[test]
    fn the_broken_event_is_an_error_chunk() {
        let event = broken_event("cut");
        let data = event.strip_prefix("data: ").unwrap().trim_end();
        assert_eq!(classify_event(None, data), Error(500));
        assert!(event.ends_with("\n\n"));
    }
}
