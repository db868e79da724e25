//! Anthropic's Messages stream events (`event: message_start`, ...), read
//! by the same rules as the other APIs' streams. The Messages API module
//! names these in its spec's `stream_events`.

use serde_json::{json, Value};

use crate::stream_events::StreamEvent;

/// `message_start`, `ping` and an empty `content_block_start` carry no part
/// of the answer; deltas, block ends and `message_delta` (the stop reason)
/// do; `message_stop` ends a whole answer; `error` is a failure with the
/// status its `error.type` stands for.
pub fn classify_event(name: Option<&str>, data: &str) -> StreamEvent {
    let (kind, parsed) = crate::stream_events::event_kind(name, data);
    match kind.as_str() {
        "message_start" | "ping" | "content_block_start" => StreamEvent::Neutral,
        "message_stop" => StreamEvent::Terminator,
        "error" => {
            let kind = parsed.pointer("/error/type").and_then(Value::as_str);
            StreamEvent::Error(error_status(kind.unwrap_or("")))
        }
        _ => StreamEvent::Output,
    }
}

/// The HTTP status Anthropic gives each error type.
pub fn error_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// Anthropic's own `error` event; its SDKs raise on it.
pub fn broken_event(message: &str) -> String {
    let data = json!({"type": "error", "error": {"type": "stream_broken", "message": message}});
    format!("event: error\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use StreamEvent::*;

    #[test]
    fn anthropic_events_are_classified() {
        let named = |n, d| classify_event(Some(n), d);
        assert_eq!(
            named("message_start", r#"{"type":"message_start"}"#),
            Neutral
        );
        assert_eq!(named("ping", r#"{"type": "ping"}"#), Neutral);
        assert_eq!(named("content_block_start", "{}"), Neutral);
        assert_eq!(named("content_block_delta", "{}"), Output);
        assert_eq!(named("message_delta", "{}"), Output);
        assert_eq!(named("message_stop", "{}"), Terminator);
        for (kind, status) in [
            ("overloaded_error", 529),
            ("rate_limit_error", 429),
            ("api_error", 500),
        ] {
            let data = format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"x"}}}}"#);
            assert_eq!(classify_event(Some("error"), &data), Error(status));
        }
        let broken = broken_event("cut");
        assert!(broken.starts_with("event: error\n"));
        let data = broken
            .lines()
            .nth(1)
            .unwrap()
            .strip_prefix("data: ")
            .unwrap();
        assert_eq!(classify_event(None, data), Error(500));
    }
}
