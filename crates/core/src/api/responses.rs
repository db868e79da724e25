//! `POST /v1/responses`: OpenAI's Responses API. Its streamed events are
//! named (`event: response.output_text.delta`) and pass through unchanged.
//! A follow-up naming `previous_response_id` depends on state kept by the
//! account that made that response; [`crate::response_ids`] remembers which
//! deployment that was.

use super::{openai_error, Api, ApiSpec, Framing};

pub const SPEC: ApiSpec = ApiSpec {
    api: Api::Responses,
    path: "/v1/responses",
    model_pinned: false,
    chained: true,
    framing: Framing::NamedEvents,
    error_body: openai_error,
};
