//! `POST /v1/messages`: Anthropic's Messages API. A native Anthropic target
//! takes it as it is (with `anthropic-version`, default [`DEFAULT_VERSION`]);
//! an OpenAI-format target gets it as chat completions (`crate::translate`).
//! Its stream is named events: `message_start`, `content_block_start`,
//! `content_block_delta`, `content_block_stop`, `message_delta`, `ping`,
//! and last `message_stop`; a failure inside a 200 stream is an `error`
//! event ([`ERROR_EVENT`]).

use super::{anthropic_events, Api, ApiSpec, ErrorShape, Format, Framing, StreamEvents};

pub const SPEC: ApiSpec = ApiSpec {
    api: Api::Messages,
    path: "/v1/messages",
    model_pinned: false,
    chained: false,
    framing: Framing::Anthropic,
    stream_events: Some(StreamEvents {
        classify: anthropic_events::classify_event,
        broken: anthropic_events::broken_event,
        frames: None,
    }),
    errors: ErrorShape::Anthropic,
    format: Format::Anthropic,
};

/// The API version sent to a native target when the client names none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// The headers of a request that a native target reads, passed on from the client.
pub const PASSED_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// The event that ends a complete stream.
pub const STOP_EVENT: &str = "message_stop";

/// The event a stream's own failure is sent as (`{"type":"error","error":{..}}`).
pub const ERROR_EVENT: &str = "error";

/// The default `max_tokens` of a chat completions request translated to a
/// native target: Anthropic requires the field, chat clients often leave it
/// out. 4096 is what every current Claude model can give.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// One server-sent event, framed as Anthropic sends it.
pub fn event(name: &str, data: &serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}
