//! Amazon Bedrock: it names an error's exception in `x-amzn-errortype`
//! (`ThrottlingException:http://internal.amazon.com/...`) and in the
//! body's `__type` when there; its body is `{"message": ...}`. As a target
//! (`format: bedrock`) it is reached through the Converse API: the model in
//! the path (`/model/{modelId}/converse`, `/converse-stream`), the stream in
//! AWS's event-stream frames (`crate::eventstream`), whose events are
//! classified here.

use serde_json::Value;

use super::{text, ErrorKind};
use crate::eventstream::{Broken, Frame};
use crate::stream_events::{StreamEvent, StreamEvents};

/// The host of Bedrock's runtime API in `region`.
pub fn host(region: &str) -> String {
    format!("bedrock-runtime.{region}.amazonaws.com")
}

/// The path of an attempt to `model` under the target's `prefix` (its
/// `base_url` path). A model id holds `:` (`...-v1:0`) and an ARN `/`:
/// both are percent-encoded, as AWS's SDKs send them, so the id is one
/// path segment.
pub fn attempt_path(prefix: &str, model: &str, stream: bool) -> String {
    let mut id = String::new();
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            id.push(b as char);
        } else {
            id.push_str(&format!("%{b:02X}"));
        }
    }
    let method = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("{prefix}/model/{id}/{method}")
}

/// The HTTP status an exception name stands for (Bedrock's own, as its API
/// reference lists them); a stream's exceptions are named in lower camel
/// case (`throttlingException`).
pub fn exception_status(name: &str) -> u16 {
    match upper_camel(name).as_str() {
        "ThrottlingException" | "ModelNotReadyException" => 429,
        "ServiceUnavailableException" => 503,
        "ModelTimeoutException" => 408,
        "ValidationException" | "ServiceQuotaExceededException" => 400,
        "AccessDeniedException" => 403,
        "ResourceNotFoundException" => 404,
        "ModelErrorException" | "ModelStreamErrorException" => 424,
        _ => 500,
    }
}

/// An exception's name as `x-amzn-errortype` spells it.
fn upper_camel(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .chain(chars)
        .collect()
}

/// The status a stream's exception frame fails its attempt with: the one
/// its kind makes the retry rules see (an overloaded model's is a 503, as
/// for a failed answer), else its own.
pub fn stream_exception_status(name: &str) -> u16 {
    let status = exception_status(name);
    let named = upper_camel(name);
    match kind(
        status,
        &|h| (h == "x-amzn-errortype").then(|| named.clone()),
        None,
    ) {
        Some(ErrorKind::Overloaded) => 503,
        Some(ErrorKind::RateLimited) => 429,
        _ => status,
    }
}

/// The error `type` a client of chat completions (`anthropic` false) or of
/// Messages reads for a Bedrock answer of `status`.
pub fn client_error_type(status: u16, anthropic: bool) -> &'static str {
    match (status, anthropic) {
        (400, _) => "invalid_request_error",
        (401, _) => "authentication_error",
        (403, _) => "permission_error",
        (404, _) => "not_found_error",
        (408, _) => "timeout_error",
        (429, false) => "rate_limit_exceeded",
        (429, true) => "rate_limit_error",
        (503, true) => "overloaded_error",
        (_, false) => "server_error",
        (_, true) => "api_error",
    }
}

/// A Converse stream's frame to the gateway: `messageStop` ends the answer
/// (the `metadata` frame with usage follows it); text or a tool call is
/// output; an exception frame is a failure of its status, and so is a
/// broken frame (a 502, as a cut stream is).
pub fn classify_frame(frame: &Result<Frame, Broken>) -> StreamEvent {
    let Ok(frame) = frame else {
        return StreamEvent::Error(502);
    };
    if frame.is_exception() {
        return StreamEvent::Error(stream_exception_status(frame.name()));
    }
    let payload = std::str::from_utf8(&frame.payload).unwrap_or("");
    classify_event(Some(frame.name()), payload)
}

/// One event by name and payload (see [`classify_frame`]).
pub fn classify_event(name: Option<&str>, data: &str) -> StreamEvent {
    let parsed = serde_json::from_str::<Value>(data).unwrap_or_default();
    match name.unwrap_or("") {
        "messageStop" => StreamEvent::Terminator,
        "contentBlockStart" if parsed["start"]["toolUse"].is_object() => StreamEvent::Output,
        "contentBlockDelta" => {
            let delta = &parsed["delta"];
            let text = delta["text"].as_str().is_some_and(|t| !t.is_empty());
            if text || delta["toolUse"].is_object() || delta["reasoningContent"].is_object() {
                StreamEvent::Output
            } else {
                StreamEvent::Neutral
            }
        }
        n if n.ends_with("Exception") => StreamEvent::Error(stream_exception_status(n)),
        _ => StreamEvent::Neutral,
    }
}

/// Nothing: a broken Converse stream's last event is written by its
/// translation (`translate::bedrock_stream`), which alone knows where the
/// binary frames stand, whatever the frame the provider cut.
pub fn broken_event(_message: &str) -> String {
    String::new()
}

/// How the gateway reads a Converse stream: binary frames, not SSE.
pub const STREAM_EVENTS: StreamEvents = StreamEvents {
    classify: classify_event,
    broken: broken_event,
    frames: Some(classify_frame),
};

/// The kind Bedrock's exception name says.
pub fn kind(
    _status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    error: Option<&Value>,
) -> Option<ErrorKind> {
    let named =
        header("x-amzn-errortype").or_else(|| error.map(|e| text(e, "__type").to_string()))?;
    // `name:namespace` in the header, `namespace#name` in a body.
    let name = named.split(':').next()?.rsplit('#').next()?;
    match name {
        "ThrottlingException" => Some(ErrorKind::RateLimited),
        "ServiceQuotaExceededException" => Some(ErrorKind::QuotaSpent),
        "ModelNotReadyException" | "ServiceUnavailableException" | "ModelTimeoutException" => {
            Some(ErrorKind::Overloaded)
        }
        "ValidationException" => {
            let message = error
                .map_or("", |e| text(e, "message"))
                .to_ascii_lowercase();
            (message.contains("too long") || message.contains("too many input tokens"))
                .then_some(ErrorKind::TooLong)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::{event, exception, Decoder};
    use StreamEvent::*;

    #[test]
    fn the_model_id_is_one_encoded_path_segment() {
        assert_eq!(
            attempt_path("", "anthropic.claude-3-5-sonnet-20240620-v1:0", false),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        assert_eq!(
            attempt_path("/proxy", "arn:aws:bedrock:us-east-1:1:inference-profile/x", true),
            "/proxy/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse-stream"
        );
    }

    #[test]
    fn converse_frames_are_classified() {
        let c = |frame: Vec<u8>| {
            let mut d = Decoder::default();
            classify_frame(&d.feed(&frame)[0])
        };
        assert_eq!(c(event("messageStart", r#"{"role":"assistant"}"#)), Neutral);
        let empty = r#"{"contentBlockIndex":0,"delta":{"text":""}}"#;
        assert_eq!(c(event("contentBlockDelta", empty)), Neutral);
        let text = r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#;
        assert_eq!(c(event("contentBlockDelta", text)), Output);
        let tool = r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t","name":"f"}}}"#;
        assert_eq!(c(event("contentBlockStart", tool)), Output);
        assert_eq!(
            c(event("messageStop", r#"{"stopReason":"end_turn"}"#)),
            Terminator
        );
        assert_eq!(c(event("metadata", r#"{"usage":{}}"#)), Neutral);
        assert_eq!(c(exception("throttlingException", "{}")), Error(429));
        assert_eq!(
            c(exception("serviceUnavailableException", "{}")),
            Error(503)
        );
        assert_eq!(c(exception("modelStreamErrorException", "{}")), Error(424));
        // Its kind, as the rules see it: an overloaded model is a 503.
        assert_eq!(c(exception("modelNotReadyException", "{}")), Error(503));
        assert_eq!(c(exception("modelTimeoutException", "{}")), Error(503));
        assert_eq!(classify_frame(&Err(Broken::MessageCrc)), Error(502));
    }

    #[test]
    fn every_listed_exception_has_its_kind() {
        let kind = |name: &'static str| {
            kind(
                0,
                &|h: &str| {
                    (h == "x-amzn-errortype").then(|| {
                        format!("{name}:http://internal.amazon.com/coral/com.amazon.bedrock/")
                    })
                },
                None,
            )
        };
        assert_eq!(kind("ThrottlingException"), Some(ErrorKind::RateLimited));
        assert_eq!(
            kind("ServiceQuotaExceededException"),
            Some(ErrorKind::QuotaSpent)
        );
        assert_eq!(kind("ModelNotReadyException"), Some(ErrorKind::Overloaded));
        assert_eq!(
            kind("ServiceUnavailableException"),
            Some(ErrorKind::Overloaded)
        );
        assert_eq!(kind("ModelTimeoutException"), Some(ErrorKind::Overloaded));
        assert_eq!(kind("AccessDeniedException"), None);
    }
}
