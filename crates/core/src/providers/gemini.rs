//! Google's Gemini API, native (`format: gemini`): `x-goog-api-key`, the
//! model in the path (`/v1beta/models/{model}:generateContent`, streamed as
//! `:streamGenerateContent?alt=sse`), errors as `google.rpc.Status`
//! (`{"error": {"code", "message", "status", "details"}}`), read for their
//! kind and wait by [`super::google`] as every failed answer is.

use serde_json::{json, Value};

use crate::stream_events::{StreamEvent, StreamEvents};

/// The API version every path is under.
pub const API_ROOT: &str = "/v1beta";

/// The header the key goes in, as it is.
pub const KEY_HEADER: &str = "x-goog-api-key";

/// The path of an attempt to `model` under the target's `prefix` (its
/// `base_url` path): a prefix that already ends in an API version is kept
/// as it is, any other is put before `/v1beta`.
pub fn attempt_path(prefix: &str, model: &str, stream: bool) -> String {
    let root = if prefix.ends_with("/v1beta") || prefix.ends_with("/v1") {
        prefix.to_string()
    } else {
        format!("{prefix}{API_ROOT}")
    };
    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    format!("{root}/models/{model}:{method}")
}

/// The HTTP status a `google.rpc.Code` name stands for (Google's own mapping).
pub fn status_of(code: &str) -> u16 {
    match code {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ALREADY_EXISTS" | "ABORTED" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

/// The error `type` a client of chat completions (`anthropic` false) or of
/// Messages reads for a `google.rpc.Code` name.
pub fn client_error_type(code: &str, anthropic: bool) -> &'static str {
    match (status_of(code), anthropic) {
        (400, _) => "invalid_request_error",
        (401, _) => "authentication_error",
        (403, _) => "permission_error",
        (404, _) => "not_found_error",
        (429, false) => "rate_limit_exceeded",
        (429, true) => "rate_limit_error",
        (503, true) => "overloaded_error",
        (504, _) => "timeout_error",
        (_, false) => "server_error",
        (_, true) => "api_error",
    }
}

/// A Gemini stream is `data:` chunks with no terminator of its own: the
/// chunk carrying a candidate's `finishReason` is the last one. A chunk
/// with text or a function call is output; one naming a blocked prompt
/// (`promptFeedback.blockReason`) ends the answer; `{"error": ...}` is a
/// failure with its status.
pub fn classify_event(_name: Option<&str>, data: &str) -> StreamEvent {
    let Ok(chunk) = serde_json::from_str::<Value>(data) else {
        return StreamEvent::Output;
    };
    if let Some(error) = chunk.get("error").filter(|e| e.is_object()) {
        return StreamEvent::Error(error_status(error));
    }
    let candidate = &chunk["candidates"][0];
    if candidate["finishReason"].is_string() || chunk["promptFeedback"]["blockReason"].is_string() {
        return StreamEvent::Terminator;
    }
    let carries = candidate["content"]["parts"]
        .as_array()
        .is_some_and(|parts| {
            parts.iter().any(|p| {
                p["text"].as_str().is_some_and(|t| !t.is_empty()) || p.get("functionCall").is_some()
            })
        });
    if carries {
        StreamEvent::Output
    } else {
        StreamEvent::Neutral
    }
}

/// The status of a `google.rpc.Status` object: its `status` name, else its `code`.
pub fn error_status(error: &Value) -> u16 {
    match error["status"].as_str() {
        Some(name) => status_of(name),
        None => error["code"]
            .as_u64()
            .filter(|c| (400..600).contains(c))
            .map_or(500, |c| c as u16),
    }
}

/// The last event of a Gemini stream the provider broke: an error chunk,
/// which the translation turns into the client's own error event.
pub fn broken_event(message: &str) -> String {
    let error = json!({"error": {"code": 502, "message": message, "status": "UNAVAILABLE"}});
    format!("data: {error}\n\n")
}

/// How the gateway reads a Gemini stream.
pub const STREAM_EVENTS: StreamEvents = StreamEvents {
    classify: classify_event,
    broken: broken_event,
};

#[cfg(test)]
mod tests {
    use super::*;
    use StreamEvent::*;

    #[test]
    fn the_model_and_the_method_are_in_the_path() {
        assert_eq!(
            attempt_path("", "gemini-2.0-flash", false),
            "/v1beta/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            attempt_path("/proxy", "m", true),
            "/proxy/v1beta/models/m:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            attempt_path("/v1beta", "m", false),
            "/v1beta/models/m:generateContent"
        );
    }

    #[test]
    fn gemini_chunks_are_classified() {
        let c = |d| classify_event(None, d);
        assert_eq!(
            c(r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]}}]}"#),
            Output
        );
        assert_eq!(
            c(
                r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]}}]}"#
            ),
            Output
        );
        assert_eq!(
            c(r#"{"candidates":[{"content":{"parts":[{"text":""}]}}],"usageMetadata":{}}"#),
            Neutral
        );
        assert_eq!(
            c(r#"{"candidates":[{"content":{"parts":[{"text":"."}]},"finishReason":"STOP"}]}"#),
            Terminator
        );
        assert_eq!(
            c(r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#),
            Terminator
        );
        assert_eq!(
            c(r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"x"}}"#),
            Error(429)
        );
        assert_eq!(c(r#"{"error":{"code":503,"message":"x"}}"#), Error(503));
        let broken = broken_event("cut");
        assert_eq!(
            c(broken.strip_prefix("data: ").unwrap().trim_end()),
            Error(503)
        );
    }
}
