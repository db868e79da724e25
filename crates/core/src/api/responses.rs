//! `POST /v1/responses`: OpenAI's Responses API. Its streamed events are
//! named (`event: response.output_text.delta`) and pass through unchanged.
//! A follow-up naming `previous_response_id` depends on state kept by the
//! account that made that response; [`crate::response_ids`] remembers which
//! deployment that was. So do the endpoints of a stored response
//! ([`stored_response`]): they go to that deployment alone.

use serde_json::{json, Value};

use super::{Api, ApiSpec, ErrorShape, Format, Framing, StreamEvents};
use crate::providers::openai;
use crate::stream_events::StreamEvent;

pub const SPEC: ApiSpec = ApiSpec {
    api: Api::Responses,
    path: "/v1/responses",
    model_pinned: false,
    chained: true,
    framing: Framing::NamedEvents,
    stream_events: Some(StreamEvents {
        classify: classify_event,
        broken: broken_event,
        frames: None,
    }),
    errors: ErrorShape::Openai,
    format: Format::Openai,
};

/// The response id a request to a stored response's endpoint names:
/// `GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`,
/// `POST /v1/responses/{id}/cancel` (`route` without its query).
pub fn stored_response<'a>(method: &str, route: &'a str) -> Option<&'a str> {
    let rest = route.strip_prefix("/v1/responses/")?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let served = matches!(
        (method, tail),
        ("GET" | "DELETE", "") | ("GET", "input_items") | ("POST", "cancel")
    );
    (served && !id.is_empty()).then_some(id)
}

/// Responses events are named (by `event:` and the data's `type`). Events
/// that set up the response or an empty item are neutral; `error` and
/// `response.failed` are failures; `response.completed` and
/// `response.incomplete` end a whole answer; every other event (text,
/// reasoning, tool-call arguments, events not known here) is output.
pub fn classify_event(name: Option<&str>, data: &str) -> StreamEvent {
    let (kind, parsed) = crate::stream_events::event_kind(name, data);
    match kind.as_str() {
        "response.created" | "response.in_progress" | "response.queued" => StreamEvent::Neutral,
        "response.output_item.added" | "response.content_part.added" => StreamEvent::Neutral,
        "response.completed" | "response.incomplete" => StreamEvent::Terminator,
        "error" => StreamEvent::Error(openai::error_status(parsed.get("error").unwrap_or(&parsed))),
        "response.failed" => {
            let error = parsed.pointer("/response/error").unwrap_or(&Value::Null);
            StreamEvent::Error(openai::error_status(error))
        }
        _ => StreamEvent::Output,
    }
}

/// The Responses API's `error` event. It carries an `error` object too:
/// OpenAI's Python SDK raises on an event whose data has one, and yields a
/// bare `error` event as if it were content.
pub fn broken_event(message: &str) -> String {
    let data = json!({
        "type": "error",
        "code": "stream_broken",
        "message": message,
        "param": null,
        "error": {"type": "stream_broken", "code": "stream_broken", "message": message},
    });
    format!("event: error\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_events_are_classified() {
        use StreamEvent::*;
        let named = |n, d| classify_event(Some(n), d);
        assert_eq!(
            named("response.created", r#"{"type":"response.created"}"#),
            Neutral
        );
        assert_eq!(named("response.in_progress", "{}"), Neutral);
        assert_eq!(
            named("response.output_text.delta", r#"{"delta":"Hi"}"#),
            Output
        );
        assert_eq!(named("response.completed", "{}"), Terminator);
        assert_eq!(
            named(
                "response.failed",
                r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"x"}}}"#
            ),
            Error(500)
        );
        assert_eq!(
            named(
                "error",
                r#"{"type":"error","code":"rate_limit_exceeded","message":"x"}"#
            ),
            Error(429)
        );
        // Without `event:` lines the data's type names the event.
        assert_eq!(
            classify_event(None, r#"{"type":"response.created"}"#),
            Neutral
        );
        let broken = broken_event("cut");
        let data = broken
            .lines()
            .nth(1)
            .unwrap()
            .strip_prefix("data: ")
            .unwrap();
        assert_eq!(classify_event(Some("error"), data), Error(500));
    }

    #[test]
    fn the_endpoints_of_a_stored_response_name_it() {
        assert_eq!(
            stored_response("GET", "/v1/responses/resp_1"),
            Some("resp_1")
        );
        assert_eq!(
            stored_response("DELETE", "/v1/responses/resp_1"),
            Some("resp_1")
        );
        assert_eq!(
            stored_response("GET", "/v1/responses/resp_1/input_items"),
            Some("resp_1")
        );
        assert_eq!(
            stored_response("POST", "/v1/responses/resp_1/cancel"),
            Some("resp_1")
        );
        assert_eq!(stored_response("POST", "/v1/responses/resp_1"), None);
        assert_eq!(stored_response("GET", "/v1/responses/"), None);
        assert_eq!(stored_response("GET", "/v1/responses/a/b/c"), None);
    }
}
